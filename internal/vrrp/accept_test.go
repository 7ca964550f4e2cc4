package vrrp

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestAcceptDropReasons(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.10")
	src := netip.MustParseAddr("10.0.0.3")
	good := Packet{Version: 2, Type: 1, VRID: 7, Priority: 100, AuthType: AuthSimple, MaxAdvertInt: 1,
		Addresses: []netip.Addr{vip}, AuthData: [8]byte{'p', 'w'}}
	expect := Expect{Version: 2, VRID: 7, Interval: time.Second, AuthType: AuthSimple, AuthData: [8]byte{'p', 'w'},
		VIPs: []netip.Addr{vip}, Local: netip.MustParseAddr("10.0.0.2")}
	enc := func(p Packet) []byte {
		b, err := p.Marshal(src, Group4)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	mod := func(f func(p *Packet)) []byte { p := good; f(&p); return enc(p) }
	badSum := enc(good)
	badSum[7] ^= 0xff
	cases := []struct {
		name    string
		payload []byte
		ttl     int
		src     netip.Addr
		exp     func(e *Expect)
		want    DropReason
	}{
		{"valid", enc(good), 255, src, nil, DropNone},
		{"ttl 254", enc(good), 254, src, nil, DropTTL},
		{"own advert", enc(good), 255, expect.Local, nil, DropOwn},
		{"truncated", enc(good)[:5], 255, src, nil, DropMalformed},
		{"version 3 for a v2 instance", mod(func(p *Packet) { p.Version = 3; p.AuthType = 0; p.AuthData = [8]byte{} }), 255, src, nil, DropVersion},
		{"bad checksum", badSum, 255, src, nil, DropChecksum},
		{"wrong password", mod(func(p *Packet) { p.AuthData = [8]byte{'x'} }), 255, src, nil, DropAuth},
		{"no auth", mod(func(p *Packet) { p.AuthType = AuthNone }), 255, src, nil, DropAuth},
		{"interval differs", mod(func(p *Packet) { p.MaxAdvertInt = 3 }), 255, src, nil, DropInterval},
		{"foreign VIPs", mod(func(p *Packet) { p.Addresses = []netip.Addr{netip.MustParseAddr("192.0.2.99")} }), 255, src, nil, DropAddresses},
		{"extra VIP", mod(func(p *Packet) { p.Addresses = append(p.Addresses, netip.MustParseAddr("192.0.2.99")) }), 255, src, nil, DropAddresses},
		{"duplicate VIP", mod(func(p *Packet) { p.Addresses = []netip.Addr{vip, vip} }), 255, src, nil, DropDuplicate},
		{"count 255 repeating our VIP", mod(func(p *Packet) { p.Addresses = slices.Repeat([]netip.Addr{vip}, 255) }), 255, src, nil, DropDuplicate},
		{"count short of the VIPs", countOne(mod(func(p *Packet) { p.Addresses = append(p.Addresses, netip.MustParseAddr("192.0.2.99")) }), src), 255, src, nil, DropMalformed},
		{"unknown unicast peer", enc(good), 255, src, func(e *Expect) { e.Peers = []netip.Addr{netip.MustParseAddr("10.0.0.9")} }, DropUnknownPeer},
		{"known unicast peer", enc(good), 255, src, func(e *Expect) { e.Peers = []netip.Addr{src} }, DropNone},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := expect
			if tc.exp != nil {
				tc.exp(&e)
			}
			adv, _, got := Accept(Received{Src: tc.src, Dst: Group4, TTL: tc.ttl, Payload: tc.payload}, &e)
			if got != tc.want {
				t.Fatalf("drop reason %q, want %q", got, tc.want)
			}
			if got == DropNone && (adv.Priority != 100 || adv.Source != src || adv.Interval != time.Second) {
				t.Fatalf("advert %+v", adv)
			}
		})
	}
}

// countOne sets an encoded advert's address count to 1 and fixes its
// checksum, so that only the count is wrong.
func countOne(b []byte, src netip.Addr) []byte {
	b[3] = 1
	binary.BigEndian.PutUint16(b[6:8], checksum(b, b[0]>>4, src, Group4))
	return b
}
