package bgp

import (
	"context"
	"net/netip"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
)

// bfdGate closes a neighbor's BGP session the moment its BFD session goes
// down (package bfd publishes it as health.BFDKey), instead of after the
// hold time, and keeps the neighbor down until BFD is up again. Before BFD
// was ever up the session runs as without BFD: a neighbor whose BFD never
// comes up (none configured on the router) keeps its BGP session.
type bfdGate struct {
	neighbors []string // those with bfd set
	seenUp    map[string]bool
}

func newBFDGate(b config.BGP) *bfdGate {
	g := &bfdGate{seenUp: map[string]bool{}}
	for _, n := range b.Neighbors {
		if a, err := netip.ParseAddr(n.Address); err == nil && n.BFD != nil {
			g.neighbors = append(g.neighbors, a.String()) // as the speaker and package bfd name it
		}
	}
	return g
}

// update holds down or releases each neighbor after its BFD state.
func (g *bfdGate) update(ctx context.Context, store *health.Store, sp *Speaker) {
	for _, addr := range g.neighbors {
		st, known := store.Get(health.BFDKey(addr))
		up := known && st.Up
		g.seenUp[addr] = g.seenUp[addr] || up
		if g.seenUp[addr] {
			sp.holdForBFD(ctx, addr, !up, st.Reason)
		}
	}
}

// holdForBFD closes and holds the neighbor's session (hold) or lets it
// connect again; it does nothing when the neighbor already is so. GoBGP's
// DisablePeer sends a Cease NOTIFICATION and closes the TCP connection at
// once, which is all a dead path allows; EnablePeer lets it reconnect after
// GoBGP's idle hold.
func (sp *Speaker) holdForBFD(ctx context.Context, addr string, hold bool, reason string) {
	sp.mu.Lock()
	info := sp.peers[addr]
	if info == nil || info.bfdHeld == hold {
		sp.mu.Unlock()
		return
	}
	info.bfdHeld = hold
	sp.mu.Unlock()
	if hold {
		sp.log.Warn("bgp session closed: the neighbor's bfd session is down", "neighbor", addr, "reason", reason)
		if err := sp.peerAPI.DisablePeer(ctx, &api.DisablePeerRequest{Address: addr, Communication: "vigil: bfd down"}); err != nil {
			sp.log.Warn("bgp: close the session after bfd went down", "neighbor", addr, "err", err)
		}
		return
	}
	sp.log.Info("bgp session allowed again: the neighbor's bfd session is up", "neighbor", addr)
	if err := sp.peerAPI.EnablePeer(ctx, &api.EnablePeerRequest{Address: addr}); err != nil {
		sp.log.Warn("bgp: reopen the session after bfd came up", "neighbor", addr, "err", err)
	}
}

// heldForBFD reports whether the neighbor is held down by BFD.
func (sp *Speaker) heldForBFD(addr string) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	info := sp.peers[addr]
	return info != nil && info.bfdHeld
}
