package supervisor

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/notify"
	"github.com/vigil-lb/vigil/internal/vrrp"
	"go.uber.org/goleak"
)

// quietNet is a link where nobody else speaks: every instance becomes master.
type quietNet struct{ mu sync.Mutex }

func (q *quietNet) Send([]byte, netip.Addr) error                                 { return nil }
func (q *quietNet) Local() netip.Addr                                             { return netip.MustParseAddr("10.0.0.2") }
func (q *quietNet) Add() error                                                    { return nil }
func (q *quietNet) Remove() error                                                 { return nil }
func (q *quietNet) Present() ([]netip.Prefix, error)                              { return nil, nil }
func (q *quietNet) Announce([]netip.Addr) error                                   { return nil }
func (q *quietNet) Burst(context.Context, []netip.Addr, int, time.Duration) error { return nil }

func TestSyncGroupFaultsTogether(t *testing.T) {
	defer goleak.VerifyNone(t)
	log := slog.New(slog.DiscardHandler)
	q := &quietNet{}
	var members []*vrrp.Instance
	for i, name := range []string{"a", "b"} {
		cfg := vrrp.Config{Name: name, Interface: "eth0", VRID: uint8(i + 1), Version: 3, Priority: 100,
			Interval: 10 * time.Millisecond, VIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 32)},
			Track: []vrrp.TrackItem{{Kind: "check", Name: "c-" + name, Weight: 0}}}
		members = append(members, vrrp.NewInstance(cfg, q, q, q, log))
	}
	g := &syncGroup{name: "g", members: members, hook: notify.New("", time.Second, log), log: log, faulted: map[string]bool{}}
	for _, m := range members {
		m.OnTransition = g.transition
		m.OnOwnFault = g.ownFault
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, m := range members {
		wg.Go(func() { _ = m.Run(ctx) })
	}
	defer func() { cancel(); wg.Wait() }()
	wait := func(what string, want vrrp.State) {
		t.Helper()
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
			if members[0].Status().State == want && members[1].Status().State == want {
				return
			}
		}
		t.Fatalf("%s: states %v and %v, want both %v", what, members[0].Status().State, members[1].Status().State, want)
	}
	wait("start", vrrp.Master)
	members[0].SetTracked("check", "c-a", false) // only a's check fails
	wait("fault of one member", vrrp.Fault)
	members[1].SetTracked("check", "c-b", false) // both have their own fault now
	members[0].SetTracked("check", "c-a", true)
	time.Sleep(50 * time.Millisecond)
	wait("b's fault still holds the group", vrrp.Fault)
	members[1].SetTracked("check", "c-b", true)
	wait("recovery", vrrp.Master)
}
