package vrrp

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/clock/clocktest"
	"go.uber.org/goleak"
)

// fakeNet stands in for the transport, netlink and GARP.
type fakeNet struct {
	mu        sync.Mutex
	sent      []Packet
	to        []netip.Addr // destination of each of sent
	has       bool         // VIPs configured
	adds      int
	removes   int
	announces int
}

func (f *fakeNet) Send(b []byte, dst netip.Addr) error {
	p, err := Unmarshal(b, false)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.sent = append(f.sent, *p)
	f.to = append(f.to, dst)
	f.mu.Unlock()
	return nil
}
func (f *fakeNet) Local() netip.Addr { return netip.MustParseAddr("10.0.0.2") }
func (f *fakeNet) Add() error        { f.mu.Lock(); f.has = true; f.adds++; f.mu.Unlock(); return nil }
func (f *fakeNet) Remove() error     { f.mu.Lock(); f.has = false; f.removes++; f.mu.Unlock(); return nil }
func (f *fakeNet) Present() ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.has {
		return []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}, nil
	}
	return nil, nil
}
func (f *fakeNet) Announce([]netip.Addr) error { f.mu.Lock(); f.announces++; f.mu.Unlock(); return nil }
func (f *fakeNet) Burst(ctx context.Context, a []netip.Addr, n int, d time.Duration) error {
	f.mu.Lock()
	f.announces += n
	f.mu.Unlock()
	return nil
}
func (f *fakeNet) snapshot() (sent []Packet, has bool, removes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Packet(nil), f.sent...), f.has, f.removes
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestInstanceLifecycle(t *testing.T) {
	defer goleak.VerifyNone(t)
	f := &fakeNet{has: true} // a VIP left over from a crash
	cfg := Config{Name: "api", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: 10 * time.Millisecond,
		Preempt: true, VIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}, GARPCount: 3, GARPInterval: time.Millisecond,
		Track: []TrackItem{{Kind: "check", Name: "ready", Weight: 0}, {Kind: "check", Name: "bonus", Weight: 20}}}
	in := NewInstance(cfg, f, f, f, slog.New(slog.DiscardHandler))
	var mu sync.Mutex
	var states []State
	in.OnTransition = func(_ *Instance, tr Transition) { mu.Lock(); states = append(states, tr.To); mu.Unlock() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()

	// The stale VIP goes first; with nobody else on the wire, master after
	// the master-down interval, advertising priority 100 + 20 (bonus up).
	eventually(t, "master", func() bool { return in.Status().State == Master })
	sent, has, removes := f.snapshot()
	if removes < 1 || !has {
		t.Fatalf("stale VIP removals %d, VIP held %v", removes, has)
	}
	if sent[0].Priority != 120 || sent[0].VRID != 7 {
		t.Fatalf("first advert %+v", sent[0])
	}

	// A higher-priority master makes us back off and drop the VIP.
	adv := Packet{Version: 3, Type: 1, VRID: 7, Priority: 200, MaxAdvertInt: 1, Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}
	src := netip.MustParseAddr("10.0.0.9")
	b, _ := adv.Marshal(src, Group4)
	in.Receive() <- Received{Src: src, Dst: Group4, TTL: 255, Payload: b}
	eventually(t, "backup", func() bool { return in.Status().State == Backup })
	if _, has, _ := f.snapshot(); has {
		t.Fatal("backup still holds the VIP")
	}
	// A bad advert is counted, not elected with.
	in.Receive() <- Received{Src: src, Dst: Group4, TTL: 64, Payload: b}
	eventually(t, "ttl drop counted", func() bool { return in.Status().Drops[DropTTL] == 1 })

	// The other master goes quiet: we take over again, then a weight-0
	// check fails and we go to FAULT with a priority-0 goodbye.
	eventually(t, "master again", func() bool { return in.Status().State == Master })
	in.SetTracked("check", "ready", false)
	eventually(t, "fault", func() bool { return in.Status().State == Fault })
	sent, has, _ = f.snapshot()
	if has || sent[len(sent)-1].Priority != 0 {
		t.Fatalf("fault: VIP held %v, last advert priority %d", has, sent[len(sent)-1].Priority)
	}
	in.SetTracked("check", "ready", true)
	in.SetTracked("check", "bonus", false)
	eventually(t, "master after recovery", func() bool { return in.Status().State == Master })
	if p := in.Status().Priority; p != 100 {
		t.Fatalf("priority with bonus down = %d, want 100", p)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sent, has, _ = f.snapshot()
	if has || sent[len(sent)-1].Priority != 0 {
		t.Fatalf("shutdown: VIP held %v, last advert priority %d", has, sent[len(sent)-1].Priority)
	}
	mu.Lock()
	defer mu.Unlock()
	if states[len(states)-1] != Stopped {
		t.Fatalf("last state %v", states[len(states)-1])
	}
}

// The instance's waits all run on its clock: a fake one drives the
// master-down timer, the advert interval, the delay before the rest of the
// GARP burst and the GARP refresh through Run, with no sleeps.
func TestInstanceRunsOnItsClock(t *testing.T) {
	defer goleak.VerifyNone(t)
	t0 := time.Unix(1000, 0)
	clk := clocktest.New(t0)
	f := &fakeNet{}
	cfg := Config{Name: "api", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: time.Second,
		VIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}, GARPCount: 3, GARPInterval: 500 * time.Millisecond,
		GARPRefresh: 10 * time.Second}
	in := NewInstance(cfg, f, f, f, slog.New(slog.DiscardHandler), WithClock(clk))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}()
	// settle waits until Run is back waiting on its timer and the refresh
	// ticker (plus extra other timers): Run re-arms its timer last, after
	// it has handled what fired.
	settle := func(extra int) {
		t.Helper()
		if !clk.BlockUntil(2 + extra) {
			t.Fatalf("%d timers armed, want %d", clk.Armed(), 2+extra)
		}
	}
	adverts := func() int { sent, _, _ := f.snapshot(); return len(sent) }
	announces := func() int { f.mu.Lock(); defer f.mu.Unlock(); return f.announces }

	// Master_Down_Interval for priority 100 at 1 s: 3 s + 156/256 s.
	settle(0)
	clk.Advance(3600 * time.Millisecond)
	settle(0)
	if s := in.Status(); s.State != Backup || adverts() != 0 {
		t.Fatalf("before the master-down interval: %v, %d adverts", s.State, adverts())
	}
	clk.Advance(10 * time.Millisecond)
	settle(1) // and the delay before the rest of the burst
	if s := in.Status(); s.State != Master || !s.Since.Equal(t0.Add(3610*time.Millisecond)) || adverts() != 1 || announces() != 1 {
		t.Fatalf("after the master-down interval: %v since %v, %d adverts, %d announces", s.State, s.Since, adverts(), announces())
	}

	// The rest of the burst waits GARPInterval; adverts go every second.
	clk.Advance(499 * time.Millisecond)
	settle(1)
	if announces() != 1 {
		t.Fatalf("burst before GARPInterval: %d announces", announces())
	}
	clk.Advance(time.Millisecond)
	eventually(t, "the rest of the burst", func() bool { return announces() == 3 })
	clk.Advance(499 * time.Millisecond)
	settle(0)
	if adverts() != 1 {
		t.Fatalf("%d adverts before the interval", adverts())
	}
	clk.Advance(time.Millisecond)
	settle(0)
	if adverts() != 2 {
		t.Fatalf("%d adverts after one interval", adverts())
	}

	// The refresh ticks at 10 s from the start: the master announces again.
	clk.AdvanceTo(t0.Add(9900 * time.Millisecond))
	settle(0)
	if announces() != 3 {
		t.Fatalf("refresh before its interval: %d announces", announces())
	}
	clk.AdvanceTo(t0.Add(10 * time.Second))
	eventually(t, "the refresh", func() bool { return announces() == 4 })
}

// flood keeps Run busy with valid adverts from another router until the
// returned stop is called.
func flood(in *Instance, prio uint8) (stop func()) {
	adv := Packet{Version: 3, Type: TypeAdvertisement, VRID: 7, Priority: prio, MaxAdvertInt: 100,
		Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}
	src := netip.MustParseAddr("10.0.0.9")
	b, _ := adv.Marshal(src, Group4)
	done, quit := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case in.Receive() <- Received{Src: src, Dst: Group4, TTL: 255, Payload: b}:
			case <-quit:
				return
			}
		}
	}()
	return func() { close(quit); <-done }
}

// Tracking is level-triggered: however many updates come at once, from
// however many goroutines, while Run is busy, none is lost and the instance
// ends with the priority and fault that the last state of each item gives.
func TestTrackingIsLosslessUnderLoad(t *testing.T) {
	defer goleak.VerifyNone(t)
	const checks, writers, calls = 64, 4, 100_000
	cfg := Config{Name: "api", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: time.Second,
		VIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}}
	weight := func(i int) int { return []int{0, 3, -2, 1, 2}[i%5] } // clamping never comes into it
	for i := range checks {
		cfg.Track = append(cfg.Track, TrackItem{Kind: "check", Name: "c" + itoa(i), Weight: weight(i)})
	}
	in := NewInstance(cfg, &fakeNet{}, &fakeNet{}, &fakeNet{}, slog.New(slog.DiscardHandler), WithClock(clocktest.New(time.Unix(1000, 0))))
	var ownFault atomic.Bool
	in.OnOwnFault = func(_ *Instance, fault bool) { ownFault.Store(fault) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	defer func() { cancel(); <-done }()
	stop := flood(in, 200)
	defer stop()

	for round, recover := range []bool{false, true} {
		// Each writer owns the checks i%writers == w, so the last state of
		// each is well defined; the last round ends with every weight-0
		// check up and no group fault, and so out of FAULT.
		final := make([]bool, checks)
		var groupFault atomic.Bool
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				for n := range calls / writers {
					i := w + writers*rng.IntN(checks/writers)
					up := rng.IntN(2) == 0
					if tail := n - (calls/writers - checks/writers); recover && tail >= 0 {
						i = w + writers*tail // each of this writer's checks once more
						up = up || weight(i) == 0
					}
					in.SetTracked("check", "c"+itoa(i), up)
					final[i] = up
				}
			})
		}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(round), writers))
			for range calls / 10 {
				f := rng.IntN(2) == 0
				in.SetGroupFault(f, "sync group g: [b] in fault")
				groupFault.Store(f)
			}
			if recover {
				in.SetGroupFault(false, "")
				groupFault.Store(false)
			}
		})
		wg.Wait()
		prio, own := 100, false
		for i, up := range final {
			switch w := weight(i); {
			case w == 0 && !up:
				own = true
			case w > 0 && up, w < 0 && !up:
				prio += w
			}
		}
		fault := own || groupFault.Load()
		eventually(t, "the final tracking state", func() bool {
			s := in.Status()
			return int(s.Priority) == prio && (s.State == Fault) == fault && ownFault.Load() == own
		})
		if recover && in.Status().State == Fault {
			t.Fatal("still in FAULT with every weight-0 check up")
		}
		t.Logf("round %d: priority %d, own fault %v, fault %v", round, prio, own, fault)
	}
}

// Claim and Resign are actions: every one is applied, in order, so the
// instance ends in the state the last one asks for and makes one transition
// per change of direction.
func TestClaimAndResignAreKeptInOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := Config{Name: "api", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: time.Second,
		VIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}}
	in := NewInstance(cfg, &fakeNet{}, &fakeNet{}, &fakeNet{}, slog.New(slog.DiscardHandler), WithClock(clocktest.New(time.Unix(1000, 0))))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "backup", func() bool { return in.Status().State == Backup })
	// A lower-priority router keeps Run busy without moving the election:
	// without preemption a backup stays one, and a master keeps its place.
	stop := flood(in, 50)
	defer stop()

	rng := rand.New(rand.NewPCG(1, 2))
	transitions, master := in.Status().Transition, false
	for range 100_000 {
		if rng.IntN(2) == 0 {
			in.Claim("test")
			transitions += b2u(!master)
			master = true
		} else {
			in.Resign("test")
			transitions += b2u(master)
			master = false
		}
	}
	want := Backup
	if master {
		want = Master
	}
	eventually(t, "the last action's state", func() bool {
		s := in.Status()
		return s.State == want && s.Transition == transitions
	})
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// The takeover probe waits for the release window: a master handing over
// (here preempted) still answers ARP for the VIP until our advert reaches
// it, which is no conflict. A real one, heard at a refresh, is reported
// with the MAC, the peer it belongs to and when, and clears when a later
// probe hears no one.
func TestARPConflictAfterReleaseWindowAndClears(t *testing.T) {
	defer goleak.VerifyNone(t)
	t0 := time.Unix(1000, 0)
	clk := clocktest.New(t0)
	f := &fakeNet{}
	cfg := Config{Name: "api", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: time.Second, Preempt: true,
		VIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}, GARPCount: 1, GARPRefresh: 10 * time.Second}
	in := NewInstance(cfg, f, f, f, slog.New(slog.DiscardHandler), WithClock(clk))
	peer := netip.MustParseAddr("10.0.0.9")
	theirMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 9}
	var oldMasterHolds, squatter atomic.Bool
	var probes atomic.Int32
	in.Probe = func(ctx context.Context, ip netip.Addr) ([]net.HardwareAddr, error) {
		defer probes.Add(1)
		if oldMasterHolds.Load() || squatter.Load() {
			return []net.HardwareAddr{theirMAC}, nil
		}
		return nil, nil
	}
	in.Identify = func(mac net.HardwareAddr) []netip.Addr {
		if mac.String() == theirMAC.String() {
			return []netip.Addr{peer}
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}()
	settle := func(extra int) {
		t.Helper()
		if !clk.BlockUntil(2 + extra) {
			t.Fatalf("%d timers armed, want %d", clk.Armed(), 2+extra)
		}
	}
	// A lower-priority master advertises: we hear it, and preempt it.
	adv := Packet{Version: 3, Type: TypeAdvertisement, VRID: 7, Priority: 50, MaxAdvertInt: 100,
		Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}
	b, _ := adv.Marshal(peer, Group4)
	settle(0)
	oldMasterHolds.Store(true)
	in.Receive() <- Received{Src: peer, Dst: Group4, TTL: 255, Payload: b}
	eventually(t, "the advert", func() bool { return in.Status().Received == 1 })
	settle(0)
	clk.Advance(3700 * time.Millisecond)
	settle(1) // the probe waits
	if s := in.Status(); s.State != Master || probes.Load() != 0 {
		t.Fatalf("after the takeover: %v, %d probes; want master and no probe yet", s.State, probes.Load())
	}
	// Our advert reaches the old master, which releases the VIP.
	clk.Advance(300 * time.Millisecond)
	settle(1)
	oldMasterHolds.Store(false)
	clk.Advance(in.releaseWindow())
	eventually(t, "the takeover probe", func() bool { return probes.Load() == 1 })
	settle(0)
	if s := in.Status(); s.Conflicts != 0 || len(s.ARPConflicts) != 0 {
		t.Fatalf("a hand-over counted as a conflict: %d, %+v", s.Conflicts, s.ARPConflicts)
	}

	// The old master comes back answering ARP (a crash with the VIP left
	// up): the refresh's probe reports it.
	squatter.Store(true)
	clk.AdvanceTo(t0.Add(10 * time.Second))
	eventually(t, "the refresh probe", func() bool { return probes.Load() == 2 })
	eventually(t, "the conflict", func() bool { return len(in.Status().ARPConflicts) == 1 })
	s := in.Status()
	c := s.ARPConflicts[0]
	if s.Conflicts != 1 || c.VIP != netip.MustParseAddr("192.0.2.10") || len(c.MACs) != 1 || c.MACs[0].String() != theirMAC.String() ||
		c.Peer != peer || !c.LastSeen.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("conflict %+v (count %d), want 192.0.2.10 from %s, peer %s, at the refresh", c, s.Conflicts, theirMAC, peer)
	}
	squatter.Store(false)
	settle(0)
	clk.AdvanceTo(t0.Add(20 * time.Second))
	eventually(t, "the next refresh probe", func() bool { return probes.Load() == 3 })
	eventually(t, "the conflict to clear", func() bool { return len(in.Status().ARPConflicts) == 0 })
	if s := in.Status(); s.Conflicts != 1 {
		t.Fatalf("the counter went from 1 to %d", s.Conflicts)
	}
}
