package vrrp

import (
	"context"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/clock/clocktest"
	"go.uber.org/goleak"
)

// A flood on our VRID (foreign VIP sets from spoofed sources) that fills the
// receive queue costs the backup no advert of its master: each is handled,
// the master-down timer never runs out, and every junk message dropped is
// counted, as vip_mismatch once read or queue_full when the queue was full.
func TestMasterAdvertsSurviveAFloodOnOurVRID(t *testing.T) {
	defer goleak.VerifyNone(t)
	clk := clocktest.New(time.Unix(1000, 0))
	cfg := Config{Name: "api", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: 100 * time.Millisecond,
		Preempt: true, VIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}}
	in := NewInstance(cfg, &fakeNet{}, &fakeNet{}, &fakeNet{}, slog.New(slog.DiscardHandler), WithClock(clk))
	master := netip.MustParseAddr("10.0.0.9")
	ours := Packet{Version: 3, Type: TypeAdvertisement, VRID: 7, Priority: 200, MaxAdvertInt: 10,
		Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}
	fromMaster, _ := ours.Marshal(master, Group4)
	junk := func(i int) Received {
		src := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		p := ours
		p.Addresses = []netip.Addr{netip.MustParseAddr("198.51.100.1")}
		b, _ := p.Marshal(src, Group4)
		return Received{Src: src, Dst: Group4, TTL: 255, Payload: b}
	}

	// Run is not reading yet: the queue fills with 64 junk messages and
	// drops 36 more; the master's advert, which comes last, is kept.
	in.masterSrc.Store(&master)
	for i := range recvQueue + 36 {
		in.Deliver(junk(i))
	}
	in.Deliver(Received{Src: master, Dst: Group4, TTL: 255, Payload: fromMaster})
	if d := in.Status().Drops[DropQueueFull]; d != 36 {
		t.Fatalf("queue_full drops = %d, want 36", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "the master's advert and the queued junk handled", func() bool {
		s := in.Status()
		return s.Received == 1 && s.Drops[DropAddresses] == recvQueue
	})

	// Run reads now, flooded without pause; 30 advert intervals pass (the
	// master-down interval is 3.6 of them), one master advert in each.
	stop := make(chan struct{})
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				in.Deliver(junk(i))
			}
		}
	}()
	for round := range 30 {
		before := in.Status().Received
		in.Deliver(Received{Src: master, Dst: Group4, TTL: 255, Payload: fromMaster})
		eventually(t, "the master's advert handled", func() bool { return in.Status().Received > before })
		clk.Advance(cfg.Interval)
		if s := in.Status(); s.State != Backup || s.Master != master {
			close(stop)
			<-flooded
			t.Fatalf("round %d: %s following %s, want BACKUP following %s", round, s.State, s.Master, master)
		}
	}
	close(stop)
	<-flooded
	s := in.Status()
	if s.Transition != 1 { // INIT to BACKUP only
		t.Fatalf("%d transitions under the flood", s.Transition)
	}
	t.Logf("junk: %d read and dropped as vip_mismatch, %d dropped as queue_full", s.Drops[DropAddresses], s.Drops[DropQueueFull])
}

// queuedNet is a transport whose socket holds one advert of the master that
// its reader has not read yet: Drain delivers it.
type queuedNet struct {
	*fakeNet
	in      *Instance
	pending *Received
	drains  atomic.Int32
}

func (q *queuedNet) Drain(int) int {
	q.drains.Add(1)
	if r := q.pending; r != nil {
		q.pending = nil
		q.in.Deliver(*r)
		return 1
	}
	return 0
}

// When the master-down deadline comes, the backup first reads what its
// socket has queued: the master's advert there (a flood kept the reader
// behind, or the whole process was paused) arrived in time and holds off
// the takeover. With nothing queued, the backup takes over.
func TestBackupReadsTheQueueBeforeTakingOver(t *testing.T) {
	defer goleak.VerifyNone(t)
	clk := clocktest.New(time.Unix(1000, 0))
	cfg := Config{Name: "api", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: 100 * time.Millisecond,
		Preempt: true, VIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}}
	q := &queuedNet{fakeNet: &fakeNet{}}
	in := NewInstance(cfg, q, q, q, slog.New(slog.DiscardHandler), WithClock(clk))
	q.in = in
	master := netip.MustParseAddr("10.0.0.9")
	p := Packet{Version: 3, Type: TypeAdvertisement, VRID: 7, Priority: 200, MaxAdvertInt: 10,
		Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}
	b, _ := p.Marshal(master, Group4)
	adv := Received{Src: master, Dst: Group4, TTL: 255, Payload: b}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	defer func() { cancel(); <-done }()
	in.Deliver(adv)
	eventually(t, "following the master", func() bool { return in.Status().Master == master })

	// The deadline passes with the master's next advert still queued.
	q.pending = &adv
	clk.Advance(time.Second)
	eventually(t, "the queued advert read", func() bool { return in.Status().Received == 2 })
	if s := in.Status(); s.State != Backup {
		t.Fatalf("%s with the master's advert queued in time", s.State)
	}
	// Nothing queued: the master is gone.
	clk.Advance(time.Second)
	eventually(t, "the takeover", func() bool { return in.Status().State == Master })
}
