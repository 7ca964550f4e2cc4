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
// slots' counts differ by at most one.
func balanced(t *testing.T, p l2slot.Plan, want []netip.Addr) {
	t.Helper()
	seen := map[netip.Addr]string{}
	lo, hi := len(want), 0
	for _, s := range p.Slots {
		for _, a := range s.Addrs {
			if o, dup := seen[a]; dup {
				t.Fatalf("%s in slots %s and %s", a, o, s.Node)
			}
			seen[a] = s.Node
		}
		lo, hi = min(lo, len(s.Addrs)), max(hi, len(s.Addrs))
	}
	if len(seen) != len(want) {
		t.Fatalf("%d addresses assigned, want %d", len(seen), len(want))
	}
	if hi-lo > 1 {
		t.Fatalf("slot counts from %d to %d", lo, hi)
	}
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

// The slots: one per node, named after it, first choice highest, a failed
// node's slot to the next node of the ring (a different survivor for each),
// VRIDs as config.DeriveVRID names "pool/node", distinct, avoiding taken ones.
func TestSlots(t *testing.T) {
	ns := nodes(5)
	p := plan(t, l2slot.Input{Cluster: "prod", Pool: "lan", Nodes: ns, Addrs: addrs(10)})
	next := map[string]bool{}
	vrids := map[uint8]bool{}
	for i, s := range p.Slots {
		if s.Node != ns[i] || s.Nodes[0] != s.Node || len(s.Nodes) != len(ns) {
			t.Fatalf("slot %d: %+v", i, s)
		}
		if s.Priority(s.Node) != 250 || s.Priority(s.Nodes[1]) != 250-l2slot.PriorityStep(len(s.Nodes)) || s.Priority(s.Nodes[len(s.Nodes)-1]) < 10 || s.Priority("nope") != 0 {
			t.Fatalf("slot %s priorities", s.Node)
		}
		if s.Nodes[1] == s.Node || next[s.Nodes[1]] {
			t.Fatalf("slot %s falls back to %s, already another slot's fallback", s.Node, s.Nodes[1])
		}
		next[s.Nodes[1]] = true
		if int(l2slot.DeriveVRID("prod", "lan", s.Node)) != config.DeriveVRID("prod", "lan/"+s.Node) {
			t.Fatalf("slot %s: VRID not derived as config.DeriveVRID", s.Node)
		}
		if vrids[s.VRID] {
			t.Fatalf("VRID %d twice", s.VRID)
		}
		vrids[s.VRID] = true
	}
	// A VRID taken by another instance moves the slot to the next free one.
	s0 := p.Slots[0]
	q := plan(t, l2slot.Input{Cluster: "prod", Pool: "lan", Nodes: ns, Addrs: addrs(10), Taken: []uint8{s0.VRID}})
	if got, _ := q.Slot(s0.Node); got.VRID == s0.VRID {
		t.Fatalf("slot %s kept taken VRID %d", s0.Node, s0.VRID)
	}
	// 255 slots cannot all get VRIDs with one taken.
	if _, err := l2slot.New(l2slot.Input{Nodes: nodes(250), Taken: []uint8{1, 2, 3, 4, 5, 6}}); err == nil {
		t.Fatal("250 slots with 6 VRIDs taken: no error")
	}
	if _, err := l2slot.New(l2slot.Input{}); err == nil {
		t.Fatal("no nodes: no error")
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
