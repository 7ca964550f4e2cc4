package vrrp

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/clock/clocktest"
	"go.uber.org/goleak"
)

// fakeExtra stands in for vip.Shared: it records which addresses are held
// and how often each was released, and may take a while per address, as
// netlink does.
type fakeExtra struct {
	delay    time.Duration
	mu       sync.Mutex
	held     map[netip.Prefix]bool
	released map[netip.Prefix]int
}

func newFakeExtra(delay time.Duration) *fakeExtra {
	return &fakeExtra{delay: delay, held: map[netip.Prefix]bool{}, released: map[netip.Prefix]int{}}
}

func (x *fakeExtra) Acquire(ps []netip.Prefix) error {
	time.Sleep(x.delay * time.Duration(len(ps)))
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, p := range ps {
		x.held[p] = true
	}
	return nil
}

func (x *fakeExtra) Release(ps []netip.Prefix) error {
	time.Sleep(x.delay * time.Duration(len(ps)))
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, p := range ps {
		delete(x.held, p)
		x.released[p]++
	}
	return nil
}

func (x *fakeExtra) heldNow() []netip.Prefix {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.SortedFunc(maps.Keys(x.held), comparePrefix)
}

func (x *fakeExtra) releasedOf(p netip.Prefix) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.released[p]
}

// fakeAnn counts announcements per address.
type fakeAnn struct {
	mu sync.Mutex
	n  map[netip.Addr]int
}

func newFakeAnn() *fakeAnn { return &fakeAnn{n: map[netip.Addr]int{}} }

func (a *fakeAnn) Announce(addrs []netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ip := range addrs {
		a.n[ip]++
	}
	return nil
}

func (a *fakeAnn) Burst(_ context.Context, addrs []netip.Addr, count int, _ time.Duration) error {
	for range count {
		_ = a.Announce(addrs)
	}
	return nil
}

func (a *fakeAnn) of(p netip.Prefix) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n[p.Addr()]
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestSetExtraRefuses(t *testing.T) {
	cfg := Config{Name: "slot", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: time.Second,
		VIPs: prefixes("192.0.2.10/32")}
	log := slog.New(slog.DiscardHandler)
	if err := NewInstance(cfg, &fakeNet{}, &fakeNet{}, newFakeAnn(), log).SetExtra(prefixes("192.0.2.20/32")); !errors.Is(err, ErrNoExtra) {
		t.Fatalf("without WithExtraAddresses: %v, want ErrNoExtra", err)
	}
	in := NewInstance(cfg, &fakeNet{}, &fakeNet{}, newFakeAnn(), log, WithExtraAddresses(newFakeExtra(0)))
	for _, bad := range [][]netip.Prefix{prefixes("2001:db8::1/128"), prefixes("192.0.2.10/32"), {{}}} {
		if err := in.SetExtra(bad); err == nil {
			t.Errorf("SetExtra(%v) accepted", bad)
		}
	}
	if err := in.SetExtra(nil); err != nil {
		t.Fatalf("an empty set: %v", err)
	}
}

// Extra addresses follow mastership on the instance's clock: released
// while backup (what an earlier run may have left too), configured and
// announced on taking over and when added while master, with the rest of the
// burst GARPInterval later, released on removal and on stepping down (and no
// burst round for them after that), announced again on the refresh, and
// released at shutdown. Adverts list only the VIPs.
func TestExtraFollowsMastership(t *testing.T) {
	defer goleak.VerifyNone(t)
	t0 := time.Unix(1000, 0)
	clk := clocktest.New(t0)
	f, x, ann := &fakeNet{}, newFakeExtra(0), newFakeAnn()
	cfg := Config{Name: "slot", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: time.Second,
		VIPs: prefixes("192.0.2.10/32"), GARPCount: 2, GARPInterval: 500 * time.Millisecond, GARPRefresh: 10 * time.Second}
	in := NewInstance(cfg, f, f, ann, slog.New(slog.DiscardHandler), WithClock(clk), WithExtraAddresses(x))
	ex := prefixes("192.0.2.20/32", "192.0.2.21/32", "192.0.2.22/32")
	a, b, c := ex[0], ex[1], ex[2]
	if err := in.SetExtra([]netip.Prefix{b, a, b}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	defer stop()
	held := func(want ...netip.Prefix) func() bool {
		return func() bool { return slices.Equal(x.heldNow(), want) }
	}
	counts := func(want ...int) func() bool {
		return func() bool { return ann.of(a) == want[0] && ann.of(b) == want[1] && ann.of(c) == want[2] }
	}
	settle := func(n int) {
		t.Helper()
		if !clk.BlockUntil(n) {
			t.Fatalf("%d timers armed, want %d", clk.Armed(), n)
		}
	}

	eventually(t, "a backup releases the extras", func() bool { return x.releasedOf(a) == 1 && x.releasedOf(b) == 1 })
	if h := x.heldNow(); len(h) != 0 {
		t.Fatalf("a backup holds %v", h)
	}

	in.Claim("test")
	eventually(t, "taking over: held and announced once", func() bool { return held(a, b)() && counts(1, 1, 0)() })
	if s := in.Status(); s.Extra != 2 || s.ExtraHeld != 2 {
		t.Fatalf("status: %d extra, %d held", s.Extra, s.ExtraHeld)
	}
	// The machine's timer, the refresh, the VIPs' burst and the extras' burst.
	settle(4)
	clk.Advance(500 * time.Millisecond)
	eventually(t, "the second round", counts(2, 2, 0))

	if err := in.SetExtra(ex); err != nil {
		t.Fatal(err)
	}
	eventually(t, "an added one: held and announced at once", func() bool { return held(a, b, c)() && counts(2, 2, 1)() })
	settle(3) // its burst round is armed
	in.Resign("test")
	eventually(t, "stepping down releases them all", held())
	settle(2)
	clk.Advance(time.Second)
	settle(2)
	if !counts(2, 2, 1)() {
		t.Fatalf("announced after release: %d %d %d", ann.of(a), ann.of(b), ann.of(c))
	}

	in.Claim("test")
	eventually(t, "taking over again", func() bool { return held(a, b, c)() && counts(3, 3, 2)() })
	if err := in.SetExtra([]netip.Prefix{b, c}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a removed one is released", held(b, c))
	settle(4)
	clk.Advance(500 * time.Millisecond)
	eventually(t, "the burst round skips the removed one", counts(3, 4, 3))
	settle(2)
	clk.AdvanceTo(t0.Add(10 * time.Second))
	eventually(t, "the refresh", counts(3, 5, 4))

	for _, p := range f.sentSnapshot() {
		if len(p.Addresses) != 1 {
			t.Fatalf("an advert lists %v", p.Addresses)
		}
	}
	stop()
	if h := x.heldNow(); len(h) != 0 {
		t.Fatalf("after shutdown %v held", h)
	}
}

func (f *fakeNet) sentSnapshot() []Packet { s, _, _ := f.snapshot(); return s }

// timedNet records when each advert went out.
type timedNet struct {
	mu sync.Mutex
	at []time.Time
	n  []int // addresses in each
}

func (s *timedNet) Send(b []byte, _ netip.Addr) error {
	p, err := Unmarshal(b, false)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.at = append(s.at, time.Now())
	s.n = append(s.n, len(p.Addresses))
	s.mu.Unlock()
	return nil
}
func (s *timedNet) Local() netip.Addr { return netip.MustParseAddr("10.0.0.2") }

// Adding 1,000 extra addresses, each taking 50µs as a netlink call can,
// must not hold up adverts: the longest gap between two adverts while they
// are added stays below three advert intervals (the master-down interval a
// backup waits before taking over).
func TestThousandExtrasKeepAdvertsOnTime(t *testing.T) {
	defer goleak.VerifyNone(t)
	const interval = 20 * time.Millisecond
	tx, f, x, ann := &timedNet{}, &fakeNet{}, newFakeExtra(50*time.Microsecond), newFakeAnn()
	cfg := Config{Name: "slot", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: interval,
		VIPs: prefixes("192.0.2.10/32"), GARPCount: 3, GARPInterval: 10 * time.Millisecond}
	in := NewInstance(cfg, tx, f, ann, slog.New(slog.DiscardHandler), WithExtraAddresses(x))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	in.Claim("test")
	eventually(t, "master", func() bool { return in.Status().State == Master })
	time.Sleep(3 * interval)

	thousand := make([]netip.Prefix, 1000)
	for i := range thousand {
		thousand[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i / 256), byte(i % 256)}), 32)
	}
	start := time.Now()
	if err := in.SetExtra(thousand); err != nil {
		t.Fatal(err)
	}
	eventually(t, "1,000 held", func() bool { return in.Status().ExtraHeld == 1000 })
	took := time.Since(start)
	time.Sleep(2 * interval)
	first := thousand[0]
	if ann.of(first) < 1 || ann.of(thousand[999]) < 1 {
		t.Fatalf("not announced: %d, %d", ann.of(first), ann.of(thousand[999]))
	}
	// And stepping down releases them all.
	in.Resign("test")
	eventually(t, "released", func() bool { return len(x.heldNow()) == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	tx.mu.Lock()
	defer tx.mu.Unlock()
	var gap time.Duration
	last := start
	for i, at := range tx.at {
		if tx.n[i] != 1 {
			t.Fatalf("an advert lists %d addresses", tx.n[i])
		}
		if at.Before(start) || at.After(start.Add(took)) {
			continue
		}
		gap, last = max(gap, at.Sub(last)), at
	}
	gap = max(gap, start.Add(took).Sub(last))
	t.Logf("1,000 extra addresses held in %v (%v per address faked); longest gap between adverts meanwhile %v (interval %v)",
		took.Round(time.Millisecond), x.delay, gap.Round(100*time.Microsecond), interval)
	if gap >= 3*interval {
		t.Fatalf("longest gap between adverts %v while 1,000 addresses were added, want < %v", gap, 3*interval)
	}
}

// sharedExtra is a fakeExtra whose addresses in other are held by another
// instance of the node already (vip.Holder.AcquireNew).
type sharedExtra struct {
	*fakeExtra
	other map[netip.Prefix]bool
}

func (s sharedExtra) AcquireNew(ps []netip.Prefix) ([]netip.Prefix, error) {
	var fresh []netip.Prefix
	for _, p := range ps {
		if !s.other[p] {
			fresh = append(fresh, p)
		}
	}
	return fresh, s.Acquire(ps)
}

// An address another instance of this node holds already only moves
// between the node's instances: taking over, the instance holds it but
// does not announce it; the others it announces as before.
func TestExtraHeldElsewhereNotAnnounced(t *testing.T) {
	defer goleak.VerifyNone(t)
	f, ann := &fakeNet{}, newFakeAnn()
	ex := prefixes("192.0.2.20/32", "192.0.2.21/32")
	x := sharedExtra{newFakeExtra(0), map[netip.Prefix]bool{ex[1]: true}}
	cfg := Config{Name: "slot", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: time.Second,
		VIPs: prefixes("192.0.2.10/32"), GARPCount: 1}
	in := NewInstance(cfg, f, f, ann, slog.New(slog.DiscardHandler), WithExtraAddresses(x))
	if err := in.SetExtra(ex); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	defer func() { cancel(); <-done }()
	in.Claim("test")
	eventually(t, "both held, the fresh one announced", func() bool {
		return slices.Equal(x.heldNow(), ex) && ann.of(ex[0]) == 1
	})
	if n := ann.of(ex[1]); n != 0 {
		t.Fatalf("the address held elsewhere was announced %d times", n)
	}
}
