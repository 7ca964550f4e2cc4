package dsr

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/xdp"
	"go.uber.org/goleak"
)

// twoBackends is a proxy balancer and a dsr one on eth0 with a backend on
// eth0's subnet and one on eth1's.
const twoBackends = `
balancers:
  - {name: proxied, listen: ["10.0.0.10:8080"], backends: [{address: "127.0.0.1:18080"}]}
  - name: web
    mode: dsr
    interface: eth0
    listen: ["10.0.0.20:80", "10.0.0.21:80"]
    backends: [{address: "10.0.0.5:80"}, {address: "10.0.1.5:80", weight: 3}]
`

func TestBackendsOnTheBalancersInterfaceAndOnAnother(t *testing.T) {
	k := newKernel()
	// eth1 also holds an address of eth0's subnet: the balancer's own
	// interface wins, its frames go back out with XDP_TX.
	k.addrs = append([]Addr{{Prefix: netip.MustParsePrefix("10.0.0.2/24"), LinkIndex: 3}}, k.addrs...)
	k.setNeighbour("10.0.0.5", mac(5))
	k.setNeighbour("10.0.1.5", mac(6))
	p, _ := newPlane(t, k, twoBackends)
	p.resolveMACs(context.Background(), true)

	own, ok := k.dp.backend(p.idx(t, "web", "10.0.0.5:80"))
	if !ok || own.ifindex != 0 || own.src != nil || own.mac.String() != mac(5).String() {
		t.Errorf("backend on eth0: %+v (written %v), want XDP_TX (ifindex 0) to %v", own, ok, mac(5))
	}
	other, ok := k.dp.backend(p.idx(t, "web", "10.0.1.5:80"))
	if !ok || other.ifindex != 3 || other.src.String() != mac(0xe1).String() || other.mac.String() != mac(6).String() {
		t.Errorf("backend on eth1: %+v (written %v), want a redirect to eth1 (3) from %v to %v", other, ok, mac(0xe1), mac(6))
	}
	if got := k.dp.attached; len(got) != 1 || got[2] != "auto" {
		t.Errorf("attached %v, want eth0 (2) only, mode auto", got)
	}
}

func TestBackendOnNoSubnetIsRefused(t *testing.T) {
	k := newKernel()
	cfg := strings.Replace(twoBackends, "10.0.1.5:80", "10.9.9.9:80", 1)
	_, err := New(parse(t, cfg), k, health.New(), quiet())
	if err == nil || !strings.HasPrefix(err.Error(), "balancers[1] (web): backend 10.9.9.9:80 is not on a subnet of eth0 or of another interface") {
		t.Fatalf("New: %v", err)
	}
	if k.loads != 0 {
		t.Errorf("the program was loaded %d times before the config was found wrong", k.loads)
	}
	_, err = New(parse(t, strings.Replace(twoBackends, "interface: eth0", "interface: eth7", 1)), k, health.New(), quiet())
	if err == nil || err.Error() != "balancers[1] (web): interface eth7: Link not found" {
		t.Fatalf("New on a missing interface: %v", err)
	}
}

func TestMACsFromTheNeighbourTableThenARP(t *testing.T) {
	k := newKernel()
	k.setNeighbour("10.0.0.5", mac(5)) // the other one answers ARP later
	p, store := newPlane(t, k, twoBackends)
	if st, ok := balancerState(store, "web"); !ok || st.Up || st.Reason != reasonNoMAC {
		t.Fatalf("web before any MAC is known: %+v, %v", st, ok)
	}
	for id := range uint32(2) {
		if got := k.dp.table(id); got != nil {
			t.Fatalf("service %d has a table before any MAC is known: %v", id, got)
		}
	}

	p.resolveMACs(context.Background(), true)
	if got := k.probed(); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("10.0.1.5")}) {
		t.Errorf("ARP probes %v: want one for the backend missing from the neighbour table", got)
	}
	for id := range uint32(2) {
		if got := inTable(t, p, k.dp, id); !slices.Equal(got, []string{"10.0.0.5:80"}) {
			t.Errorf("service %d: table of %v, want the backend whose MAC is known", id, got)
		}
	}
	if st, _ := balancerState(store, "web"); !st.Up {
		t.Errorf("web with a backend in its table: %+v", st)
	}
	if _, ok := k.dp.backend(p.idx(t, "web", "10.0.1.5:80")); ok {
		t.Error("a backend with no MAC was written")
	}

	k.answerARP("10.0.1.5", mac(6))
	p.resolveMACs(context.Background(), false) // the unresolved only
	if got := k.probed(); len(got) != 2 {
		t.Errorf("ARP probes %v, want a second one for 10.0.1.5 only", got)
	}
	if got := inTable(t, p, k.dp, 0); !slices.Equal(got, []string{"10.0.0.5:80", "10.0.1.5:80"}) {
		t.Errorf("table after the ARP answer: %v", got)
	}
	if be, _ := k.dp.backend(p.idx(t, "web", "10.0.1.5:80")); be.mac.String() != mac(6).String() {
		t.Errorf("backend written with MAC %v, want %v", be.mac, mac(6))
	}
	// Weight 3 against 1: three times the table entries.
	s := k.dp.services[0]
	n := map[uint32]int{}
	for _, e := range s.Table.Entries() {
		n[s.Index[e]]++
	}
	if a, b := n[p.idx(t, "web", "10.0.0.5:80")], n[p.idx(t, "web", "10.0.1.5:80")]; b < 2*a {
		t.Errorf("entries %d (weight 1) and %d (weight 3)", a, b)
	}
}

// Backends' ARP probes run at once, so that a balancer with many new
// backends waits one probe window, not one per backend.
func TestARPProbesRunAtOnce(t *testing.T) {
	k := newKernel()
	k.barrier = &sync.WaitGroup{}
	k.barrier.Add(2)
	k.answerARP("10.0.0.5", mac(5))
	k.answerARP("10.0.1.5", mac(6))
	p, _ := newPlane(t, k, twoBackends)
	p.resolveMACs(context.Background(), true)
	if got := inTable(t, p, k.dp, 0); !slices.Equal(got, []string{"10.0.0.5:80", "10.0.1.5:80"}) {
		t.Fatalf("table %v, want both backends resolved by probes at once", got)
	}
}

func TestIPv6BackendIsNotProbedWithARP(t *testing.T) {
	k := newKernel()
	p, _ := newPlane(t, k, `
balancers:
  - {name: v6, mode: dsr, interface: eth0, listen: ["[fd00::10]:80"], backends: [{address: "[fd00::5]:80"}]}
`)
	p.resolveMACs(context.Background(), true)
	if got := k.probed(); len(got) != 0 || k.dp.table(0) != nil {
		t.Fatalf("probes %v, table %v: an IPv6 backend not in the neighbour table is unknown", got, k.dp.table(0))
	}
	k.setNeighbour("fd00::5", mac(5))
	p.resolveMACs(context.Background(), false)
	if got := inTable(t, p, k.dp, 0); !slices.Equal(got, []string{"[fd00::5]:80"}) {
		t.Fatalf("table %v after the neighbour table learnt it", got)
	}
}

// A replaced NIC: the 30 s pass over every backend writes the new MAC.
func TestChangedMACIsRewritten(t *testing.T) {
	k := newKernel()
	k.setNeighbour("10.0.0.5", mac(5))
	k.setNeighbour("10.0.1.5", mac(6))
	p, _ := newPlane(t, k, twoBackends)
	p.resolveMACs(context.Background(), true)
	k.setNeighbour("10.0.0.5", mac(9))
	p.resolveMACs(context.Background(), false)
	idx := p.idx(t, "web", "10.0.0.5:80")
	if be, _ := k.dp.backend(idx); be.mac.String() != mac(5).String() {
		t.Fatalf("a pass over the unresolved only rewrote a known MAC: %v", be.mac)
	}
	p.resolveMACs(context.Background(), true)
	if be, _ := k.dp.backend(idx); be.mac.String() != mac(9).String() {
		t.Fatalf("MAC %v after the pass over all, want %v", be.mac, mac(9))
	}
}

// Run follows the store: a backend down leaves the table, the balancer
// goes down when none is left, a key removed counts as up; when ctx ends
// the program is closed and the balancer's key removed.
func TestRunFollowsBackendHealth(t *testing.T) {
	defer goleak.VerifyNone(t)
	k := newKernel()
	k.setNeighbour("10.0.0.5", mac(5))
	k.setNeighbour("10.0.1.5", mac(6))
	p, store := newPlane(t, k, twoBackends)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	a, b := netip.MustParseAddrPort("10.0.0.5:80"), netip.MustParseAddrPort("10.0.1.5:80")
	table := func(want ...string) func() bool {
		return func() bool {
			return slices.Equal(inTable(t, p, k.dp, 0), want) && slices.Equal(inTable(t, p, k.dp, 1), want)
		}
	}
	up := func(want bool) func() bool {
		return func() bool { st, ok := balancerState(store, "web"); return ok && st.Up == want }
	}
	both := func(f, g func() bool) func() bool { return func() bool { return f() && g() } }

	waitUntil(t, k.dp, store, "both backends are in the tables", both(table(a.String(), b.String()), up(true)))
	store.Set(health.BackendKey("web", a), health.State{Up: false, Reason: "refused"})
	waitUntil(t, k.dp, store, "a backend down left the tables", both(table(b.String()), up(true)))
	store.Set(health.BackendKey("web", b), health.State{Up: false})
	waitUntil(t, k.dp, store, "the balancer is down with no backend left", both(table(), up(false)))
	if st, _ := balancerState(store, "web"); st.Reason != reasonAllDown {
		t.Errorf("reason %q", st.Reason)
	}
	bals, _ := p.Status()
	if len(bals) != 1 || bals[0].Backends[0].Up || bals[0].Backends[1].Up {
		t.Errorf("status with both down: %+v", bals)
	}
	store.Set(health.BackendKey("other", a), health.State{Up: true}) // not ours
	store.Delete(health.BackendKey("web", a))
	waitUntil(t, k.dp, store, "a backend whose key is gone is back", both(table(a.String()), up(true)))

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !k.dp.isClosed() {
		t.Error("the program is still attached after Run")
	}
	if st, ok := balancerState(store, "web"); ok {
		t.Errorf("web's key left in the store after Run: %+v", st)
	}
	if bals, v := p.Status(); bals != nil || v != nil {
		t.Errorf("status after Run: %+v %v", bals, v)
	}
}

// A backend that is down in the store when the plane starts stays out.
func TestNewReadsTheStore(t *testing.T) {
	k := newKernel()
	k.setNeighbour("10.0.0.5", mac(5))
	k.setNeighbour("10.0.1.5", mac(6))
	store := health.New()
	store.Set(health.BackendKey("web", netip.MustParseAddrPort("10.0.1.5:80")), health.State{})
	p, err := New(parse(t, twoBackends), k, store, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.resolveMACs(context.Background(), true)
	if got := inTable(t, p, k.dp, 0); !slices.Equal(got, []string{"10.0.0.5:80"}) {
		t.Fatalf("table %v", got)
	}
}

func TestBalancerWithNoWeightIsDown(t *testing.T) {
	k := newKernel()
	k.setNeighbour("10.0.0.5", mac(5))
	p, store := newPlane(t, k, `
balancers:
  - {name: web, mode: dsr, interface: eth0, listen: ["10.0.0.20:80"], backends: [{address: "10.0.0.5:80", weight: 0}]}
`)
	p.resolveMACs(context.Background(), true)
	if st, _ := balancerState(store, "web"); st.Up || st.Reason != reasonNoWeight || k.dp.table(0) != nil {
		t.Fatalf("%+v, table %v", st, k.dp.table(0))
	}
}

func TestStatus(t *testing.T) {
	k := newKernel()
	k.setNeighbour("10.0.0.5", mac(5))
	p, _ := newPlane(t, k, twoBackends)
	p.resolveMACs(context.Background(), true)
	bals, v := p.Status()
	if len(bals) != 1 || v["tx"] != 7 {
		t.Fatalf("%+v %v", bals, v)
	}
	b := bals[0]
	// Services 0 and 1: 10+11 packets, 1000+1001 bytes.
	if b.Name != "web" || b.Mode != "dsr" || b.XDPMode != "native" || b.Algorithm != "maglev" || b.Packets != 21 || b.Bytes != 2001 {
		t.Errorf("%+v", b)
	}
	if len(b.Backends) != 2 || !b.Backends[0].Up || b.Backends[1].Up || b.Backends[1].Weight != 3 ||
		b.Backends[0].Packets != uint64(p.idx(t, "web", "10.0.0.5:80"))+1 {
		t.Errorf("backends %+v: want the first up (MAC known), the second not", b.Backends)
	}
}

func TestNoDSRBalancersRunsNothing(t *testing.T) {
	defer goleak.VerifyNone(t)
	k := newKernel()
	p, store := newPlane(t, k, `
balancers:
  - {name: proxied, listen: ["10.0.0.10:8080"], backends: [{address: "127.0.0.1:18080"}]}
`)
	if p == nil || k.loads != 0 {
		t.Fatalf("plane %v, loads %d", p, k.loads)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	if bals, v := p.Status(); bals != nil || v != nil {
		t.Errorf("status %+v %v", bals, v)
	}
	if got := store.Snapshot(); len(got) != 0 {
		t.Errorf("store %+v", got)
	}
	ch, err := p.Plan(parse(t, `
balancers:
  - {name: proxied, listen: ["10.0.0.10:8081"], backends: [{address: "127.0.0.1:18080"}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	if _, err := p.Plan(parse(t, twoBackends)); err == nil || !strings.Contains(err.Error(), "dsr balancers added or removed (0 running, 1 in the new config)") {
		t.Errorf("a dsr balancer added: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestProgramThatCannotLoad(t *testing.T) {
	defer goleak.VerifyNone(t)
	k := newKernel()
	k.loadErr = fmt.Errorf("%w: %w: it needs CAP_BPF and CAP_NET_ADMIN (root)", xdp.ErrLoad, os.ErrPermission)
	p, store := newPlane(t, k, twoBackends)
	bals, v := p.Status()
	if len(bals) != 1 || v != nil {
		t.Fatalf("status %+v %v", bals, v)
	}
	if b := bals[0]; b.Name != "web" || !strings.Contains(b.Error, "CAP_BPF") || len(b.Backends) != 2 || b.Backends[0].Up || b.Backends[1].Weight != 3 {
		t.Errorf("status %+v", b)
	}
	bals[0].Backends[0].Up = true // a copy
	if again, _ := p.Status(); again[0].Backends[0].Up {
		t.Error("Status hands out its own backends")
	}
	if st, ok := balancerState(store, "web"); !ok || st.Up || !strings.Contains(st.Reason, "CAP_BPF") {
		t.Errorf("web in the store: %+v, %v", st, ok)
	}
	if _, err := p.Plan(parse(t, twoBackends)); err != nil {
		t.Errorf("the same dsr balancers: %v", err)
	}
	if _, err := p.Plan(parse(t, strings.Replace(twoBackends, "10.0.1.5:80", "10.0.1.6:80", 1))); !errors.Is(err, errNotRunning) ||
		err.Error() != "dsr balancers changed; they are not running (see status), and need a restart" {
		t.Errorf("changed backends: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, ok := balancerState(store, "web"); ok {
		t.Error("web's key left in the store after Run")
	}

	k.loadErr = errors.New("some other failure")
	if _, err := New(parse(t, twoBackends), k, health.New(), quiet()); err == nil || err.Error() != "some other failure" {
		t.Errorf("New with a load error that is not xdp.ErrLoad: %v", err)
	}
}

func TestNativeModeThatWouldDropFramesIsRefused(t *testing.T) {
	k := newKernel()
	k.links[0].Kind = "veth"
	k.features["eth0"] = xdp.FeatureBasic | xdp.FeatureRedirect // the peer runs no program
	cfg := strings.Replace(twoBackends, "interface: eth0", "interface: eth0\n    xdp_mode: native", 1)
	_, err := New(parse(t, cfg), k, health.New(), quiet())
	if err == nil || !strings.HasPrefix(err.Error(), "balancers[1].interface (web, line ") ||
		!strings.Contains(err.Error(), "interface eth0: xdp: native mode would drop frames: eth0 is a veth whose peer runs no XDP program") {
		t.Fatalf("native on a veth whose peer runs no program: %v", err)
	}
	if !k.dp.isClosed() {
		t.Error("the program was left loaded")
	}

	for _, c := range []struct{ mode, want string }{{"auto", "generic"}, {"generic", "generic"}} {
		k := newKernel()
		k.links[0].Kind = "veth"
		k.features["eth0"] = xdp.FeatureBasic | xdp.FeatureRedirect
		p, _ := newPlane(t, k, strings.Replace(twoBackends, "interface: eth0", "interface: eth0\n    xdp_mode: "+c.mode, 1))
		if got := k.dp.attached[2]; got != c.want {
			t.Errorf("xdp_mode %s: attached in %q, want %q", c.mode, got, c.want)
		}
		if bals, _ := p.Status(); bals[0].XDPMode != c.want {
			t.Errorf("xdp_mode %s: status says %q", c.mode, bals[0].XDPMode)
		}
	}

	// A veth whose peer runs a program: auto still runs generic (the peer
	// cannot be seen), native runs native.
	for _, c := range []struct{ mode, want string }{{"auto", "generic"}, {"native", "native"}} {
		k := newKernel()
		k.links[0].Kind = "veth"
		newPlane(t, k, strings.Replace(twoBackends, "interface: eth0", "interface: eth0\n    xdp_mode: "+c.mode, 1))
		if got := k.dp.attached[2]; got != c.want {
			t.Errorf("veth with a program on its peer, xdp_mode %s: attached in %q, want %q", c.mode, got, c.want)
		}
	}
}
