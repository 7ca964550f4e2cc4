package l2slot_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/l2slot"
)

func addrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{198, 18, byte(i / 256), byte(i % 256)})
	}
	return out
}

func nodes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("worker-%d", i)
	}
	return out
}

func plan(t *testing.T, in l2slot.Input) l2slot.Plan {
	t.Helper()
	p, err := l2slot.New(in)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// balanced checks that every address is in exactly one slot and that the
// nodes' counts (over their slots) differ by at most one.
func balanced(t *testing.T, p l2slot.Plan, want []netip.Addr) {
	t.Helper()
	seen := map[netip.Addr]string{}
	for _, s := range p.Slots {
		for _, a := range s.Addrs {
			if o, dup := seen[a]; dup {
				t.Fatalf("%s in slots %s and %s", a, o, s.Name())
			}
			seen[a] = s.Name()
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("%d addresses assigned, want %d", len(seen), len(want))
	}
	if lo, hi := spreadOf(loads(p, nil)); hi-lo > 1 {
		t.Fatalf("node counts from %d to %d", lo, hi)
	}
}

// loads is how many addresses each node holds with every slot master at
// its most preferred live node, dead ones left out.
func loads(p l2slot.Plan, dead map[string]bool) map[string]int {
	out := map[string]int{}
	for _, s := range p.Slots {
		for _, n := range s.Nodes {
			if !dead[n] {
				out[n] += 0
			}
		}
		for _, n := range s.Nodes {
			if !dead[n] {
				out[n] += len(s.Addrs)
				break
			}
		}
	}
	return out
}

func spreadOf(per map[string]int) (lo, hi int) {
	lo = -1
	for _, c := range per {
		if lo < 0 || c < lo {
			lo = c
		}
		hi = max(hi, c)
	}
	return max(lo, 0), hi
}

// moved counts the addresses whose slot differs between two plans.
func moved(a, b l2slot.Plan) int {
	n := 0
	for _, s := range a.Slots {
		for _, x := range s.Addrs {
			if o, _ := b.Owner(x); o != s.Node {
				n++
			}
		}
	}
	return n
}

func TestBalancedAndDeterministic(t *testing.T) {
	for _, nn := range []int{1, 2, 3, 4, 7, 16} {
		for _, na := range []int{0, 1, 5, 300, 1000} {
			in := l2slot.Input{Cluster: "prod", Pool: "lan", Nodes: nodes(nn), Addrs: addrs(na)}
			p := plan(t, in)
			balanced(t, p, in.Addrs)
			// Any order of the inputs, with repeats, gives the same plan.
			shuffled := in
			shuffled.Nodes = append(slices.Clone(in.Nodes), in.Nodes[0])
			shuffled.Addrs = slices.Clone(in.Addrs)
			rng := rand.New(rand.NewPCG(uint64(nn), uint64(na)))
			rng.Shuffle(len(shuffled.Nodes), func(i, j int) { shuffled.Nodes[i], shuffled.Nodes[j] = shuffled.Nodes[j], shuffled.Nodes[i] })
			rng.Shuffle(len(shuffled.Addrs), func(i, j int) { shuffled.Addrs[i], shuffled.Addrs[j] = shuffled.Addrs[j], shuffled.Addrs[i] })
			if q := plan(t, shuffled); fmt.Sprint(q) != fmt.Sprint(p) {
				t.Fatalf("%d nodes, %d addresses: the order of the input changed the plan", nn, na)
			}
		}
	}
}

// The slots: one per ordered pair of nodes (first choice, heir), first
// choice highest, its heir next; every node is the heir of every other;
// VRIDs as config.DeriveVRID names "pool/node/heir", distinct, avoiding
// taken ones.
func TestSlots(t *testing.T) {
	ns := nodes(5)
	p := plan(t, l2slot.Input{Cluster: "prod", Pool: "lan", Nodes: ns, Addrs: addrs(10)})
	if len(p.Slots) != 5*4 || p.Heirs != 4 || p.Limited() {
		t.Fatalf("%d slots, %d heirs, limited %v; want 20, 4, false", len(p.Slots), p.Heirs, p.Limited())
	}
	pairs := map[string]bool{}
	vrids := map[uint8]bool{}
	for _, s := range p.Slots {
		if s.Nodes[0] != s.Node || s.Nodes[1] != s.Heir || s.Heir == s.Node || len(s.Nodes) != len(ns) {
			t.Fatalf("slot %s: %+v", s.Name(), s)
		}
		if s.Priority(s.Node) != 250 || s.Priority(s.Heir) != 250-l2slot.PriorityStep(len(s.Nodes)) || s.Priority(s.Nodes[len(s.Nodes)-1]) < 10 || s.Priority("nope") != 0 {
			t.Fatalf("slot %s priorities", s.Name())
		}
		pairs[s.Name()] = true
		if int(l2slot.DeriveVRID("prod", "lan", s.Name())) != config.DeriveVRID("prod", "lan/"+s.Name()) {
			t.Fatalf("slot %s: VRID not derived as config.DeriveVRID", s.Name())
		}
		if vrids[s.VRID] {
			t.Fatalf("VRID %d twice", s.VRID)
		}
		vrids[s.VRID] = true
	}
	if len(pairs) != 20 {
		t.Fatalf("%d distinct slots", len(pairs))
	}
	// A VRID taken by another instance moves the slot to the next free one.
	s0 := p.Slots[0]
	q := plan(t, l2slot.Input{Cluster: "prod", Pool: "lan", Nodes: ns, Addrs: addrs(10), Taken: []uint8{s0.VRID}})
	if got, _ := q.Slot(s0.Name()); got.VRID == s0.VRID {
		t.Fatalf("slot %s kept taken VRID %d", s0.Name(), s0.VRID)
	}
	// One node: one slot, no heir.
	one := plan(t, l2slot.Input{Cluster: "prod", Pool: "lan", Nodes: ns[:1], Addrs: addrs(10)})
	if len(one.Slots) != 1 || one.Slots[0].Name() != ns[0] || len(one.Slots[0].Addrs) != 10 {
		t.Fatalf("one node: %+v", one.Slots)
	}
	// 250 nodes cannot all get VRIDs with six taken.
	if _, err := l2slot.New(l2slot.Input{Nodes: nodes(250), Taken: []uint8{1, 2, 3, 4, 5, 6}}); err == nil {
		t.Fatal("250 slots with 6 VRIDs taken: no error")
	}
	if _, err := l2slot.New(l2slot.Input{}); err == nil {
		t.Fatal("no nodes: no error")
	}
}

// Too few VRIDs for a slot per pair: each node gets as many heirs as they
// allow, the next nodes on the ring, each node the heir of as many; the
// plan says it is limited. A budget limits the same way.
func TestVRIDBudget(t *testing.T) {
	for _, c := range []struct {
		nodes, budget, heirs int
		taken                []uint8
	}{
		{20, 0, 12, nil}, // 380 pairs; 255/20
		{20, 0, 11, []uint8{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}}, // 239/20
		{5, 10, 2, nil},
		{16, 0, 15, nil}, // 240 pairs fit
	} {
		p := plan(t, l2slot.Input{Cluster: "prod", Pool: "lan", Nodes: nodes(c.nodes), Addrs: addrs(1000), Taken: c.taken, Budget: c.budget})
		if p.Heirs != c.heirs || len(p.Slots) != c.nodes*c.heirs || p.Limited() != (c.heirs < c.nodes-1) {
			t.Fatalf("%d nodes, budget %d: %d heirs, %d slots, limited %v; want %d heirs", c.nodes, c.budget, p.Heirs, len(p.Slots), p.Limited(), c.heirs)
		}
		heirOf := map[string]int{}
		for _, s := range p.Slots {
			heirOf[s.Heir]++
		}
		for n, k := range heirOf {
			if k != c.heirs {
				t.Fatalf("%d nodes: %s is the heir of %d nodes, want %d", c.nodes, n, k, c.heirs)
			}
		}
		balanced(t, p, addrs(1000))
	}
}

// A dead node's addresses spread over its heirs so that the survivors end
// within one address of each other, as before: the balance holds after a
// failure, with no API.
func TestDeadNodeSpreads(t *testing.T) {
	for _, nn := range []int{2, 3, 4, 5, 7, 16} {
		for _, na := range []int{1, 10, 300, 301, 1000} {
			p := plan(t, l2slot.Input{Cluster: "prod", Pool: "lan", Nodes: nodes(nn), Addrs: addrs(na)})
			for _, d := range nodes(nn) {
				per := loads(p, map[string]bool{d: true})
				if lo, hi := spreadOf(per); hi-lo > 1 {
					t.Fatalf("%d nodes, %d addresses, %s dead: survivors hold %v", nn, na, d, per)
				}
			}
		}
	}
	// With fewer heirs than survivors, a dead node's addresses still go to
	// all its heirs evenly.
	p := plan(t, l2slot.Input{Cluster: "prod", Pool: "lan", Nodes: nodes(20), Addrs: addrs(1000)})
	per := loads(p, map[string]bool{"worker-0": true})
	lo, hi := spreadOf(per)
	t.Logf("20 nodes, %d heirs each, 1,000 addresses, one dead: survivors hold %d to %d", p.Heirs, lo, hi)
	if hi > 50+(50+p.Heirs-1)/p.Heirs+1 {
		t.Fatalf("survivors hold up to %d", hi)
	}
}

// Slots that stay when a node joins or leaves keep their VRIDs (almost
// always: only a new slot landing on one's derived VRID moves it).
func TestVRIDsStable(t *testing.T) {
	for _, c := range []struct{ from, to int }{{3, 4}, {4, 3}, {2, 3}, {5, 6}, {8, 9}} {
		p := plan(t, l2slot.Input{Cluster: "prod", Pool: "lan", Nodes: nodes(c.from), Addrs: addrs(10)})
		q := plan(t, l2slot.Input{Cluster: "prod", Pool: "lan", Nodes: nodes(c.to), Addrs: addrs(10)})
		kept, changed := 0, 0
		for _, s := range p.Slots {
			if o, ok := q.Slot(s.Name()); ok {
				kept++
				if o.VRID != s.VRID {
					changed++
				}
			}
		}
		t.Logf("%d -> %d nodes: %d slots kept, %d of them with a new VRID", c.from, c.to, kept, changed)
		if changed > kept/10+1 {
			t.Errorf("%d -> %d nodes: %d of %d kept slots changed VRID", c.from, c.to, changed, kept)
		}
	}
}

// A node joining or leaving moves little more than the share that must
// move: joining 3 -> 4 with 1,000 addresses, 250 must.
func TestStableOnJoinAndLeave(t *testing.T) {
	const na = 1000
	a := addrs(na)
	for _, c := range []struct{ from, to int }{{3, 4}, {4, 3}, {2, 3}, {4, 5}, {8, 9}, {9, 8}, {16, 17}} {
		p := plan(t, l2slot.Input{Cluster: "prod", Pool: "lan", Nodes: nodes(c.from), Addrs: a})
		q := plan(t, l2slot.Input{Cluster: "prod", Pool: "lan", Nodes: nodes(c.to), Addrs: a})
		balanced(t, q, a)
		// The least that can move: a join fills the new slot, a leave
		// empties the old one.
		must := na / max(c.from, c.to)
		got := moved(p, q)
		t.Logf("%d -> %d nodes, %d addresses: %d moved (%.1f%%), at least %d must", c.from, c.to, na, got, 100*float64(got)/na, must)
		// What the load bound adds beyond that is a few percent.
		if limit := must + na/30; got > limit {
			t.Errorf("%d -> %d nodes: %d addresses moved, want at most %d", c.from, c.to, got, limit)
		}
	}
	// One address more or less moves a handful, not a reshuffle.
	p := plan(t, l2slot.Input{Nodes: nodes(3), Addrs: a})
	q := plan(t, l2slot.Input{Nodes: nodes(3), Addrs: a[:na-1]})
	if got := moved(q, p); got > 5 {
		t.Errorf("removing one address moved %d others", got)
	}
}

// externalTrafficPolicy: Local: an address goes only to slots of nodes
// allowed for it, spread evenly among them; one with no allowed node goes
// nowhere; the unrestricted ones fill up the balance.
func TestAllowed(t *testing.T) {
	ns, a := nodes(4), addrs(400)
	allowed := map[netip.Addr][]string{}
	for _, x := range a[:100] {
		allowed[x] = []string{ns[0], ns[1], "gone-node"}
	}
	allowed[a[100]] = []string{"gone-node"}
	p := plan(t, l2slot.Input{Nodes: ns, Addrs: a, Allowed: allowed})
	if !slices.Equal(p.Unassigned, []netip.Addr{a[100]}) {
		t.Fatalf("unassigned %v", p.Unassigned)
	}
	per := map[string]int{}
	for _, x := range a[:100] {
		o, ok := p.Owner(x)
		if !ok || (o != ns[0] && o != ns[1]) {
			t.Fatalf("%s (Local) on %q", x, o)
		}
		per[o]++
		// Its failover lands on the other node with an endpoint.
		if sl, _ := p.SlotOf(x); sl.Heir != ns[0] && sl.Heir != ns[1] {
			t.Fatalf("%s (Local) in slot %s: its heir has no endpoint", x, sl.Name())
		}
	}
	if d := per[ns[0]] - per[ns[1]]; d < -1 || d > 1 {
		t.Fatalf("restricted addresses split %v", per)
	}
	var rest []netip.Addr
	rest = append(rest, a[:100]...)
	rest = append(rest, a[101:]...)
	balanced(t, p, rest)
}

func BenchmarkPlan1000(b *testing.B) {
	in := l2slot.Input{Cluster: "prod", Pool: "lan", Nodes: nodes(16), Addrs: addrs(1000)}
	for b.Loop() {
		if _, err := l2slot.New(in); err != nil {
			b.Fatal(err)
		}
	}
}
