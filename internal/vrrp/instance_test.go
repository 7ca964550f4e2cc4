package vrrp

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// fakeNet stands in for the transport, netlink and GARP.
type fakeNet struct {
	mu        sync.Mutex
	sent      []Packet
	has       bool // VIPs configured
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
