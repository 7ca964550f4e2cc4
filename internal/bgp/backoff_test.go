package bgp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/vigil-lb/vigil/internal/clock/clocktest"
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

// freePort returns a TCP port on loopback that nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// cable joins two speakers that listen on loopback ports a and b: each sees
// a connection come in from 127.0.0.1 and sends its OPEN at once. (A
// speaker that dials waits 1.5 s to 2 s first: GoBGP's connect loop starts
// with a fixed, jittered delay.)
func cable(t *testing.T, a, b int) {
	t.Helper()
	var conns []net.Conn
	for _, port := range []int{a, b} {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			io.Copy(conns[i], conns[1-i])
			conns[i].Close()
		})
	}
	t.Cleanup(func() {
		conns[0].Close()
		conns[1].Close()
		wg.Wait()
	})
}

// startRouter starts a second GoBGP as the router, AS 64500 on loopback,
// which waits for vigil (AS 64512) to connect and expects it to be AS
// expects.
func startRouter(t *testing.T, port int, expects uint32) *server.BgpServer {
	t.Helper()
	ctx := context.Background()
	router := server.NewBgpServer(server.LoggerOption(slog.New(slog.DiscardHandler), nil))
	go router.Serve()
	t.Cleanup(router.Stop)
	if err := router.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 64500, RouterId: "10.0.0.254",
		ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { router.StopBgp(ctx, &api.StopBgpRequest{}) })
	if err := router.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: expects},
		Transport: &api.Transport{PassiveMode: true},
	}}); err != nil {
		t.Fatal(err)
	}
	return router
}

// waitActive waits until each server's one neighbor is in Active: a
// connection that comes in while its FSM is still in Idle is closed.
func waitActive(t *testing.T, servers ...*server.BgpServer) {
	t.Helper()
	for _, s := range servers {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			state := api.PeerState_SESSION_STATE_UNSPECIFIED
			s.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) { state = p.GetState().GetSessionState() })
			if state == api.PeerState_SESSION_STATE_ACTIVE {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the neighbor is %v, want active", state)
			}
		}
	}
}

func adminState(sp *Speaker) api.PeerState_AdminState {
	admin := api.PeerState_ADMIN_STATE_UNSPECIFIED
	sp.s.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) { admin = p.GetState().GetAdminState() })
	return admin
}

// waitAdmin waits for GoBGP's neighbor to be in admin state want: its FSM
// takes a DisablePeer or EnablePeer on its own goroutine.
func waitAdmin(t *testing.T, sp *Speaker, what string, want api.PeerState_AdminState) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); adminState(sp) != want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s the neighbor is %v, want %v", what, adminState(sp), want)
		}
	}
}

// A router (a second GoBGP on loopback) and vigil disagree on an ASN, so
// the OPEN exchange ends in a NOTIFICATION: the router refuses vigil's AS
// (vigil learns it in OpenConfirm), or the router's AS is not the one
// configured here. Either way the session shows the reason and the count of
// failures and the log says why; the first failure is left to GoBGP's own
// idle hold, and a failure after another makes vigil hold the neighbor
// down in GoBGP for the rest of the back-off, then let it retry.
//
// GoBGP waits 5 s in Idle before it tries again, so each case sees one real
// failure; "after an earlier failure" counts one before the session starts.
// TestBackoffHoldsTheNeighborDown follows a neighbor through many.
func TestRejectedSessionBacksOff(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		routerExpects, weSay uint32
		earlier              int // failures counted before
	}{
		{"router refuses our AS", 65001, 64500, 0},
		{"router is another AS than configured", 64512, 65000, 0},
		{"after an earlier failure", 65001, 64500, 1},
	} {
		// Not parallel: GoBGP's StartBgp writes package variables.
		t.Run(tc.name, func(t *testing.T) { rejectedSession(t, tc.routerExpects, tc.weSay, tc.earlier) })
	}
}

func rejectedSession(t *testing.T, routerExpects, weSay uint32, earlier int) {
	ctx := context.Background()
	routerPort, ourPort := freePort(t), freePort(t)
	router := startRouter(t, routerPort, routerExpects)
	var logs logLines
	clk := clocktest.New(time.Unix(1000, 0))
	// Passive: vigil's own connect loop would try again on its own time.
	sp, err := Start(ctx, Config{ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.1"), Listen: int32(ourPort),
		Neighbors: []Neighbor{{Address: netip.MustParseAddr("127.0.0.1"), ASN: weSay, Port: uint16(routerPort),
			HoldTime: 9 * time.Second, Passive: true}}},
		slog.New(slog.NewTextHandler(&logs, nil)), WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Stop(ctx)
	sp.mu.Lock()
	sp.peers["127.0.0.1"].backoff.failures = earlier
	sp.mu.Unlock()

	// poll runs one poll of the session monitor; holds is how many
	// hold-downs wait on the clock besides it.
	poll := func(holds int) {
		t.Helper()
		clk.Advance(pollInterval)
		if !clk.BlockUntil(1 + holds) {
			t.Fatalf("%d timers armed, want %d", clk.Armed(), 1+holds)
		}
	}
	waitActive(t, router, sp.s)
	poll(0) // the neighbor as it waits
	cable(t, ourPort, routerPort)
	var s Session
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		poll(0)
		if ss := sp.Sessions(ctx); len(ss) == 1 && ss[0].Failures > earlier {
			s = ss[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failure within 5s: %+v\n%s", sp.Sessions(ctx), logs.String())
		}
	}
	if s.State == "established" || s.Failures != earlier+1 || !strings.HasPrefix(s.LastError, "the OPEN exchange failed with a NOTIFICATION") {
		t.Fatalf("after the failure: %+v\n%s", s, logs.String())
	}
	if got := logs.String(); strings.Count(got, `msg="bgp session failed"`) != 1 {
		t.Fatalf("log:\n%s", got)
	}
	if earlier == 0 {
		// GoBGP's own wait is the whole back-off.
		if !s.RetryAt.IsZero() || clk.Armed() != 1 || adminState(sp) != api.PeerState_ADMIN_STATE_UP || strings.Contains(logs.String(), "retry_in") {
			t.Fatalf("after the first failure: %+v, %d timers, admin %v\n%s", s, clk.Armed(), adminState(sp), logs.String())
		}
		return
	}
	// The second failure in a row waits 10 s: 5 s held down by vigil,
	// then GoBGP's own 5 s.
	if !clk.BlockUntil(2) {
		t.Fatalf("the hold-down is not waiting: %d timers armed", clk.Armed())
	}
	if got := s.RetryAt.Sub(clk.Now()); got != 10*time.Second {
		t.Fatalf("after the second failure the next attempt is in %v, want 10s: %+v", got, s)
	}
	waitAdmin(t, sp, "during the back-off", api.PeerState_ADMIN_STATE_DOWN)
	if got := logs.String(); !strings.Contains(got, "retry_in=10s") || !strings.Contains(got, "failures=2") {
		t.Fatalf("log:\n%s", got)
	}
	clk.Advance(5*time.Second - time.Millisecond)
	clk.BlockUntil(2)
	if admin := adminState(sp); admin != api.PeerState_ADMIN_STATE_DOWN {
		t.Fatalf("before the hold-down ends the neighbor is %v", admin)
	}
	clk.Advance(time.Millisecond)
	waitAdmin(t, sp, "after the hold-down", api.PeerState_ADMIN_STATE_UP)
	t.Logf("%+v", s)
}

// scriptedNeighbor is GoBGP as the session monitor sees it, with one
// neighbor whose state the test sets, as GoBGP would report it.
type scriptedNeighbor struct {
	mu       sync.Mutex
	state    api.PeerState_SessionState
	admin    api.PeerState_AdminState
	notified uint64 // NOTIFICATIONs received
	reason   api.PeerState_DisconnectReason
	calls    chan string // "disable" and "enable", as the monitor makes them
}

func (n *scriptedNeighbor) set(state api.PeerState_SessionState, notified uint64, reason api.PeerState_DisconnectReason) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.state, n.notified, n.reason = state, notified, reason
}

func (n *scriptedNeighbor) ListPeer(_ context.Context, _ *api.ListPeerRequest, fn func(*api.Peer)) error {
	n.mu.Lock()
	p := &api.Peer{Conf: &api.PeerConf{NeighborAddress: "192.0.2.1", PeerAsn: 64500}, State: &api.PeerState{
		SessionState: n.state, AdminState: n.admin, DisconnectReason: n.reason,
		Messages: &api.Messages{Received: &api.Message{Notification: n.notified}, Sent: &api.Message{}}}}
	n.mu.Unlock()
	fn(p)
	return nil
}

func (n *scriptedNeighbor) DisablePeer(context.Context, *api.DisablePeerRequest) error {
	n.mu.Lock()
	n.admin = api.PeerState_ADMIN_STATE_DOWN
	n.mu.Unlock()
	n.calls <- "disable"
	return nil
}

func (n *scriptedNeighbor) EnablePeer(context.Context, *api.EnablePeerRequest) error {
	n.mu.Lock()
	n.admin = api.PeerState_ADMIN_STATE_UP
	n.mu.Unlock()
	n.calls <- "enable"
	return nil
}

// The session monitor follows a neighbor through GoBGP's reports on a fake
// clock: a refused OPEN on the outgoing connection (a NOTIFICATION and no
// state change) is a failure; the first is left to GoBGP's own idle hold;
// from the second on vigil holds the neighbor down for the rest of the
// doubled wait, to the millisecond, then lets it retry; a session that
// stayed up 30 s starts the count afresh.
func TestBackoffHoldsTheNeighborDown(t *testing.T) {
	const (
		active      = api.PeerState_SESSION_STATE_ACTIVE
		idle        = api.PeerState_SESSION_STATE_IDLE
		established = api.PeerState_SESSION_STATE_ESTABLISHED
		noReason    = api.PeerState_DISCONNECT_REASON_UNSPECIFIED
	)
	clk := clocktest.New(time.Unix(1000, 0))
	n := &scriptedNeighbor{state: active, admin: api.PeerState_ADMIN_STATE_UP, calls: make(chan string, 4)}
	var logs logLines
	sp := newSpeaker(n, slog.New(slog.NewTextHandler(&logs, nil)),
		[]Neighbor{{Address: netip.MustParseAddr("192.0.2.1"), ASN: 64500}}, []Option{WithClock(clk)})
	ctx, cancel := context.WithCancel(context.Background())
	sp.wg.Go(func() { sp.monitor(ctx) })
	defer func() { cancel(); sp.wg.Wait() }()

	holds := 0 // hold-downs waiting on the clock
	advance := func(d time.Duration) {
		t.Helper()
		clk.Advance(d)
		if !clk.BlockUntil(1 + holds) {
			t.Fatalf("%d timers armed, want %d", clk.Armed(), 1+holds)
		}
	}
	expectCall := func(want string) {
		t.Helper()
		select {
		case got := <-n.calls:
			if got != want {
				t.Fatalf("call %s, want %s", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s call", want)
		}
	}
	noCall := func() {
		t.Helper()
		select {
		case got := <-n.calls:
			t.Fatalf("unexpected %s call", got)
		default:
		}
	}
	session := func() Session {
		t.Helper()
		ss := sp.Sessions(ctx)
		if len(ss) != 1 {
			t.Fatalf("sessions %+v", ss)
		}
		return ss[0]
	}
	failedLines := func() int { return strings.Count(logs.String(), `msg="bgp session failed"`) }

	advance(pollInterval)
	if s := session(); s.Failures != 0 || s.State != "active" {
		t.Fatalf("before any failure: %+v", s)
	}

	// A refused OPEN: GoBGP's own 5 s wait is the whole back-off.
	n.set(active, 1, noReason)
	advance(pollInterval)
	s := session()
	if s.Failures != 1 || !strings.HasPrefix(s.LastError, "the OPEN exchange failed with a NOTIFICATION") || !s.RetryAt.IsZero() {
		t.Fatalf("after the first failure: %+v", s)
	}
	noCall()
	if failedLines() != 1 || strings.Contains(logs.String(), "retry_in") {
		t.Fatalf("log:\n%s", logs.String())
	}

	// GoBGP's connect loop tries again 2 s later, refused again: 10 s in
	// all, 5 s of them held down by vigil.
	n.set(active, 2, noReason)
	holds = 1
	advance(2 * time.Second)
	expectCall("disable")
	second := clk.Now()
	if s := session(); s.Failures != 2 || !s.RetryAt.Equal(second.Add(10*time.Second)) {
		t.Fatalf("after the second failure: %+v", s)
	}
	if got := logs.String(); failedLines() != 2 || !strings.Contains(got, "retry_in=10s") {
		t.Fatalf("log:\n%s", got)
	}
	n.set(idle, 2, noReason) // held down, GoBGP goes to Idle: not another failure
	advance(5*time.Second - time.Millisecond)
	noCall()
	holds = 0
	advance(time.Millisecond)
	expectCall("enable")
	if s := session(); !s.RetryAt.Equal(second.Add(10 * time.Second)) {
		t.Fatalf("during GoBGP's idle hold: %+v", s)
	}
	advance(5 * time.Second) // GoBGP's idle hold
	if s := session(); !s.RetryAt.IsZero() || failedLines() != 2 {
		t.Fatalf("after the back-off: %+v\n%s", s, logs.String())
	}

	// The third refusal in a row: 20 s, 15 s of them held down.
	n.set(active, 3, noReason)
	holds = 1
	advance(pollInterval)
	expectCall("disable")
	if s := session(); s.Failures != 3 || !s.RetryAt.Equal(clk.Now().Add(20*time.Second)) || !strings.Contains(logs.String(), "retry_in=20s") {
		t.Fatalf("after the third failure: %+v\n%s", s, logs.String())
	}
	advance(15*time.Second - time.Millisecond)
	noCall()
	holds = 0
	advance(time.Millisecond)
	expectCall("enable")

	// Up for 30 s, then the hold timer expires: a first failure again.
	n.set(established, 3, noReason)
	advance(pollInterval)
	if s := session(); s.State != "established" || s.Failures != 0 || s.LastError != "" || !strings.Contains(logs.String(), `msg="bgp session established"`) {
		t.Fatalf("established: %+v\n%s", s, logs.String())
	}
	advance(30 * time.Second)
	n.set(idle, 3, api.PeerState_DISCONNECT_REASON_HOLD_TIMER_EXPIRED)
	advance(pollInterval)
	if s := session(); s.Failures != 1 || s.LastError != "hold timer expired" || !s.RetryAt.IsZero() {
		t.Fatalf("after a stable session fell: %+v", s)
	}
	noCall()
}

// Stop withdraws every route, gives the withdrawals a moment on the clock
// to leave, and only then closes the sessions.
func TestStopWithdrawsFirst(t *testing.T) {
	ctx := context.Background()
	clk := clocktest.New(time.Unix(1000, 0))
	sp, err := Start(ctx, Config{ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.1"), Listen: -1}, slog.New(slog.DiscardHandler), WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	paths := func() int {
		n := 0
		sp.s.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgp.RF_IPv4_UC},
			func(bgp.NLRI, []*apiutil.Path) { n++ })
		return n
	}
	if err := sp.Announce(Route{Prefix: netip.MustParsePrefix("192.0.2.10/32")}); err != nil {
		t.Fatal(err)
	}
	if n := paths(); n != 1 {
		t.Fatalf("%d paths in the RIB after the announcement", n)
	}
	clk.BlockUntil(1) // the session monitor
	stopped := make(chan error)
	go func() { stopped <- sp.Stop(ctx) }()
	if !clk.BlockUntil(2) {
		t.Fatal("Stop does not wait on the clock")
	}
	if a := sp.Announced(); len(a) != 0 {
		t.Fatalf("announced while stopping: %v", a)
	}
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned before its pause: %v", err)
	default:
	}
	if n := paths(); n != 0 {
		t.Fatalf("%d paths in the RIB after the withdrawal", n)
	}
	clk.Advance(100 * time.Millisecond)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}
