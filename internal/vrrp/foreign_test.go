package vrrp

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/clock/clocktest"
)

// lockedBuffer is a log sink safe for the instance's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// warnings returns the WARN lines logged so far.
func (l *lockedBuffer) warnings() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for line := range strings.Lines(l.b.String()) {
		if strings.Contains(line, "level=WARN") {
			out = append(out, line)
		}
	}
	return out
}

// foreignInstance is an instance (not running: the test calls handle, as
// Run would) whose VIP is 192.0.2.10, on a fake clock, logging into buf.
func foreignInstance(t *testing.T) (*Instance, *clocktest.Clock, *lockedBuffer) {
	t.Helper()
	clk := clocktest.New(time.Unix(1000, 0))
	buf := &lockedBuffer{}
	f := &fakeNet{}
	cfg := Config{Name: "api", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: time.Second,
		VIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}}
	in := NewInstance(cfg, f, f, f, slog.New(slog.NewTextHandler(buf, nil)), WithClock(clk))
	return in, clk, buf
}

// foreignAdvert is an advert for our VRID from src with another VIP set:
// another group using our VRID.
func foreignAdvert(t *testing.T, src netip.Addr) Received {
	t.Helper()
	adv := Packet{Version: 3, Type: TypeAdvertisement, VRID: 7, Priority: 100, MaxAdvertInt: 100,
		Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.99")}}
	b, err := adv.Marshal(src, Group4)
	if err != nil {
		t.Fatal(err)
	}
	return Received{Src: src, Dst: Group4, TTL: 255, Payload: b}
}

// Two foreign groups on our VRID, advertising every 100 ms each (the
// issue's 10.99.0.50 and .51), gave a WARN line per advert: 200 in 10 s.
// The warning is per instance: the first at once, then at most one summary
// per conflictLogInterval naming the sources seen and the adverts since.
func TestVRIDConflictLogIsRateLimitedPerInstance(t *testing.T) {
	in, clk, buf := foreignInstance(t)
	a, b := netip.MustParseAddr("10.99.0.50"), netip.MustParseAddr("10.99.0.51")
	const span = 10 * time.Second
	n := 0
	for start := clk.Now(); clk.Now().Sub(start) < span; clk.Advance(50 * time.Millisecond) {
		src := a
		if n%2 == 1 {
			src = b
		}
		in.handle(foreignAdvert(t, src))
		n++
	}
	w := buf.warnings()
	if len(w) == 0 || len(w) > 1+int(span/conflictLogInterval) {
		t.Fatalf("%d adverts gave %d WARN lines, want 1 to %d:\n%s", n, len(w), 1+int(span/conflictLogInterval), strings.Join(w, ""))
	}
	if !strings.Contains(w[0], "10.99.0.50") {
		t.Fatalf("the first warning does not name the first source: %s", w[0])
	}
	// One more advert after the interval: a summary with both sources and
	// the count of adverts since the last line.
	clk.Advance(conflictLogInterval)
	in.handle(foreignAdvert(t, a))
	w = buf.warnings()
	last := w[len(w)-1]
	if len(w) < 2 || !strings.Contains(last, "10.99.0.50") || !strings.Contains(last, "10.99.0.51") || !strings.Contains(last, "adverts=") {
		t.Fatalf("no summary naming both sources and the count after the interval:\n%s", strings.Join(w, ""))
	}

	// A spoofed source rotating on every packet: still one line per interval.
	before := len(buf.warnings())
	for i := range 2000 {
		in.handle(foreignAdvert(t, netip.AddrFrom4([4]byte{10, 98, byte(i >> 8), byte(i)})))
	}
	if got := len(buf.warnings()) - before; got > 1 {
		t.Fatalf("2000 adverts from rotating sources within one interval gave %d WARN lines", got)
	}
}

// vigil_vrrp_vrid_conflict_adverts_total read 1 after 200 adverts because
// the count restarted with every new source. It is the instance's total,
// never reset; the sources seen are a bounded list beside it.
func TestVRIDConflictCountIsMonotonic(t *testing.T) {
	in, clk, _ := foreignInstance(t)
	a, b := netip.MustParseAddr("10.99.0.50"), netip.MustParseAddr("10.99.0.51")
	var last uint64
	for i := range 200 {
		src := a
		if i%2 == 1 {
			src = b
		}
		in.handle(foreignAdvert(t, src))
		clk.Advance(50 * time.Millisecond)
		f := in.Status().Foreign
		if f == nil || f.Count < last {
			t.Fatalf("advert %d: conflict count went from %d to %+v", i, last, f)
		}
		last = f.Count
	}
	s := in.Status()
	if s.Foreign.Count != 200 || s.Drops[DropAddresses] != 200 {
		t.Fatalf("after 200 adverts: count %d, vip_mismatch drops %d; want 200 and 200", s.Foreign.Count, s.Drops[DropAddresses])
	}
	if len(s.Foreign.Sources) != 2 || s.Foreign.Sources[0].Count+s.Foreign.Sources[1].Count != 200 {
		t.Fatalf("sources seen: %+v", s.Foreign.Sources)
	}

	// Rotating sources: the list stays bounded, keeps the most recent, and
	// the total keeps counting.
	for i := range 1000 {
		in.handle(foreignAdvert(t, netip.AddrFrom4([4]byte{10, 98, byte(i >> 8), byte(i)})))
		clk.Advance(time.Millisecond)
	}
	s = in.Status()
	if s.Foreign.Count != 1200 || len(s.Foreign.Sources) != maxForeignSources {
		t.Fatalf("after 1000 rotating sources: count %d, %d sources kept (max %d)", s.Foreign.Count, len(s.Foreign.Sources), maxForeignSources)
	}
	lastSrc := netip.AddrFrom4([4]byte{10, 98, byte(999 >> 8), byte(999 & 0xff)})
	if s.Foreign.Source != lastSrc || !slicesContainsSource(s.Foreign.Sources, lastSrc) {
		t.Fatalf("the latest source %v is not the last advert's or not kept: %+v", lastSrc, s.Foreign)
	}
}

func slicesContainsSource(s []ForeignSource, a netip.Addr) bool {
	for _, f := range s {
		if f.Source == a {
			return true
		}
	}
	return false
}
