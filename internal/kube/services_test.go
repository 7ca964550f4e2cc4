package kube

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vigil-lb/vigil/internal/config"
)

const servicesConfig = `cluster: c
node: n1
bgp:
  asn: 64512
  router_id: 10.0.0.1
  neighbors: [{address: 10.0.0.254, asn: 64500}]
kubernetes:
  state_file: ""
  services:
    dataplane: proxy
    pools:
      - {name: lan, addresses: ["192.0.2.200-192.0.2.220"], interface: eth0, nodes: "lb=yes"}
      - {name: wan, addresses: ["198.51.100.0/28"], announce: bgp, nodes: "lb=yes", bgp: {communities: ["64512:7"], local_pref: 200}}
`

func servicesSnapshot() *Snapshot {
	ip := netip.MustParseAddr
	node := func(name string, lb bool) Node {
		n := Node{Name: name, Ready: true, Addresses: []NodeAddress{{"InternalIP", ip("10.0.0." + name[1:])}}}
		if lb {
			n.Labels = map[string]string{"lb": "yes"}
		}
		return n
	}
	return &Snapshot{
		Nodes: []Node{node("n1", true), node("n2", true), node("n3", false)},
		Slices: []Slice{{Namespace: "web", Name: "front-1", Service: "front", AddressType: "IPv4",
			Ports:     []Port{{Name: "http", Port: 8080, Protocol: "TCP"}},
			Endpoints: []Endpoint{{Addresses: []netip.Addr{ip("10.1.0.1")}, Ready: true, NodeName: "n2"}, {Addresses: []netip.Addr{ip("10.1.0.2")}, Ready: false, NodeName: "n1"}}}},
		Services: []Service{
			{Namespace: "web", Name: "front", Class: config.ServiceClass, Addresses: []netip.Addr{ip("192.0.2.200")},
				Ports: []ServicePort{{Name: "http", Protocol: "TCP", Port: 80}, {Name: "dns", Protocol: "UDP", Port: 53}}},
			{Namespace: "web", Name: "public", Addresses: []netip.Addr{ip("198.51.100.1")}, Local: true,
				Ports: []ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}},
			{Namespace: "web", Name: "theirs", Class: "other.io/lb", Addresses: []netip.Addr{ip("192.0.2.201")},
				Ports: []ServicePort{{Protocol: "TCP", Port: 80}}},
			{Namespace: "web", Name: "stray", Addresses: []netip.Addr{ip("203.0.113.9")}, Ports: []ServicePort{{Protocol: "TCP", Port: 80}}},
			{Namespace: "web", Name: "pending", Ports: []ServicePort{{Protocol: "TCP", Port: 80}}},
		},
	}
}

// The Services vigil serves become proxy balancers, BGP announcements of
// bgp pools (gated on a local endpoint for Local) and the L2 slots of l2
// pools; another class, an address in no pool and UDP ports are left out
// with a note.
func TestExpandServices(t *testing.T) {
	static, err := config.Parse([]byte(servicesConfig))
	if err != nil {
		t.Fatal(err)
	}
	x := Expand(static, servicesSnapshot(), nil)
	c := x.Config

	var names []string
	for _, b := range c.Balancers {
		names = append(names, b.Name)
	}
	if !slices.Equal(names, []string{"service/web/front/http", "service/web/public/http"}) {
		t.Fatalf("balancers %v", names)
	}
	front := c.Balancers[0]
	if !slices.Equal(front.Listen, []string{"192.0.2.200:80"}) || len(front.Backends) != 1 || front.Backends[0].Address != "10.1.0.1:8080" ||
		*front.Backends[0].Weight != 1 || front.MaxConn == 0 || front.Retries == nil {
		t.Fatalf("front's balancer %+v", front)
	}
	if got := x.Origins["service/web/front/http"]["10.1.0.1:8080"]; got != "endpoints web/front (node n2)" {
		t.Fatalf("origin %q", got)
	}

	if len(c.BGP.Announce) != 1 {
		t.Fatalf("announcements %+v", c.BGP.Announce)
	}
	an := c.BGP.Announce[0]
	if an.Prefix != "198.51.100.1/32" || an.WhenEndpoints != "web/public" || an.LocalPref != 200 || !slices.Equal(an.Communities, []string{"64512:7"}) {
		t.Fatalf("announcement %+v", an)
	}

	// Slots n1/n2 and n2/n1 (n3 may not announce); 192.0.2.200 on one of them.
	if got := slotNames(c); !slices.Equal(got, []string{"slot/lan/n1/n2", "slot/lan/n2/n1"}) {
		t.Fatalf("slots %v", got)
	}
	carried := 0
	for _, in := range c.VRRP.SlotInstances {
		if in.Interface != "eth0" || in.VIPs[0] != "0.0.0.0/32" || in.Slot.Pool != "lan" || in.Priority < 1 || in.VRID < 1 {
			t.Fatalf("slot instance %+v", in)
		}
		carried += len(in.Slot.Extra)
	}
	if carried != 1 {
		t.Fatalf("the slots carry %d addresses, want 1", carried)
	}
	var owners []string
	for _, sa := range x.ServiceAddrs {
		owners = append(owners, sa.Service.String()+"="+sa.Owner)
		if sa.Owner != "" && !strings.HasPrefix(sa.Slot, "slot/lan/"+sa.Owner+"/") {
			t.Fatalf("%s: owner %s, slot %s", sa.Addr, sa.Owner, sa.Slot)
		}
	}
	slices.Sort(owners)
	if len(owners) != 2 || !strings.HasPrefix(owners[0], "web/front=n") || owners[1] != "web/public=" {
		t.Fatalf("service addresses %v", owners)
	}
	notes := strings.Join(x.Notes, "\n")
	for _, want := range []string{"203.0.113.9 is in no pool", "53/UDP: dataplane proxy carries TCP only"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}
	if strings.Contains(notes, "theirs") {
		t.Errorf("a Service of another class was looked at:\n%s", notes)
	}

	// A node that joins gets its slots at once (the VRRP component adds
	// them live); the slots that stay keep their VRIDs; one that leaves
	// takes its slots with it.
	snap := servicesSnapshot()
	snap.Nodes[2].Labels = map[string]string{"lb": "yes"}
	y := ExpandFrom(static, snap, x)
	if got := slotNames(y.Config); len(got) != 6 || !slices.Contains(got, "slot/lan/n3/n1") {
		t.Fatalf("after n3 joined: slots %v", got)
	}
	for _, was := range c.VRRP.SlotInstances {
		for _, now := range y.Config.VRRP.SlotInstances {
			if now.Name == was.Name && now.VRID != was.VRID {
				t.Errorf("slot %s: VRID %d, was %d", now.Name, now.VRID, was.VRID)
			}
		}
	}
	snap.Nodes = snap.Nodes[1:] // n1 deleted
	z := ExpandFrom(static, snap, y)
	if got := slotNames(z.Config); len(got) != 0 {
		t.Fatalf("n1 deleted, yet it runs slots %v", got)
	}
	for _, sa := range z.ServiceAddrs {
		if sa.Owner == "n1" {
			t.Fatalf("%s still owned by the deleted n1", sa.Addr)
		}
	}
}

func slotNames(c *config.Config) []string {
	var out []string
	for _, in := range c.VRRP.SlotInstances {
		out = append(out, in.Name)
	}
	slices.Sort(out)
	return out
}

// A node outside the pool's selector runs no slot and announces nothing.
func TestExpandServicesNotEligible(t *testing.T) {
	static, err := config.Parse([]byte(strings.Replace(servicesConfig, "node: n1", "node: n3", 1)))
	if err != nil {
		t.Fatal(err)
	}
	x := Expand(static, servicesSnapshot(), nil)
	if len(x.Config.VRRP.SlotInstances) != 0 || len(x.Config.BGP.Announce) != 0 {
		t.Fatalf("n3 runs %d slots and %d announcements", len(x.Config.VRRP.SlotInstances), len(x.Config.BGP.Announce))
	}
	if len(x.Config.Balancers) != 2 {
		t.Fatalf("n3 still proxies what reaches it: %d balancers", len(x.Config.Balancers))
	}
}

// dsrConfig serves Services with dataplane dsr: the bgp pool names the
// interface its traffic comes in on.
var dsrConfig = strings.NewReplacer("dataplane: proxy", "dataplane: dsr", "announce: bgp,", "announce: bgp, interface: eth1,").Replace(servicesConfig)

// With dataplane dsr every address and TCP or UDP port of a Service is a
// dsr balancer on its pool's interface over the ready endpoints on the
// same port; endpoints on another port and SCTP ports are left out with a
// note; bgp pools get no local routes (the program takes the frames
// before routing).
func TestExpandServicesDSR(t *testing.T) {
	static, err := config.Parse([]byte(dsrConfig))
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr
	snap := servicesSnapshot()
	snap.Services[0].Ports = append(snap.Services[0].Ports, ServicePort{Name: "sig", Protocol: "SCTP", Port: 9})
	snap.Slices[0].Ports[0].Port = 80
	snap.Slices = append(snap.Slices, Slice{Namespace: "web", Name: "front-2", Service: "front", AddressType: "IPv4",
		Ports:     []Port{{Name: "http", Port: 8080, Protocol: "TCP"}, {Name: "dns", Port: 53, Protocol: "UDP"}},
		Endpoints: []Endpoint{{Addresses: []netip.Addr{ip("10.1.0.3")}, Ready: true, NodeName: "n3"}}})
	x := Expand(static, snap, nil)
	c := x.Config
	byName := map[string]config.Balancer{}
	var names []string
	for _, b := range c.Balancers {
		names = append(names, b.Name)
		byName[b.Name] = b
	}
	want := []string{"service/web/front/http/192.0.2.200", "service/web/front/dns/192.0.2.200", "service/web/public/http/198.51.100.1"}
	if !slices.Equal(names, want) {
		t.Fatalf("balancers %v, want %v", names, want)
	}
	http, dns, public := byName[want[0]], byName[want[1]], byName[want[2]]
	backends := func(b config.Balancer) []string {
		var out []string
		for _, be := range b.Backends {
			out = append(out, be.Address)
		}
		return out
	}
	if http.Mode != "dsr" || http.Interface != "eth0" || http.Protocol != "tcp" || http.Algorithm != "maglev" || http.XDPMode != "auto" ||
		http.Service != "web/front" || !slices.Equal(http.Listen, []string{"192.0.2.200:80"}) || !slices.Equal(backends(http), []string{"10.1.0.1:80"}) {
		t.Fatalf("front's http balancer %+v", http)
	}
	if dns.Protocol != "udp" || !slices.Equal(dns.Listen, []string{"192.0.2.200:53"}) || !slices.Equal(backends(dns), []string{"10.1.0.3:53"}) {
		t.Fatalf("front's dns balancer %+v", dns)
	}
	if public.Interface != "eth1" || public.Service != "web/public" || len(public.Backends) != 0 {
		t.Fatalf("public's balancer %+v", public)
	}
	if got := x.Origins[want[0]]["10.1.0.1:80"]; got != "endpoints web/front (node n2)" {
		t.Fatalf("origin %q", got)
	}
	if len(c.BGP.Announce) != 1 {
		t.Fatalf("announcements %+v", c.BGP.Announce)
	}
	notes := strings.Join(x.Notes, "\n")
	for _, w := range []string{
		"Service web/front: 192.0.2.200:80/TCP: endpoints 10.1.0.3:8080 left out: dataplane dsr does not change ports, so the endpoints must serve on 80",
		"Service web/front: port 9/SCTP: dataplane dsr steers TCP and UDP only; not served",
	} {
		if !strings.Contains(notes, w) {
			t.Errorf("notes lack %q:\n%s", w, notes)
		}
	}
}

// The program steers at most config.MaxDSRServices addresses:ports, the
// config's own dsr balancers' first. A Service beyond is left out with a
// note naming it; one steered before keeps its place when another Service
// comes first in order.
func TestExpandServicesDSRLimit(t *testing.T) {
	var listen []string
	for i := range config.MaxDSRServices - 1 {
		listen = append(listen, fmt.Sprintf(`"10.9.0.%d:80"`, i+1))
	}
	static, err := config.Parse([]byte(dsrConfig + fmt.Sprintf(`balancers:
  - {name: own, mode: dsr, interface: eth0, listen: [%s], backends: [{address: "10.9.0.100:80"}]}
`, strings.Join(listen, ", "))))
	if err != nil {
		t.Fatal(err)
	}
	snap := servicesSnapshot()
	snap.Services = snap.Services[1:2] // web/public, one port
	x := Expand(static, snap, nil)
	if n := len(x.Config.Balancers); n != 2 || x.Config.Balancers[1].Name != "service/web/public/http/198.51.100.1" {
		t.Fatalf("%d balancers: %+v", n, x.Config.Balancers)
	}
	// web/early sorts first, but web/public was steered before.
	early := Service{Namespace: "web", Name: "early", Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.202")},
		Ports: []ServicePort{{Protocol: "TCP", Port: 443}}}
	snap.Services = append([]Service{early}, snap.Services...)
	y := ExpandFrom(static, snap, x)
	if n := len(y.Config.Balancers); n != 2 || y.Config.Balancers[1].Name != "service/web/public/http/198.51.100.1" {
		t.Fatalf("after web/early came: %d balancers: %+v", n, y.Config.Balancers)
	}
	want := "Service web/early: 192.0.2.202:443/TCP not steered: the XDP program steers at most 16 addresses:ports"
	if !strings.Contains(strings.Join(y.Notes, "\n"), want) {
		t.Fatalf("notes lack %q: %v", want, y.Notes)
	}
	// Without the history, the order decides.
	if z := Expand(static, snap, nil); z.Config.Balancers[1].Name != "service/web/early/443/192.0.2.202" {
		t.Fatalf("without history: %+v", z.Config.Balancers[1])
	}
}

// A pool of both families has IPv4 slots (slot/, anchor 0.0.0.0) and IPv6
// slots (slot6/, anchor ::), each carrying only its family's addresses;
// a second l2 pool on the interface gets VRIDs of its own.
func TestExpandServicesDualStackSlots(t *testing.T) {
	y := strings.Replace(servicesConfig, `addresses: ["192.0.2.200-192.0.2.220"], interface: eth0`,
		`addresses: ["192.0.2.200-192.0.2.220", "2001:db8::/120"], interface: eth0`, 1)
	y = strings.Replace(y, "      - {name: wan", "      - {name: lan2, addresses: [\"192.0.2.240/29\"], interface: eth0, nodes: \"lb=yes\"}\n      - {name: wan", 1)
	static, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	snap := servicesSnapshot()
	snap.Services[0].Addresses = append(snap.Services[0].Addresses, netip.MustParseAddr("2001:db8::5"))
	x := Expand(static, snap, nil)
	vrids := map[string]map[int]string{}
	for _, in := range x.Config.VRRP.SlotInstances {
		fam := "4"
		if strings.HasPrefix(in.Name, "slot6/") {
			fam = "6"
		}
		want := map[string]string{"4": "0.0.0.0/32", "6": "::/128"}[fam]
		if in.VIPs[0] != want {
			t.Fatalf("%s: anchor %v", in.Name, in.VIPs)
		}
		for _, p := range in.Slot.Extra {
			if p.Addr().Is6() != (fam == "6") {
				t.Fatalf("%s carries %s", in.Name, p)
			}
		}
		if vrids[fam] == nil {
			vrids[fam] = map[int]string{}
		}
		if other, dup := vrids[fam][in.VRID]; dup {
			t.Fatalf("%s and %s share VRID %d", other, in.Name, in.VRID)
		}
		vrids[fam][in.VRID] = in.Name
	}
	if got := slotNames(x.Config); !slices.Equal(got, []string{"slot/lan/n1/n2", "slot/lan/n2/n1", "slot/lan2/n1/n2", "slot/lan2/n2/n1",
		"slot6/lan/n1/n2", "slot6/lan/n2/n1"}) {
		t.Fatalf("slots %v", got)
	}
	slots := map[string]string{}
	for _, sa := range x.ServiceAddrs {
		slots[sa.Addr.String()] = sa.Slot
	}
	if !strings.HasPrefix(slots["2001:db8::5"], "slot6/lan/") || !strings.HasPrefix(slots["192.0.2.200"], "slot/lan/") {
		t.Fatalf("slots of the addresses %v", slots)
	}
}
