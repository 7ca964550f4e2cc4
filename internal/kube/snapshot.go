// Package kube reads the cluster: Nodes and EndpointSlices from the
// Kubernetes API, reduced to what vigil needs (membership, never liveness).
package kube

import (
	"iter"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Snapshot is the part of the cluster vigil acts on, as last seen. It is
// what the state file holds, so that a vigil started while the API is
// unreachable serves the same members as before.
type Snapshot struct {
	// Nodes sorted by name.
	Nodes []Node `json:"nodes"`
	// Slices sorted by namespace/name.
	Slices []Slice `json:"slices"`
	// Services are the LoadBalancer Services, sorted by namespace/name.
	Services []Service `json:"services,omitempty"`
}

// Node is what vigil needs of a Node object.
type Node struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	// Addresses in the order of status.addresses.
	Addresses []NodeAddress `json:"addresses"`
	// Ready is the Ready condition; vigil reports it, it never removes a
	// backend for it (the health check decides traffic).
	Ready bool `json:"ready"`
}

// NodeAddress is one of status.addresses.
type NodeAddress struct {
	Type    string     `json:"type"` // InternalIP, ExternalIP, Hostname, ...
	Address netip.Addr `json:"address"`
}

// Slice is what vigil needs of an EndpointSlice.
type Slice struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Service is the kubernetes.io/service-name label.
	Service     string     `json:"service"`
	AddressType string     `json:"address_type"` // IPv4, IPv6 (FQDN slices are dropped)
	Ports       []Port     `json:"ports"`
	Endpoints   []Endpoint `json:"endpoints"`
}

// Port is one of an EndpointSlice's ports.
type Port struct {
	Name     string `json:"name,omitempty"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
}

// Endpoint is one of an EndpointSlice's endpoints.
type Endpoint struct {
	Addresses []netip.Addr `json:"addresses"`
	// Ready: an absent condition counts as ready, as the API documents.
	Ready    bool   `json:"ready"`
	NodeName string `json:"node_name,omitempty"`
}

// ServiceRef is a Service named NAMESPACE/NAME.
type ServiceRef struct{ Namespace, Name string }

// ParseServiceRef reads NAMESPACE/NAME.
func ParseServiceRef(s string) (ServiceRef, bool) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return ServiceRef{}, false
	}
	return ServiceRef{ns, name}, true
}

func (r ServiceRef) String() string { return r.Namespace + "/" + r.Name }

// ServiceEndpoint is one ready address of a Service with the port asked for.
type ServiceEndpoint struct {
	Address  netip.AddrPort
	NodeName string
}

// ready yields every ready endpoint of svc with the slice it is in.
func (s *Snapshot) ready(svc ServiceRef) iter.Seq2[*Slice, Endpoint] {
	return func(yield func(*Slice, Endpoint) bool) {
		for i := range s.Slices {
			sl := &s.Slices[i]
			if sl.Namespace != svc.Namespace || sl.Service != svc.Name {
				continue
			}
			for _, ep := range sl.Endpoints {
				if ep.Ready && !yield(sl, ep) {
					return
				}
			}
		}
	}
}

// portOf is the port a slice serves port at: port as a number, else the
// slice's port of that name; 0 if it has none.
func (sl *Slice) portOf(port string) int {
	if n, err := strconv.Atoi(port); err == nil {
		return n
	}
	p := 0
	for _, sp := range sl.Ports {
		if sp.Name == port {
			p = sp.Port
		}
	}
	return p
}

// ReadyEndpoints returns the ready endpoints of svc at port, which names a
// port of the slices or, as a number, is used as it is; sorted, without
// duplicates (an endpoint can be in two slices while they are rebalanced).
func (s *Snapshot) ReadyEndpoints(svc ServiceRef, port string) []ServiceEndpoint {
	var out []ServiceEndpoint
	for sl, ep := range s.ready(svc) {
		p := sl.portOf(port)
		if p <= 0 || p > 65535 {
			continue
		}
		for _, a := range ep.Addresses {
			out = append(out, ServiceEndpoint{netip.AddrPortFrom(a, uint16(p)), ep.NodeName})
		}
	}
	slices.SortFunc(out, func(a, b ServiceEndpoint) int { return a.Address.Compare(b.Address) })
	return slices.CompactFunc(out, func(a, b ServiceEndpoint) bool { return a.Address == b.Address })
}

// ReadyOn reports whether svc has a ready endpoint on the named node.
func (s *Snapshot) ReadyOn(svc ServiceRef, node string) bool {
	for _, ep := range s.ready(svc) {
		if ep.NodeName == node {
			return true
		}
	}
	return false
}

// ReadyNodes are the nodes with a ready endpoint of svc, sorted.
func (s *Snapshot) ReadyNodes(svc ServiceRef) []string {
	var out []string
	for _, ep := range s.ready(svc) {
		if ep.NodeName != "" && !slices.Contains(out, ep.NodeName) {
			out = append(out, ep.NodeName)
		}
	}
	slices.Sort(out)
	return out
}

// ReadyCount is how many ready endpoint addresses svc has.
func (s *Snapshot) ReadyCount(svc ServiceRef) int {
	n := 0
	for _, ep := range s.ready(svc) {
		n += len(ep.Addresses)
	}
	return n
}

// Service is what vigil needs of a LoadBalancer Service: which
// implementation it asks for, its ports, and the addresses its status
// holds (the allocator writes them; every node announces from them, so a
// restart or an API outage keeps every address).
type Service struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Class is spec.loadBalancerClass ("" none).
	Class string `json:"class,omitempty"`
	// Addresses are the IPs of status.loadBalancer.ingress.
	Addresses []netip.Addr  `json:"addresses,omitempty"`
	Ports     []ServicePort `json:"ports"`
	// Local is externalTrafficPolicy: Local: only nodes with a ready
	// endpoint may announce.
	Local bool `json:"local,omitempty"`
	// Annotations vigil reads (vigil.io/*).
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ServicePort is one of a Service's ports.
type ServicePort struct {
	Name     string `json:"name,omitempty"`
	Protocol string `json:"protocol"`
	Port     int    `json:"port"`
}

// Ref is the Service's NAMESPACE/NAME.
func (s Service) Ref() ServiceRef { return ServiceRef{s.Namespace, s.Name} }
