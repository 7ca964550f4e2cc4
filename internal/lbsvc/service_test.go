package lbsvc

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vigil-lb/vigil/internal/lbipam"
)

func TestMatches(t *testing.T) {
	lb, other := corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeNodePort
	for _, c := range []struct {
		typ          corev1.ServiceType
		class        *string
		defaultClass bool
		want         bool
	}{
		{lb, class(Class), false, true},
		{lb, class("example.com/lb"), true, false},
		{lb, nil, false, false},
		{lb, nil, true, true},
		{other, class(Class), true, false},
	} {
		s := &corev1.Service{Spec: corev1.ServiceSpec{Type: c.typ, LoadBalancerClass: c.class}}
		if got := matches(s, c.defaultClass); got != c.want {
			t.Errorf("type %s class %v default %v: %v", c.typ, c.class, c.defaultClass, got)
		}
	}
}

// request builds lbipam's Request or names the bad annotation or field
// and its value; it never panics on what the API hands it.
func TestRequest(t *testing.T) {
	svc := func(fams []corev1.IPFamily, ann map[string]string, lbIP string) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", Annotations: ann},
			Spec: corev1.ServiceSpec{IPFamilies: fams, LoadBalancerIP: lbIP,
				Ports: []corev1.ServicePort{{Protocol: corev1.ProtocolUDP, Port: 53}}},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
				{IP: "192.0.2.10"}, {Hostname: "lb.example.com"}, {IP: "junk"}, {IP: "::ffff:192.0.2.11"}}}},
		}
	}
	v4, v6 := corev1.IPv4Protocol, corev1.IPv6Protocol
	pools := []string{"default", "other"}
	for _, c := range []struct {
		name    string
		s       *corev1.Service
		want    []string // requested
		wantErr string
	}{
		{name: "plain", s: svc([]corev1.IPFamily{v4}, nil, "")},
		{name: "annotation", s: svc([]corev1.IPFamily{v4}, map[string]string{AnnotationAddress: "192.0.2.5"}, ""), want: []string{"192.0.2.5"}},
		{name: "annotation wins over the field", s: svc([]corev1.IPFamily{v4}, map[string]string{AnnotationAddress: "192.0.2.5"}, "192.0.2.6"), want: []string{"192.0.2.5"}},
		{name: "field", s: svc([]corev1.IPFamily{v4}, nil, "192.0.2.6"), want: []string{"192.0.2.6"}},
		{name: "dual", s: svc([]corev1.IPFamily{v6, v4}, map[string]string{AnnotationAddress: "192.0.2.5,2001:db8::5"}, ""), want: []string{"192.0.2.5", "2001:db8::5"}},
		{name: "mapped", s: svc([]corev1.IPFamily{v4}, map[string]string{AnnotationAddress: "::ffff:192.0.2.5"}, ""), want: []string{"192.0.2.5"}},
		{name: "not an address", s: svc([]corev1.IPFamily{v4}, map[string]string{AnnotationAddress: "192.0.2.5,x"}, ""), wantErr: `vigil.io/address "192.0.2.5,x": "x" is not an IP address`},
		{name: "bad field", s: svc([]corev1.IPFamily{v4}, nil, "nope"), wantErr: `spec.loadBalancerIP "nope": "nope" is not an IP address`},
		{name: "empty", s: svc([]corev1.IPFamily{v4}, map[string]string{AnnotationAddress: " "}, ""), wantErr: `vigil.io/address " ": empty`},
		{name: "zone", s: svc([]corev1.IPFamily{v6}, map[string]string{AnnotationAddress: "fe80::1%eth0"}, ""), wantErr: "not an IP address"},
		{name: "two of a family", s: svc([]corev1.IPFamily{v4}, map[string]string{AnnotationAddress: "192.0.2.5,192.0.2.6"}, ""), wantErr: "more than one address of IPv4"},
		{name: "wrong family", s: svc([]corev1.IPFamily{v4}, map[string]string{AnnotationAddress: "2001:db8::5"}, ""), wantErr: "2001:db8::5 is IPv6, spec.ipFamilies is [IPv4]"},
		{name: "unknown pool", s: svc([]corev1.IPFamily{v4}, map[string]string{AnnotationPool: "typo"}, ""), wantErr: `vigil.io/pool "typo": unknown pool`},
		{name: "no families", s: svc(nil, nil, ""), wantErr: "spec.ipFamilies"},
		{name: "bad families", s: svc([]corev1.IPFamily{v4, v4}, nil, ""), wantErr: "spec.ipFamilies"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := request(c.s, pools)
			if c.wantErr != "" {
				var ae *annotationError
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !errors.As(err, &ae) {
					t.Fatalf("error %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range r.Requested {
				got = append(got, a.String())
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("requested %v, want %v", got, c.want)
			}
			if r.Service != "ns/s" || len(r.Ports) != 1 || r.Ports[0] != (lbipam.Port{Protocol: "UDP", Port: 53}) ||
				!slices.Equal(r.Current, []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")}) {
				t.Fatalf("request %+v", r)
			}
		})
	}
}

// Only addresses in a pool are served; a Service with none is not.
func TestServed(t *testing.T) {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s"},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
			{IP: "10.9.9.9"}, {IP: "198.51.100.2"}, {IP: "192.0.2.11"}}}},
	}
	sv, ok := served(s, testPools)
	if !ok || sv.Pool != "other" || len(sv.Addrs) != 2 || sv.Addrs[0] != netip.MustParseAddr("198.51.100.2") {
		t.Fatalf("served %+v %v", sv, ok)
	}
	s.Status.LoadBalancer.Ingress = s.Status.LoadBalancer.Ingress[:1]
	if _, ok := served(s, testPools); ok {
		t.Fatal("a Service with no pool address is served")
	}
}
