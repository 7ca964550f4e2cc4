package vrrp

import (
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var mcast4 = netip.MustParseAddr("224.0.0.18")

func TestMarshalV3IPv4KnownChecksum(t *testing.T) {
	// Computed by hand: pseudo-header 10.0.0.1 -> 224.0.0.18, length 12,
	// protocol 112; VRRP 0x31 vrid 51 prio 100 count 1 interval 100cs.
	p := &Packet{Version: 3, Type: 1, VRID: 51, Priority: 100, MaxAdvertInt: 100,
		Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}
	b, err := p.Marshal(netip.MustParseAddr("10.0.0.1"), mcast4)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 12 {
		t.Fatalf("length %d, want 12", len(b))
	}
	if err := VerifyChecksum(b, netip.MustParseAddr("10.0.0.1"), mcast4); err != nil {
		t.Fatalf("own checksum does not verify: %v", err)
	}
	// A different source must not verify: the pseudo-header is covered.
	if err := VerifyChecksum(b, netip.MustParseAddr("10.0.0.9"), mcast4); !errors.Is(err, ErrChecksum) {
		t.Fatalf("checksum ignores the pseudo-header: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	cases := []*Packet{
		{Version: 2, Type: 1, VRID: 1, Priority: 255, AuthType: AuthSimple, MaxAdvertInt: 1,
			Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")},
			AuthData:  [8]byte{'s', 'e', 'c', 'r', 'e', 't'}},
		{Version: 3, Type: 1, VRID: 255, Priority: 1, MaxAdvertInt: 0xfff,
			Addresses: []netip.Addr{netip.MustParseAddr("2001:db8::10")}},
		{Version: 3, Type: 1, VRID: 7, Priority: 0, MaxAdvertInt: 10, Addresses: []netip.Addr{}},
	}
	for _, p := range cases {
		src, dst := netip.MustParseAddr("10.0.0.1"), mcast4
		is6 := len(p.Addresses) > 0 && p.Addresses[0].Is6()
		if is6 {
			src, dst = netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::12")
		}
		b, err := p.Marshal(src, dst)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyChecksum(b, src, dst); err != nil {
			t.Fatalf("v%d checksum: %v", p.Version, err)
		}
		got, err := Unmarshal(b, is6)
		if err != nil {
			t.Fatal(err)
		}
		got.Checksum = 0
		if !reflect.DeepEqual(got, p) {
			t.Fatalf("round trip\n got %+v\nwant %+v", got, p)
		}
	}
}

func TestUnmarshalErrors(t *testing.T) {
	cases := []struct {
		name string
		hex  string
		is6  bool
		want error
	}{
		{"empty", "", false, ErrTooShort},
		{"version 1", "11330a01000100000a000001", false, ErrVersion},
		{"type 2", "32330a010001000000000000", false, ErrType},
		{"count beyond length", "31336402006400000a000001", false, ErrAddrCount},
		{"v2 over IPv6", "21336401000100000a000001", true, ErrFamily},
		{"v2 auth data missing", "21336401010100000a000001", false, ErrTooShort},
		// The count must account for every byte: an advert that carries more
		// addresses than it counts, or stray bytes, is malformed.
		{"v3 count short of the addresses", "31336401006400000a0000010a000002", false, ErrAddrCount},
		{"v3 stray bytes", "31336401006400000a000001ff", false, ErrAddrCount},
		{"v2 stray bytes after the auth data", "21336401000100000a000001000000000000000000", false, ErrAddrCount},
		{"v2 part of the auth data", "21336401000100000a000001000000", false, ErrAddrCount},
		// Repeating an address is malformed, not the same set (issue 23:
		// count 255 repeating our VIP passed the VIP-set comparison).
		{"v3 duplicate address", "3133640200640000c000020ac000020a", false, ErrDuplicateAddr},
		{"v3 IPv6 duplicate address", "313364020064000020010db800000000000000000000001020010db8000000000000000000000010", true, ErrDuplicateAddr},
		{"v2 duplicate address", "2133640300010000c000020ac000020bc000020a0000000000000000", false, ErrDuplicateAddr},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := hex.DecodeString(tc.hex)
			_, err := Unmarshal(b, tc.is6)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

func TestIntervalEncoding(t *testing.T) {
	cases := []struct {
		v    uint8
		d    time.Duration
		want uint16
	}{
		{3, 100 * time.Millisecond, 10},
		{3, time.Second, 100},
		{3, time.Millisecond, 1},
		{3, time.Hour, 0xfff},
		{2, time.Second, 1},
		{2, 100 * time.Millisecond, 1},
		{2, time.Hour, 255},
	}
	for _, tc := range cases {
		if got := EncodeInterval(tc.v, tc.d); got != tc.want {
			t.Errorf("EncodeInterval(%d, %v) = %d, want %d", tc.v, tc.d, got, tc.want)
		}
	}
	p := Packet{Version: 3, MaxAdvertInt: 10}
	if p.Interval() != 100*time.Millisecond {
		t.Errorf("v3 interval %v", p.Interval())
	}
}

// TestGolden decodes advertisements captured from keepalived 2.2.7 in the
// namespace lab (testdata/*.hex: source, destination, payload).
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.hex")
	if len(files) == 0 {
		t.Fatal("no golden packets in testdata")
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fields := strings.Fields(string(raw))
		if len(fields) != 3 {
			t.Fatalf("%s: want 'src dst hex'", f)
		}
		src, dst := netip.MustParseAddr(fields[0]), netip.MustParseAddr(fields[1])
		b, err := hex.DecodeString(fields[2])
		if err != nil {
			t.Fatal(err)
		}
		p, err := Unmarshal(b, src.Is6())
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := VerifyChecksum(b, src, dst); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		again, err := p.Marshal(src, dst)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(again) != fields[2] {
			t.Fatalf("%s: re-encoded %x, captured %s", f, again, fields[2])
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte{0x31, 0x33, 0x64, 0x01, 0x00, 0x64, 0, 0, 192, 0, 2, 10}, false)
	f.Add([]byte{0x21, 0x33, 0x64, 0x01, 0x01, 0x01, 0, 0, 192, 0, 2, 10, 'p', 'a', 's', 's', 0, 0, 0, 0}, false)
	f.Add(make([]byte, 24), true)
	f.Fuzz(func(t *testing.T, b []byte, is6 bool) {
		src, dst := netip.MustParseAddr("10.0.0.1"), mcast4
		if is6 {
			src, dst = netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::12")
		}
		_ = VerifyChecksum(b, src, dst)
		p, err := Unmarshal(b, is6)
		if err != nil {
			return
		}
		enc, err := p.Marshal(src, dst)
		if err != nil {
			t.Fatalf("decoded packet does not encode: %v (%+v)", err, p)
		}
		q, err := Unmarshal(enc, is6)
		if err != nil {
			t.Fatalf("encoded packet does not decode: %v", err)
		}
		p.Checksum, q.Checksum = 0, 0
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("decode(encode(x)) != x\n got %+v\nwant %+v", q, p)
		}
		if err := VerifyChecksum(enc, src, dst); err != nil {
			t.Fatalf("encoded checksum does not verify: %v", err)
		}
	})
}
