package kubetest

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Node builds a Node as the kubelet reports it: labels, InternalIP
// addresses (and a Hostname), and the Ready condition.
func Node(name string, labels map[string]string, ready bool, addrs ...netip.Addr) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	for _, a := range addrs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a.String()})
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status, Reason: "KubeletReady",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	return n
}

// RegisterNode creates n and then writes its status, as the kubelet does
// (status is ignored on create), for programs that are not tests.
func RegisterNode(ctx context.Context, c kubernetes.Interface, n *corev1.Node) (*corev1.Node, error) {
	created, err := c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubetest: create Node %s: %w", n.Name, err)
	}
	created.Status = n.Status
	updated, err := c.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubetest: Node %s status: %w", n.Name, err)
	}
	return updated, nil
}

// CreateNode creates n and then writes its status, as the kubelet does.
func CreateNode(t testing.TB, c kubernetes.Interface, n *corev1.Node) *corev1.Node {
	t.Helper()
	ctx, cancel := ctxTimeout()
	defer cancel()
	updated, err := RegisterNode(ctx, c, n)
	if err != nil {
		t.Fatal(err)
	}
	return updated
}

// DeleteNode deletes the named Node.
func DeleteNode(t testing.TB, c kubernetes.Interface, name string) {
	t.Helper()
	ctx, cancel := ctxTimeout()
	defer cancel()
	if err := c.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("kubetest: delete Node %s: %v", name, err)
	}
}

// Endpoint is one endpoint of a Slice.
type Endpoint struct {
	Address netip.Addr
	Node    string
	Ready   bool
}

// Slice builds an EndpointSlice of Service ns/svc as the EndpointSlice
// controller writes it: the service-name and managed-by labels, one named
// TCP port, and the endpoints' conditions and node names.
func Slice(ns, name, svc, portName string, port int32, eps ...Endpoint) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc,
			discoveryv1.LabelManagedBy:   "endpointslice-controller.k8s.io",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	proto := corev1.ProtocolTCP
	s.Ports = []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}}
	for _, ep := range eps {
		if ep.Address.Is6() {
			s.AddressType = discoveryv1.AddressTypeIPv6
		}
		ready, serving, terminating := ep.Ready, ep.Ready, false
		node := ep.Node
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ep.Address.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			NodeName:   &node,
		})
	}
	return s
}

// ApplySlice creates s, or replaces the slice of that name.
func ApplySlice(t testing.TB, c kubernetes.Interface, s *discoveryv1.EndpointSlice) {
	t.Helper()
	ctx, cancel := ctxTimeout()
	defer cancel()
	api := c.DiscoveryV1().EndpointSlices(s.Namespace)
	old, err := api.Get(ctx, s.Name, metav1.GetOptions{})
	if err == nil {
		s = s.DeepCopy()
		s.ResourceVersion = old.ResourceVersion
		_, err = api.Update(ctx, s, metav1.UpdateOptions{})
	} else {
		_, err = api.Create(ctx, s, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("kubetest: apply EndpointSlice %s/%s: %v", s.Namespace, s.Name, err)
	}
}

// CreateNamespace creates namespace ns.
func CreateNamespace(t testing.TB, c kubernetes.Interface, ns string) {
	t.Helper()
	ctx, cancel := ctxTimeout()
	defer cancel()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kubetest: create Namespace %s: %v", ns, err)
	}
}
