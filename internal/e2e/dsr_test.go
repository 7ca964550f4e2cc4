package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/xdp/xdplab"
)

const dsrVIP = "10.80.0.10"

// realServer answers on :80 with its name and the client address it sees,
// and remembers those addresses.
type realServer struct {
	host *netlab.Host
	l    net.Listener
	mu   sync.Mutex
	seen []string
}

// greet is a real server's answer: its name and the client address it sees.
func greet(c net.Conn, name string) {
	fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
}

func startRealServer(t *testing.T, h *netlab.Host, vip string, handle func(c net.Conn, name string)) *realServer {
	t.Helper()
	if out, code := execIn(t, h, 10*time.Second, vigilBin, "realserver", "--vip", vip); code != 0 {
		t.Fatalf("vigil realserver on %s: exit %d\n%s", h.Name, code, out)
	}
	l, err := h.Listen("tcp", ":80") // both families: the VIP may be IPv6
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	rs := &realServer{host: h, l: l}
	netlab.Serve(l, func(c net.Conn) {
		rs.mu.Lock()
		rs.seen = append(rs.seen, c.RemoteAddr().String())
		rs.mu.Unlock()
		handle(c, h.Name)
	})
	return rs
}

// Client -> balancer (XDP, generic mode on veth) -> two real servers that
// hold the VIP on their loopback: each real server sees the client's own
// address, answers it directly, and the balancer sees none of the answers.
func TestDSRThroughXDP(t *testing.T) {
	l := newDSRLab(t, 1, greet)
	lb, client, rss := l.lbs[0], l.client, l.rss
	dir := lb.dir
	// Watch the balancer's interface for answers from the VIP: with direct
	// return there must be none.
	capture := filepath.Join(dir, "lb.pcapng")
	tshark, err := lb.host.Start(exec.Command("tshark", "-q", "-i", "eth0", "-f", "tcp and src host "+dsrVIP, "-a", "duration:6", "-w", capture))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)

	ask := func(port int) (string, error) { return askVIP(client, "10.80.0.100", dsrVIP+":80", port) }
	waitVIP(t, ask)
	waitRealServers(t, ask, 2) // both paths ready (MACs resolved), not only the first
	got := spreadOverRealServers(t, ask, 40, 20000, func(port int) string { return "10.80.0.100:" + strconv.Itoa(port) })
	if got["rs1"] < 5 || got["rs2"] < 5 {
		t.Fatalf("40 flows spread %v over the two real servers", got)
	}
	if exited, err := tshark.Wait(15 * time.Second); !exited || err != nil {
		t.Fatalf("tshark: %v %v", exited, err)
	}
	out, _ := exec.Command("tshark", "-r", capture).Output()
	if n := strings.Count(strings.TrimSpace(string(out)), "\n"); len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("the balancer saw %d answers from the VIP:\n%s", n+1, out)
	}
	snap := statusAt(t, filepath.Join(dir, "vigil.sock"))
	var web api.Balancer
	for _, b := range snap.Balancers {
		if b.Name == "web" {
			web = b
		}
	}
	if web.Mode != "dsr" || web.XDPMode != "generic" || web.Packets == 0 || snap.XDP["tx"] == 0 {
		t.Fatalf("status: balancer %+v, xdp %v", web, snap.XDP)
	}
	if len(web.Backends) != 2 || web.Backends[0].Packets == 0 || web.Backends[1].Packets == 0 ||
		web.Backends[0].Packets+web.Backends[1].Packets != web.Packets {
		t.Fatalf("per-backend packets %+v do not add up to the balancer's %d", web.Backends, web.Packets)
	}
	t.Logf("40 connections over %v; XDP verdicts %v", got, snap.XDP)
	// The status page shows the dsr balancer with its packets per backend.
	page := openPage(t, lb.host, "http://127.0.0.1:9110/")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		text, err := page.eval(`document.querySelector("#balancers").innerText`)
		if err == nil && strings.Contains(text, "dsr (xdp generic)") && strings.Contains(text, "10.80.0.11:80") && strings.Contains(text, " packets") {
			t.Logf("status page: %q", text)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the status page does not show the dsr balancer and its packets per backend: %q %v", text, err)
		}
	}

	// rs2 stops serving: its check fails, it leaves the Maglev table, and
	// every new flow goes to rs1.
	rss[1].l.Close()
	t0 := time.Now()
	var took time.Duration
	for took == 0 {
		if time.Since(t0) > 5*time.Second {
			t.Fatal("rs2 was not taken out of the table within 5s")
		}
		time.Sleep(10 * time.Millisecond)
		b, _ := os.ReadFile(filepath.Join(dir, "vigil.log"))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, `msg="backend down" balancer=web backend=10.80.0.12:80 `) {
				at, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(strings.Fields(l)[0], "time="))
				if err != nil {
					t.Fatal(err)
				}
				took = at.Sub(t0)
			}
		}
	}
	t.Logf("rs2 stopped -> out of the table after %v (fall 2, interval 200ms, fast interval 50ms)", took.Round(time.Millisecond))
	for _, b := range statusAt(t, filepath.Join(dir, "vigil.sock")).Balancers {
		for _, be := range b.Backends {
			if be.Address == "10.80.0.12:80" && be.Up {
				t.Fatal("status still shows rs2 up")
			}
		}
	}
	for i := range 30 {
		if line, err := ask(0); err != nil || !strings.HasPrefix(line, "rs1 ") {
			t.Fatalf("new flow %d after rs2 left: %q %v", i, line, err)
		}
	}
	lb.proc.Signal(os.Interrupt)
	if exited, err := lb.proc.Wait(5 * time.Second); !exited || err != nil {
		t.Fatalf("shutdown: %v %v", exited, err)
	}
	// --undo restores the real servers.
	for _, rs := range rss {
		if out, code := execIn(t, rs.host, 10*time.Second, vigilBin, "realserver", "--vip", dsrVIP, "--undo"); code != 0 {
			t.Fatalf("realserver --undo: exit %d\n%s", code, out)
		}
		if ok, _ := rs.host.HasAddr(mustPrefix(dsrVIP + "/32").Addr()); ok {
			t.Fatalf("%s still holds the VIP after --undo", rs.host.Name)
		}
	}
}

// dsrLab is balancers (vigil with a VRRP VIP and a dsr balancer on it), two
// real servers and a client on one bridge.
type dsrLab struct {
	lab    *netlab.Lab
	client *netlab.Host
	rss    []*realServer
	lbs    []*dsrNode
}

type dsrNode struct {
	host *netlab.Host
	dir  string
	proc *netlab.Proc
}

func (n *dsrNode) socket() string { return filepath.Join(n.dir, "vigil.sock") }

// newDSRLab starts nLB balancers (lb1 priority 150, lb2 100, ...) and two
// real servers running handle.
func newDSRLab(t *testing.T, nLB int, handle func(net.Conn, string)) *dsrLab {
	t.Helper()
	return newDSRLabFamily(t, nLB, handle, false)
}

// dsrVIP6 is the IPv6 lab's VIP; the lab's IPv6 addresses are fd00:80::N
// where the IPv4 ones are 10.80.0.N.
const dsrVIP6 = "fd00:80::10"

// newDSRLabFamily is newDSRLab, with an IPv6 VIP and backends when v6.
func newDSRLabFamily(t *testing.T, nLB int, handle func(net.Conn, string), v6 bool) *dsrLab {
	t.Helper()
	l := &dsrLab{lab: newLab(t)}
	addrs := func(n int) []netip.Prefix {
		a := []netip.Prefix{mustPrefix(fmt.Sprintf("10.80.0.%d/24", n))}
		if v6 {
			a = append(a, mustPrefix(fmt.Sprintf("fd00:80::%d/64", n)))
		}
		return a
	}
	vip, hostPort := dsrVIP, func(a string) string { return a + ":80" }
	backend := func(n int) string { return fmt.Sprintf("10.80.0.%d", n) }
	if v6 {
		vip, hostPort = dsrVIP6, func(a string) string { return "[" + a + "]:80" }
		backend = func(n int) string { return fmt.Sprintf("fd00:80::%d", n) }
	}
	var err error
	if l.client, err = l.lab.AddHost("client", addrs(100)...); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		h, err := l.lab.AddHost(fmt.Sprintf("rs%d", i+1), addrs(11+i)...)
		if err != nil {
			t.Fatal(err)
		}
		l.rss = append(l.rss, startRealServer(t, h, vip, handle))
	}
	for i := range nLB {
		h, err := l.lab.AddHost(fmt.Sprintf("lb%d", i+1), addrs(1+i)...)
		if err != nil {
			t.Fatal(err)
		}
		n := &dsrNode{host: h, dir: t.TempDir()}
		cfg := filepath.Join(n.dir, "vigil.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf(`api: {socket: %q}
log: {level: debug}
vrrp:
  instances:
    - {name: vip, interface: eth0, vrid: 80, priority: %d, advert_interval: 100ms, vips: [%q]}
balancers:
  - name: web
    mode: dsr
    interface: eth0
    xdp_mode: generic
    listen: [%q]
    backends: [{address: %q}, {address: %q}]
    check: {interval: 200ms, fall: 2, rise: 2}
`, n.socket(), 150-50*i, vip, hostPort(vip), hostPort(backend(11)), hostPort(backend(12)))), 0o644)
		log := filepath.Join(n.dir, "vigil.log")
		n.proc = startVigil(t, h, cfg, filepath.Join(n.dir, "pid"), log)
		logOnFailure(t, "vigil log of "+h.Name, log)
		l.lbs = append(l.lbs, n)
	}
	return l
}

// echo answers every line with the server's name and the line.
func echo(c net.Conn, name string) {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%s %s", name, line)
	}
}

// askVIP connects from the client (source src, port 0: any) to addr and
// returns the real server's answer, one line.
func askVIP(client *netlab.Host, src, addr string, port int) (string, error) {
	return askVIPWithin(client, src, addr, port, time.Second)
}

// askVIPWithin is askVIP with a connect timeout of d.
func askVIPWithin(client *netlab.Host, src, addr string, port int, d time.Duration) (string, error) {
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src), Port: port}, Timeout: d}
	var line string
	err := client.Do(func() error {
		c, err := dialer.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.(*net.TCPConn).CloseWrite() // nothing to say: the server may end at once
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b, err := io.ReadAll(c)
		line = strings.TrimSpace(string(b))
		return err
	})
	return line, err
}

// spreadOverRealServers makes n connections with ask, from source ports
// base to base+n-1, checks that each real server saw the client's own
// address and port (want), and counts the answers per real server.
func spreadOverRealServers(t *testing.T, ask func(port int) (string, error), n, base int, want func(port int) string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := range n {
		port := base + i
		line, err := ask(port)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		f := strings.Fields(line)
		if len(f) != 2 || f[1] != want(port) {
			t.Fatalf("real server answered %q: it should see the client's own address and port %s", line, want(port))
		}
		got[f[0]]++
	}
	return got
}

// waitVIP waits up to 10 s for ask to get an answer through the balancer.
func waitVIP(t *testing.T, ask func(port int) (string, error)) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := ask(0)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer on the VIP through the XDP balancer within 10s: %v", err)
		}
	}
}

// waitRealServers asks the VIP from changing source ports until n real
// servers have answered, so that a test's first flows do not meet a
// backend whose path is still being set up on a loaded machine.
func waitRealServers(t *testing.T, ask func(port int) (string, error), n int) {
	t.Helper()
	seen := map[string]bool{}
	for i, deadline := 0, time.Now().Add(20*time.Second); len(seen) < n; i++ {
		if who, err := ask(30000 + i%1000); err == nil {
			seen[who] = true
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %v of %d real servers answered through the VIP within 20s", seen, n)
		}
	}
}

// routedRealServers starts rs1 and rs2 at NET.11 and NET.12 (/24) on lab,
// serving vip with handle, their default route via NET.254.
func routedRealServers(t *testing.T, lab *netlab.Lab, net24, vip string, handle func(net.Conn, string)) {
	t.Helper()
	for i := range 2 {
		h, err := lab.AddHost(fmt.Sprintf("rs%d", i+1), mustPrefix(fmt.Sprintf("%s.%d/24", net24, 11+i)))
		if err != nil {
			t.Fatal(err)
		}
		if out, code := execIn(t, h, 5*time.Second, "ip", "route", "add", "default", "via", net24+".254"); code != 0 {
			t.Fatalf("route on %s: %s", h.Name, out)
		}
		startRealServer(t, h, vip, handle)
	}
}

// waitBackendsUp waits up to 10 s for the daemon at socket to count want
// backends up (a dsr backend is up once its check passes and its MAC is known).
func waitBackendsUp(t *testing.T, socket string, want int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ups := 0
		snap, _ := api.Fetch(context.Background(), socket) // not up yet: no balancers
		for _, b := range snap.Balancers {
			for _, be := range b.Backends {
				if be.Up {
					ups++
				}
			}
		}
		if ups == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d backends up after 10s", socket, ups, want)
		}
	}
}

// echoStreams keeps connections to an echo service busy: each sends a
// numbered line every 50 ms and expects it back from the real server that
// answered first.
type echoStreams struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	failed []string
	marked time.Time
	after  []int // exchanges completed since the last mark, per connection
}

// startEchoStreams opens n connections from client to addr (the test fails
// when one cannot be opened) and starts their exchanges.
func startEchoStreams(t *testing.T, client *netlab.Host, addr string, n int) *echoStreams {
	t.Helper()
	s := &echoStreams{stop: make(chan struct{}), after: make([]int, n)}
	conns := make([]net.Conn, n)
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := client.Dial(ctx, "tcp4", addr)
		cancel()
		if err != nil {
			s.close()
			for _, c := range conns[:i] {
				c.Close()
			}
			t.Fatalf("opening connection %d to %s: %v", i, addr, err)
		}
		conns[i] = c
	}
	for i, c := range conns {
		s.wg.Go(func() { s.run(i, c) })
	}
	t.Cleanup(s.close)
	return s
}

func (s *echoStreams) run(i int, c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	server := ""
	for seq := 0; ; seq++ {
		select {
		case <-s.stop:
			return
		default:
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "%d\n", seq)
		line, err := r.ReadString('\n')
		f := strings.Fields(line)
		if err != nil || len(f) != 2 || f[1] != strconv.Itoa(seq) || (server != "" && f[0] != server) {
			s.mu.Lock()
			s.failed = append(s.failed, fmt.Sprintf("connection %d at %d: %q %v (server %s)", i, seq, line, err, server))
			s.mu.Unlock()
			return
		}
		server = f[0]
		s.mu.Lock()
		if !s.marked.IsZero() {
			s.after[i]++
		}
		s.mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
}

// mark starts counting exchanges afresh, from now.
func (s *echoStreams) mark() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.marked = time.Now()
	clear(s.after)
}

// survivors counts the connections with at least min exchanges since the
// last mark, and returns the failures seen so far.
func (s *echoStreams) survivors(min int) (int, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.after {
		if a >= min {
			n++
		}
	}
	return n, slices.Clone(s.failed)
}

// close stops the exchanges and waits for them; it can be called twice.
func (s *echoStreams) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
}

// Two balancers with the same config. The VIP moves from lb1 to lb2 in the
// middle of established connections, and they go on: lb2 has no
// connection-tracking entry for them, but its Maglev table, built from the
// same backends, picks the same real server.
func TestDSRConnectionsSurviveBalancerFailover(t *testing.T) {
	l := newDSRLab(t, 2, echo)
	for _, n := range l.lbs { // both know the backends' MACs before the move
		waitBackendsUp(t, n.socket(), 2)
	}
	const conns = 50
	streams := startEchoStreams(t, l.client, dsrVIP+":80", conns)
	time.Sleep(time.Second)
	// Graceful stop of lb1: priority-0 advert, lb2 takes the VIP at once.
	if err := l.lbs[0].proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if ok, _ := l.lbs[1].host.HasAddr(mustPrefix(dsrVIP + "/32").Addr()); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lb2 did not take the VIP")
		}
	}
	streams.mark()
	time.Sleep(2 * time.Second)
	streams.close()
	survived, failed := streams.survivors(5)
	t.Logf("%d of %d established connections went on through lb2 (>= 5 exchanges each after the move)", survived, conns)
	if survived*100 < 99*conns {
		t.Fatalf("only %d of %d connections survived the balancer failover: %v", survived, conns, failed)
	}
	if v := statusAt(t, l.lbs[1].socket()).XDP; v["tx"] == 0 {
		t.Fatalf("lb2's XDP program steered nothing: %v", v)
	}
}

// Bad input: a dsr backend that is not one Ethernet hop away is refused at
// start, naming the balancer and the backend, before anything changes.
func TestDSRBackendOffSubnetIsRefused(t *testing.T) {
	h := oneHost(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "vigil.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`api: {socket: %q}
balancers:
  - {name: web, mode: dsr, interface: eth0, listen: ["10.79.0.10:80"], backends: [{address: "10.99.0.5:80"}]}
`, filepath.Join(dir, "vigil.sock"))), 0o644)
	out, code := execIn(t, h, 20*time.Second, vigilBin, "run", "-c", cfg, "--pid-file", "")
	if code == 0 || !strings.Contains(out, "balancers[0] (web): backend 10.99.0.5:80 is not on a subnet of eth0") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// An interface whose driver has no native XDP (a bridge): xdp_mode native
// is refused at start with the config key, the line and what to do
// instead; auto runs in generic mode and says so in status.
func TestDSRNativeModeWhereTheDriverHasNone(t *testing.T) {
	h := oneHost(t)
	for _, c := range [][]string{{"ip", "link", "add", "br9", "type", "bridge"}, {"ip", "addr", "add", "10.76.0.1/24", "dev", "br9"}, {"ip", "link", "set", "br9", "up"}} {
		if out, code := execIn(t, h, 5*time.Second, c[0], c[1:]...); code != 0 {
			t.Fatalf("%v: %s", c, out)
		}
	}
	dir := t.TempDir()
	cfg, sock := filepath.Join(dir, "vigil.yaml"), filepath.Join(dir, "vigil.sock")
	write := func(mode string) { writeDSRModeConfig(cfg, sock, "br9", "10.76.0", mode) }
	write("native")
	out, code := execIn(t, h, 20*time.Second, vigilBin, "run", "-c", cfg, "--pid-file", "")
	if code == 0 || !strings.Contains(out, "balancers[0].interface (web, line 5): interface br9: xdp: attach in native mode") ||
		!strings.Contains(out, "its driver has no native XDP (xdp_mode auto or generic runs the program in generic mode)") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	write("auto")
	logPath := filepath.Join(dir, "vigil.log")
	p := startVigil(t, h, cfg, "", logPath)
	logOnFailure(t, "vigil log", logPath)
	defer p.Kill()
	waitXDPMode(t, sock, "generic")
}

// writeDSRModeConfig writes a config with one dsr balancer on ifname in
// xdp_mode mode: VIP net.10, one backend net.5.
func writeDSRModeConfig(cfg, sock, ifname, net, mode string) {
	os.WriteFile(cfg, []byte(fmt.Sprintf(`api: {socket: %q, http: ""}
balancers:
  - name: web
    mode: dsr
    interface: %s
    xdp_mode: %s
    listen: ["%s.10:80"]
    backends: [{address: "%s.5:80"}]
`, sock, ifname, mode, net, net)), 0o644)
}

// waitXDPMode waits for status to show the one balancer running in mode want.
func waitXDPMode(t *testing.T, sock, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		snap, err := api.Fetch(context.Background(), sock)
		if err == nil && len(snap.Balancers) == 1 && snap.Balancers[0].XDPMode == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %+v, %v: want the balancer in XDP mode %s", snap.Balancers, err, want)
		}
	}
}

// greetThenEcho greets (name, client address) and, when the client sends
// a line within 300 ms, echoes every line with the name for up to 30 s: a
// one-shot question (askVIP, which half-closes) gets its answer and the
// end, a stream stays open.
func greetThenEcho(c net.Conn, name string) {
	greet(c, name)
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintf(c, "%s %s", name, line)
	}
}

// A reload changes a dsr balancer's backends as ipvsadm -a and -d would:
// rs2 out, rs3 in. New flows spread over rs1 and rs3; a flow tracked on rs2
// goes on (its connection finishes on the removed real server); a reload
// naming a backend off every subnet is refused and changes nothing.
func TestDSRReloadChangesBackends(t *testing.T) {
	l := newDSRLab(t, 1, greetThenEcho)
	lb, client := l.lbs[0], l.client
	h, err := l.lab.AddHost("rs3", mustPrefix("10.80.0.13/24"))
	if err != nil {
		t.Fatal(err)
	}
	startRealServer(t, h, dsrVIP, greetThenEcho)
	ask := func(port int) (string, error) { return askVIP(client, "10.80.0.100", dsrVIP+":80", port) }
	want := func(port int) string { return "10.80.0.100:" + strconv.Itoa(port) }
	waitVIP(t, ask)
	waitBackendsUp(t, lb.socket(), 2)
	if got := spreadOverRealServers(t, ask, 16, 24000, want); got["rs1"] < 2 || got["rs2"] < 2 {
		t.Fatalf("16 flows spread %v over rs1 and rs2", got)
	}

	// A stream on rs2, answered line by line.
	stream := openStream(t, client, "10.80.0.100", dsrVIP+":80", "rs2", 25000)
	defer stream.Close()
	say := func(i int) { t.Helper(); stream.say(t, i) }
	say(0)

	cfgPath := filepath.Join(lb.dir, "vigil.yaml")
	logPath := filepath.Join(lb.dir, "vigil.log")
	cfg, _ := os.ReadFile(cfgPath)
	reload := func(from, to, wantLog string) {
		t.Helper()
		os.WriteFile(cfgPath, []byte(strings.Replace(string(cfg), from, to, 1)), 0o644)
		off := 0
		if b, err := os.ReadFile(logPath); err == nil {
			off = len(b)
		}
		if err := lb.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitLogFile(t, logPath, off, wantLog, 5*time.Second)
	}
	reload(`"10.80.0.12:80"`, `"10.80.0.13:80"`, "config reloaded")
	say(1)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var addrs []string
		for _, b := range statusAt(t, lb.socket()).Balancers {
			for _, be := range b.Backends {
				if be.Up {
					addrs = append(addrs, be.Address)
				}
			}
		}
		if slices.Equal(addrs, []string{"10.80.0.11:80", "10.80.0.13:80"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the reload the backends up are %v, want rs1 and rs3", addrs)
		}
	}
	got := spreadOverRealServers(t, ask, 16, 26000, want)
	if got["rs2"] > 0 || got["rs1"] < 2 || got["rs3"] < 2 {
		t.Fatalf("16 new flows after the reload went %v: want rs1 and rs3 only", got)
	}
	say(2)

	reload(`"10.80.0.12:80"`, `"10.99.0.5:80"`, "backend 10.99.0.5:80 is not on a subnet of eth0")
	if got := spreadOverRealServers(t, ask, 8, 27000, want); got["rs2"] > 0 || got["rs1"]+got["rs3"] != 8 {
		t.Fatalf("after a refused reload: %v", got)
	}
	say(3)
	t.Logf("new flows after the reload %v; the stream on rs2 answered all 4 lines", got)
}

// lineStream is a connection through a dsr address to a real server
// running greetThenEcho, which answers it line by line.
type lineStream struct {
	net.Conn
	r      *bufio.Reader
	server string
}

// openStream connects from client (source src, ports from base on) to
// addr until a connection's greeting comes from server; it fails after 40.
func openStream(t *testing.T, client *netlab.Host, src, addr, server string, base int) *lineStream {
	t.Helper()
	for port := base; port < base+40; port++ {
		var s *lineStream
		client.Do(func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src), Port: port}, Timeout: time.Second}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				return err
			}
			r := bufio.NewReader(c)
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if first, _ := r.ReadString('\n'); strings.HasPrefix(first, server+" ") {
				s = &lineStream{Conn: c, r: r, server: server}
			} else {
				c.Close()
			}
			return nil
		})
		if s != nil {
			return s
		}
	}
	t.Fatalf("no flow of 40 to %s went to %s", addr, server)
	return nil
}

// say sends line i and expects the server's echo.
func (s *lineStream) say(t *testing.T, i int) {
	t.Helper()
	s.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(s, "line %d\n", i)
	if got, err := s.r.ReadString('\n'); err != nil || got != fmt.Sprintf("%s line %d\n", s.server, i) {
		t.Fatalf("stream on %s, line %d: %q, %v", s.server, i, got, err)
	}
}

// A veth hands frames sent back out (XDP_TX) by a native program to its
// peer only while the peer runs an XDP program; the kernel accepts the
// program all the same and every steered frame would be lost. vigil asks
// the kernel (the interface's XDP features) first: xdp_mode native is
// refused with the reason, auto falls back to generic and logs why; with a
// program on the peer (the switch port), native runs.
func TestDSRNativeModeOnAVethWhosePeerRunsNoXDP(t *testing.T) {
	lab := newLab(t)
	h, err := lab.AddHost("n", mustPrefix("10.79.0.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg, sock := filepath.Join(dir, "vigil.yaml"), filepath.Join(dir, "vigil.sock")
	write := func(mode string) { writeDSRModeConfig(cfg, sock, "eth0", "10.79.0", mode) }
	write("native")
	out, code := execIn(t, h, 20*time.Second, vigilBin, "run", "-c", cfg, "--pid-file", "")
	if code == 0 || !strings.Contains(out, "balancers[0].interface (web, line 5): interface eth0: xdp: native mode would drop frames: "+
		"eth0 is a veth whose peer runs no XDP program") {
		t.Fatalf("xdp_mode native, peer without a program: exit %d:\n%s", code, out)
	}
	modeInUse := func(logPath, want string) {
		t.Helper()
		p := startVigil(t, h, cfg, "", logPath)
		logOnFailure(t, "vigil log", logPath)
		defer func() { p.Signal(os.Interrupt); p.Wait(5 * time.Second) }()
		waitXDPMode(t, sock, want)
	}
	write("auto")
	logPath := filepath.Join(dir, "vigil.log")
	modeInUse(logPath, "generic")
	if b, _ := os.ReadFile(logPath); !strings.Contains(string(b), "xdp: generic mode, native would drop frames") {
		t.Fatalf("auto fell back to generic without saying why:\n%s", b)
	}
	progs, err := xdplab.Load()
	if err != nil {
		t.Fatal(err)
	}
	defer progs.Close()
	var pass io.Closer
	if err := lab.SwitchDo(func() (err error) { pass, err = progs.AttachPass(h.SwitchPort()); return err }); err != nil {
		t.Fatal(err)
	}
	defer pass.Close()
	// With a program on the peer, native works; auto still runs generic,
	// since it cannot see the peer (one with GRO on and no program also
	// reports taking XDP frames, and loses them).
	modeInUse(filepath.Join(dir, "vigil2.log"), "generic")
	write("native")
	modeInUse(filepath.Join(dir, "vigil3.log"), "native")
}

// Without BPF rights (CAP_BPF and CAP_SYS_ADMIN taken from the bounding
// set, as in a container that was not given them) the dsr balancer cannot
// load its program: vigil says so in its log, in status and in metrics,
// runs the rest — here a VRRP VIP and a proxy balancer on it — and does
// not announce the dsr balancer's VIP over BGP.
func TestDSRWithoutBPFRightsRunsTheRest(t *testing.T) {
	h := oneHost(t)
	dir := t.TempDir()
	cfg, logPath, sock := filepath.Join(dir, "vigil.yaml"), filepath.Join(dir, "vigil.log"), filepath.Join(dir, "vigil.sock")
	l, err := h.Listen("tcp", "127.0.0.1:18080")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	netlab.Serve(l, func(c net.Conn) { io.WriteString(c, "backend\n") })
	os.WriteFile(cfg, []byte(fmt.Sprintf(`api: {socket: %q}
vrrp:
  instances:
    - {name: vip, interface: eth0, vrid: 62, priority: 150, advert_interval: 100ms, vips: [10.79.0.10/24]}
balancers:
  - {name: dsrweb, mode: dsr, interface: eth0, listen: ["10.79.0.20:80"], backends: [{address: "10.79.0.5:80"}]}
  - {name: web, listen: ["10.79.0.10:8080"], backends: [{address: "127.0.0.1:18080"}]}
bgp:
  asn: 64512
  router_id: 10.79.0.1
  neighbors: [{address: 10.79.0.254, asn: 64500}]
  announce:
    - {prefix: 10.79.0.20/32, when_healthy: dsrweb}
    - {prefix: 10.79.0.10/32, when_healthy: web}
`, sock)), 0o644)
	p := startVigil(t, h, cfg, "", logPath, "setpriv", "--bounding-set", "-bpf,-sys_admin,-perfmon")
	logOnFailure(t, "vigil log", logPath)

	var answer string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		answer, err = readAllFrom(h, "10.79.0.10:8080")
		if err == nil && answer == "backend" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy balancer on the VIP did not answer: %q, %v", answer, err)
		}
	}
	log, _ := os.ReadFile(logPath)
	if !strings.Contains(string(log), `msg="dsr balancers are not running"`) || !strings.Contains(string(log), "it needs CAP_BPF and CAP_NET_ADMIN") {
		t.Fatalf("the log does not say why the dsr balancer is not running:\n%s", log)
	}
	snap := statusAt(t, sock)
	if len(snap.Instances) != 1 || snap.Instances[0].State != "MASTER" {
		t.Fatalf("VRRP instance not master: %+v", snap.Instances)
	}
	var dsr *api.Balancer
	for i := range snap.Balancers {
		if snap.Balancers[i].Name == "dsrweb" {
			dsr = &snap.Balancers[i]
		}
	}
	if dsr == nil || !strings.Contains(dsr.Error, "CAP_BPF") || len(dsr.Backends) != 1 || dsr.Backends[0].Up {
		t.Fatalf("status of the dsr balancer: %+v", dsr)
	}
	if snap.BGP == nil || !slices.Equal(snap.BGP.Announced, []string{"10.79.0.10/32"}) {
		t.Fatalf("BGP announces %+v; want only the proxy balancer's VIP", snap.BGP)
	}
	table, _ := exec.Command(vigilBin, "status", "--socket", sock).CombinedOutput()
	if !strings.Contains(string(table), "BALANCER dsrweb  dsr  listen 10.79.0.20:80  NOT RUNNING: ") {
		t.Fatalf("vigil status:\n%s", table)
	}
	if m := metrics(t, h); !strings.Contains(m, `vigil_balancer_running{balancer="dsrweb"} 0`) || !strings.Contains(m, `vigil_balancer_running{balancer="web"} 1`) {
		t.Fatalf("metrics:\n%s", m)
	}
	p.Signal(syscall.SIGTERM)
	if exited, _ := p.Wait(10 * time.Second); !exited {
		t.Fatal("vigil did not stop on SIGTERM")
	}
	if has, err := h.HasAddr(netip.MustParseAddr("10.79.0.10")); has || err != nil {
		t.Fatalf("VIP left behind after shutdown (%v)", err)
	}
}

// readAllFrom connects from h to addr and returns everything the other side
// sends until it closes, trimmed.
func readAllFrom(h *netlab.Host, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := h.Dial(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	return strings.TrimSpace(string(b)), err
}

// The same over IPv6: a VRRP IPv6 VIP on the balancer, the XDP program's
// IPv6 path, real servers holding the VIP on their loopback (IPv6 answers
// neighbour solicitations only for addresses of the asking interface, so
// no ARP settings are needed). Each real server sees the client's own
// IPv6 address and port. The balancer's health checks reach the real
// servers only because the VIP is deprecated on the balancer: otherwise
// it would be their source address, and the real servers, which hold the
// VIP too, would answer themselves.
func TestDSRThroughXDPIPv6(t *testing.T) {
	l := newDSRLabFamily(t, 1, greet, true)
	waitBackendsUp(t, l.lbs[0].socket(), 2)
	ask := func(port int) (string, error) { return askVIP(l.client, "fd00:80::100", "["+dsrVIP6+"]:80", port) }
	waitVIP(t, ask)
	got := spreadOverRealServers(t, ask, 30, 21000, func(port int) string { return fmt.Sprintf("[fd00:80::100]:%d", port) })
	if got["rs1"] < 3 || got["rs2"] < 3 {
		t.Fatalf("30 flows spread %v over the two real servers", got)
	}
	snap := statusAt(t, l.lbs[0].socket())
	if snap.XDP["tx"] == 0 {
		t.Fatalf("the XDP program steered nothing: %v", snap.XDP)
	}
	t.Logf("30 IPv6 connections over %v; XDP verdicts %v", got, snap.XDP)
}

// Two-armed DSR: clients reach the VIP on the balancer's eth0, the real
// servers sit on another segment behind its eth1. The XDP program on eth0
// redirects each frame out of eth1 (source: eth1's MAC), the real servers
// see the client's own address and answer through a router, never through
// the balancer.
func TestDSRBackendsOnAnotherInterface(t *testing.T) {
	const vip = "10.84.0.10"
	front, back := newLab(t), newLab(t)
	client, err := front.AddHost("client", mustPrefix("10.84.0.100/24"))
	if err != nil {
		t.Fatal(err)
	}
	lb, err := front.AddHost("lb", mustPrefix("10.84.0.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	router, err := front.AddHost("router", mustPrefix("10.84.0.254/24"))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []*netlab.Host{lb, router} {
		if err := back.Plug(h, "eth1", mustPrefix(fmt.Sprintf("10.85.0.%d/24", map[*netlab.Host]int{lb: 1, router: 254}[h]))); err != nil {
			t.Fatal(err)
		}
	}
	if err := router.Sysctl("net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	routedRealServers(t, back, "10.85.0", vip, greet)
	n := &dsrNode{host: lb, dir: t.TempDir()}
	cfg := filepath.Join(n.dir, "vigil.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`api: {socket: %q}
log: {level: debug}
vrrp:
  instances:
    - {name: vip, interface: eth0, vrid: 84, priority: 150, advert_interval: 100ms, vips: [%s]}
balancers:
  - name: web
    mode: dsr
    interface: eth0
    xdp_mode: generic
    listen: ["%s:80"]
    backends: [{address: "10.85.0.11:80"}, {address: "10.85.0.12:80"}]
    check: {interval: 200ms, fall: 2, rise: 2}
`, n.socket(), vip, vip)), 0o644)
	log := filepath.Join(n.dir, "vigil.log")
	n.proc = startVigil(t, lb, cfg, "", log)
	logOnFailure(t, "vigil log", log)
	waitBackendsUp(t, n.socket(), 2)
	ask := func(port int) (string, error) { return askVIP(client, "10.84.0.100", vip+":80", port) }
	got := spreadOverRealServers(t, ask, 30, 22000, func(port int) string { return "10.84.0.100:" + strconv.Itoa(port) })
	if got["rs1"] < 3 || got["rs2"] < 3 {
		t.Fatalf("30 flows spread %v over the two real servers", got)
	}
	snap := statusAt(t, n.socket())
	if snap.XDP["redirect"] == 0 || snap.XDP["tx"] != 0 {
		t.Fatalf("XDP verdicts %v: every steered frame should be redirected to eth1", snap.XDP)
	}
	t.Logf("30 connections over %v through eth0 -> eth1; XDP verdicts %v", got, snap.XDP)
}
