package kube

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vigil-lb/vigil/internal/config"
)

// The OpenShift example of docs/kubernetes.md, expanded on master-0 of a
// compact cluster whose routers run on master-0 and master-1, gives what
// the page says: the other masters as peers, every master's apiserver and
// every router as backends, and the ingress VIP's track up only where a
// router is.
func TestKubernetesDocExampleExpands(t *testing.T) {
	doc, err := os.ReadFile("../../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- kubernetes-example:begin -->\n```yaml\n")
	example, _, ok2 := strings.Cut(rest, "```\n<!-- kubernetes-example:end -->")
	if !ok || !ok2 {
		t.Fatal("docs/kubernetes.md has no example between the markers")
	}
	static, err := config.Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	static.Node = "master-0"

	cp := map[string]string{"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": ""}
	master := func(name, addr string) Node {
		return Node{Name: name, Labels: cp, Ready: true, Addresses: []NodeAddress{
			{Type: "InternalIP", Address: netip.MustParseAddr(addr)},
		}}
	}
	snap := &Snapshot{
		Nodes: []Node{master("master-0", "192.0.2.11"), master("master-1", "192.0.2.12"), master("master-2", "192.0.2.13")},
		Slices: []Slice{{
			Namespace: "openshift-ingress", Name: "router-internal-default-abcde", Service: "router-internal-default",
			AddressType: "IPv4",
			Ports:       []Port{{Name: "http", Port: 80}, {Name: "https", Port: 443}, {Name: "metrics", Port: 1936}},
			Endpoints: []Endpoint{
				{Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.11")}, Ready: true, NodeName: "master-0"},
				{Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.12")}, Ready: true, NodeName: "master-1"},
			},
		}},
	}
	x := Expand(static, snap, nil)

	backends := func(name string) []string {
		for _, b := range x.Config.Balancers {
			if b.Name == name {
				var out []string
				for _, be := range b.Backends {
					out = append(out, be.Address)
				}
				return out
			}
		}
		t.Fatalf("no balancer %s", name)
		return nil
	}
	for name, want := range map[string][]string{
		"api":           {"192.0.2.11:6443", "192.0.2.12:6443", "192.0.2.13:6443"},
		"ingress-https": {"192.0.2.11:443", "192.0.2.12:443"},
		"ingress-http":  {"192.0.2.11:80", "192.0.2.12:80"},
	} {
		if diff := cmp.Diff(want, backends(name)); diff != "" {
			t.Errorf("balancer %s backends (-want +got):\n%s", name, diff)
		}
	}
	for _, in := range x.Config.VRRP.Instances {
		if diff := cmp.Diff([]string{"192.0.2.12", "192.0.2.13"}, in.UnicastPeers); diff != "" {
			t.Errorf("instance %s peers (-want +got):\n%s", in.Name, diff)
		}
	}
	if len(x.Notes) != 0 {
		t.Errorf("notes: %q", x.Notes)
	}
	router := ServiceRef{"openshift-ingress", "router-internal-default"}
	if tr := EndpointTracks(x.Config, snap); !tr[router] {
		t.Errorf("master-0 runs a router, track %v", tr)
	}
	static.Node = "master-2"
	if tr := EndpointTracks(static, snap); tr[router] {
		t.Errorf("master-2 runs no router, track %v", tr)
	}
}
