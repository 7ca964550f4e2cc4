package vrrp

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// A running master moves to another VRID and priority without a state
// change: its next adverts carry both, adverts for the old VRID are
// dropped, and a backup raised above a master's priority preempts it.
func TestLiveVRIDAndPriority(t *testing.T) {
	defer goleak.VerifyNone(t)
	f := &fakeNet{}
	cfg := Config{Name: "slot", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: 10 * time.Millisecond,
		Preempt: true, VIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}}
	in := NewInstance(cfg, f, f, f, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "master", func() bool { return in.Status().State == Master })
	transitions := in.Status().Transition

	if err := in.SetVRID(9); err != nil {
		t.Fatal(err)
	}
	if err := in.SetPriority(150); err != nil {
		t.Fatal(err)
	}
	eventually(t, "adverts on VRID 9 at 150", func() bool {
		sent, _, _ := f.snapshot()
		p := sent[len(sent)-1]
		return p.VRID == 9 && p.Priority == 150
	})
	if st := in.Status(); st.State != Master || st.Transition != transitions || st.VRID != 9 || st.Priority != 150 {
		t.Fatalf("after the live change: %+v", st)
	}
	// An advert for the old VRID is not ours any more.
	src := netip.MustParseAddr("10.0.0.9")
	old := Packet{Version: 3, Type: 1, VRID: 7, Priority: 200, MaxAdvertInt: 1, Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}
	b, _ := old.Marshal(src, Group4)
	in.Receive() <- Received{Src: src, Dst: Group4, TTL: 255, Payload: b}
	eventually(t, "old VRID dropped", func() bool { return in.Status().Drops[DropVRID] == 1 })
	if in.Status().State != Master {
		t.Fatal("an advert for the old VRID made the master back off")
	}
	// Lowered below a master on the new VRID, it backs off as VRRP does.
	newer := old
	newer.VRID, newer.Priority = 9, 120
	if err := in.SetPriority(110); err != nil {
		t.Fatal(err)
	}
	b, _ = newer.Marshal(src, Group4)
	in.Receive() <- Received{Src: src, Dst: Group4, TTL: 255, Payload: b}
	eventually(t, "backup", func() bool { return in.Status().State == Backup })

	for _, err := range []error{in.SetPriority(0), in.SetPriority(255), in.SetVRID(0)} {
		if !errors.Is(err, ErrLiveChange) {
			t.Fatalf("got %v, want ErrLiveChange", err)
		}
	}
	owner := NewInstance(Config{Name: "owner", VRID: 1, Version: 3, Priority: 255, Interval: time.Second,
		VIPs: cfg.VIPs}, f, f, f, slog.New(slog.DiscardHandler))
	if err := owner.SetPriority(100); !errors.Is(err, ErrLiveChange) {
		t.Fatalf("an address owner lowered: %v", err)
	}
}
