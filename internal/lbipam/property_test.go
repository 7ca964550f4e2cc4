package lbipam

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// world is a random input to Assign: a few small pools, Services that ask
// for overlapping things, and some reserved addresses.
type world struct {
	pools    []Pool
	reqs     []Request
	reserved []netip.Addr
}

// someAddr returns an address that is usually in one of the pools.
func someAddr(r *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(r.IntN(12))})
	}
	return netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(3)), byte(r.IntN(8))})
}

func randomWorld(r *rand.Rand) world {
	var w world
	for i := range 1 + r.IntN(3) {
		p := Pool{Name: fmt.Sprintf("p%d", i), AutoAssign: r.IntN(4) > 0}
		// Pool i owns 10.0.i.0-7 and 2001:db8::(4i)..(4i+3): no overlaps.
		lo := r.IntN(3)
		p.Ranges = append(p.Ranges, Range{netip.AddrFrom4([4]byte{10, 0, byte(i), byte(lo)}), netip.AddrFrom4([4]byte{10, 0, byte(i), byte(lo + r.IntN(5))})})
		if r.IntN(2) == 0 {
			p.Ranges = append(p.Ranges, Range{netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(4 * i)}),
				netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(4*i + r.IntN(4))})})
		}
		w.pools = append(w.pools, p)
	}
	for range r.IntN(3) {
		w.reserved = append(w.reserved, someAddr(r, r.IntN(2) == 0))
	}
	famSets := [][]Family{nil, {IPv4}, {IPv6}, {IPv4, IPv6}, {IPv6, IPv4}}
	ports := []Port{{"TCP", 80}, {"TCP", 443}, {"UDP", 53}, {"TCP", 53}}
	for i := range 1 + r.IntN(25) {
		q := Request{
			Service:  fmt.Sprintf("ns/s%02d", i),
			Created:  t0.Add(time.Duration(r.IntN(6)) * time.Second),
			Families: famSets[r.IntN(len(famSets))],
		}
		switch r.IntN(6) {
		case 0:
			q.Pool = w.pools[r.IntN(len(w.pools))].Name
		case 1:
			q.Pool = "nope"
		}
		if r.IntN(4) == 0 {
			q.Requested = append(q.Requested, someAddr(r, r.IntN(2) == 0))
		}
		for range r.IntN(3) {
			q.Current = append(q.Current, someAddr(r, r.IntN(2) == 0))
		}
		if k := r.IntN(4); k > 0 {
			q.SharingKey = []string{"", "a", "b", "a"}[k]
		}
		for range r.IntN(3) {
			q.Ports = append(q.Ports, ports[r.IntN(len(ports))])
		}
		w.reqs = append(w.reqs, q)
	}
	return w
}

// summary makes results comparable: errors by their text.
func summary(res map[string]Result) map[string]string {
	out := map[string]string{}
	for k, v := range res {
		out[k] = fmt.Sprintf("%v %s %v", v.Addrs, v.Pool, v.Err)
	}
	return out
}

func clash(a, b []Port) bool {
	for _, p := range a {
		for _, q := range b {
			if normPort(p) == normPort(q) {
				return true
			}
		}
	}
	return false
}

// checkInvariants fails unless res keeps every rule of Assign that holds
// whatever the input.
func checkInvariants(t *testing.T, w world, res map[string]Result) {
	t.Helper()
	byName := map[string]Request{}
	for _, q := range w.reqs {
		byName[q.Service] = q
	}
	holders := map[netip.Addr][]string{}
	for name, r := range res {
		q := byName[name]
		fams := q.Families
		if len(fams) == 0 {
			fams = []Family{IPv4}
		}
		fams = slices.Compact(fams)
		if (r.Err == nil) != (len(r.Addrs) == len(fams)) {
			t.Fatalf("%s: %d addresses for families %v, error %v", name, len(r.Addrs), fams, r.Err)
		}
		k := 0
		for _, a := range r.Addrs {
			for k < len(fams) && fams[k] != familyOf(a) {
				k++
			}
			if k == len(fams) {
				t.Fatalf("%s: %v not one per family in the order of %v", name, r.Addrs, fams)
			}
			k++
			holders[a] = append(holders[a], name)
			req := slices.IndexFunc(q.Requested, func(x netip.Addr) bool { return familyOf(x) == familyOf(a) })
			if req >= 0 && q.Requested[req] != a {
				t.Fatalf("%s: requested %v, got %s", name, q.Requested, a)
			}
			if slices.Contains(w.reserved, a) && !slices.Contains(q.Current, a) {
				t.Fatalf("%s: got reserved %s without holding it", name, a)
			}
			pool := ""
			for _, p := range w.pools {
				if (q.Pool == p.Name || q.Pool == "" && (p.AutoAssign || req >= 0)) && slices.ContainsFunc(p.Ranges, func(rg Range) bool {
					return !a.Less(rg.First) && !rg.Last.Less(a)
				}) {
					pool = p.Name
					break
				}
			}
			if pool == "" {
				t.Fatalf("%s (pool %q): %s is in no pool it may use", name, q.Pool, a)
			}
			if a == r.Addrs[0] && pool != r.Pool {
				t.Fatalf("%s: first address %s is of pool %s, Result.Pool %s", name, a, pool, r.Pool)
			}
		}
	}
	for a, hs := range holders {
		for i := range hs {
			for j := range i {
				x, y := byName[hs[i]], byName[hs[j]]
				if x.SharingKey == "" || x.SharingKey != y.SharingKey || clash(x.Ports, y.Ports) {
					t.Fatalf("%s held by %s (%q %v) and %s (%q %v)", a, x.Service, x.SharingKey, x.Ports, y.Service, y.SharingKey, y.Ports)
				}
			}
		}
	}
}

// Random inputs: every invariant holds, the input order does not matter,
// and a second run from the first's result keeps every address.
func TestAssignProperties(t *testing.T) {
	for seed := range uint64(3000) {
		r := rand.New(rand.NewPCG(seed, 20))
		w := randomWorld(r)
		res := Assign(w.pools, w.reqs, w.reserved)
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			checkInvariants(t, w, res)

			shuffled := slices.Clone(w.reqs)
			r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if d := cmp.Diff(summary(res), summary(Assign(w.pools, shuffled, w.reserved))); d != "" {
				t.Fatalf("another input order gives another result (-first +shuffled):\n%s", d)
			}

			again := slices.Clone(w.reqs)
			for i := range again {
				again[i].Current = res[again[i].Service].Addrs
			}
			res2 := Assign(w.pools, again, w.reserved)
			for name, r1 := range res {
				for _, a := range r1.Addrs {
					if !slices.Contains(res2[name].Addrs, a) {
						t.Fatalf("%s lost %s when its status showed it: %v", name, a, res2[name])
					}
				}
			}
		})
		if t.Failed() {
			break
		}
	}
}

// The same Services in every order give the same result.
func TestAssignShuffle(t *testing.T) {
	pools := []Pool{pool("a", true, "192.0.2.1-192.0.2.6", "2001:db8::1-2001:db8::3"), pool("b", false, "198.51.100.1-198.51.100.3")}
	reqs := []Request{
		svc("one", 1), svc("two", 1, families(IPv6, IPv4)), svc("three", 2, sharing("k", "80/TCP")),
		svc("four", 2, sharing("k", "443/TCP")), svc("five", 3, requested("198.51.100.2")),
		svc("six", 3, current("192.0.2.6")), svc("seven", 4, current("192.0.2.6")), svc("eight", 5, families(IPv6)),
		svc("nine", 5, families(IPv6)), svc("ten", 6, inPool("b")),
	}
	want := summary(Assign(pools, reqs, addrs("192.0.2.2")))
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		r.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
		if d := cmp.Diff(want, summary(Assign(pools, reqs, addrs("192.0.2.2")))); d != "" {
			t.Fatalf("order %v changes the result:\n%s", reqs, d)
		}
	}
}
