package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
)

// httpBackend is a backend host serving "who am I" on :6443 and /readyz.
type httpBackend struct {
	host     *netlab.Host
	sick     atomic.Bool // /readyz answers 503
	hits     atomic.Int64
	srv      *http.Server
	refusing bool // stop's nftables rule is in place
}

func (b *httpBackend) start(t *testing.T) {
	t.Helper()
	if b.refusing {
		if out, code := execIn(t, b.host, 10*time.Second, "nft", "delete", "table", "inet", "backend_stop"); code != 0 {
			t.Fatalf("%s: accepting connections again: %s", b.host.Name, out)
		}
		b.refusing = false
	}
	l, err := b.host.Listen("tcp4", "0.0.0.0:6443")
	if err != nil {
		t.Fatal(err)
	}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			if b.sick.Load() {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, "ok")
			return
		}
		b.hits.Add(1)
		io.WriteString(w, b.host.Name)
	})}
	go b.srv.Serve(l)
}

// stop kills the backend as a process stopping would from the balancer's
// side: its port refuses new connections at once. Requests already in flight
// are answered first, since no balancer can save one whose backend dies
// mid-request and the load loops count every failure. That includes the
// connections in the listener's accept queue: a listener's close resets them,
// and the balancer may have sent a request on one already (its handshake is
// done), past the point where it may try another backend. So new connections
// are refused with a reset first (an nftables rule: what a closed port sends),
// the server takes what its queue holds, and only then is it shut down.
func (b *httpBackend) stop(t *testing.T) {
	t.Helper()
	rules := filepath.Join(t.TempDir(), "refuse.nft")
	err := os.WriteFile(rules, []byte(`table inet backend_stop {
	chain in {
		type filter hook input priority 0;
		tcp dport 6443 tcp flags & (syn | ack) == syn reject with tcp reset
	}
}
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if out, code := execIn(t, b.host, 10*time.Second, "nft", "-f", rules); code != 0 {
		t.Fatalf("%s: refusing new connections: %s", b.host.Name, out)
	}
	b.refusing = true
	// A handshake under way when the rule came completes into the queue.
	time.Sleep(10 * time.Millisecond)
	b.waitAcceptQueueEmpty(t)
	b.close()
}

// close shuts the server down, answering the requests in flight.
func (b *httpBackend) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	b.srv.Shutdown(ctx)
}

// waitAcceptQueueEmpty waits until the server has accepted every connection
// whose handshake is done: the kernel shows that queue's length as the
// receive queue of the listening socket (state 0A) in /proc/net/tcp.
func (b *httpBackend) waitAcceptQueueEmpty(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		queued, listening := 0, false
		err := b.host.Do(func() error {
			text, err := os.ReadFile("/proc/thread-self/net/tcp")
			if err != nil {
				return err
			}
			for _, l := range strings.Split(string(text), "\n")[1:] {
				f := strings.Fields(l)
				// local address, state, tx_queue:rx_queue
				if len(f) > 4 && strings.HasSuffix(f[1], ":192B") && f[3] == "0A" {
					var tx, rx int
					fmt.Sscanf(f[4], "%x:%x", &tx, &rx)
					queued, listening = queued+rx, true
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: reading the accept queue: %v", b.host.Name, err)
		}
		if !listening {
			t.Fatalf("%s: no listener on port 6443 in /proc/net/tcp", b.host.Name)
		}
		if queued == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d connections still wait in the accept queue after 2s", b.host.Name, queued)
		}
		time.Sleep(time.Millisecond)
	}
}

// balancerLab is one vigil node with a VIP and a balancer on it, three
// backends and a client.
type balancerLab struct {
	lab      *netlab.Lab
	lb       *netlab.Host
	client   *netlab.Host
	backends map[string]*httpBackend
	dialer   *netlab.Dialer
	http     *http.Client
	cfg, log string
	proc     *netlab.Proc
}

const balancerVIP = "10.78.0.10"

func newBalancerLab(t *testing.T) *balancerLab {
	t.Helper()
	lab := newLab(t)
	bl := &balancerLab{lab: lab, backends: map[string]*httpBackend{}}
	var err error
	if bl.lb, err = lab.AddHost("lb", mustPrefix("10.78.0.1/24")); err != nil {
		t.Fatal(err)
	}
	if bl.client, err = lab.AddHost("client", mustPrefix("10.78.0.100/24")); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"be1", "be2", "be3"} {
		h, err := lab.AddHost(name, mustPrefix(fmt.Sprintf("10.78.0.%d/24", 11+i)))
		if err != nil {
			t.Fatal(err)
		}
		b := &httpBackend{host: h}
		b.start(t)
		t.Cleanup(b.close)
		bl.backends[name] = b
	}
	bl.dialer = bl.client.Dialer(8)
	t.Cleanup(bl.dialer.Close)
	bl.http = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			for {
				c, err := bl.dialer.TryDial(ctx, network, addr)
				if err != netlab.ErrBusy {
					return c, err
				}
				time.Sleep(time.Millisecond)
			}
		}}}
	dir := t.TempDir()
	bl.cfg, bl.log = filepath.Join(dir, "vigil.yaml"), filepath.Join(dir, "vigil.log")
	return bl
}

// config writes the daemon's config with the given backends and extra
// balancer lines.
func (bl *balancerLab) config(t *testing.T, backends []string, extra string) {
	t.Helper()
	var be strings.Builder
	for _, b := range backends {
		fmt.Fprintf(&be, "      - {address: \"%s:6443\"}\n", bl.backends[b].host.Addr(false))
	}
	cfg := fmt.Sprintf(`log: {level: debug}
api: {socket: %q}
vrrp:
  instances:
    - {name: api, interface: eth0, vrid: 61, priority: 150, advert_interval: 100ms, vips: [%s]}
balancers:
  - name: api
    listen: ["%s:9445"]
    monitor: {listen: "10.78.0.1:50936", path: /readyz}
    check: {http: {path: /readyz}, interval: 200ms, timeout: 150ms, rise: 2, fall: 2}
    drain_timeout: 1s
    backends:
%s%s`, filepath.Join(filepath.Dir(bl.cfg), "vigil.sock"), balancerVIP, balancerVIP, be.String(), extra)
	if err := os.WriteFile(bl.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (bl *balancerLab) start(t *testing.T) {
	t.Helper()
	bl.proc = startVigil(t, bl.lb, bl.cfg, filepath.Join(filepath.Dir(bl.cfg), "vigil.pid"), bl.log)
	logOnFailure(t, "vigil log", bl.log)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := bl.get("http://" + balancerVIP + ":9445/"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the balancer did not answer on the VIP within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (bl *balancerLab) get(url string) (string, error) {
	resp, err := bl.http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), err
}

// load sends n requests, each on a new connection, pace apart, and returns
// who answered each (in order) and the failures.
func (bl *balancerLab) load(n int, pace time.Duration) (answers []string, failures []error) {
	for range n {
		who, err := bl.get("http://" + balancerVIP + ":9445/")
		if err != nil {
			failures = append(failures, err)
		} else {
			answers = append(answers, who)
		}
		time.Sleep(pace)
	}
	return answers, failures
}

func tally(answers []string) map[string]int {
	m := map[string]int{}
	for _, a := range answers {
		m[a]++
	}
	return m
}

// logSince returns the daemon's log lines from the given offset on, and the
// new offset.
func (bl *balancerLab) logSince(off int) ([]string, int) {
	b, _ := os.ReadFile(bl.log)
	if off > len(b) {
		off = len(b)
	}
	return strings.Split(string(b[off:]), "\n"), len(b)
}

func waitLog(t *testing.T, bl *balancerLab, off int, want string, d time.Duration) time.Duration {
	t.Helper()
	return waitLogFile(t, bl.log, off, want, d)
}

// waitLogFile waits up to d for a line with want in the log at path, past
// its first off bytes, and returns how long that took.
func waitLogFile(t *testing.T, path string, off int, want string, d time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	for time.Since(t0) < d {
		b, _ := os.ReadFile(path)
		if off <= len(b) && strings.Contains(string(b[off:]), want) {
			return time.Since(t0)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no log line with %q within %v", want, d)
	return 0
}

// The balancer on a VIP (bound before the VIP arrives) spreads connections,
// takes a killed backend out of rotation after fall x interval without a
// failed request, takes it back after rise x interval, and reloads its
// backends on SIGHUP under load without a failed request.
func TestBalancerHealthAndReload(t *testing.T) {
	bl := newBalancerLab(t)
	bl.config(t, []string{"be1", "be2"}, "")
	bl.start(t)

	answers, failures := bl.load(60, 5*time.Millisecond)
	if got := tally(answers); len(failures) > 0 || got["be1"] < 15 || got["be2"] < 15 {
		t.Fatalf("spread over two backends: %v, failures %v", got, failures)
	}

	// Kill be1 during a bounded load loop: retries make every request succeed.
	_, off := bl.logSince(0)
	var wg sync.WaitGroup
	var during []error
	wg.Go(func() { _, during = bl.load(100, 10*time.Millisecond) })
	time.Sleep(100 * time.Millisecond)
	t0 := time.Now()
	bl.backends["be1"].stop(t)
	waitLog(t, bl, off, `msg="backend down" balancer=api backend=10.78.0.11:6443 `, 3*time.Second)
	t.Logf("be1 killed -> out of rotation in %v (fall 2, interval 200ms, fast interval 50ms)", time.Since(t0))
	wg.Wait()
	if len(during) > 0 {
		t.Fatalf("%d requests failed while be1 died: %v", len(during), during[0])
	}
	// Once down, no connection attempt goes to be1.
	_, downOff := bl.logSince(0)
	answers, failures = bl.load(20, 5*time.Millisecond)
	lines, _ := bl.logSince(downOff)
	for _, l := range lines {
		if strings.Contains(l, "backend connect failed") && strings.Contains(l, "10.78.0.11") {
			t.Fatalf("a connection went to be1 after it was marked down: %s", l)
		}
	}
	if got := tally(answers); len(failures) > 0 || got["be2"] != 20 {
		t.Fatalf("with be1 down: %v, failures %v", got, failures)
	}

	// Bring be1 back: it rejoins after rise x interval.
	_, off = bl.logSince(0)
	bl.backends["be1"].start(t)
	took := waitLog(t, bl, off, `msg="backend up" balancer=api backend=10.78.0.11:6443 `, 3*time.Second)
	t.Logf("be1 back -> in rotation in %v (rise 2 x interval 200ms)", took)
	answers, _ = bl.load(20, 5*time.Millisecond)
	if got := tally(answers); got["be1"] < 5 {
		t.Fatalf("be1 did not rejoin: %v", got)
	}

	// SIGHUP with be2 replaced by be3, under load: nothing fails.
	bl.config(t, []string{"be1", "be3"}, "")
	_, off = bl.logSince(0)
	wg.Go(func() { answers, during = bl.load(150, 5*time.Millisecond) })
	time.Sleep(200 * time.Millisecond)
	if err := bl.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, bl, off, "config reloaded", 3*time.Second)
	wg.Wait()
	if len(during) > 0 {
		t.Fatalf("%d requests failed across the reload: %v", len(during), during[0])
	}
	tail := tally(answers[len(answers)-40:])
	if tail["be2"] > 0 || tail["be3"] < 10 {
		t.Fatalf("after the reload: %v (be2 removed, be3 added)", tail)
	}

	// A reload whose new listener is taken is refused; the old config serves on.
	taken, err := bl.lb.Listen("tcp4", "10.78.0.1:9446")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	bl.config(t, []string{"be1", "be2"}, "")
	cfg, _ := os.ReadFile(bl.cfg)
	os.WriteFile(bl.cfg, []byte(strings.Replace(string(cfg), `listen: ["10.78.0.10:9445"]`, `listen: ["10.78.0.10:9445", "10.78.0.1:9446"]`, 1)), 0o644)
	_, off = bl.logSince(0)
	bl.proc.Signal(syscall.SIGHUP)
	waitLog(t, bl, off, "10.78.0.1:9446: address already in use (nothing applied)", 3*time.Second)
	answers, failures = bl.load(20, 5*time.Millisecond)
	if got := tally(answers); len(failures) > 0 || got["be2"] > 0 || got["be3"] < 5 {
		t.Fatalf("after a refused reload: %v, failures %v", got, failures)
	}

	// The monitor says 503 when no backend is healthy.
	if _, err := bl.get("http://10.78.0.1:50936/readyz"); err != nil {
		t.Fatalf("monitor while healthy: %v", err)
	}
	bl.backends["be1"].sick.Store(true)
	bl.backends["be3"].sick.Store(true)
	deadline := time.Now().Add(3 * time.Second)
	for {
		_, err := bl.get("http://10.78.0.1:50936/readyz")
		if err != nil && strings.Contains(err.Error(), "status 503") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("monitor with every backend down: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// SIGTERM: the daemon drains, removes the VIP and exits.
	bl.proc.Signal(syscall.SIGTERM)
	if exited, err := bl.proc.Wait(5 * time.Second); !exited || err != nil {
		t.Fatalf("shutdown: exited=%v err=%v", exited, err)
	}
	if ok, _ := bl.lb.HasAddr(mustPrefix(balancerVIP + "/32").Addr()); ok {
		t.Fatal("VIP still configured after shutdown")
	}
}

// TestBalancerMaglevKeepsAClientOnItsBackend runs algorithm maglev through
// the daemon: every connection of one client goes to the same backend; when
// that backend dies they all go to one other, without a failure, and when it
// is back they return to it.
func TestBalancerMaglevKeepsAClientOnItsBackend(t *testing.T) {
	bl := newBalancerLab(t)
	bl.config(t, []string{"be1", "be2", "be3"}, "    algorithm: maglev\n")
	bl.start(t)

	onlyOne := func(what string) string {
		t.Helper()
		answers, failures := bl.load(30, 5*time.Millisecond)
		got := tally(answers)
		if len(failures) > 0 || len(got) != 1 {
			t.Fatalf("%s: one backend should take every connection of the client: %v, failures %v", what, got, failures)
		}
		for who := range got {
			return who
		}
		return ""
	}
	home := onlyOne("start")
	t.Logf("the client's backend: %s", home)

	_, off := bl.logSince(0)
	var wg sync.WaitGroup
	var answers []string
	var during []error
	wg.Go(func() { answers, during = bl.load(60, 10*time.Millisecond) })
	time.Sleep(100 * time.Millisecond)
	bl.backends[home].stop(t)
	waitLog(t, bl, off, fmt.Sprintf(`msg="backend down" balancer=api backend=%s:6443 `, bl.backends[home].host.Addr(false)), 3*time.Second)
	wg.Wait()
	if len(during) > 0 {
		t.Fatalf("%d requests failed while %s died: %v", len(during), home, during[0])
	}
	stand := onlyOne("with " + home + " down")
	if stand == home {
		t.Fatalf("%s is down but still answered", home)
	}
	if after := tally(answers[len(answers)-10:]); after[stand] != 10 {
		t.Fatalf("while %s died, the last requests went to %v, then %s took the client", home, after, stand)
	}

	_, off = bl.logSince(0)
	bl.backends[home].start(t)
	waitLog(t, bl, off, fmt.Sprintf(`msg="backend up" balancer=api backend=%s:6443 `, bl.backends[home].host.Addr(false)), 3*time.Second)
	if back := onlyOne(home + " back"); back != home {
		t.Fatalf("with %s back the client went to %s", home, back)
	}
}
