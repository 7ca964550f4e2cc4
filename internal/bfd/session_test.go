package bfd

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/clock/clocktest"
)

// sent is one packet the session handed its transport, with the fake
// time it was sent at.
type sent struct {
	p  Packet
	at time.Time
}

// fakeTransport records what the session sends.
type fakeTransport struct {
	clock *clocktest.Clock
	out   chan sent
}

func (f *fakeTransport) Send(p *Packet) error {
	if _, err := p.MarshalBinary(); err != nil {
		return err
	}
	f.out <- sent{*p, f.clock.Now()}
	return nil
}

// rig is a session under a fake clock and transport, with its state
// changes on a channel.
type rig struct {
	t       *testing.T
	s       *Session
	clock   *clocktest.Clock
	tx      *fakeTransport
	changes chan Status
	stop    func()
}

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func newRig(t *testing.T, p Params) *rig {
	t.Helper()
	clk := clocktest.New(t0)
	r := &rig{t: t, clock: clk, tx: &fakeTransport{clock: clk, out: make(chan sent, 10000)}, changes: make(chan Status, 100)}
	r.s = NewSession(SessionConfig{Peer: "10.0.0.2", LocalDiscr: 0x1111, Params: p, Clock: clk, Transport: r.tx,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), OnChange: func(st Status) { r.changes <- st },
		Rand: rand.New(rand.NewPCG(1, 2))})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.s.Run(ctx) })
	var once sync.Once
	r.stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(r.stop)
	return r
}

// next returns the next packet sent, waiting a bounded real time for the
// session's goroutine.
func (r *rig) next() sent {
	r.t.Helper()
	select {
	case s := <-r.tx.out:
		return s
	case <-time.After(5 * time.Second):
		r.t.Fatal("no packet sent")
	}
	return sent{}
}

// drain returns the packets sent so far.
func (r *rig) drain() []sent {
	var out []sent
	for {
		select {
		case s := <-r.tx.out:
			out = append(out, s)
		default:
			return out
		}
	}
}

// advance moves the fake clock by d in 5 ms steps, each once the session
// has armed its timer again, so it acts at (about) the due times.
func (r *rig) advance(d time.Duration) {
	r.t.Helper()
	for end := r.clock.Now().Add(d); r.clock.Now().Before(end); {
		if !r.clock.BlockUntil(1) {
			r.t.Fatal("the session armed no timer")
		}
		r.clock.Advance(min(5*time.Millisecond, end.Sub(r.clock.Now())))
	}
	r.clock.BlockUntil(1)
}

// advanceWithPeer is advance with p received every 50 ms.
func (r *rig) advanceWithPeer(d time.Duration, p *Packet) {
	r.t.Helper()
	for end := r.clock.Now().Add(d); r.clock.Now().Before(end); {
		if err := r.s.Receive(p); err != nil {
			r.t.Fatal(err)
		}
		r.advance(min(50*time.Millisecond, end.Sub(r.clock.Now())))
	}
}

// change returns the next state change.
func (r *rig) change() Status {
	r.t.Helper()
	select {
	case st := <-r.changes:
		return st
	case <-time.After(5 * time.Second):
		r.t.Fatal("no state change")
	}
	return Status{}
}

// peer is what the peer sends: state st, its discriminator 0x2222, 100 ms.
func peer(st State, your uint32) *Packet {
	return &Packet{State: st, DetectMult: 3, MyDiscriminator: 0x2222, YourDiscriminator: your,
		DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond}
}

var fast = Params{DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond, DetectMult: 3}

// up brings r's session Up by the three-way handshake: the peer's Down
// takes it to Init, the peer's Up to Up.
func (r *rig) up() {
	r.t.Helper()
	if err := r.s.Receive(peer(Down, 0)); err != nil {
		r.t.Fatal(err)
	}
	if st := r.change(); st.State != Init {
		r.t.Fatalf("after the peer's Down: %v, want Init", st.State)
	}
	if err := r.s.Receive(peer(Up, 0x1111)); err != nil {
		r.t.Fatal(err)
	}
	if st := r.change(); st.State != Up {
		r.t.Fatalf("after the peer's Up: %v, want Up", st.State)
	}
}

func TestHandshake(t *testing.T) {
	r := newRig(t, fast)
	first := r.next()
	if first.p.State != Down || first.p.YourDiscriminator != 0 || first.p.MyDiscriminator != 0x1111 || first.p.DetectMult != 3 {
		t.Fatalf("first packet %+v", first.p)
	}
	r.up()
	st := r.s.Status()
	if st.RemoteDiscr != 0x2222 || st.RemoteState != Up || st.LocalDiag != DiagNone || st.Flaps != 0 {
		t.Fatalf("status %+v", st)
	}
	// The peer's Init takes a Down session straight to Up too.
	r2 := newRig(t, fast)
	r2.s.Receive(peer(Init, 0x1111))
	if st := r2.change(); st.State != Up {
		t.Fatalf("Down + peer Init: %v", st.State)
	}
	// A Down peer does not take Init back.
	r3 := newRig(t, fast)
	r3.s.Receive(peer(Down, 0))
	r3.change()
	r3.s.Receive(peer(Down, 0))
	if st := r3.s.Status(); st.State != Init {
		t.Fatalf("Init + peer Down: %v", st.State)
	}
}

// While not Up the session advertises and keeps a 1 s rate (RFC 5880
// 6.8.3) whatever its configured rate, jittered to 75-100 %.
func TestSlowRateWhileNotUp(t *testing.T) {
	r := newRig(t, fast)
	r.next()
	r.advance(5 * time.Second)
	got := r.drain()
	if len(got) < 5 || len(got) > 7 {
		t.Fatalf("%d packets in 5 s at the slow rate", len(got))
	}
	for i, s := range got {
		if s.p.DesiredMinTx != time.Second || s.p.RequiredMinRx != 100*time.Millisecond || s.p.State != Down || s.p.Poll {
			t.Fatalf("packet %d: %+v", i, s.p)
		}
		if i > 0 {
			if gap := s.at.Sub(got[i-1].at); gap < 750*time.Millisecond || gap > time.Second+5*time.Millisecond {
				t.Fatalf("gap %v between packets %d and %d", gap, i-1, i)
			}
		}
	}
}

// Once Up the session advertises its configured rate with a poll sequence
// (P bit until the peer's F bit), sends at the faster rate at once, and
// stops polling on the Final.
func TestPollSequenceOnUp(t *testing.T) {
	r := newRig(t, fast)
	r.up()
	r.drain()
	r.advanceWithPeer(500*time.Millisecond, peer(Up, 0x1111))
	got := r.drain()
	if len(got) < 4 {
		t.Fatalf("%d packets in 500 ms after Up, want the 100 ms rate", len(got))
	}
	for _, s := range got {
		if !s.p.Poll || s.p.DesiredMinTx != 100*time.Millisecond || s.p.State != Up || s.p.YourDiscriminator != 0x2222 {
			t.Fatalf("packet while polling %+v", s.p)
		}
	}
	final := peer(Up, 0x1111)
	final.Final = true
	r.s.Receive(final)
	r.drain()
	r.advanceWithPeer(300*time.Millisecond, peer(Up, 0x1111))
	for _, s := range r.drain() {
		if s.p.Poll {
			t.Fatalf("poll bit after the Final: %+v", s.p)
		}
	}
	if st := r.s.Status(); st.TxInterval != 100*time.Millisecond || st.RxInterval != 100*time.Millisecond || st.DetectionTime != 300*time.Millisecond {
		t.Fatalf("intervals %+v", st)
	}
}

// A poll from the peer is answered at once with the F bit and no P bit.
func TestAnswersPollWithFinal(t *testing.T) {
	r := newRig(t, fast)
	r.up()
	r.drain()
	p := peer(Up, 0x1111)
	p.Poll = true
	r.s.Receive(p) // no clock advance: the answer does not wait for the timer
	s := r.next()
	if !s.p.Final || s.p.Poll {
		t.Fatalf("answer to a poll %+v", s.p)
	}
}

// Detection time = the peer's detect mult x max(local required min rx,
// the peer's desired min tx) (6.8.4); silence that long takes the session
// Down with diagnostic 1, counts a flap and forgets the peer's
// discriminator.
func TestDetectionTimeExpires(t *testing.T) {
	slowPeer := Params{DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 50 * time.Millisecond, DetectMult: 3}
	r := newRig(t, slowPeer)
	r.up()
	p := peer(Up, 0x1111)
	p.DetectMult, p.DesiredMinTx = 4, 200*time.Millisecond // 4 x max(50 ms, 200 ms) = 800 ms
	if r.s.Receive(p); r.s.Status().DetectionTime != 4*time.Second {
		t.Fatalf("detection time while polling %v, want 4 x the 1 s slow rate", r.s.Status().DetectionTime)
	}
	p.Final = true // the poll sequence ends
	r.s.Receive(p)
	p.Final = false
	if st := r.s.Status(); st.DetectionTime != 800*time.Millisecond {
		t.Fatalf("detection time %v, want 800ms", st.DetectionTime)
	}
	r.advance(750 * time.Millisecond)
	if st := r.s.Status(); st.State != Up {
		t.Fatalf("down after 750 ms of an 800 ms detection time: %+v", st)
	}
	r.advance(100 * time.Millisecond)
	st := r.change()
	if st.State != Down || st.LocalDiag != DiagDetectionTimeExpired || st.RemoteDiscr != 0 || st.Flaps != 1 {
		t.Fatalf("after the detection time: %+v", st)
	}
	// Down again advertises the slow rate, and the next packets say why.
	r.drain()
	r.advance(1100 * time.Millisecond)
	got := r.drain()
	if len(got) == 0 {
		t.Fatal("nothing sent while Down")
	}
	if s := got[len(got)-1].p; s.State != Down || s.Diag != DiagDetectionTimeExpired || s.DesiredMinTx != time.Second || s.YourDiscriminator != 0 {
		t.Fatalf("packet while Down %+v", s)
	}
	// The peer comes back: up again.
	r.up()
	if st := r.s.Status(); st.Flaps != 1 {
		t.Fatalf("flaps %d", st.Flaps)
	}
}

// A peer that signals Down takes an Up session Down (diagnostic 3); one
// that signals AdminDown too, and status shows the peer's AdminDown.
func TestPeerSignalsDown(t *testing.T) {
	for _, remote := range []State{Down, AdminDown} {
		t.Run(remote.String(), func(t *testing.T) {
			r := newRig(t, fast)
			r.up()
			p := peer(remote, 0x1111)
			p.Diag = DiagAdminDown
			r.s.Receive(p)
			st := r.change()
			if st.State != Down || st.LocalDiag != DiagNeighborDown || st.RemoteState != remote || st.Flaps != 1 {
				t.Fatalf("%+v", st)
			}
		})
	}
}

// A Down session told AdminDown by its peer stays Down but reports the
// peer's state change, and back.
func TestPeerAdminDownWhileDown(t *testing.T) {
	r := newRig(t, fast)
	r.s.Receive(peer(AdminDown, 0))
	if st := r.change(); st.State != Down || st.RemoteState != AdminDown {
		t.Fatalf("%+v", st)
	}
}

// The session stops periodic packets while the peer's required min rx is
// 0, and drops packets with an authentication section.
func TestNoPacketsWhenPeerWantsNoneAndNoAuth(t *testing.T) {
	r := newRig(t, fast)
	r.next()
	p := peer(Down, 0)
	p.RequiredMinRx = 0
	r.s.Receive(p)
	r.change()
	p.State = Init
	r.advanceWithPeer(3*time.Second, p)
	if got := r.drain(); len(got) != 0 {
		t.Fatalf("sent %d packets to a peer that wants none: %+v", len(got), got)
	}
	auth := peer(Up, 0x1111)
	auth.Auth = &Auth{Type: 1, Data: []byte{1, 'x'}}
	if err := r.s.Receive(auth); err != ErrAuthentication {
		t.Fatalf("auth packet: %v", err)
	}
	if st := r.s.Status(); st.State != Up {
		t.Fatalf("auth packet changed the state: %v", st.State)
	}
}

// Stopping sends AdminDown (diagnostic 7), and the session then ignores
// the peer.
func TestShutdownSendsAdminDown(t *testing.T) {
	r := newRig(t, fast)
	r.up()
	r.stop()
	got := r.drain()
	if len(got) < 2 {
		t.Fatal("nothing sent at shutdown")
	}
	for _, s := range got[len(got)-2:] {
		if s.p.State != AdminDown || s.p.Diag != DiagAdminDown {
			t.Fatalf("shutdown packet %+v", s.p)
		}
	}
	if err := r.s.Receive(peer(Up, 0x1111)); err != ErrAdminDown {
		t.Fatalf("a packet after shutdown: %v", err)
	}
}

// The transmit interval is jittered to 75-100 % of the negotiated one, and
// to 75-90 % with a detect mult of 1 (6.8.7).
func TestJitter(t *testing.T) {
	for _, tc := range []struct {
		mult   uint8
		lo, hi float64
	}{{3, 0.75, 1.0}, {1, 0.75, 0.9}} {
		s := NewSession(SessionConfig{Params: Params{DesiredMinTx: time.Second, RequiredMinRx: time.Second, DetectMult: tc.mult},
			Clock: clocktest.New(t0), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Rand: rand.New(rand.NewPCG(3, 4))})
		var minSeen, maxSeen time.Duration = time.Hour, 0
		for range 10000 {
			d := s.jitterLocked()
			minSeen, maxSeen = min(minSeen, d), max(maxSeen, d)
		}
		lo, hi := time.Duration(tc.lo*float64(time.Second)), time.Duration(tc.hi*float64(time.Second))
		if minSeen < lo || maxSeen > hi || minSeen > lo+10*time.Millisecond || maxSeen < hi-10*time.Millisecond {
			t.Errorf("mult %d: jitter spans %v..%v, want %v..%v", tc.mult, minSeen, maxSeen, lo, hi)
		}
	}
}

// The peer asks for a slower rate than this end's: the session sends at
// the peer's required min rx.
func TestTxIntervalFollowsPeerMinRx(t *testing.T) {
	r := newRig(t, fast)
	r.up()
	final := peer(Up, 0x1111)
	final.Final, final.RequiredMinRx = true, 400*time.Millisecond
	r.s.Receive(final)
	r.drain()
	slow := peer(Up, 0x1111)
	slow.RequiredMinRx = 400 * time.Millisecond
	r.advanceWithPeer(2*time.Second, slow)
	got := r.drain()
	if len(got) < 4 || len(got) > 7 { // 300-400 ms apart: the 100 ms rate would send ~20
		t.Fatalf("%d packets in 2 s at a 400 ms rate", len(got))
	}
	if st := r.s.Status(); st.TxInterval != 400*time.Millisecond {
		t.Fatalf("tx interval %v", st.TxInterval)
	}
}

// A peer that starts a new session (Down, a new discriminator, none for
// this end) takes an Up session Down, marked as a restart for 3 x 1 s (the
// new session's slow rate), and the handshake brings it Up again; silence
// clears the mark. A Down from the peer's running session is a restart
// only when it claims this end signaled Down (FRR's way to drop a
// session): with any other diagnostic it is a failure.
func TestPeerRestartsItsSession(t *testing.T) {
	r := newRig(t, fast)
	r.up()
	fresh := peer(Down, 0)
	fresh.MyDiscriminator = 0x4444
	r.s.Receive(fresh)
	st := r.change()
	if st.State != Down || !st.PeerRestarted || st.LocalDiag != DiagNeighborDown || st.RemoteDiscr != 0x4444 {
		t.Fatalf("after the peer's new session: %+v", st)
	}
	r.advance(2900 * time.Millisecond) // a new session sends at 1 s: 3 x 1 s of grace
	if st := r.s.Status(); !st.PeerRestarted {
		t.Fatalf("the restart mark went within 3 x 1 s: %+v", st)
	}
	r.advance(200 * time.Millisecond) // silent that long: a failure after all
	if st := r.change(); st.State != Down || st.PeerRestarted {
		t.Fatalf("silent after a restart: %+v", st)
	}

	for _, tc := range []struct {
		diag    Diag
		restart bool
	}{{DiagNone, false}, {DiagDetectionTimeExpired, false}, {DiagPathDown, false}, {DiagNeighborDown, true}} {
		r2 := newRig(t, fast)
		r2.up()
		down := peer(Down, 0x1111) // the running session says Down
		down.Diag = tc.diag
		r2.s.Receive(down)
		if st := r2.change(); st.State != Down || st.PeerRestarted != tc.restart {
			t.Fatalf("the peer's session went down with diag %v: %+v", tc.diag, st)
		}
	}
	r3 := newRig(t, fast)
	r3.up()
	r3.s.Receive(fresh)
	r3.change()
	r3.s.Receive(fresh) // Down again: Init, still a restart
	if st := r3.change(); st.State != Init || !st.PeerRestarted {
		t.Fatalf("the new session's handshake: %+v", st)
	}
	fresh.State, fresh.YourDiscriminator = Init, 0x1111
	r3.s.Receive(fresh)
	if st := r3.change(); st.State != Up || st.PeerRestarted || st.RemoteDiscr != 0x4444 {
		t.Fatalf("the new session came up: %+v", st)
	}
}
