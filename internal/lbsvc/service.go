package lbsvc

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/vigil-lb/vigil/internal/lbipam"
)

// Class is the spec.loadBalancerClass of the Services vigil serves.
const Class = "vigil.io/lb"

// Annotations a Service may carry.
const (
	// AnnotationAddress asks for addresses: comma-separated, at most one
	// per family. Without it, the deprecated spec.loadBalancerIP is read.
	AnnotationAddress = "vigil.io/address"
	// AnnotationPool names the pool to allocate from; without it, the
	// auto-assign pools are used.
	AnnotationPool = "vigil.io/pool"
	// AnnotationSharingKey lets Services with the same key share an
	// address when their ports do not clash.
	AnnotationSharingKey = "vigil.io/sharing-key"
)

// Key names a Service: NAMESPACE/NAME.
type Key struct{ Namespace, Name string }

func (k Key) String() string { return k.Namespace + "/" + k.Name }

func keyOf(s *corev1.Service) Key { return Key{s.Namespace, s.Name} }

// Service is a LoadBalancer Service vigil serves, as the dataplane needs it.
type Service struct {
	Key
	// Addrs are the addresses of status.loadBalancer.ingress that lie in
	// one of vigil's pools, in status order.
	Addrs []netip.Addr
	// Pool holds the first address ("" if it is in none, which Addrs
	// rules out).
	Pool string
	// Ports of the Service.
	Ports []Port
	// ExternalTrafficPolicy is "Cluster" or "Local".
	ExternalTrafficPolicy string
	// Families are spec.ipFamilies, in order.
	Families []lbipam.Family
	// SharingKey is the vigil.io/sharing-key annotation.
	SharingKey string
}

// Port is one port of a Service.
type Port struct {
	Name     string
	Protocol string // TCP, UDP, SCTP
	Port     int
	// TargetPort is the backends' port; TargetPortName the named port
	// of the pods instead (then TargetPort is 0).
	TargetPort     int
	TargetPortName string
	NodePort       int
}

// matches reports whether vigil serves s: type LoadBalancer, and vigil's
// class, or no class when defaultClass.
func matches(s *corev1.Service, defaultClass bool) bool {
	if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if s.Spec.LoadBalancerClass == nil {
		return defaultClass
	}
	return *s.Spec.LoadBalancerClass == Class
}

// ingressAddrs returns the IPs of s's status, in order, skipping
// hostnames and entries that do not parse (another writer's).
func ingressAddrs(s *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range s.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil && a.Zone() == "" {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// families returns spec.ipFamilies.
func families(s *corev1.Service) []lbipam.Family {
	var out []lbipam.Family
	for _, f := range s.Spec.IPFamilies {
		out = append(out, lbipam.Family(f))
	}
	return out
}

func familyOf(a netip.Addr) lbipam.Family {
	if a.Is4() {
		return lbipam.IPv4
	}
	return lbipam.IPv6
}

// annotationError is a bad annotation or field: no status change, an
// AllocationFailed Event naming it.
type annotationError struct {
	field, value, why string
}

func (e *annotationError) Error() string {
	return fmt.Sprintf("%s %q: %s", e.field, e.value, e.why)
}

// request builds s's lbipam request. pools are the configured pool names.
// The error names the annotation (or field) and its value.
func request(s *corev1.Service, pools []string) (lbipam.Request, error) {
	r := lbipam.Request{
		Service:    keyOf(s).String(),
		Created:    s.CreationTimestamp.Time,
		Pool:       s.Annotations[AnnotationPool],
		SharingKey: s.Annotations[AnnotationSharingKey],
		Families:   families(s),
		Current:    ingressAddrs(s),
	}
	if len(r.Families) == 0 {
		return r, &annotationError{"spec.ipFamilies", "", "empty"}
	}
	for i, f := range r.Families {
		if f != lbipam.IPv4 && f != lbipam.IPv6 || slices.Index(r.Families, f) != i {
			return r, &annotationError{"spec.ipFamilies", fmt.Sprint(s.Spec.IPFamilies), "not one or two distinct families"}
		}
	}
	if v, ok := s.Annotations[AnnotationPool]; ok && !slices.Contains(pools, v) {
		return r, &annotationError{AnnotationPool, v, "unknown pool"}
	}
	field, value := "", ""
	if v, ok := s.Annotations[AnnotationAddress]; ok {
		field, value = AnnotationAddress, v
		if strings.TrimSpace(v) == "" {
			return r, &annotationError{field, value, "empty"}
		}
	} else if s.Spec.LoadBalancerIP != "" {
		field, value = "spec.loadBalancerIP", s.Spec.LoadBalancerIP
	}
	if value != "" {
		for _, part := range strings.Split(value, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(part))
			if err != nil || a.Zone() != "" {
				return r, &annotationError{field, value, fmt.Sprintf("%q is not an IP address", strings.TrimSpace(part))}
			}
			a = a.Unmap()
			f := familyOf(a)
			if !slices.Contains(r.Families, f) {
				return r, &annotationError{field, value, fmt.Sprintf("%s is %s, spec.ipFamilies is %v", a, f, s.Spec.IPFamilies)}
			}
			if slices.ContainsFunc(r.Requested, func(b netip.Addr) bool { return familyOf(b) == f }) {
				return r, &annotationError{field, value, "more than one address of " + string(f)}
			}
			r.Requested = append(r.Requested, a)
		}
	}
	for _, p := range s.Spec.Ports {
		r.Ports = append(r.Ports, lbipam.Port{Protocol: string(p.Protocol), Port: int(p.Port)})
	}
	return r, nil
}

// served reduces s to what the dataplane needs; ok is false when s has no
// address in a pool. Addresses in no pool are never served: vigil only
// announces its own.
func served(s *corev1.Service, pools []lbipam.Pool) (Service, bool) {
	out := Service{
		Key:                   keyOf(s),
		ExternalTrafficPolicy: string(s.Spec.ExternalTrafficPolicy),
		Families:              families(s),
		SharingKey:            s.Annotations[AnnotationSharingKey],
	}
	for _, a := range ingressAddrs(s) {
		if p := lbipam.PoolOf(pools, a); p != "" {
			if out.Pool == "" {
				out.Pool = p
			}
			out.Addrs = append(out.Addrs, a)
		}
	}
	if len(out.Addrs) == 0 {
		return Service{}, false
	}
	for _, p := range s.Spec.Ports {
		sp := Port{Name: p.Name, Protocol: string(p.Protocol), Port: int(p.Port), NodePort: int(p.NodePort)}
		if p.TargetPort.StrVal != "" {
			sp.TargetPortName = p.TargetPort.StrVal
		} else {
			sp.TargetPort = p.TargetPort.IntValue()
		}
		out.Ports = append(out.Ports, sp)
	}
	return out, true
}

// poolAddrs returns the addresses of s's status that lie in a pool.
func poolAddrs(s *corev1.Service, pools []lbipam.Pool) []netip.Addr {
	var out []netip.Addr
	for _, a := range ingressAddrs(s) {
		if lbipam.PoolOf(pools, a) != "" {
			out = append(out, a)
		}
	}
	return out
}

// ingress is the status vigil writes for addrs.
func ingress(addrs []netip.Addr, mode corev1.LoadBalancerIPMode) []corev1.LoadBalancerIngress {
	var out []corev1.LoadBalancerIngress
	for _, a := range addrs {
		m := mode
		out = append(out, corev1.LoadBalancerIngress{IP: a.String(), IPMode: &m})
	}
	return out
}

// statusIs reports whether s's status is exactly what vigil would write
// for addrs.
func statusIs(s *corev1.Service, addrs []netip.Addr, mode corev1.LoadBalancerIPMode) bool {
	in := s.Status.LoadBalancer.Ingress
	if len(in) != len(addrs) {
		return false
	}
	for i, a := range addrs {
		if in[i].IP != a.String() || in[i].Hostname != "" || in[i].IPMode == nil || *in[i].IPMode != mode || len(in[i].Ports) != 0 {
			return false
		}
	}
	return true
}
