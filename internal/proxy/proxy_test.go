package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/proxyproto"
	"go.uber.org/goleak"
)

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// balancerConfig parses a one-balancer YAML body through the real config
// code, so defaults and validation are the daemon's.
func balancerConfig(t *testing.T, body string) config.Balancer {
	t.Helper()
	c, err := config.Parse([]byte("balancers:\n  - name: t\n" + indent(body, "    ")))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return c.Balancers[0]
}

func indent(s, by string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = by + strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "\n") + "\n"
}

func backendList(addrs ...string) string {
	var b strings.Builder
	b.WriteString("backends:\n")
	for _, a := range addrs {
		fmt.Fprintf(&b, "  - {address: %q}\n", a)
	}
	return strings.ReplaceAll(b.String(), "\n  -", "\n-")
}

func testLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testLoopCount is how many event loops a test's balancers get: two, so
// that spreading sessions over loops is tested on any machine.
const testLoopCount = 2

// testLoops starts event loops that the test's cleanup stops, after the
// balancers' (cleanups run last-registered first): call it before creating
// the balancers that use them.
func testLoops(t *testing.T) *Loops {
	t.Helper()
	l, err := NewLoops(testLoopCount, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// server is a loopback backend: it greets with its name, then echoes until
// EOF, then closes its side.
type server struct {
	name string
	l    net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	hdrs []string // first line of each connection when expecting a PROXY header
	pp   bool
}

func newServer(t *testing.T, name string, pp bool) *server {
	t.Helper()
	return newServerOn(t, "127.0.0.1:0", name, pp)
}

func newServerOn(t *testing.T, addr, name string, pp bool) *server {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{name: name, l: l, pp: pp}
	s.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() { s.handle(c) })
		}
	})
	t.Cleanup(s.close)
	return s
}

func (s *server) handle(c net.Conn) {
	defer c.Close()
	var r io.Reader = c
	if s.pp {
		h, rest, err := proxyproto.Read(c)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.hdrs = append(s.hdrs, h.Src.String()+" "+h.Dst.String())
		s.mu.Unlock()
		r = io.MultiReader(bytes.NewReader(rest), c)
	}
	fmt.Fprintf(c, "%s\n", s.name)
	io.Copy(c, r)
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
}

func (s *server) addr() string { return s.l.Addr().String() }

func (s *server) close() {
	s.l.Close()
	s.wg.Wait()
}

// start builds and starts a balancer and stops it at cleanup.
func start(t *testing.T, cfg config.Balancer) *Balancer {
	t.Helper()
	return startLogging(t, cfg, testLog())
}

// startLogging is start with the balancer's logger.
func startLogging(t *testing.T, cfg config.Balancer, log *slog.Logger) *Balancer {
	t.Helper()
	b, err := New(cfg, testLoops(t), log)
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		b.Shutdown(ctx)
	})
	return b
}

// greet connects through the balancer and returns the backend's name.
func greet(t *testing.T, addr string) (string, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil { // a refusal can reset the handshake
		return "", nil
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return "", nil
	}
	c.SetDeadline(time.Time{})
	return strings.TrimSpace(line), c
}

func count(t *testing.T, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		name, c := greet(t, addr)
		if c != nil {
			c.Close()
		}
		got[name]++
	}
	return got
}

func TestSmoothWeightedRoundRobin(t *testing.T) {
	a, bb, c := &Backend{Addr: netip.MustParseAddrPort("10.0.0.1:1")}, &Backend{Addr: netip.MustParseAddrPort("10.0.0.2:1")}, &Backend{Addr: netip.MustParseAddrPort("10.0.0.3:1")}
	for be, w := range map[*Backend]int32{a: 5, bb: 1, c: 1} {
		be.weight.Store(w)
		be.up.Store(true)
	}
	s := &settings{cfg: config.Balancer{Algorithm: "roundrobin"}, backends: []*Backend{a, bb, c}}
	b := &Balancer{}
	var seq []string
	for range 14 {
		be := b.pick(s, nil, netip.Addr{})
		seq = append(seq, be.Addr.Addr().String()[7:])
		be.active.Add(-1)
	}
	// Spread out, not a,a,a,a,a,b,c.
	if got, want := strings.Join(seq, ""), "11213111121311"; got != want {
		t.Fatalf("sequence %s, want %s", got, want)
	}
	bb.up.Store(false)
	c.weight.Store(0)
	for range 3 {
		if be := b.pick(s, nil, netip.Addr{}); be != a {
			t.Fatalf("picked %v with only a eligible", be.Addr)
		}
	}
	if be := b.pick(s, []*Backend{a}, netip.Addr{}); be != nil {
		t.Fatalf("picked %v with every backend tried or out", be.Addr)
	}
}

func TestLeastConnUnderSkew(t *testing.T) {
	mk := func(ip string, w, active int) *Backend {
		be := &Backend{Addr: netip.MustParseAddrPort(ip + ":1")}
		be.weight.Store(int32(w))
		be.up.Store(true)
		be.active.Store(int64(active))
		return be
	}
	cases := []struct {
		name     string
		backends []*Backend
		picks    int
		want     []int64 // active per backend afterwards
	}{
		{"fills the idle one first", []*Backend{mk("10.0.0.1", 1, 10), mk("10.0.0.2", 1, 0)}, 12, []int64{11, 11}},
		{"weights scale the share", []*Backend{mk("10.0.0.1", 3, 0), mk("10.0.0.2", 1, 0)}, 8, []int64{6, 2}},
		{"max_conn caps one", func() []*Backend {
			a, bb := mk("10.0.0.1", 1, 0), mk("10.0.0.2", 1, 0)
			a.maxConn.Store(2)
			return []*Backend{a, bb}
		}(), 6, []int64{2, 4}},
	}
	for _, c := range cases {
		s := &settings{cfg: config.Balancer{Algorithm: "leastconn"}, backends: c.backends}
		b := &Balancer{}
		for range c.picks {
			if b.pick(s, nil, netip.Addr{}) == nil {
				t.Fatalf("%s: no pick", c.name)
			}
		}
		for i, be := range c.backends {
			if be.active.Load() != c.want[i] {
				t.Errorf("%s: backend %d has %d, want %d", c.name, i, be.active.Load(), c.want[i])
			}
		}
	}
}

func TestRoundRobinThroughTheWire(t *testing.T) {
	s1, s2, s3 := newServer(t, "s1", false), newServer(t, "s2", false), newServer(t, "s3", false)
	front := freeAddr(t)
	cfg := balancerConfig(t, "listen: ["+front+"]\n"+backendList(s1.addr(), s2.addr(), s3.addr()))
	start(t, cfg)
	got := count(t, front, 30)
	if got["s1"] != 10 || got["s2"] != 10 || got["s3"] != 10 {
		t.Fatalf("distribution %v, want 10 each", got)
	}
}

func TestLargeTransferAndHalfClose(t *testing.T) {
	for _, splice := range []bool{false, true} {
		t.Run(fmt.Sprintf("splice=%v", splice), func(t *testing.T) { largeTransfer(t, splice) })
	}
}

func largeTransfer(t *testing.T, splice bool) {
	s := newServer(t, "s", false)
	front := freeAddr(t)
	b := start(t, balancerConfig(t, fmt.Sprintf("listen: [%s]\nsplice: %v\n", front, splice)+backendList(s.addr())))
	payload := make([]byte, 24<<20+123)
	rand.Read(payload)
	name, c := greet(t, front)
	if name != "s" {
		t.Fatalf("greeting %q", name)
	}
	defer c.Close()
	var wg sync.WaitGroup
	wg.Go(func() {
		c.Write(payload)
		// Half-close: the backend must see EOF and still be able to answer.
		c.(*net.TCPConn).CloseWrite()
	})
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	back, err := io.ReadAll(c)
	wg.Wait()
	if err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if sha256.Sum256(back) != sha256.Sum256(payload) {
		t.Fatalf("echo differs: %d bytes back of %d", len(back), len(payload))
	}
	st := b.Status().Backends[0]
	if st.BytesIn != uint64(len(payload)) || st.BytesOut != uint64(len(payload)+2) {
		t.Fatalf("byte counters in %d out %d, want %d and %d", st.BytesIn, st.BytesOut, len(payload), len(payload)+2)
	}
}

func TestHealthLeavesAndRejoinsRotation(t *testing.T) {
	s1, s2 := newServer(t, "s1", false), newServer(t, "s2", false)
	front := freeAddr(t)
	b := start(t, balancerConfig(t, "listen: ["+front+"]\n"+backendList(s1.addr(), s2.addr())))
	_, kept := greet(t, front) // s1 (round robin starts at the first)
	defer kept.Close()
	b.SetHealth(netip.MustParseAddrPort(s1.addr()), false, "test")
	if got := count(t, front, 6); got["s2"] != 6 {
		t.Fatalf("with s1 down: %v", got)
	}
	// The established connection still works.
	fmt.Fprintf(kept, "still here\n")
	kept.SetReadDeadline(time.Now().Add(2 * time.Second))
	if line, err := bufio.NewReader(kept).ReadString('\n'); err != nil || line != "still here\n" {
		t.Fatalf("established connection after down: %q %v", line, err)
	}
	b.SetHealth(netip.MustParseAddrPort(s1.addr()), true, "test")
	if got := count(t, front, 6); got["s1"] != 3 || got["s2"] != 3 {
		t.Fatalf("after s1 is back: %v", got)
	}
}

func TestCloseOnDown(t *testing.T) {
	s1 := newServer(t, "s1", false)
	front := freeAddr(t)
	b := start(t, balancerConfig(t, "listen: ["+front+"]\nclose_on_down: true\n"+backendList(s1.addr())))
	_, c := greet(t, front)
	defer c.Close()
	b.SetHealth(netip.MustParseAddrPort(s1.addr()), false, "test")
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Fatalf("connection to a down backend stayed open: %v", err)
	}
}

func TestRetryAnotherBackend(t *testing.T) {
	s2 := newServer(t, "s2", false)
	dead := freeAddr(t) // nothing listens: connection refused
	front := freeAddr(t)
	b := start(t, balancerConfig(t, "listen: ["+front+"]\n"+backendList(dead, s2.addr())))
	if got := count(t, front, 6); got["s2"] != 6 {
		t.Fatalf("distribution %v: every connection should reach s2", got)
	}
	st := b.Status()
	if st.Backends[0].ConnectErrors == 0 || st.Backends[0].ConnectTimeouts != 0 || st.Backends[0].Active != 0 || st.NoBackend != 0 {
		t.Fatalf("status %+v: want connect errors, refused, none a timeout", st)
	}
	// With retries 0 and only the dead one left, the client is reset fast.
	b2 := start(t, balancerConfig(t, "listen: ["+freeAddr(t)+"]\nretries: 0\n"+backendList(dead)))
	if name, _ := greet(t, b2.Status().Listen[0]); name != "" {
		t.Fatalf("reached %q through a dead backend", name)
	}
	if b2.Status().NoBackend != 1 {
		t.Fatalf("no-backend counter %d", b2.Status().NoBackend)
	}
}

// TestClientThatSpeaksFirst has clients send their request and FIN before
// the balancer accepts them (it is not started yet), so each session starts
// with the client's bytes in hand: they go out once the connect completes,
// behind the PROXY header when there is one, and must survive a refused
// connect to the first backend tried.
func TestClientThatSpeaksFirst(t *testing.T) {
	for _, pp := range []string{"", "v1", "v2"} {
		t.Run("proxy_protocol="+pp, func(t *testing.T) {
			s := newServer(t, "s", pp != "")
			dead := freeAddr(t)
			front := freeAddr(t)
			body := "listen: [" + front + "]\n"
			if pp != "" {
				body += "proxy_protocol: " + pp + "\n"
			}
			b, err := New(balancerConfig(t, body+backendList(dead, s.addr())), testLoops(t), testLog())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				b.Shutdown(ctx)
			})
			const clients = 6
			var conns []net.Conn
			sent := 0
			for i := range clients {
				c, err := net.DialTimeout("tcp", front, 2*time.Second) // the kernel's backlog takes it
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				req := fmt.Sprintf("request %d\n", i)
				sent += len(req)
				if _, err := io.WriteString(c, req); err != nil {
					t.Fatal(err)
				}
				c.(*net.TCPConn).CloseWrite()
				conns = append(conns, c)
			}
			b.Start()
			for i, c := range conns {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				got, err := io.ReadAll(c)
				if want := fmt.Sprintf("s\nrequest %d\n", i); err != nil || string(got) != want {
					t.Fatalf("client %d got %q (%v), want %q and EOF", i, got, err, want)
				}
			}
			st := b.Status()
			if st.Backends[0].ConnectErrors == 0 || st.Backends[1].Total != clients || st.Backends[1].BytesIn != uint64(sent) {
				t.Fatalf("backends %+v: want connect errors on the dead one, %d sessions and %d bytes in on s", st.Backends, clients, sent)
			}
			if pp != "" {
				s.mu.Lock()
				defer s.mu.Unlock()
				if len(s.hdrs) != clients || !strings.HasSuffix(s.hdrs[0], " "+front) {
					t.Fatalf("backend saw headers %q", s.hdrs)
				}
			}
		})
	}
}

func TestMaxConnRefusesFast(t *testing.T) {
	s := newServer(t, "s", false)
	front := freeAddr(t)
	b := start(t, balancerConfig(t, "listen: ["+front+"]\nmax_conn: 2\n"+backendList(s.addr())))
	var open []net.Conn
	for range 2 {
		_, c := greet(t, front)
		open = append(open, c)
	}
	startAt := time.Now()
	if name, _ := greet(t, front); name != "" {
		t.Fatal("a third connection was served with max_conn 2")
	}
	if took := time.Since(startAt); took > time.Second {
		t.Errorf("refusal took %v", took)
	}
	if b.Status().Refused != 1 {
		t.Fatalf("refused %d", b.Status().Refused)
	}
	open[0].Close()
	deadline := time.Now().Add(2 * time.Second)
	for b.Status().Active > 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if name, c := greet(t, front); name != "s" {
		t.Fatal("no room after a connection closed")
	} else {
		c.Close()
	}
	open[1].Close()
}

func TestIdleTimeout(t *testing.T) {
	// A backend that accepts and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	front := freeAddr(t)
	start(t, balancerConfig(t, "listen: ["+front+"]\nidle_timeout: 300ms\n"+backendList(silent.Addr().String())))

	idle, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	startAt := time.Now()
	// busy sends a byte every 100ms for 1.2s: never idle for 300ms.
	for range 12 {
		if _, err := busy.Write([]byte("x")); err != nil {
			t.Fatalf("busy connection closed after %v: %v", time.Since(startAt), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	idle.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Fatalf("idle connection still open after %v: %v", time.Since(startAt), err)
	}
}

func TestProxyProtocolToBackends(t *testing.T) {
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			s := newServer(t, "s", true)
			front := freeAddr(t)
			start(t, balancerConfig(t, "listen: ["+front+"]\nproxy_protocol: "+v+"\n"+backendList(s.addr())))
			name, c := greet(t, front)
			if name != "s" {
				t.Fatalf("greeting %q", name)
			}
			defer c.Close()
			s.mu.Lock()
			defer s.mu.Unlock()
			want := c.LocalAddr().String() + " " + front
			if len(s.hdrs) != 1 || s.hdrs[0] != want {
				t.Fatalf("backend saw %q, want %q", s.hdrs, want)
			}
		})
	}
}

func TestAcceptProxyFromClients(t *testing.T) {
	s := newServer(t, "s", true)
	front := freeAddr(t)
	b := start(t, balancerConfig(t, "listen: ["+front+"]\naccept_proxy: true\nproxy_protocol: v1\n"+backendList(s.addr())))
	client := proxyproto.Header{Src: netip.MustParseAddrPort("203.0.113.9:5555"), Dst: netip.MustParseAddrPort("192.0.2.10:443")}
	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Header and first data in one write: the data must not be lost.
	c.Write(append(proxyproto.AppendV2(nil, client), "ping\n"...))
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if l, _ := r.ReadString('\n'); l != "s\n" {
		t.Fatalf("greeting %q", l)
	}
	if l, _ := r.ReadString('\n'); l != "ping\n" {
		t.Fatalf("echo %q: early data lost", l)
	}
	s.mu.Lock()
	got := s.hdrs
	s.mu.Unlock()
	if len(got) != 1 || got[0] != "203.0.113.9:5555 192.0.2.10:443" {
		t.Fatalf("backend saw %q", got)
	}
	// A client without a header is closed and counted.
	bad, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	bad.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	bad.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := bad.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Fatalf("headerless client not closed: %v", err)
	}
	if b.Status().BadProxyHeader != 1 {
		t.Fatalf("bad header counter %d", b.Status().BadProxyHeader)
	}
}

func TestMonitor(t *testing.T) {
	s := newServer(t, "s", false)
	front, mon := freeAddr(t), freeAddr(t)
	b := start(t, balancerConfig(t, "listen: ["+front+"]\nmonitor: {listen: \""+mon+"\", path: /healthz}\n"+backendList(s.addr())))
	get := func(path string) int {
		resp, err := http.Get("http://" + mon + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get("/healthz"); c != 200 {
		t.Fatalf("healthy: %d", c)
	}
	if c := get("/other"); c != 404 {
		t.Fatalf("other path: %d", c)
	}
	b.SetHealth(netip.MustParseAddrPort(s.addr()), false, "test")
	if c := get("/healthz"); c != 503 {
		t.Fatalf("no healthy backend: %d", c)
	}
}

func TestReloadKeepsConnectionsAndListeners(t *testing.T) {
	s1, s2 := newServer(t, "s1", false), newServer(t, "s2", false)
	front, extra := freeAddr(t), freeAddr(t)
	b := start(t, balancerConfig(t, "listen: ["+front+"]\n"+backendList(s1.addr())))
	_, kept := greet(t, front)
	defer kept.Close()

	// A new listener that is taken fails the plan and changes nothing.
	taken, err := net.Listen("tcp", extra)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Plan(balancerConfig(t, "listen: ["+front+", "+extra+"]\n"+backendList(s2.addr()))); err == nil ||
		!strings.Contains(err.Error(), extra+": address already in use") {
		t.Fatalf("plan with a taken address: %v", err)
	}
	if got := count(t, front, 2); got["s1"] != 2 {
		t.Fatalf("after the failed plan: %v", got)
	}
	taken.Close()

	ch, err := b.Plan(balancerConfig(t, "listen: ["+front+", "+extra+"]\n"+backendList(s2.addr())))
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	if got := count(t, front, 2); got["s2"] != 2 {
		t.Fatalf("old listener after reload: %v", got)
	}
	if got := count(t, extra, 2); got["s2"] != 2 {
		t.Fatalf("new listener after reload: %v", got)
	}
	fmt.Fprintf(kept, "still here\n")
	kept.SetReadDeadline(time.Now().Add(2 * time.Second))
	if line, err := bufio.NewReader(kept).ReadString('\n'); err != nil || line != "still here\n" {
		t.Fatalf("established connection after reload: %q %v", line, err)
	}
	// Dropping the first listener closes it.
	ch, err = b.Plan(balancerConfig(t, "listen: ["+extra+"]\n"+backendList(s2.addr())))
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	if c, err := net.DialTimeout("tcp", front, time.Second); err == nil {
		c.Close()
		t.Fatal("removed listener still accepts")
	}
}

// TestNoLeakAfterLoad runs a bounded load and checks that every goroutine
// and descriptor is gone after shutdown.
func TestNoLeakAfterLoad(t *testing.T) {
	defer goleak.VerifyNone(t)
	fdsBefore := openFDs(t)
	s1, s2 := newServer(t, "s1", false), newServer(t, "s2", false)
	front := freeAddr(t)
	loops, err := NewLoops(testLoopCount, testLog())
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(balancerConfig(t, "listen: ["+front+"]\nalgorithm: leastconn\n"+backendList(s1.addr(), s2.addr())), loops, testLog())
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				c, err := net.DialTimeout("tcp", front, 2*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "hello\n")
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
				c.Close()
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	b.Shutdown(ctx)
	cancel()
	loops.Close()
	s1.close()
	s2.close()
	st := b.Status()
	if st.Accepted != 400 || st.Active != 0 || st.Backends[0].Total+st.Backends[1].Total != 400 {
		t.Fatalf("status after load %+v", st)
	}
	deadline := time.Now().Add(2 * time.Second)
	for openFDs(t) > fdsBefore && time.Now().Before(deadline) {
		// The test servers' io.Copy splices through pipes that Go keeps in
		// a pool and closes when they are collected.
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if after := openFDs(t); after > fdsBefore {
		t.Fatalf("%d descriptors open before, %d after", fdsBefore, after)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestShutdownClosesLingering(t *testing.T) {
	s := newServer(t, "s", false)
	front := freeAddr(t)
	b, err := New(balancerConfig(t, "listen: ["+front+"]\n"+backendList(s.addr())), testLoops(t), testLog())
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	_, c := greet(t, front)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	startAt := time.Now()
	b.Shutdown(ctx)
	if took := time.Since(startAt); took < 150*time.Millisecond || took > 2*time.Second {
		t.Fatalf("shutdown took %v, want about the 200ms drain", took)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Fatalf("connection open after shutdown: %v", err)
	}
}

func TestNewNamesAnAddressInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = New(balancerConfig(t, "listen: ["+taken.Addr().String()+"]\n"+backendList("127.0.0.1:1")), testLoops(t), testLog())
	if want := "balancer t: listen " + taken.Addr().String() + ": address already in use"; err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

func TestShutdownTwice(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := newServer(t, "s", false)
	loops, err := NewLoops(testLoopCount, testLog())
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(balancerConfig(t, "listen: ["+freeAddr(t)+"]\n"+backendList(s.addr())), loops, testLog())
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	name, c := greet(t, b.Status().Listen[0])
	if name != "s" {
		t.Fatalf("greeting %q", name)
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	b.Shutdown(ctx)
	b.Shutdown(ctx) // drained, then closed again (as a fleet's Close after Run)
	loops.Close()
	loops.Close() // a second Close does nothing
	s.close()
}
