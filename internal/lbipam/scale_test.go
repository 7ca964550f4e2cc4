package lbipam

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/config"
)

// services1000 is 1,000 Services over a /22 (1,022 addresses without the
// network and broadcast address): a third already hold an address, every
// tenth shares a key with the one before it, every twentieth requests one.
func services1000() ([]Pool, []Request) {
	pools := []Pool{{Name: "lan", AutoAssign: true, Ranges: []Range{{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.3.254")}}}}
	r := rand.New(rand.NewPCG(20, 22))
	perm := r.Perm(1022)
	reqs := make([]Request, 1000)
	for i := range reqs {
		q := Request{Service: fmt.Sprintf("ns/svc-%04d", i), Created: t0.Add(time.Duration(r.IntN(500)) * time.Second),
			Ports: []Port{{"TCP", 80 + i%10}}}
		a := netip.AddrFrom4([4]byte{10, 0, byte((perm[i] + 1) >> 8), byte(perm[i] + 1)})
		switch {
		case i%3 == 0:
			q.Current = []netip.Addr{a}
		case i%20 == 1:
			q.Requested = []netip.Addr{a}
		}
		if i%10 == 9 {
			q.SharingKey = fmt.Sprintf("k%d", i/10)
			reqs[i-1].SharingKey = q.SharingKey
		}
		reqs[i] = q
	}
	return pools, reqs
}

// 1,000 Services over a /22 all get an address, none twice unless shared.
// (BenchmarkAssign1000 says how long it takes.)
func TestAssign1000(t *testing.T) {
	pools, reqs := services1000()
	res := Assign(pools, reqs, nil)
	byName := map[string]Request{}
	for _, q := range reqs {
		byName[q.Service] = q
	}
	held := map[netip.Addr][]string{}
	for _, q := range reqs {
		r := res[q.Service]
		if r.Err != nil || len(r.Addrs) != 1 || r.Pool != "lan" {
			t.Fatalf("%s: %+v", q.Service, r)
		}
		if len(q.Current) > 0 && r.Addrs[0] != q.Current[0] {
			t.Fatalf("%s moved from %s to %s", q.Service, q.Current[0], r.Addrs[0])
		}
		if len(q.Requested) > 0 && r.Addrs[0] != q.Requested[0] {
			t.Fatalf("%s requested %s, got %s", q.Service, q.Requested[0], r.Addrs[0])
		}
		held[r.Addrs[0]] = append(held[r.Addrs[0]], q.Service)
	}
	for a, hs := range held {
		if len(hs) > 2 || len(hs) == 2 && (byName[hs[0]].SharingKey == "" || byName[hs[0]].SharingKey != byName[hs[1]].SharingKey) {
			t.Fatalf("%s held by %v", a, hs)
		}
	}
	if len(held) < 900 {
		t.Fatalf("%d distinct addresses for 1000 Services of which 100 pairs may share", len(held))
	}
}

func BenchmarkAssign1000(b *testing.B) {
	pools, reqs := services1000()
	b.ReportAllocs()
	for b.Loop() {
		Assign(pools, reqs, nil)
	}
}

// A pool of a whole IPv6 /64 (and one of all of IPv6) costs no more than a
// small one: the search walks the addresses in use, not the pool.
func TestAssignHugeIPv6Pools(t *testing.T) {
	for _, p := range []string{"2001:db8::/64", "::/0"} {
		pfx := netip.MustParsePrefix(p)
		last := pfx.Addr().As16()
		for i := pfx.Bits() / 8; i < 16; i++ {
			last[i] = 0xff
		}
		pools := []Pool{{Name: "v6", AutoAssign: true, Ranges: []Range{{pfx.Addr(), netip.AddrFrom16(last)}}}}
		var reqs []Request
		for i := range 2000 {
			q := Request{Service: fmt.Sprintf("ns/s%d", i), Families: []Family{IPv6}, Created: t0}
			if i%2 == 0 { // every other one holds an address far up the range
				a := last
				a[15], a[14] = byte(i), byte(i>>8)
				q.Current = []netip.Addr{netip.AddrFrom16(a)}
			}
			reqs = append(reqs, q)
		}
		seen := map[netip.Addr]bool{}
		for name, r := range Assign(pools, reqs, []netip.Addr{pfx.Addr().Next()}) {
			if r.Err != nil || len(r.Addrs) != 1 || seen[r.Addrs[0]] || !pfx.Contains(r.Addrs[0]) {
				t.Fatalf("%s: %s %+v", p, name, r)
			}
			seen[r.Addrs[0]] = true
		}
	}
}

func TestPoolsFrom(t *testing.T) {
	c, err := config.Parse([]byte(`kubernetes:
  services:
    pools:
      - name: lan
        interface: eth0
        addresses: [192.0.2.0/24, 198.51.100.0/31, 198.51.100.7/32, 203.0.113.0-203.0.113.255, "2001:db8::/120"]
      - name: raw
        interface: eth0
        auto_assign: false
        avoid_buggy_ips: false
        addresses: [192.0.3.0/30]
`))
	if err != nil {
		t.Fatal(err)
	}
	pools, err := PoolsFrom(c.Kubernetes.Services)
	if err != nil {
		t.Fatal(err)
	}
	rg := func(a, b string) Range { return Range{netip.MustParseAddr(a), netip.MustParseAddr(b)} }
	want := []Pool{
		{Name: "lan", AutoAssign: true, Ranges: []Range{rg("192.0.2.1", "192.0.2.254"), rg("198.51.100.0", "198.51.100.1"),
			rg("198.51.100.7", "198.51.100.7"), rg("203.0.113.0", "203.0.113.255"), rg("2001:db8::", "2001:db8::ff")}},
		{Name: "raw", AutoAssign: false, Ranges: []Range{rg("192.0.3.0", "192.0.3.3")}},
	}
	if fmt.Sprint(pools) != fmt.Sprint(want) {
		t.Fatalf("got\n%v\nwant\n%v", pools, want)
	}
	if _, err := PoolsFrom(&config.Services{Pools: []config.ServicePool{{Name: "x", Addresses: []string{"nope"}}}}); err == nil {
		t.Fatal("an unvalidated bad range gave no error")
	}
	if p, err := PoolsFrom(nil); p != nil || err != nil {
		t.Fatalf("nil section: %v %v", p, err)
	}
}
