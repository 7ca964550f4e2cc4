package xdp

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// randomService is a service key with a random address of either family.
func randomService(r *rand.Rand) svcKey {
	var a netip.Addr
	if r.IntN(2) == 0 {
		a = netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
	} else {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		b[0] = 0x20 // not a v4-mapped address
		a = netip.AddrFrom16(b)
	}
	return svcKey{a, uint16(r.Uint32()), []uint8{6, 17}[r.IntN(2)]}
}

// The loader's filter bit must be the program's: a service whose bit the
// program computed differently would never be steered. Every packet to
// each of many random services must reach the service map (XDP_TX).
func TestFilterMatchesTheProgram(t *testing.T) {
	d := load(t)
	tb, idx := table(t, 0, 1)
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 2 { // a hash unlike the program's would turn away nearly every service
		var keys []svcKey
		for id := range uint32(MaxServices) {
			k := randomService(r)
			if err := d.SetService(Service{ID: id, VIP: k.vip, Port: k.port, Proto: k.proto, Table: tb, Index: idx}); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
		for _, k := range keys {
			src := netip.MustParseAddr("203.0.113.7")
			if k.vip.Is6() {
				src = netip.MustParseAddr("2001:db8::7")
			}
			if ret, _ := run(t, d, pkt{src: src, dst: k.vip, sport: 4321, port: k.port, proto: k.proto}.frame()); ret != xdpTx {
				t.Fatalf("round %d: a packet to service %v port %d proto %d: verdict %d, want XDP_TX", round, k.vip, k.port, k.proto, ret)
			}
		}
		for _, k := range keys {
			if err := d.RemoveService(k.vip, k.port, k.proto); err != nil {
				t.Fatal(err)
			}
		}
		if d.filter.words != [filterBits / 64]uint64{} || len(d.ids) != 0 {
			t.Fatalf("round %d: the filter is not empty after every service went", round)
		}
	}
}

// Two services that share a bit: removing one keeps the other steered.
func TestFilterKeepsASharedBit(t *testing.T) {
	d := load(t)
	tb, idx := table(t, 0, 1)
	a := svcKey{vip4, 80, 6}
	var b svcKey
	for port := uint16(1); ; port++ {
		if port == 0 {
			t.Fatal("no port shares the filter bit of port 80")
		}
		if k := (svcKey{vip4, port, 6}); port != 80 && filterBit(k) == filterBit(a) {
			b = k
			break
		}
	}
	for id, k := range []svcKey{a, b} {
		if err := d.SetService(Service{ID: uint32(id), VIP: k.vip, Port: k.port, Proto: k.proto, Table: tb, Index: idx}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.RemoveService(a.vip, a.port, a.proto); err != nil {
		t.Fatal(err)
	}
	if ret, _ := run(t, d, client(1234).frame()); ret != xdpPass {
		t.Fatalf("the removed service: verdict %d, want XDP_PASS", ret)
	}
	if ret, _ := run(t, d, pkt{src: netip.MustParseAddr("203.0.113.7"), dst: vip4, sport: 1234, port: b.port}.frame()); ret != xdpTx {
		t.Fatalf("the service sharing its bit (port %d): verdict %d, want XDP_TX", b.port, ret)
	}
}

// The filter counts uses per bit.
func TestFilterCounts(t *testing.T) {
	var f filter
	a := svcKey{vip4, 80, 6}
	if !f.add(a) || f.add(a) {
		t.Fatal("a bit's second use changed the words")
	}
	if f.remove(a) || !f.remove(a) {
		t.Fatal("the words did not change exactly at the bit's last use")
	}
	if f.words != [filterBits / 64]uint64{} {
		t.Fatal("words left set")
	}
	// With MaxServices services, most other keys are turned away.
	r := rand.New(rand.NewPCG(3, 4))
	for range MaxServices {
		f.add(randomService(r))
	}
	pass := 0
	const tries = 100000
	for range tries {
		b := filterBit(randomService(r))
		if f.words[b/64]&(1<<(b%64)) != 0 {
			pass++
		}
	}
	if pass > tries/100 { // 16 of 4096 bits: ~0.4 %
		t.Fatalf("%d of %d random keys pass a filter of %d services", pass, tries, MaxServices)
	}
}

// A tracked flow stays on its backend while its service's table changes,
// and is picked anew once its service is removed and added again: the
// generation, not the service map, says whether a tracked flow is valid.
func TestTrackedFlowsFollowTheServiceGeneration(t *testing.T) {
	d := load(t)
	both, idx := table(t, 0, 1)
	if err := d.SetService(Service{ID: 0, VIP: vip4, Port: 80, Proto: 6, Table: both, Index: idx}); err != nil {
		t.Fatal(err)
	}
	// A flow tracked to backend 0 and one to backend 1.
	first := map[int]uint16{}
	for port := uint16(1000); len(first) < 2; port++ {
		_, out := run(t, d, client(port).frame())
		for i, m := range beMACs {
			if string(out[0:6]) == string(m) {
				if _, ok := first[i]; !ok {
					first[i] = port
				}
			}
		}
	}
	// The table changes to backend 1 alone: both flows stay where they are.
	one, oneIdx := table(t, 1)
	if err := d.SetService(Service{ID: 0, VIP: vip4, Port: 80, Proto: 6, Table: one, Index: oneIdx}); err != nil {
		t.Fatal(err)
	}
	if _, out := run(t, d, client(first[0]).frame()); string(out[0:6]) != string(beMACs[0]) {
		t.Fatalf("a tracked flow moved to %x when its service's table changed", out[0:6])
	}
	// Removed: its packets pass, tracked or not.
	if err := d.RemoveService(vip4, 80, 6); err != nil {
		t.Fatal(err)
	}
	if ret, _ := run(t, d, client(first[0]).frame()); ret != xdpPass {
		t.Fatalf("a tracked flow of a removed service: verdict %d, want XDP_PASS", ret)
	}
	// Added again: the old tracking is void, the flow follows the new table.
	if err := d.SetService(Service{ID: 0, VIP: vip4, Port: 80, Proto: 6, Table: one, Index: oneIdx}); err != nil {
		t.Fatal(err)
	}
	if _, out := run(t, d, client(first[0]).frame()); string(out[0:6]) != string(beMACs[1]) {
		t.Fatalf("a flow tracked before its service was removed went to %x, want the new table's %x", out[0:6], beMACs[1])
	}
}
