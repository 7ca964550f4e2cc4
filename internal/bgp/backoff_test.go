package bgp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/server"
)

func TestBackoffDoublesAndResets(t *testing.T) {
	b := newBackoff()
	t0 := time.Unix(0, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	steps := []struct {
		name string
		up   int // seconds the session stayed up before failing; -1: never came up
		want time.Duration
	}{
		{"first failure: GoBGP's own wait", -1, 5 * time.Second},
		{"second", -1, 10 * time.Second},
		{"third", -1, 20 * time.Second},
		{"up briefly does not reset", 3, 40 * time.Second},
		{"capped", -1, time.Minute},
		{"capped again", -1, time.Minute},
		{"up for 30 s starts afresh", 30, 5 * time.Second},
		{"and doubles again", -1, 10 * time.Second},
	}
	now := 0
	for _, s := range steps {
		if s.up >= 0 {
			b.established(at(now))
			now += s.up
		}
		if got := b.failed(at(now)); got != s.want {
			t.Fatalf("%s: wait %v, want %v", s.name, got, s.want)
		}
		now += 100
	}
}

// logLines collects log lines for a test.
type logLines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A router (a second GoBGP on loopback) and vigil disagree on an ASN, so
// every OPEN exchange ends in a NOTIFICATION: the router refuses vigil's AS
// (vigil learns it in OpenConfirm), or the router's AS is not the one
// configured here (GoBGP's outgoing connection refuses it, without a state
// change). Either way the session shows the reason and the count of
// failures, the log says why, and from the second failure vigil holds the
// neighbor down for the back-off, then lets it retry.
func TestRejectedSessionBacksOff(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for GoBGP's 5 s idle hold")
	}
	for _, tc := range []struct {
		name                 string
		routerExpects, weSay uint32
		third                bool // wait for the attempt after the back-off
	}{
		{"router refuses our AS", 65001, 64500, false},
		{"router is another AS than configured", 64512, 65000, true},
	} {
		// Not parallel: GoBGP's StartBgp writes package variables.
		t.Run(tc.name, func(t *testing.T) { rejectedSession(t, tc.routerExpects, tc.weSay, tc.third) })
	}
}

func rejectedSession(t *testing.T, routerExpects, weSay uint32, third bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ctx := context.Background()
	router := server.NewBgpServer(server.LoggerOption(slog.New(slog.NewTextHandler(io.Discard, nil)), nil))
	go router.Serve()
	defer router.Stop()
	if err := router.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 64500, RouterId: "10.0.0.254",
		ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"}}}); err != nil {
		t.Fatal(err)
	}
	defer router.StopBgp(ctx, &api.StopBgpRequest{})
	if err := router.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: routerExpects}, // vigil is 64512
		Transport: &api.Transport{PassiveMode: true},
	}}); err != nil {
		t.Fatal(err)
	}

	var logs logLines
	sp, err := Start(ctx, Config{ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.1"), Listen: -1,
		Neighbors: []Neighbor{{Address: netip.MustParseAddr("127.0.0.1"), ASN: weSay, Port: uint16(port), HoldTime: 9 * time.Second}}},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Stop(ctx)

	waitSession := func(what string, ok func(Session) bool) Session {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if ss := sp.Sessions(ctx); len(ss) == 1 && ok(ss[0]) {
				return ss[0]
			}
		}
		t.Fatalf("no session with %s within 15s: %+v\n%s", what, sp.Sessions(ctx), logs.String())
		return Session{}
	}
	s := waitSession("one failure", func(s Session) bool { return s.Failures == 1 })
	if s.State == "established" || !strings.HasPrefix(s.LastError, "the OPEN exchange failed with a NOTIFICATION") || !s.RetryAt.IsZero() {
		t.Fatalf("after the first failure: %+v\n%s", s, logs.String())
	}
	s = waitSession("two failures", func(s Session) bool { return s.Failures == 2 })
	if until := time.Until(s.RetryAt); until < 5*time.Second || until > 10*time.Second {
		t.Fatalf("after the second failure the next attempt is in %v, want 5s-10s: %+v", until, s)
	}
	second := time.Now()
	admin := api.PeerState_ADMIN_STATE_UNSPECIFIED
	sp.s.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) { admin = p.GetState().GetAdminState() })
	if admin != api.PeerState_ADMIN_STATE_DOWN {
		t.Fatalf("during the back-off the neighbor is %v, want held down", admin)
	}
	if got := logs.String(); strings.Count(got, `msg="bgp session failed"`) != 2 || !strings.Contains(got, "retry_in=10s") {
		t.Fatalf("log:\n%s", got)
	}
	if third {
		waitSession("three failures", func(s Session) bool { return s.Failures == 3 })
		if gap := time.Since(second); gap < 9*time.Second {
			t.Fatalf("the third attempt came %v after the second, want about 10s", gap)
		}
		if got := logs.String(); !strings.Contains(got, "retry_in=20s") {
			t.Fatalf("log:\n%s", got)
		}
	}
	t.Logf("%+v", s)
}
