package garp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"testing"
)

var mac = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}

func TestGratuitousFramesCarryVIPAsSender(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.10")
	frames, err := gratuitousFrames(vip, mac)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 2 {
		t.Fatalf("%d frames, want request and reply", len(frames))
	}
	// Golden request: broadcast, ARP, Ethernet/IPv4, op 1, sender = target = VIP.
	want := "ffffffffffff020000000001080600010800060400010200000000" + "01c000020a000000000000c000020a"
	if got := hex.EncodeToString(frames[0]); got != want {
		t.Fatalf("request\n got %s\nwant %s", got, want)
	}
	for i, f := range frames {
		a, err := ParseFrame(f)
		if err != nil {
			t.Fatal(err)
		}
		if a.SenderIP != vip || a.TargetIP != vip || !bytes.Equal(a.SenderMAC, mac) || a.Op != uint16(i+1) {
			t.Fatalf("frame %d: %+v", i, a)
		}
	}
}

func TestParseFrameErrors(t *testing.T) {
	f, _ := (&ARP{Op: 1, SenderMAC: mac, SenderIP: netip.MustParseAddr("1.2.3.4"), TargetMAC: mac, TargetIP: netip.MustParseAddr("1.2.3.5")}).Frame(broadcast, mac)
	short := f[:20]
	notARP := append([]byte(nil), f...)
	notARP[12] = 0x86
	ipv6 := append([]byte(nil), f...)
	ipv6[17] = 0xdd
	for name, tc := range map[string]struct {
		b    []byte
		want error
	}{"short": {short, ErrShortFrame}, "ethertype": {notARP, ErrNotARP}, "protocol": {ipv6, ErrNotEthernet}} {
		if _, err := ParseFrame(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func TestNeighborAdvert(t *testing.T) {
	b := neighborAdvert(netip.MustParseAddr("2001:db8::10"), mac)
	want := "8800000020000000" + "20010db8000000000000000000000010" + "0201020000000001"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("NA\n got %s\nwant %s", got, want)
	}
}

func FuzzParseFrame(f *testing.F) {
	g, _ := gratuitousFrames(netip.MustParseAddr("10.1.2.3"), mac)
	f.Add(g[0])
	f.Add(g[1])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseFrame(b)
		if err != nil {
			return
		}
		out, err := a.Frame(net.HardwareAddr(b[0:6]), net.HardwareAddr(b[6:12]))
		if err != nil {
			t.Fatalf("decoded frame does not encode: %v", err)
		}
		again, err := ParseFrame(out)
		if err != nil || !reflect.DeepEqual(a, again) {
			t.Fatalf("decode(encode(x)) != x: %+v vs %+v (%v)", a, again, err)
		}
	})
}

func TestRateLimit(t *testing.T) {
	a := NewAnnouncer("none")
	n := 0
	for a.take() {
		n++
		if n > 10*FrameBurst {
			t.Fatal("bucket never runs dry")
		}
	}
	// Refill is by time: within this loop far less than a second passed.
	if n < FrameBurst || n > FrameBurst+FramesPerSecond/10 {
		t.Fatalf("%d frames before the limit, want about %d", n, FrameBurst)
	}
	if a.Suppressed() != 1 {
		t.Fatalf("suppressed = %d", a.Suppressed())
	}
}
