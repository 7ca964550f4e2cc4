package bgp

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
)

// The gate leaves a neighbor alone until its BFD session was up once; then
// BFD down closes the BGP session at once (DisablePeer) and BFD up lets it
// reconnect (EnablePeer), once per change; status says why it is held.
// Neighbors without bfd are never touched.
func TestBFDGateClosesAndReopens(t *testing.T) {
	n := &scriptedNeighbor{state: api.PeerState_SESSION_STATE_ESTABLISHED, admin: api.PeerState_ADMIN_STATE_UP, calls: make(chan string, 10)}
	sp := newSpeaker(n, slog.New(slog.DiscardHandler),
		[]Neighbor{{Address: netip.MustParseAddr("192.0.2.1"), ASN: 64500}, {Address: netip.MustParseAddr("192.0.2.2"), ASN: 64500}}, nil)
	g := newBFDGate(config.BGP{Neighbors: []config.Neighbor{{Address: "192.0.2.1", BFD: &config.BFD{}}, {Address: "192.0.2.2"}}})
	store, ctx := health.New(), context.Background()
	key := health.BFDKey("192.0.2.1")
	calls := func() []string {
		var out []string
		for {
			select {
			case c := <-n.calls:
				out = append(out, c)
			default:
				return out
			}
		}
	}
	step := func(name string, set func(), want ...string) {
		t.Helper()
		set()
		g.update(ctx, store, sp)
		g.update(ctx, store, sp) // a second wake changes nothing
		if got := calls(); len(got) != len(want) || len(want) > 0 && got[0] != want[0] {
			t.Fatalf("%s: calls %v, want %v", name, got, want)
		}
	}
	step("unknown: no hold", func() {})
	step("down before it was ever up: no hold", func() { store.Set(key, health.State{Reason: "bfd Down"}) })
	step("up", func() { store.Set(key, health.State{Up: true}) })
	step("down after up: closed", func() { store.Set(key, health.State{Reason: "bfd Down: control detection time expired"}) }, "disable")
	n.set(api.PeerState_SESSION_STATE_IDLE, 0, api.PeerState_DISCONNECT_REASON_ADMIN_DOWN) // as GoBGP reports it
	if s := sp.Sessions(ctx); s[0].LastError != "held down while the neighbor's bfd session is down" {
		t.Fatalf("status while held: %+v", s[0])
	}
	step("gone from the store: still held", func() { store.Delete(key) })
	step("up again: reopened", func() { store.Set(key, health.State{Up: true}) }, "enable")
	step("the other neighbor's key means nothing", func() { store.Set(health.BFDKey("192.0.2.2"), health.State{}) })
}
