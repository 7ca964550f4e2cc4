package bfd

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/vigil-lb/vigil/internal/clock"
)

// Params are the intervals a session asks for once it is Up.
type Params struct {
	// DesiredMinTx is how often this end would like to send.
	DesiredMinTx time.Duration
	// RequiredMinRx is the fastest this end accepts packets.
	RequiredMinRx time.Duration
	// DetectMult is how many missed intervals make the peer declare this
	// end down.
	DetectMult uint8
}

// SlowTx is the least transmit interval a session advertises while it is
// not Up (RFC 5880 6.8.3), so a peer that is gone costs a packet a second.
const SlowTx = time.Second

// Transport sends one session's control packets to its peer.
type Transport interface {
	Send(p *Packet) error
}

// ErrAuthentication is returned by Receive for a packet with an
// authentication section: vigil's sessions run without one (RFC 5880 6.8.6).
var ErrAuthentication = errors.New("bfd: authentication section on a session without authentication")

// ErrAdminDown is returned by Receive once the session is AdminDown.
var ErrAdminDown = errors.New("bfd: session is administratively down")

// Status is a session's state as status and metrics show it.
type Status struct {
	State, RemoteState State
	// LocalDiag says why this end last went down; RemoteDiag is the
	// peer's, as last received.
	LocalDiag, RemoteDiag   Diag
	LocalDiscr, RemoteDiscr uint32
	// TxInterval is the negotiated transmit interval (before jitter):
	// the larger of this end's desired min tx and the peer's required
	// min rx. RxInterval is the peer's: the larger of this end's required
	// min rx and the peer's desired min tx.
	TxInterval, RxInterval time.Duration
	// DetectionTime is the peer's detect mult times RxInterval: silence
	// that long takes the session down. 0 until a packet arrived.
	DetectionTime time.Duration
	// Since is when State was entered.
	Since time.Time
	// Flaps counts transitions to Down.
	Flaps uint64
	// PeerRestarted is set while the session is Down because the peer
	// reset its session rather than lost the path: it started a new one
	// (a new discriminator, none for this end), or said Down "because
	// this end signaled Down" while this end was Up. FRR does the latter,
	// then the former, when a BGP session comes up and it fixes the BFD
	// session's source address. It is cleared when the session comes up
	// again, or when the peer stays silent for its detect mult times the
	// slow rate (a new session sends at that rate).
	PeerRestarted bool
	// Sent and Received count control packets.
	Sent, Received uint64
}

// SessionConfig is what NewSession needs.
type SessionConfig struct {
	// Peer names the peer in logs.
	Peer       string
	LocalDiscr uint32 // nonzero, unique on this node
	Params     Params
	Clock      clock.Clock
	Transport  Transport
	Log        *slog.Logger
	// OnChange is called with the new status after every state change,
	// under the session's lock: it must not block or call the session.
	OnChange func(Status)
	// Rand jitters the transmit interval; nil: a random seed.
	Rand *rand.Rand
}

// Session is one BFD session in asynchronous mode (RFC 5880 6.8), the active
// role, without echo or demand mode. Receive takes the peer's packets; Run
// sends packets and times the peer out.
type Session struct {
	peer     string
	params   Params
	clock    clock.Clock
	tx       Transport
	log      *slog.Logger
	onChange func(Status)
	kick     chan struct{}

	mu  sync.Mutex
	rnd *rand.Rand
	st  Status
	// desiredMinTx and requiredMinRx are what this end advertises;
	// txInUse and rxInUse the values in force for its own transmit
	// interval and the detection time, which lag behind the advertised
	// ones while a poll sequence for a slower rate is running (6.8.3).
	desiredMinTx, requiredMinRx time.Duration
	txInUse, rxInUse            time.Duration
	remoteMinRx                 time.Duration // the peer's required min rx
	remoteMinTx                 time.Duration // the peer's desired min tx
	remoteMult                  uint8
	remoteDemand                bool
	polling                     bool      // sending P bits until an F bit comes
	nextTx                      time.Time // zero: no periodic transmission
	detectAt                    time.Time // zero: no detection timer
}

// NewSession returns a session in state Down; Run starts it.
func NewSession(c SessionConfig) *Session {
	rnd := c.Rand
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	onChange := c.OnChange
	if onChange == nil {
		onChange = func(Status) {}
	}
	s := &Session{peer: c.Peer, params: c.Params, clock: c.Clock, tx: c.Transport, log: c.Log, onChange: onChange,
		kick: make(chan struct{}, 1), rnd: rnd}
	s.st = Status{State: Down, RemoteState: Down, LocalDiscr: c.LocalDiscr, Since: c.Clock.Now()}
	s.desiredMinTx, s.requiredMinRx = max(c.Params.DesiredMinTx, SlowTx), c.Params.RequiredMinRx
	s.txInUse, s.rxInUse = s.desiredMinTx, s.requiredMinRx
	s.remoteMinRx = time.Microsecond // 6.8.1: bfd.RemoteMinRxInterval starts at 1
	s.refreshLocked()
	return s
}

// Status returns the session's state.
func (s *Session) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Run sends the periodic packets and runs the detection timer until ctx
// ends, then sends AdminDown (RFC 5880 6.8.16: the peer must not take the
// end of vigil for a failure of the path) and returns.
func (s *Session) Run(ctx context.Context) {
	s.mu.Lock()
	s.nextTx = s.clock.Now() // the first packet at once
	s.mu.Unlock()
	t := s.clock.NewTimer(time.Hour)
	defer t.Stop()
	for {
		s.mu.Lock()
		now := s.clock.Now()
		s.expireLocked(now)
		if !s.nextTx.IsZero() && !now.Before(s.nextTx) {
			s.sendLocked(false)
			s.nextTx = now.Add(s.jitterLocked())
		}
		wake := s.nextTx
		if wake.IsZero() || !s.detectAt.IsZero() && s.detectAt.Before(wake) {
			wake = s.detectAt
		}
		s.mu.Unlock()
		if wake.IsZero() {
			t.Reset(time.Hour)
		} else {
			t.Reset(wake.Sub(now))
		}
		select {
		case <-ctx.Done():
			s.adminDown()
			return
		case <-t.C():
		case <-s.kick:
		}
	}
}

// adminDown takes the session AdminDown and tells the peer twice, in case
// one packet is lost: there is no later packet to repeat it.
func (s *Session) adminDown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setStateLocked(AdminDown, DiagAdminDown)
	s.sendLocked(false)
	s.sendLocked(false)
}

// Receive processes a valid packet (UnmarshalBinary checked it) that the
// transport matched to this session by discriminator or address (RFC 5880
// 6.8.6). An error says why the packet was dropped.
func (s *Session) Receive(p *Packet) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.Auth != nil {
		return ErrAuthentication
	}
	if s.st.State == AdminDown {
		return ErrAdminDown
	}
	now, state, remote := s.clock.Now(), s.st.State, s.st.RemoteState
	// A Down that is no path failure: the peer's new session (no
	// discriminator for this end, a new one of its own), or its session
	// going down "because this end signaled Down", which an Up end did not.
	restarted := p.YourDiscriminator == 0 && s.st.RemoteDiscr != 0 && p.MyDiscriminator != s.st.RemoteDiscr ||
		p.Diag == DiagNeighborDown
	s.st.Received++
	s.st.RemoteDiscr, s.st.RemoteState, s.st.RemoteDiag = p.MyDiscriminator, p.State, p.Diag
	s.remoteDemand, s.remoteMinRx, s.remoteMinTx, s.remoteMult = p.Demand, p.RequiredMinRx, p.DesiredMinTx, p.DetectMult
	if p.Final && s.polling {
		s.polling = false
		s.txInUse, s.rxInUse = s.desiredMinTx, s.requiredMinRx
	}
	switch {
	case p.State == AdminDown:
		if s.st.State != Down {
			s.setStateLocked(Down, DiagNeighborDown)
		}
	case s.st.State == Down && p.State == Down:
		s.setStateLocked(Init, DiagNone)
	case s.st.State == Down && p.State == Init, s.st.State == Init && (p.State == Init || p.State == Up):
		s.setStateLocked(Up, DiagNone)
	case s.st.State == Up && p.State == Down:
		s.st.PeerRestarted = restarted
		s.setStateLocked(Down, DiagNeighborDown)
	}
	s.refreshLocked()
	s.detectAt = now.Add(s.st.DetectionTime)
	if s.st.PeerRestarted {
		// The peer's new session starts at the slow rate: give it as
		// many of its intervals before silence counts.
		s.detectAt = now.Add(time.Duration(p.DetectMult) * SlowTx)
	}
	if p.Poll {
		s.sendLocked(true) // 6.8.7: the Final at once, whatever the timer says
	}
	if s.silentLocked() {
		s.nextTx = time.Time{}
	} else if iv := s.st.TxInterval; s.nextTx.IsZero() || s.nextTx.After(now.Add(iv)) {
		s.nextTx = now.Add(s.jitterLocked()) // the peer asks for a faster rate: take it now
	}
	if s.st.State == state && s.st.RemoteState != remote {
		s.onChange(s.st) // the peer went AdminDown, or came back from it
	}
	s.wake()
	return nil
}

// silentLocked reports whether periodic transmission must stop: the peer
// wants no packets (required min rx 0), or it runs demand mode while both
// ends are Up (6.8.7).
func (s *Session) silentLocked() bool {
	return s.remoteMinRx == 0 || s.remoteDemand && s.st.State == Up && s.st.RemoteState == Up
}

// expireLocked takes the session Down when the peer has been silent for the
// detection time (6.8.4), and forgets the peer's discriminator (6.8.1).
func (s *Session) expireLocked(now time.Time) {
	if s.detectAt.IsZero() || now.Before(s.detectAt) {
		return
	}
	s.detectAt = time.Time{}
	remote, restarted := s.st.RemoteState, s.st.PeerRestarted
	s.st.RemoteDiscr, s.st.RemoteState, s.st.PeerRestarted = 0, Down, false
	if s.st.State == Init || s.st.State == Up {
		s.setStateLocked(Down, DiagDetectionTimeExpired)
	} else if remote != Down || restarted {
		s.onChange(s.st)
	}
	if s.nextTx.IsZero() && s.st.State != AdminDown {
		s.nextTx = now // the peer's zero min rx no longer holds
	}
}

// setStateLocked moves to state to with diag, adapts the advertised
// intervals (the configured ones while Up, at least SlowTx otherwise; a
// change while Up starts a poll sequence), logs and notifies.
func (s *Session) setStateLocked(to State, diag Diag) {
	from := s.st.State
	if from == to {
		return
	}
	now := s.clock.Now()
	s.st.State, s.st.LocalDiag, s.st.Since = to, diag, now
	if to == Up || to == AdminDown {
		s.st.PeerRestarted = false // kept through Init: the new session's handshake
	}
	if to == Down {
		s.st.Flaps++
	}
	if to == Up {
		s.desiredMinTx, s.requiredMinRx = s.params.DesiredMinTx, s.params.RequiredMinRx
		s.polling = true
		// A faster rate may start at once; a slower one waits for the
		// Final (6.8.3).
		s.txInUse, s.rxInUse = min(s.txInUse, s.desiredMinTx), max(s.rxInUse, s.requiredMinRx)
	} else {
		s.desiredMinTx, s.requiredMinRx = max(s.params.DesiredMinTx, SlowTx), s.params.RequiredMinRx
		s.txInUse, s.rxInUse, s.polling = s.desiredMinTx, s.requiredMinRx, false
	}
	s.refreshLocked()
	if to != AdminDown {
		s.nextTx = now // tell the peer at once
	}
	s.log.Info("bfd session state change", "peer", s.peer, "from", from.String(), "to", to.String(),
		"reason", diag.String(), "remote_state", s.st.RemoteState.String())
	s.onChange(s.st)
}

// refreshLocked recomputes the negotiated intervals and detection time.
// Until the poll sequence that follows Up has ended, the peer may still
// send at the slow rate it used before (FRR does): detection allows for it.
func (s *Session) refreshLocked() {
	s.st.TxInterval = max(s.txInUse, s.remoteMinRx)
	s.st.RxInterval = max(s.rxInUse, s.remoteMinTx)
	rx := s.st.RxInterval
	if s.polling {
		rx = max(rx, SlowTx)
	}
	s.st.DetectionTime = time.Duration(s.remoteMult) * rx
}

// jitterLocked is the time to the next periodic packet: the negotiated
// interval less 0-25 %, or 10-25 % when the detect mult is 1 (6.8.7).
func (s *Session) jitterLocked() time.Duration {
	lo, hi := 0.75, 1.0
	if s.params.DetectMult == 1 {
		hi = 0.9
	}
	return time.Duration(float64(s.st.TxInterval) * (lo + (hi-lo)*s.rnd.Float64()))
}

// sendLocked sends a control packet; final answers a poll (and then
// carries no P bit: 6.8.7).
func (s *Session) sendLocked(final bool) {
	p := &Packet{
		Diag: s.st.LocalDiag, State: s.st.State, Poll: s.polling && !final, Final: final,
		DetectMult: s.params.DetectMult, MyDiscriminator: s.st.LocalDiscr, YourDiscriminator: s.st.RemoteDiscr,
		DesiredMinTx: s.desiredMinTx, RequiredMinRx: s.requiredMinRx,
	}
	if err := s.tx.Send(p); err != nil {
		s.log.Debug("bfd send", "peer", s.peer, "err", err)
		return
	}
	s.st.Sent++
}

// wake makes Run look at the timers again.
func (s *Session) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
