package kube

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func ptr[T any](v T) *T { return &v }

func TestNodeFromAPI(t *testing.T) {
	tests := []struct {
		name string
		in   corev1.Node
		want Node
	}{
		{
			name: "ready control plane",
			in: corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: "cp-0", Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}},
				Status: corev1.NodeStatus{
					Addresses: []corev1.NodeAddress{
						{Type: corev1.NodeInternalIP, Address: "10.0.0.10"},
						{Type: corev1.NodeInternalIP, Address: "2001:db8::10"},
						{Type: corev1.NodeExternalIP, Address: "192.0.2.10"},
					},
					Conditions: []corev1.NodeCondition{
						{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse},
						{Type: corev1.NodeReady, Status: corev1.ConditionTrue},
					},
				},
			},
			want: Node{
				Name:   "cp-0",
				Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""},
				Addresses: []NodeAddress{
					{Type: "InternalIP", Address: netip.MustParseAddr("10.0.0.10")},
					{Type: "InternalIP", Address: netip.MustParseAddr("2001:db8::10")},
					{Type: "ExternalIP", Address: netip.MustParseAddr("192.0.2.10")},
				},
				Ready: true,
			},
		},
		{
			name: "hostname and bad addresses skipped, not ready",
			in: corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: "w-1"},
				Status: corev1.NodeStatus{
					Addresses: []corev1.NodeAddress{
						{Type: corev1.NodeHostName, Address: "w-1.example"},
						{Type: corev1.NodeInternalIP, Address: "10.0.0.300"},
						{Type: corev1.NodeInternalIP, Address: ""},
						{Type: corev1.NodeInternalIP, Address: "10.0.0.21"},
						{Type: corev1.NodeHostName, Address: "10.0.0.21"}, // an IP is kept whatever its type
					},
					Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown}},
				},
			},
			want: Node{Name: "w-1", Addresses: []NodeAddress{
				{Type: "InternalIP", Address: netip.MustParseAddr("10.0.0.21")},
				{Type: "Hostname", Address: netip.MustParseAddr("10.0.0.21")},
			}},
		},
		{
			name: "no status at all",
			in:   corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "new", Labels: map[string]string{}}},
			want: Node{Name: "new"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nodeFromAPI(&tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestSliceFromAPI(t *testing.T) {
	meta := metav1.ObjectMeta{Namespace: "ns", Name: "web-x1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}}
	tests := []struct {
		name   string
		in     discoveryv1.EndpointSlice
		want   Slice
		wantOK bool
	}{
		{
			name: "ready nil counts as ready, nil port skipped",
			in: discoveryv1.EndpointSlice{
				ObjectMeta:  meta,
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports: []discoveryv1.EndpointPort{
					{Name: ptr("http"), Port: ptr[int32](8080), Protocol: ptr(corev1.ProtocolTCP)},
					{Name: ptr("all")}, // nil port: all ports
					{Port: ptr[int32](53), Protocol: ptr(corev1.ProtocolUDP)},
					{Name: ptr("default-protocol"), Port: ptr[int32](9000)},
				},
				Endpoints: []discoveryv1.Endpoint{
					{Addresses: []string{"10.128.0.5"}, NodeName: ptr("w-1")},
					{Addresses: []string{"10.128.0.6"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}},
					{Addresses: []string{"10.128.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(true)}},
					{Addresses: []string{"not-an-ip"}},                               // dropped: no usable address
					{Addresses: []string{"bad", "10.128.0.8"}, NodeName: ptr("w-2")}, // bad one skipped
				},
			},
			want: Slice{
				Namespace: "ns", Name: "web-x1", Service: "web", AddressType: "IPv4",
				Ports: []Port{
					{Name: "http", Port: 8080, Protocol: "TCP"},
					{Port: 53, Protocol: "UDP"},
					{Name: "default-protocol", Port: 9000, Protocol: "TCP"},
				},
				Endpoints: []Endpoint{
					{Addresses: []netip.Addr{netip.MustParseAddr("10.128.0.5")}, Ready: true, NodeName: "w-1"},
					{Addresses: []netip.Addr{netip.MustParseAddr("10.128.0.6")}, Ready: true},
					{Addresses: []netip.Addr{netip.MustParseAddr("10.128.0.7")}, Ready: false},
					{Addresses: []netip.Addr{netip.MustParseAddr("10.128.0.8")}, Ready: true, NodeName: "w-2"},
				},
			},
			wantOK: true,
		},
		{
			name: "IPv6",
			in: discoveryv1.EndpointSlice{
				ObjectMeta:  meta,
				AddressType: discoveryv1.AddressTypeIPv6,
				Ports:       []discoveryv1.EndpointPort{{Port: ptr[int32](443)}},
				Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"2001:db8::5"}}},
			},
			want: Slice{
				Namespace: "ns", Name: "web-x1", Service: "web", AddressType: "IPv6",
				Ports:     []Port{{Port: 443, Protocol: "TCP"}},
				Endpoints: []Endpoint{{Addresses: []netip.Addr{netip.MustParseAddr("2001:db8::5")}, Ready: true}},
			},
			wantOK: true,
		},
		{
			name: "FQDN slice dropped",
			in: discoveryv1.EndpointSlice{
				ObjectMeta:  meta,
				AddressType: discoveryv1.AddressTypeFQDN,
				Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"db.example"}}},
			},
		},
		{
			name: "port out of range skipped",
			in: discoveryv1.EndpointSlice{
				ObjectMeta:  meta,
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Port: ptr[int32](0)}, {Port: ptr[int32](70000)}},
			},
			want:   Slice{Namespace: "ns", Name: "web-x1", Service: "web", AddressType: "IPv4"},
			wantOK: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := sliceFromAPI(&tt.in)
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestServiceFromAPI(t *testing.T) {
	lb := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "front", Annotations: map[string]string{
			"vigil.io/pool": "public", "vigil.io/sharing-key": "k", "other.io/x": "y"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr("vigil.io/lb"),
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports:                 []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP}, {Port: 53, Protocol: corev1.ProtocolUDP}, {Name: "bad", Port: 0}, {Name: "noproto", Port: 80}}},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
			{IP: "192.0.2.10"}, {IP: "2001:db8::10"}, {IP: "192.0.2.10"}, {Hostname: "lb.example"}, {IP: "nonsense"}}}},
	}
	got, ok := serviceFromAPI(&lb)
	want := Service{Namespace: "web", Name: "front", Class: "vigil.io/lb", Local: true,
		Addresses:   []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")},
		Ports:       []ServicePort{{Name: "https", Protocol: "TCP", Port: 443}, {Protocol: "UDP", Port: 53}, {Name: "noproto", Protocol: "TCP", Port: 80}},
		Annotations: map[string]string{"vigil.io/pool": "public", "vigil.io/sharing-key": "k"}}
	if !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v (%v)\nwant %+v", got, ok, want)
	}
	lb.Spec.Type = corev1.ServiceTypeClusterIP
	if _, ok := serviceFromAPI(&lb); ok {
		t.Fatal("a ClusterIP Service was taken")
	}
}
