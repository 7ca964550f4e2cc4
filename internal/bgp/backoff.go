package bgp

import (
	"context"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/vigil-lb/vigil/internal/clock"
)

// gobgpIdleHold is how long GoBGP itself waits in Idle after a failed
// session before it tries again (its holdtimeIdle; not configurable).
const gobgpIdleHold = 5 * time.Second

// backoff spaces the attempts to a neighbor that keeps failing. GoBGP waits
// a fixed 5 s after every failure; a router that rejects the session (wrong
// AS, bad password, a policy) would get an OPEN, and the log a line, every
// 5 s for ever. From the second failure in a row the wait doubles up to max.
// A session that stayed up for stable starts the count afresh, so the
// common case (a router that restarted) is retried at GoBGP's pace.
type backoff struct {
	base, max, stable time.Duration

	failures int
	upSince  time.Time // zero while not established
}

func newBackoff() *backoff {
	return &backoff{base: gobgpIdleHold, max: time.Minute, stable: 30 * time.Second}
}

// established records that the session came up at now.
func (b *backoff) established(now time.Time) { b.upSince = now }

// failed records a failed attempt or a dropped session at now and returns
// the whole wait before the next attempt.
func (b *backoff) failed(now time.Time) time.Duration {
	if !b.upSince.IsZero() && now.Sub(b.upSince) >= b.stable {
		b.failures = 0
	}
	b.upSince = time.Time{}
	b.failures++
	wait := b.base
	for i := 1; i < b.failures && wait < b.max; i++ {
		wait *= 2
	}
	return min(wait, b.max)
}

// peerInfo is what the speaker tracks of one neighbor beyond GoBGP's state.
type peerInfo struct {
	backoff   *backoff
	state     api.PeerState_SessionState // as last polled
	notified  uint64                     // NOTIFICATIONs sent and received, as last polled
	lastError string
	retryAt   time.Time // zero unless vigil holds the peer down
	bfdHeld   bool      // held down while its BFD session is down (bfd.go)
}

// pollInterval is how often the speaker looks at its sessions: GoBGP's
// peer events do not cover attempts its outgoing-connection manager makes
// (an OPEN refused there changes no state), its message counters do.
const pollInterval = 500 * time.Millisecond

// monitor logs every session change and applies the back-off: when a
// neighbor fails again, vigil holds it administratively down for the part
// of the wait GoBGP's own idle hold does not cover, then lets it retry.
// It polls pollInterval after the end of the last poll, so that a slow
// answer never makes polls pile up (and a fake clock sees a poll done once
// the timer is armed again).
func (sp *Speaker) monitor(ctx context.Context) {
	t := sp.clock.NewTimer(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		sp.peerAPI.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			if ctx.Err() == nil {
				sp.observe(ctx, p, sp.clock.Now())
			}
		})
		t.Reset(pollInterval)
	}
}

// observe compares one neighbor with its last poll: an established session
// is logged; a session that fell to Idle, or a NOTIFICATION exchanged while
// not established (a refused OPEN), is a failure.
func (sp *Speaker) observe(ctx context.Context, p *api.Peer, now time.Time) {
	addr, st := p.GetConf().GetNeighborAddress(), p.GetState()
	msgs := st.GetMessages()
	notified := msgs.GetSent().GetNotification() + msgs.GetReceived().GetNotification()
	sp.mu.Lock()
	defer sp.mu.Unlock()
	info := sp.peers[addr]
	if info == nil {
		return
	}
	prev, prevNotified := info.state, info.notified
	info.state, info.notified = st.GetSessionState(), notified
	established := info.state == api.PeerState_SESSION_STATE_ESTABLISHED
	switch {
	case st.GetAdminState() != api.PeerState_ADMIN_STATE_UP:
		return // held down by the back-off
	case established && prev != info.state:
		info.backoff.established(now)
		info.lastError, info.retryAt = "", time.Time{}
		sp.log.Info("bgp session established", "neighbor", addr, "asn", p.GetConf().GetPeerAsn())
		return
	case established:
		return
	}
	fell := info.state == api.PeerState_SESSION_STATE_IDLE && prev != info.state && prev != api.PeerState_SESSION_STATE_UNSPECIFIED
	refused := notified > prevNotified
	if !fell && !refused {
		return
	}
	wait := info.backoff.failed(now)
	info.lastError = reason(st, refused, prev == api.PeerState_SESSION_STATE_ESTABLISHED)
	attrs := []any{"neighbor", addr, "asn", p.GetConf().GetPeerAsn(), "was", stateName(prev),
		"reason", info.lastError, "failures", info.backoff.failures}
	if hold := wait - gobgpIdleHold; hold > 0 {
		info.retryAt = now.Add(wait)
		attrs = append(attrs, "retry_in", wait)
		sp.wg.Go(func() { sp.holdDown(ctx, addr, hold) })
	}
	sp.log.Warn("bgp session failed", attrs...)
}

// reason names why a session failed, e.g. "hold timer expired". GoBGP
// records no reason for an OPEN refused before the session state changed,
// and calls a NOTIFICATION that arrives in OpenConfirm an invalid message:
// the NOTIFICATION counters say what happened instead.
func reason(st *api.PeerState, notified, wasUp bool) string {
	r := api.PeerState_DisconnectReason_name[int32(st.GetDisconnectReason())]
	r = strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(r, "DISCONNECT_REASON_"), "_", " "))
	switch {
	case notified && !wasUp && (r == "invalid msg" || r == "unspecified" || r == ""):
		return "the OPEN exchange failed with a NOTIFICATION: the neighbor's ASN, or its entry for this node, does not match"
	case r == "unspecified" || r == "":
		r = "session closed"
	}
	if m := st.GetDisconnectMessage(); m != "" && m != strings.ReplaceAll(r, " ", "-") {
		r += ": " + m
	}
	return r
}

// holdDown keeps the neighbor administratively down for d, then lets GoBGP
// retry it (after its own idle hold).
func (sp *Speaker) holdDown(ctx context.Context, addr string, d time.Duration) {
	if err := sp.peerAPI.DisablePeer(ctx, &api.DisablePeerRequest{Address: addr, Communication: "vigil: back-off"}); err != nil {
		sp.log.Warn("bgp back-off: hold the neighbor down", "neighbor", addr, "err", err)
		return
	}
	if clock.Sleep(ctx, sp.clock, d) != nil || sp.heldForBFD(addr) {
		return // BFD lets the neighbor go once it is up
	}
	if err := sp.peerAPI.EnablePeer(ctx, &api.EnablePeerRequest{Address: addr}); err != nil {
		sp.log.Warn("bgp back-off: let the neighbor retry", "neighbor", addr, "err", err)
	}
}
