package kube

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/vigil-lb/vigil/internal/config"
)

const expandConfig = `cluster: c
node: m0
vrrp:
  instances:
    - name: api
      interface: eth0
      vips: [192.0.2.5/24]
      unicast_peers_from: {nodes: {selector: "role=cp"}}
    - name: api6
      interface: eth0
      vips: ["2001:db8:1::5/64"]
      unicast_peers: ["2001:db8:1::99"]
      unicast_peers_from: {nodes: {selector: "role=cp"}}
    - name: bare
      interface: eth1
      vips: [198.51.100.7]
      unicast_peers_from: {nodes: {selector: "role=cp"}}
    - name: lonely
      interface: eth1
      vips: [198.51.100.8/24]
      unicast_peers_from: {nodes: {selector: "role=none"}}
      track: {endpoints: [{service: ns/web, weight: 10}]}
  pools:
    - name: pool
      interface: eth2
      vips: [203.0.113.10/24]
      nodes: [m0]
      track: {endpoints: [{service: ns/other}]}
balancers:
  - name: subnet
    listen: ["192.0.2.5:9445"]
    backends_from: {nodes: {selector: "role=cp", port: 6443}}
  - name: bare
    listen: ["198.51.100.7:9445"]
    backends_from: {nodes: {selector: "role=cp", port: 6443}}
  - name: any
    listen: [":9446"]
    backends_from: {nodes: {selector: "role=cp", port: 6443}}
  - name: v6
    listen: ["[2001:db8:1::5]:9445"]
    backends_from: {nodes: {selector: "role=cp", port: 6443}}
  - name: mixed
    listen: ["192.0.2.5:9447"]
    backends: [{address: "10.0.0.12:6443"}, {address: "10.9.9.9:6443", weight: 5}]
    backends_from:
      nodes: {selector: "role=cp", port: 6443}
      endpoints: {service: ns/web, port: https}
  - name: dsr
    listen: ["192.0.2.5:443"]
    mode: dsr
    interface: eth0
    backends_from: {endpoints: {service: ns/web, port: https}}
  - name: static
    listen: ["192.0.2.5:80"]
    backends: [{address: "10.0.0.1:80"}]
  - name: inside
    listen: ["192.0.2.50:9448"]
    backends_from: {nodes: {selector: "role=cp", port: 6443}}
`

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func node(name, role string, ready bool, addrs ...string) Node {
	n := Node{Name: name, Labels: map[string]string{"role": role}, Ready: ready}
	for i := 0; i+1 < len(addrs); i += 2 {
		var a netip.Addr
		if addrs[i] != "Hostname" {
			a = addr(addrs[i+1])
		}
		n.Addresses = append(n.Addresses, NodeAddress{Type: addrs[i], Address: a})
	}
	return n
}

// testSnapshot: m0 is this node and reports the VIP 192.0.2.5 among its
// addresses (kubelet can), m1 is NotReady and has its IPv4 address in the
// VIP subnet only as ExternalIP, m2 has only IPv6, m3 only a host name, w1
// is no control-plane Node.
func testSnapshot() *Snapshot {
	return &Snapshot{
		Nodes: []Node{
			node("m0", "cp", true, "InternalIP", "192.0.2.5", "InternalIP", "10.0.0.10", "InternalIP", "192.0.2.10"),
			node("m1", "cp", false, "InternalIP", "fd00::11", "InternalIP", "10.0.0.11", "ExternalIP", "192.0.2.11", "InternalIP", "2001:db8:1::11"),
			node("m2", "cp", true, "InternalIP", "fd00::12", "InternalIP", "2001:db8:1::12"),
			node("m3", "cp", true, "Hostname", "m3.example"),
			node("w1", "worker", true, "InternalIP", "10.0.0.21"),
		},
		Slices: []Slice{{
			Namespace: "ns", Name: "web-abc", Service: "web", AddressType: "IPv4",
			Ports: []Port{{Name: "https", Port: 6443, Protocol: "TCP"}},
			Endpoints: []Endpoint{
				{Addresses: []netip.Addr{addr("10.0.0.12")}, Ready: true, NodeName: "m1"},
				{Addresses: []netip.Addr{addr("192.0.2.11")}, Ready: true, NodeName: "m1"},
				{Addresses: []netip.Addr{addr("10.1.0.5")}, Ready: true},
				{Addresses: []netip.Addr{addr("10.1.0.6")}, Ready: false, NodeName: "m0"},
				{Addresses: []netip.Addr{addr("10.1.0.7")}, Ready: true, NodeName: "m0"},
			},
		}},
	}
}

func parse(t *testing.T) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(expandConfig))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func balancer(t *testing.T, c *config.Config, name string) config.Balancer {
	t.Helper()
	for _, b := range c.Balancers {
		if b.Name == name {
			return b
		}
	}
	t.Fatalf("no balancer %s", name)
	return config.Balancer{}
}

func TestExpandBackends(t *testing.T) {
	x := Expand(parse(t), testSnapshot(), nil)
	cases := []struct {
		balancer string
		want     map[string]string // address -> origin, in backend order below
		order    []string
		weights  []int
	}{
		{ // The address in the VIP's subnet, ExternalIP too; never the VIP; m2 has none.
			"subnet", map[string]string{"192.0.2.10:6443": "node m0", "192.0.2.11:6443": "node m1"},
			[]string{"192.0.2.10:6443", "192.0.2.11:6443"}, []int{1, 1}},
		{ // A VIP without prefix length: the InternalIP of its family.
			"bare", map[string]string{"10.0.0.10:6443": "node m0", "10.0.0.11:6443": "node m1"},
			[]string{"10.0.0.10:6443", "10.0.0.11:6443"}, []int{1, 1}},
		{ // :PORT: InternalIP, IPv4 first, else IPv6.
			"any", map[string]string{"10.0.0.10:6443": "node m0", "10.0.0.11:6443": "node m1", "[fd00::12]:6443": "node m2"},
			[]string{"10.0.0.10:6443", "10.0.0.11:6443", "[fd00::12]:6443"}, []int{1, 1, 1}},
		{ // An IPv6 VIP's subnet beats the first IPv6 InternalIP.
			"v6", map[string]string{"[2001:db8:1::11]:6443": "node m1", "[2001:db8:1::12]:6443": "node m2"},
			[]string{"[2001:db8:1::11]:6443", "[2001:db8:1::12]:6443"}, []int{1, 1}},
		{ // Static first as written, then generated sorted; each address once, the first source wins.
			"mixed", map[string]string{
				"10.0.0.12:6443": "static", "10.9.9.9:6443": "static", "10.1.0.5:6443": "endpoints ns/web",
				"10.1.0.7:6443": "endpoints ns/web (node m0)", "192.0.2.10:6443": "node m0", "192.0.2.11:6443": "node m1"},
			[]string{"10.0.0.12:6443", "10.9.9.9:6443", "10.1.0.5:6443", "10.1.0.7:6443", "192.0.2.10:6443", "192.0.2.11:6443"},
			[]int{1, 5, 1, 1, 1, 1}},
		{ // The named port resolves to 6443, not the listen port.
			"dsr", map[string]string{}, nil, nil},
		{"static", map[string]string{"10.0.0.1:80": "static"}, []string{"10.0.0.1:80"}, []int{1}},
		{ // Not a VIP, but in a VIP's subnet: that subnet.
			"inside", map[string]string{"192.0.2.10:6443": "node m0", "192.0.2.11:6443": "node m1"},
			[]string{"192.0.2.10:6443", "192.0.2.11:6443"}, []int{1, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.balancer, func(t *testing.T) {
			b := balancer(t, x.Config, tc.balancer)
			var got []string
			var weights []int
			for _, be := range b.Backends {
				got = append(got, be.Address)
				if be.Weight == nil {
					t.Fatalf("%s has no weight: defaults not applied", be.Address)
				}
				weights = append(weights, *be.Weight)
			}
			if d := cmp.Diff(tc.order, got, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("backends (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.weights, weights, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("weights (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.want, x.Origins[tc.balancer], cmpopts.EquateEmpty()); d != "" {
				t.Errorf("origins (-want +got):\n%s", d)
			}
		})
	}
	for _, want := range []string{
		"balancers[0] subnet: Node m2 has no address in 192.0.2.0/24 nor InternalIP of IPv4; left out",
		"balancers[0] subnet: Node m3 has no address",
		"balancers[1] bare: Node m2 has no address InternalIP of IPv4; left out",
		"balancers[2] any: Node m3 has no address InternalIP of IPv4 or IPv6; left out",
		"balancers[3] v6: Node m0 has no address in 2001:db8:1::/64 nor InternalIP of IPv6; left out",
		"balancers[5] dsr: 10.0.0.12:6443 (endpoints ns/web (node m1)) is not on the listen port 443, and mode dsr does not change ports; left out",
	} {
		if !slices.ContainsFunc(x.Notes, func(n string) bool { return strings.HasPrefix(n, want) }) {
			t.Errorf("no note %q in\n%s", want, strings.Join(x.Notes, "\n"))
		}
	}
	for _, n := range x.Notes {
		if strings.Contains(n, "w1") || strings.Contains(n, "Node m1") {
			t.Errorf("note about a Node that was not left out: %s", n)
		}
	}
}

func TestExpandDSRFamily(t *testing.T) {
	c := parse(t)
	snap := testSnapshot()
	snap.Slices = append(snap.Slices, Slice{Namespace: "ns", Name: "web-v6", Service: "web", AddressType: "IPv6",
		Ports:     []Port{{Name: "https", Port: 443}},
		Endpoints: []Endpoint{{Addresses: []netip.Addr{addr("2001:db8::7")}, Ready: true}}})
	snap.Slices[0].Ports[0].Port = 443
	x := Expand(c, snap, nil)
	b := balancer(t, x.Config, "dsr")
	if len(b.Backends) != 4 || b.Backends[0].Address != "10.0.0.12:443" {
		t.Fatalf("dsr backends %+v", b.Backends)
	}
	if !slices.Contains(x.Notes, "balancers[5] dsr: [2001:db8::7]:443 (endpoints ns/web) is not IPv4 like the listen address; left out") {
		t.Fatalf("notes:\n%s", strings.Join(x.Notes, "\n"))
	}
}

func TestExpandPeers(t *testing.T) {
	cases := []struct {
		name  string
		prev  Peers
		snap  *Snapshot
		want  map[string][]string // instance -> unicast_peers
		peers Peers
		notes []string
	}{
		{
			name: "from Nodes", snap: testSnapshot(),
			want: map[string][]string{
				"api":    {"192.0.2.11"},                                         // the subnet's address, m2 has none, m0 is this node
				"api6":   {"2001:db8:1::99", "2001:db8:1::11", "2001:db8:1::12"}, // static first
				"bare":   {"10.0.0.11"},                                          // no prefix: InternalIP of IPv4
				"lonely": nil,
			},
			peers: Peers{"api": {"192.0.2.11"}, "api6": {"2001:db8:1::99", "2001:db8:1::11", "2001:db8:1::12"}, "bare": {"10.0.0.11"}},
			notes: []string{
				"vrrp.instances[0] api: Node m2 has no address in 192.0.2.0/24 nor InternalIP of IPv4; left out of the peers",
				`vrrp.instances[3] lonely: no peer Node matches "role=none" and no peers were applied before; unicast_peers stays empty (multicast)`,
			},
		},
		{
			name: "no peer left: keep the last ones", snap: &Snapshot{Nodes: []Node{node("m0", "cp", true, "InternalIP", "192.0.2.10")}},
			prev: Peers{"api": {"192.0.2.11", "192.0.2.12"}, "lonely": {"198.51.100.9"}},
			want: map[string][]string{
				"api":    {"192.0.2.11", "192.0.2.12"},
				"api6":   {"2001:db8:1::99"}, // static peers are peers: prev is not needed
				"bare":   nil,                // no prev: its static list, empty, stays
				"lonely": {"198.51.100.9"},
			},
			peers: Peers{"api": {"192.0.2.11", "192.0.2.12"}, "api6": {"2001:db8:1::99"}, "lonely": {"198.51.100.9"}},
			notes: []string{
				`vrrp.instances[0] api: no peer Node matches "role=cp"; keeping the last 2 peers`,
				`vrrp.instances[3] lonely: no peer Node matches "role=none"; keeping the last 1 peers`,
				`vrrp.instances[2] bare: no peer Node matches "role=cp" and no peers were applied before; unicast_peers stays empty (multicast)`,
			},
		},
		{
			name: "no snapshot", snap: nil, prev: Peers{"bare": {"198.51.100.1"}},
			want:  map[string][]string{"api": nil, "api6": {"2001:db8:1::99"}, "bare": {"198.51.100.1"}, "lonely": nil},
			peers: Peers{"api6": {"2001:db8:1::99"}, "bare": {"198.51.100.1"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := Expand(parse(t), tc.snap, tc.prev)
			got := map[string][]string{}
			for _, in := range x.Config.VRRP.Instances {
				got[in.Name] = in.UnicastPeers
			}
			if d := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("unicast_peers (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.peers, x.Peers, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("Peers (-want +got):\n%s", d)
			}
			for _, n := range tc.notes {
				if !slices.Contains(x.Notes, n) {
					t.Errorf("no note %q in\n%s", n, strings.Join(x.Notes, "\n"))
				}
			}
			// Peers handed back must not alias prev.
			if p := x.Peers["api"]; len(p) > 0 && len(tc.prev["api"]) > 0 && &p[0] == &tc.prev["api"][0] {
				t.Error("Peers shares its slice with prev")
			}
		})
	}
}

// Expand never changes the static config or the snapshot, and what it
// returns shares nothing with them.
func TestExpandLeavesStaticAlone(t *testing.T) {
	static := parse(t)
	before := static.Clone()
	snap := testSnapshot()
	snapBefore := testSnapshot()
	prev := Peers{"api": {"192.0.2.99"}}
	x := Expand(static, snap, prev)
	opts := cmp.Options{cmpopts.IgnoreUnexported(config.Config{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })}
	if d := cmp.Diff(before, static, opts); d != "" {
		t.Fatalf("Expand changed the static config (-before +after):\n%s", d)
	}
	if d := cmp.Diff(snapBefore, snap, opts); d != "" {
		t.Fatalf("Expand changed the snapshot (-before +after):\n%s", d)
	}
	// Change everything reachable in the result: the static config stays.
	mixed := &x.Config.Balancers[4]
	*mixed.Backends[0].Weight = 77
	mixed.Backends[1].Address = "changed"
	mixed.BackendsFrom.Nodes.Port = 1
	x.Config.VRRP.Instances[1].UnicastPeers[0] = "changed"
	x.Config.VRRP.Instances[0].UnicastPeersFrom.Nodes.Selector = "changed"
	*x.Config.VRRP.Instances[0].Preempt = false
	x.Peers["api"][0] = "changed"
	if d := cmp.Diff(before, static, opts); d != "" {
		t.Fatalf("changing the expanded config changed the static one (-before +after):\n%s", d)
	}
	if prev["api"][0] != "192.0.2.99" {
		t.Fatal("changing Peers changed prev")
	}
	if x.Config == static {
		t.Fatal("Expand returned the static config itself")
	}
}

func TestEndpointTracks(t *testing.T) {
	c := parse(t)
	got := EndpointTracks(c, testSnapshot())
	want := map[ServiceRef]bool{{"ns", "web"}: true, {"ns", "other"}: false}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("EndpointTracks (-want +got):\n%s", d)
	}
	// Ready elsewhere only, or not ready here: false.
	snap := testSnapshot()
	snap.Slices[0].Endpoints[4].Ready = false
	if EndpointTracks(c, snap)[ServiceRef{"ns", "web"}] {
		t.Fatal("ns/web counts as ready on m0 with only a not-ready endpoint there")
	}
	if got := EndpointTracks(c, nil); len(got) != 2 || got[ServiceRef{"ns", "web"}] {
		t.Fatalf("without a snapshot: %v", got)
	}
}

// A Config built in memory, not validated: a bad selector is a note, not a
// panic; a numeric endpoints port is used as it is.
func TestExpandUnvalidated(t *testing.T) {
	c := &config.Config{Node: "m0", Balancers: []config.Balancer{{
		Name: "b", Listen: []string{":443"},
		BackendsFrom: &config.BackendsFrom{
			Nodes:     &config.NodesSource{Selector: "=bad", Port: 443},
			Endpoints: &config.EndpointsSource{Service: "ns/web", Port: "8443"},
		},
	}}}
	x := Expand(c, testSnapshot(), nil)
	if len(x.Notes) != 1 || !strings.HasPrefix(x.Notes[0], `balancers[0] b: backends_from.nodes.selector "=bad": `) {
		t.Fatalf("notes %q", x.Notes)
	}
	var got []string
	for _, be := range x.Config.Balancers[0].Backends {
		got = append(got, be.Address)
	}
	want := []string{"10.0.0.12:8443", "10.1.0.5:8443", "10.1.0.7:8443", "192.0.2.11:8443"}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("backends (-want +got):\n%s", d)
	}
}

func TestDiffNamesAddedAndRemovedMembers(t *testing.T) {
	old := Expanded{
		Origins: map[string]map[string]string{"api": {"10.0.0.1:6443": "node m1", "10.0.0.2:6443": "node m2"}},
		Peers:   Peers{"vip": {"10.0.0.2"}},
	}
	x := Expanded{
		Origins: map[string]map[string]string{"api": {"10.0.0.1:6443": "node m1", "10.0.0.3:6443": "node m3"},
			"ingress": {"10.1.0.5:443": "endpoints ns/router (node m1)"}},
		Peers: Peers{"vip": {"10.0.0.2", "10.0.0.3"}},
	}
	got := Diff(old, x)
	want := []string{
		"balancer api: +10.0.0.3:6443 (node m3), -10.0.0.2:6443 (node m2)",
		"balancer ingress: +10.1.0.5:443 (endpoints ns/router (node m1))",
		"vrrp instance vip unicast peers: +10.0.0.3",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Diff:\n got %q\nwant %q", got, want)
	}
	if d := Diff(x, x); len(d) != 0 {
		t.Fatalf("no change gave %q", d)
	}
}
