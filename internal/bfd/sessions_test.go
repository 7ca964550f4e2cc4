package bfd

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/vigil-lb/vigil/internal/clock/clocktest"
	"github.com/vigil-lb/vigil/internal/health"
)

// receive hands each datagram to its session by your discriminator, or by
// source while the peer does not know this end's discriminator yet, and
// counts every packet no session takes by reason.
func TestSessionsDemux(t *testing.T) {
	clk := clocktest.New(t0)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tr := &fakeTransport{clock: clk, out: make(chan sent, 100)}
	newS := func(discr uint32) *Session {
		return NewSession(SessionConfig{Peer: "x", LocalDiscr: discr, Params: fast, Clock: clk, Transport: tr, Log: log})
	}
	a, b := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::2")
	sa, sb := newS(0x1111), newS(0x3333)
	m := &Sessions{store: health.New(), log: log, drops: map[string]uint64{},
		byAddr: map[netip.Addr]*Session{a: sa, b: sb}, byDiscr: map[uint32]*Session{0x1111: sa, 0x3333: sb}}
	wire := func(p *Packet) []byte {
		buf, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return buf
	}
	m.receive(received{b: wire(peer(Down, 0)), src: a, ttl: 255})
	if st := sa.Status(); st.State != Init || st.Received != 1 {
		t.Fatalf("by source: %+v", st)
	}
	m.receive(received{b: wire(peer(Up, 0x1111)), src: a, ttl: 255})
	if st := sa.Status(); st.State != Up {
		t.Fatalf("by discriminator: %+v", st)
	}
	for _, tc := range []struct {
		r    received
		want string
	}{
		{received{b: wire(peer(Up, 0x1111)), src: a, ttl: 254}, DropTTL},
		{received{b: wire(peer(Up, 0x1111)), src: a, ttl: -1}, DropTTL},
		{received{b: []byte{1, 2, 3}, src: a, ttl: 255}, DropInvalid},
		{received{b: wire(peer(Down, 0)), src: netip.MustParseAddr("10.0.0.9"), ttl: 255}, DropUnknownPeer},
		{received{b: wire(peer(Up, 0x9999)), src: a, ttl: 255}, DropUnknownDiscr},
		{received{b: wire(peer(Up, 0x3333)), src: a, ttl: 255}, DropWrongSource},
		{received{b: wire(&Packet{State: Up, DetectMult: 3, MyDiscriminator: 2, YourDiscriminator: 0x1111, Auth: &Auth{Type: 1, Data: []byte{1, 'x'}}}), src: a, ttl: 255}, DropSessionRefuse},
	} {
		before := m.drops[tc.want]
		m.receive(tc.r)
		if m.drops[tc.want] != before+1 {
			t.Errorf("%s: drops %v", tc.want, m.drops)
		}
	}
	if st := sa.Status(); st.State != Up || st.Received != 2 || sb.Status().Received != 0 {
		t.Fatalf("a dropped packet reached a session: %+v %+v", st, sb.Status())
	}
}

// The health of a session for the BGP session: up while Up, and while the
// peer holds it AdminDown (RFC 5882 3.2); down otherwise.
func TestHealthOf(t *testing.T) {
	for _, tc := range []struct {
		st Status
		up bool
	}{
		{Status{State: Up, RemoteState: Up}, true},
		{Status{State: Down, RemoteState: AdminDown, LocalDiag: DiagNeighborDown}, true},
		{Status{State: Down, RemoteState: Down, LocalDiag: DiagDetectionTimeExpired}, false},
		{Status{State: Down, RemoteState: Down, LocalDiag: DiagNeighborDown, PeerRestarted: true}, true},
		{Status{State: Init, RemoteState: Down, PeerRestarted: true}, true},
		{Status{State: Down, RemoteState: Down, LocalDiag: DiagNeighborDown}, false},
		{Status{State: Init, RemoteState: Down}, false},
		{Status{State: AdminDown}, false},
	} {
		if got := healthOf(tc.st); got.Up != tc.up {
			t.Errorf("%+v: up %v, want %v", tc.st, got.Up, tc.up)
		}
	}
}
