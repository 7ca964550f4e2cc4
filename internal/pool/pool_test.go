package pool

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

func vips(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range out {
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, byte(2 + i/256), byte(i % 256)}), 32)
	}
	return out
}

func nodes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node%02d", i)
	}
	return out
}

// check verifies the three promises for every size: balance within one,
// complete distinct rankings, and spreading of each node's VIPs on failure.
func check(t *testing.T, nv, nn int) {
	t.Helper()
	as, err := Assign(vips(nv), nodes(nn))
	if err != nil {
		t.Fatal(err)
	}
	first := map[string]int{}
	for _, a := range as {
		if len(a.Nodes) != nn {
			t.Fatalf("%s ranks %d nodes, want %d", a.VIP, len(a.Nodes), nn)
		}
		seen := slices.Clone(a.Nodes)
		slices.Sort(seen)
		if len(slices.Compact(seen)) != nn {
			t.Fatalf("%s ranks a node twice: %v", a.VIP, a.Nodes)
		}
		first[a.Nodes[0]]++
	}
	lo, hi := nv, 0
	for _, n := range nodes(nn) {
		lo, hi = min(lo, first[n]), max(hi, first[n])
	}
	if hi-lo > 1 {
		t.Fatalf("%d VIPs over %d nodes: first-choice counts from %d to %d", nv, nn, lo, hi)
	}
	// When any one node fails, its VIPs move to their second choices, and
	// the survivors then still differ by at most one... plus one.
	for _, failed := range nodes(nn) {
		if nn == 1 {
			break
		}
		owned := map[string]int{}
		for _, a := range as {
			owner := a.Nodes[0]
			if owner == failed {
				owner = a.Nodes[1]
			}
			owned[owner]++
		}
		lo, hi := nv, 0
		for _, n := range nodes(nn) {
			if n != failed {
				lo, hi = min(lo, owned[n]), max(hi, owned[n])
			}
		}
		if hi-lo > 2 {
			t.Fatalf("%d VIPs over %d nodes, %s failed: survivors own %d to %d", nv, nn, failed, lo, hi)
		}
	}
}

func TestAssignProperties(t *testing.T) {
	for _, c := range [][2]int{{1, 1}, {3, 3}, {4, 3}, {7, 3}, {10, 4}, {16, 16}, {100, 7}, {255, 16}} {
		t.Run(fmt.Sprintf("%dvips_%dnodes", c[0], c[1]), func(t *testing.T) { check(t, c[0], c[1]) })
	}
}

func TestAssignIgnoresConfigOrder(t *testing.T) {
	v, n := vips(9), nodes(3)
	a, _ := Assign(v, n)
	slices.Reverse(v)
	slices.Reverse(n)
	b, _ := Assign(v, n)
	if String(a) != String(b) {
		t.Fatalf("order changed the ranking:\n%s\nvs\n%s", String(a), String(b))
	}
}

func TestAssignThreeByThree(t *testing.T) {
	as, err := Assign(vips(3), []string{"infra3", "infra1", "infra2"})
	if err != nil {
		t.Fatal(err)
	}
	want := "192.0.2.0/32: infra1 > infra2 > infra3\n192.0.2.1/32: infra2 > infra3 > infra1\n192.0.2.2/32: infra3 > infra1 > infra2\n"
	if got := String(as); got != want {
		t.Fatalf("got\n%swant\n%s", got, want)
	}
	if p := as[0].Priority("infra2"); p != TopPriority-1 {
		t.Fatalf("priority of the second choice = %d", p)
	}
}

func TestAssignErrors(t *testing.T) {
	if _, err := Assign(vips(2), nodes(3)); err == nil {
		t.Fatal("more nodes than VIPs accepted")
	}
	if _, err := Assign(append(vips(2), vips(1)...), nodes(1)); err == nil {
		t.Fatal("duplicate VIP accepted")
	}
	if _, err := Assign(vips(3), []string{"a", "a"}); err == nil {
		t.Fatal("duplicate node accepted")
	}
	if _, err := Assign(vips(3), nil); err == nil {
		t.Fatal("no nodes accepted")
	}
}

func BenchmarkAssign255Over16(b *testing.B) {
	v, n := vips(255), nodes(16)
	for b.Loop() {
		if _, err := Assign(v, n); err != nil {
			b.Fatal(err)
		}
	}
}
