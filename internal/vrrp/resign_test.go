package vrrp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/clock/clocktest"
	"go.uber.org/goleak"
)

// An operator's resign hands a master's VIPs over with a priority-0 advert
// and keeps the instance backup, whatever it hears and however long it
// waits; resume puts it back in the election, where it preempts a
// lower-priority master.
func TestResignHandsOverAndResumePreempts(t *testing.T) {
	defer goleak.VerifyNone(t)
	clk := clocktest.New(time.Unix(1000, 0))
	f := &fakeNet{}
	cfg := Config{Name: "api", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: time.Second, Preempt: true,
		VIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}}
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
	settle := func() {
		t.Helper()
		if !clk.BlockUntil(1) {
			t.Fatalf("%d timers armed, want 1", clk.Armed())
		}
	}
	peer := netip.MustParseAddr("10.0.0.9")
	advert := func(prio uint8) {
		t.Helper()
		adv := Packet{Version: 3, Type: 1, VRID: 7, Priority: prio, MaxAdvertInt: 100,
			Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}
		b, _ := adv.Marshal(peer, Group4)
		n := in.Status().Received
		in.Receive() <- Received{Src: peer, Dst: Group4, TTL: 255, Payload: b}
		eventually(t, fmt.Sprint("advert ", prio, " handled"), func() bool { s := in.Status(); return s.Received == n+1 && s.Master == peer })
	}

	settle()
	clk.Advance(3610 * time.Millisecond)
	eventually(t, "master", func() bool { return in.Status().State == Master })

	in.SetResigned(true)
	eventually(t, "resigned backup", func() bool { s := in.Status(); return s.Resigned && s.State == Backup })
	sent, has, _ := f.snapshot()
	if has || sent[len(sent)-1].Priority != 0 {
		t.Fatalf("resign: VIP held %v, last advert priority %d, want 0", has, sent[len(sent)-1].Priority)
	}
	// A lower-priority master takes over; resigned, we neither preempt it
	// nor take over when it goes quiet.
	advert(50)
	settle()
	clk.Advance(2 * time.Hour)
	settle()
	if s := in.Status(); s.State != Backup || !s.Resigned {
		t.Fatalf("resigned, 2 h after a lower master's advert: %v (resigned %v)", s.State, s.Resigned)
	}
	if sent2, has, _ := f.snapshot(); has || len(sent2) != len(sent) {
		t.Fatalf("resigned: %d more adverts sent, VIP held %v", len(sent2)-len(sent), has)
	}

	in.SetResigned(false)
	eventually(t, "resumed", func() bool { return !in.Status().Resigned })
	advert(50) // lower: let the timer run out and preempt
	settle()
	clk.Advance(3610 * time.Millisecond)
	eventually(t, "master again after resume", func() bool { return in.Status().State == Master })
	sent, has, _ = f.snapshot()
	if !has || sent[len(sent)-1].Priority != 100 {
		t.Fatalf("resumed: VIP held %v, last advert priority %d, want 100", has, sent[len(sent)-1].Priority)
	}
}

// A resigned backup ignores a priority-0 advert (the master leaving) too:
// someone else takes the VIPs, or no one; resume is the operator's call.
func TestMachineResignedBackupIgnoresPriorityZero(t *testing.T) {
	clk := clocktest.New(time.Unix(1000, 0))
	l := &recLink{}
	m := NewMachine(Params{Version: 3, Priority: 200, Interval: time.Second, Preempt: true, LocalAddr: netip.MustParseAddr("10.0.0.2")}, clk, l)
	m.Start()
	m.SetResigned(true, "operator")
	m.Receive(Advert{Source: netip.MustParseAddr("10.0.0.9"), Priority: 0, Interval: time.Second})
	if !m.NextDeadline().IsZero() {
		t.Fatalf("resigned backup armed its master-down timer for %v", m.NextDeadline())
	}
	// A sync group's Claim does not undo the operator's resign.
	m.Claim("sync group")
	if m.State() != Backup || len(l.adverts) != 0 {
		t.Fatalf("resigned backup after Claim: %v, adverts %v", m.State(), l.adverts)
	}
	m.SetResigned(false, "operator")
	if m.NextDeadline().IsZero() {
		t.Fatal("resumed backup has no master-down timer")
	}
	clk.Advance(4 * time.Second)
	m.Tick()
	if m.State() != Master {
		t.Fatalf("resumed with nobody advertising: %v, want MASTER", m.State())
	}
}

// recLink counts what the machine asks of the world.
type recLink struct{ adverts []uint8 }

func (l *recLink) Advertise(p uint8) { l.adverts = append(l.adverts, p) }
func (l *recLink) TakeOver()         {}
func (l *recLink) Release()          {}
func (l *recLink) Reannounce()       {}
