package vrrp

import (
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
)

// ipv4Packet wraps a VRRP message in an IPv4 header with optLen bytes of
// options, as the socket filter of a raw IPv4 socket sees it.
func ipv4Packet(optLen int, msg []byte) []byte {
	hl := 20 + optLen
	b := make([]byte, hl, hl+len(msg))
	b[0] = 0x40 | byte(hl/4)
	b[8], b[9] = 255, 112
	copy(b[12:], []byte{10, 0, 0, 9})
	copy(b[16:], []byte{224, 0, 0, 18})
	return append(b, msg...)
}

func advert(t *testing.T, version, vrid uint8) []byte {
	t.Helper()
	p := Packet{Version: version, Type: TypeAdvertisement, VRID: vrid, Priority: 100, MaxAdvertInt: 1,
		Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}
	b, err := p.Marshal(netip.MustParseAddr("10.0.0.9"), Group4)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The socket filter, run in x/net/bpf's VM on what the kernel gives it:
// only VRRP v2/v3 for our VRIDs passes, whole.
func TestSocketFilter(t *testing.T) {
	ours := []uint8{51, 7, 200}
	v3, v2 := advert(t, 3, 51), advert(t, 2, 200)
	junk := func(b0, b1 byte) []byte { return []byte{b0, b1, 0, 0, 0, 0, 0, 0} }
	tests := []struct {
		name  string
		vrids []uint8
		is6   bool
		pkt   []byte
		pass  bool
	}{
		{"v3 advert for our VRID", ours, false, ipv4Packet(0, v3), true},
		{"v2 advert for our VRID", ours, false, ipv4Packet(0, v2), true},
		{"after IP options", ours, false, ipv4Packet(8, v3), true},
		{"IPv6: the message at offset 0", ours, true, v3, true},
		{"other version for our VRID passes (counted as a version drop)", []uint8{200}, false, ipv4Packet(0, advert(t, 3, 200)), true},
		{"foreign VRID", ours, false, ipv4Packet(0, advert(t, 3, 52)), false},
		{"foreign VRID, IPv6", ours, true, advert(t, 3, 52), false},
		{"version 1", ours, false, ipv4Packet(0, junk(0x11, 51)), false},
		{"version 4", ours, false, ipv4Packet(0, junk(0x41, 51)), false},
		{"version 0", ours, true, junk(0x01, 51), false},
		{"version 15", ours, true, junk(0xf1, 51), false},
		{"truncated after the version", ours, false, ipv4Packet(0, []byte{0x31}), false},
		{"no instance registered", nil, false, ipv4Packet(0, v3), false},
		{"VRID 0 is nobody's", ours, false, ipv4Packet(0, advert(t, 3, 0)), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vm, err := bpf.NewVM(filterProgram(tc.is6, tc.vrids))
			if err != nil {
				t.Fatal(err)
			}
			n, err := vm.Run(tc.pkt)
			if err != nil {
				t.Fatal(err)
			}
			if pass := n > 0; pass != tc.pass {
				t.Fatalf("passed %d bytes, want pass=%v", n, tc.pass)
			}
			if tc.pass && n < len(tc.pkt) { // the kernel keeps min(n, length)
				t.Fatalf("keeps %d of %d bytes", n, len(tc.pkt))
			}
		})
	}
}

// Every VRID at once still assembles (jump offsets are 8 bits) and passes
// each, and only its own.
func TestSocketFilterAllVRIDs(t *testing.T) {
	var all []uint8
	for v := 1; v <= 255; v++ {
		all = append(all, uint8(v))
	}
	for _, set := range [][]uint8{all, all[:1], all[254:], {9, 9, 9}} {
		vm, err := bpf.NewVM(filterProgram(false, set))
		if err != nil {
			t.Fatalf("%d VRIDs: %v", len(set), err)
		}
		in := map[uint8]bool{}
		for _, v := range set {
			in[v] = true
		}
		for v := 0; v <= 255; v++ {
			n, err := vm.Run(ipv4Packet(0, advert(t, 3, uint8(v))))
			if err != nil {
				t.Fatal(err)
			}
			if (n > 0) != in[uint8(v)] {
				t.Fatalf("set of %d: VRID %d passed=%v", len(set), v, n > 0)
			}
		}
	}
}
