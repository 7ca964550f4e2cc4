package kube

import (
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// nodeFromAPI reduces a Node. Addresses that are not IP addresses (a
// Hostname entry holds a name) are left out: vigil dials addresses.
func nodeFromAPI(n *corev1.Node) Node {
	out := Node{Name: n.Name}
	if len(n.Labels) > 0 {
		out.Labels = maps.Clone(n.Labels)
	}
	for _, a := range n.Status.Addresses {
		ip, ok := parseIP(a.Address)
		if !ok {
			continue
		}
		out.Addresses = append(out.Addresses, NodeAddress{Type: string(a.Type), Address: ip})
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			out.Ready = c.Status == corev1.ConditionTrue
		}
	}
	return out
}

// parseIP parses an address of an API object. One with a zone
// ("fe80::1%eth0") is refused like one that does not parse: the API's
// validation refuses zones, a zone names an interface of some other host,
// and the allocator (internal/lbsvc) skips them in a Service's status too.
func parseIP(s string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(s)
	return ip, err == nil && ip.Zone() == ""
}

// sliceFromAPI reduces an EndpointSlice; ok is false for a slice vigil
// cannot use (FQDN or an unknown address type).
func sliceFromAPI(es *discoveryv1.EndpointSlice) (s Slice, ok bool) {
	switch es.AddressType {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
	default:
		return Slice{}, false
	}
	s = Slice{
		Namespace:   es.Namespace,
		Name:        es.Name,
		Service:     es.Labels[discoveryv1.LabelServiceName],
		AddressType: string(es.AddressType),
	}
	for _, p := range es.Ports {
		if p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
			continue // nil: "all ports", which vigil cannot balance
		}
		port := Port{Port: int(*p.Port), Protocol: string(corev1.ProtocolTCP)}
		if p.Name != nil {
			port.Name = *p.Name
		}
		if p.Protocol != nil {
			port.Protocol = string(*p.Protocol)
		}
		s.Ports = append(s.Ports, port)
	}
	for _, ep := range es.Endpoints {
		e := Endpoint{Ready: ep.Conditions.Ready == nil || *ep.Conditions.Ready}
		if ep.NodeName != nil {
			e.NodeName = *ep.NodeName
		}
		for _, a := range ep.Addresses {
			if ip, ok := parseIP(a); ok {
				e.Addresses = append(e.Addresses, ip)
			}
		}
		if len(e.Addresses) == 0 {
			continue
		}
		s.Endpoints = append(s.Endpoints, e)
	}
	return s, true
}

// vigilAnnotation is the prefix of the annotations a Service gives vigil.
const vigilAnnotation = "vigil.io/"

// serviceFromAPI reduces a Service; ok is false for one that is not of type
// LoadBalancer.
func serviceFromAPI(svc *corev1.Service) (s Service, ok bool) {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return Service{}, false
	}
	s = Service{Namespace: svc.Namespace, Name: svc.Name,
		Local: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal}
	if svc.Spec.LoadBalancerClass != nil {
		s.Class = *svc.Spec.LoadBalancerClass
	}
	for k, v := range svc.Annotations {
		if strings.HasPrefix(k, vigilAnnotation) {
			if s.Annotations == nil {
				s.Annotations = map[string]string{}
			}
			s.Annotations[k] = v
		}
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if ip, ok := parseIP(in.IP); ok && !slices.Contains(s.Addresses, ip) {
			s.Addresses = append(s.Addresses, ip)
		}
	}
	for _, p := range svc.Spec.Ports {
		if p.Port < 1 || p.Port > 65535 {
			continue
		}
		proto := string(p.Protocol)
		if proto == "" {
			proto = string(corev1.ProtocolTCP)
		}
		s.Ports = append(s.Ports, ServicePort{Name: p.Name, Protocol: proto, Port: int(p.Port)})
	}
	return s, true
}
