package vrrp

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/clock/clocktest"
	"go.uber.org/goleak"
)

var (
	peer3 = netip.MustParseAddr("10.0.0.3")
	peer4 = netip.MustParseAddr("10.0.0.4")
	peer5 = netip.MustParseAddr("10.0.0.5")
)

// peerLab runs a unicast instance (priority 100, 1 s interval) on a fake
// clock and a fake network.
type peerLab struct {
	t   *testing.T
	in  *Instance
	f   *fakeNet
	clk *clocktest.Clock
}

func newPeerLab(t *testing.T, peers ...netip.Addr) *peerLab {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last, after Run has returned
	clk := clocktest.New(time.Unix(1000, 0))
	f := &fakeNet{}
	cfg := Config{Name: "api", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: time.Second,
		Preempt: true, VIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}, Peers: peers}
	l := &peerLab{t: t, in: NewInstance(cfg, f, f, f, slog.New(slog.DiscardHandler), WithClock(clk)), f: f, clk: clk}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.in.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	l.settle()
	return l
}

// settle waits until Run waits on its timer again.
func (l *peerLab) settle() {
	l.t.Helper()
	if !l.clk.BlockUntil(1) {
		l.t.Fatalf("%d timers armed, want 1", l.clk.Armed())
	}
}

func (l *peerLab) advance(d time.Duration) {
	l.t.Helper()
	l.clk.Advance(d)
	l.settle()
}

// setPeers applies peers and waits until Run has put them in force.
func (l *peerLab) setPeers(peers ...netip.Addr) {
	l.t.Helper()
	if err := l.in.SetPeers(peers); err != nil {
		l.t.Fatal(err)
	}
	want := normalPeers(peers)
	eventually(l.t, "the new peers in force", func() bool { return slices.Equal(l.in.Status().Peers, want) })
	l.settle()
}

// advert hands the instance an advert from src and waits until it is
// accepted or dropped.
func (l *peerLab) advert(src netip.Addr, prio uint8) {
	l.t.Helper()
	before := l.in.Status()
	adv := Packet{Version: 3, Type: TypeAdvertisement, VRID: 7, Priority: prio, MaxAdvertInt: 100,
		Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}
	dst := l.f.Local()
	b, err := adv.Marshal(src, dst)
	if err != nil {
		l.t.Fatal(err)
	}
	l.in.Receive() <- Received{Src: src, Dst: dst, TTL: 255, Payload: b}
	eventually(l.t, "the advert handled", func() bool {
		s := l.in.Status()
		return s.Received+s.Drops[DropUnknownPeer] > before.Received+before.Drops[DropUnknownPeer]
	})
	l.settle()
}

// sentSince returns the destinations of the adverts sent from the n-th on,
// and fails the test on a priority-0 advert among them.
func (l *peerLab) sentSince(n int) []netip.Addr {
	l.t.Helper()
	l.f.mu.Lock()
	defer l.f.mu.Unlock()
	for i, p := range l.f.sent[n:] {
		if p.Priority == 0 {
			l.t.Fatalf("advert %d to %v has priority 0", n+i, l.f.to[n+i])
		}
	}
	return slices.Clone(l.f.to[n:])
}

func (l *peerLab) sent() int { l.f.mu.Lock(); defer l.f.mu.Unlock(); return len(l.f.sent) }

// A master's peers change under it: it stays master with no transition,
// its adverts go to the new set from the next one on, an advert from a
// removed peer is dropped as unknown_peer and one from an added peer takes
// part in the election.
func TestSetPeersOnAMaster(t *testing.T) {
	l := newPeerLab(t, peer4, peer3)
	l.advance(3610 * time.Millisecond) // Master_Down_Interval at priority 100
	// Transitions: INIT to BACKUP, BACKUP to MASTER.
	if s := l.in.Status(); s.State != Master || s.Transition != 2 {
		t.Fatalf("after the master-down interval: %v, %d transitions", s.State, s.Transition)
	}
	if got := l.sentSince(0); !slices.Equal(got, []netip.Addr{peer3, peer4}) {
		t.Fatalf("first advert went to %v, want both peers", got)
	}

	n := l.sent()
	l.setPeers(peer5, peer4, peer4) // 10.0.0.3 removed, 10.0.0.5 added; order and repeats do not count
	if got := l.sentSince(n); len(got) != 0 {
		t.Fatalf("SetPeers sent adverts of its own: %v", got)
	}
	for range 3 {
		l.advance(time.Second)
	}
	if got, want := l.sentSince(n), []netip.Addr{peer4, peer5, peer4, peer5, peer4, peer5}; !slices.Equal(got, want) {
		t.Fatalf("three intervals after SetPeers the adverts went to %v, want %v", got, want)
	}
	if s := l.in.Status(); s.State != Master || s.Transition != 2 {
		t.Fatalf("after SetPeers: %v, %d transitions, want master and none more", s.State, s.Transition)
	}

	// A removed peer that would win is not heard; an added one is.
	l.advert(peer3, 200)
	if s := l.in.Status(); s.State != Master || s.Drops[DropUnknownPeer] != 1 {
		t.Fatalf("advert from the removed peer: %v, unknown_peer drops %d", s.State, s.Drops[DropUnknownPeer])
	}
	l.advert(peer5, 200)
	if s := l.in.Status(); s.State != Backup || s.Master != peer5 || s.Transition != 3 {
		t.Fatalf("advert from the added peer: %v following %v, %d transitions", s.State, s.Master, s.Transition)
	}
}

// A backup's peers change while its master advertises: adding a peer
// changes nothing in the election; removing the master makes its adverts
// unknown_peer drops, and the backup takes over once the master-down
// interval passes without an advert it accepts.
func TestSetPeersOnABackup(t *testing.T) {
	l := newPeerLab(t, peer3)
	l.advert(peer3, 200)
	l.setPeers(peer3, peer5)
	for range 5 { // well past the master-down interval, with the master heard every second
		l.advance(time.Second)
		l.advert(peer3, 200)
	}
	if s := l.in.Status(); s.State != Backup || s.Master != peer3 || s.Transition != 1 || s.Received != 6 {
		t.Fatalf("after adding a peer: %v following %v, %d transitions, %d adverts accepted", s.State, s.Master, s.Transition, s.Received)
	}
	if n := l.sent(); n != 0 {
		t.Fatalf("a backup sent %d adverts", n)
	}

	l.setPeers(peer5) // the master is no longer a peer
	l.advance(time.Second)
	l.advert(peer3, 200)
	l.advance(time.Second)
	l.advert(peer3, 200)
	if s := l.in.Status(); s.State != Backup || s.Drops[DropUnknownPeer] != 2 {
		t.Fatalf("the removed master's adverts: %v, unknown_peer drops %d", s.State, s.Drops[DropUnknownPeer])
	}
	l.advance(1610 * time.Millisecond) // 3.61 s since the last advert accepted
	if s := l.in.Status(); s.State != Master || s.Transition != 2 {
		t.Fatalf("3.61 s after the last advert from a peer: %v, %d transitions", s.State, s.Transition)
	}
	if got := l.sentSince(0); !slices.Equal(got, []netip.Addr{peer5}) {
		t.Fatalf("the new master's first advert went to %v, want only %v", got, peer5)
	}
}

// SetPeers changes the peers, never the mode, and refuses what it cannot
// use without changing anything.
func TestSetPeersRefuses(t *testing.T) {
	vips := []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")}
	unicast := NewInstance(Config{Name: "u", VRID: 7, Version: 3, Interval: time.Second, VIPs: vips, Peers: []netip.Addr{peer3}},
		&fakeNet{}, &fakeNet{}, &fakeNet{}, slog.New(slog.DiscardHandler))
	multicast := NewInstance(Config{Name: "m", VRID: 8, Version: 3, Interval: time.Second, VIPs: vips},
		&fakeNet{}, &fakeNet{}, &fakeNet{}, slog.New(slog.DiscardHandler))
	cases := []struct {
		name  string
		in    *Instance
		peers []netip.Addr
		mode  bool // ErrPeerMode
	}{
		{"unicast to none", unicast, nil, true},
		{"multicast to unicast", multicast, []netip.Addr{peer3}, true},
		{"IPv6 peer for IPv4 VIPs", unicast, []netip.Addr{netip.MustParseAddr("fe80::3")}, false},
		{"IPv4-mapped peer", unicast, []netip.Addr{netip.MustParseAddr("::ffff:10.0.0.3")}, false},
		{"zero address", unicast, []netip.Addr{{}}, false},
	}
	for _, c := range cases {
		err := c.in.SetPeers(c.peers)
		if err == nil || errors.Is(err, ErrPeerMode) != c.mode {
			t.Errorf("%s: %v", c.name, err)
		}
		if c.in.pending.peers != nil {
			t.Errorf("%s: a refused set was queued", c.name)
		}
	}
	if err := multicast.SetPeers(nil); err != nil {
		t.Errorf("multicast instance, no peers: %v", err)
	}
}
