// Command proxy measures vigil's L4 balancer against HAProxy side by side in
// one run: the same backends, equivalent configs, the same load from wrk, all
// inside one network namespace of its own (loopback only). It writes the
// table into docs/benchmarks.md between its markers. Needs root, haproxy and
// wrk. Every load is bounded in time; every loop in count.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vigil-lb/vigil/internal/benchdoc"
	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/proxy"
)

// Ports inside the bench namespace.
const (
	web1, web2, bulkPort, detPort = 8081, 8082, 8090, 8085
	// Each implementation gets base+0 web, +1 bulk, +2 detection frontend,
	// +3 detection monitor.
	haproxyBase, vigilBase = 9000, 9100
)

type impl struct {
	name string
	base int
	proc *netlab.Proc
}

type sample struct {
	rps, p50, p99 float64 // requests/s, latency in ms
	errors        int
	requests      float64 // completed in the run
	cpu           cpuPerRequest
}

// cpuPerRequest is where the machine's time went during a wrk run, in
// microseconds per request: the proxy's process, the backends' (this
// process), wrk's, the cores' idle time and what the hypervisor took
// (steal). A proxy cheaper than another can still serve fewer requests if
// the others spend more per request with it, or the cores wait more.
type cpuPerRequest struct {
	proxy, backends, wrk, idle, steal float64
}

type results struct {
	keepAlive, perConn []sample
	mbps               []float64
	idleRSS            memory // at the idle connections
	baseRSS            memory
	detect, recover    []time.Duration
}

func main() {
	duration := flag.Duration("duration", 5*time.Second, "length of each wrk run")
	rounds := flag.Int("rounds", 3, "rounds of each load per implementation (alternating)")
	conns := flag.Int("conns", 50, "wrk connections")
	idle := flag.Int("idle", 9000, "idle connections for the memory figure (each costs a proxy two descriptors; the hard limit here is 20000)")
	bulkMiB := flag.Int("bulk", 2048, "MiB per throughput run")
	detectRounds := flag.Int("detect-rounds", 5, "backend kill/return rounds for detection time")
	out := flag.String("out", "docs/benchmarks.md", "markdown file to update")
	flag.StringVar(&vigilEnv, "vigil-env", "", "extra environment for vigil, e.g. GOMAXPROCS=1 (noted in the table)")
	flag.Parse()
	if err := run(*duration, *rounds, *conns, *idle, *bulkMiB, *detectRounds, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench/proxy:", err)
		os.Exit(1)
	}
}

func run(duration time.Duration, rounds, conns, idle, bulkMiB, detectRounds int, out string) error {
	if !netlab.Root() {
		return errors.New("needs root (network namespace, file limits)")
	}
	for _, bin := range []string{"haproxy", "wrk"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s is not installed (make deps installs it)", bin)
		}
	}
	if _, err := proxy.RaiseFileLimit(); err != nil {
		return err
	}
	dir, bin, cleanup, err := benchdoc.BuildVigil("vigil-bench-proxy-")
	if err != nil {
		return err
	}
	defer cleanup()
	netlab.CleanupStale()
	lab, err := netlab.New()
	if err != nil {
		return err
	}
	defer lab.Close()
	h, err := lab.AddHost("bench", netip.MustParsePrefix("10.90.0.1/24"))
	if err != nil {
		return err
	}
	servers, err := startBackends(h)
	if err != nil {
		return err
	}
	defer servers.close()

	hp := &impl{name: "HAProxy", base: haproxyBase}
	vg := &impl{name: "vigil", base: vigilBase}
	hcfg := filepath.Join(dir, "haproxy.cfg")
	vcfg := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(hcfg, []byte(haproxyConfig()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(vcfg, []byte(vigilConfig()+fmt.Sprintf("api: {socket: %q}\n", filepath.Join(dir, "vigil.sock"))), 0o644); err != nil {
		return err
	}
	haproxyVersion, _ := exec.Command("haproxy", "-v").Output()
	if hp.proc, err = h.Start(logTo(exec.Command("haproxy", "-f", hcfg, "-db"), filepath.Join(dir, "haproxy.log"))); err != nil {
		return err
	}
	vcmd := exec.Command(bin, "run", "-c", vcfg, "--pid-file", "")
	if vigilEnv != "" {
		vcmd.Env = append(os.Environ(), strings.Fields(vigilEnv)...)
	}
	if vg.proc, err = h.Start(logTo(vcmd, filepath.Join(dir, "vigil.log"))); err != nil {
		return err
	}
	defer hp.proc.Kill()
	defer vg.proc.Kill()
	for _, im := range []*impl{hp, vg} {
		if err := waitHTTP(h, fmt.Sprintf("http://127.0.0.1:%d/", im.base), 200, 10*time.Second); err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, strings.ToLower(im.name)+".log"))
			return fmt.Errorf("%s did not come up: %v\n%s", im.name, err, log)
		}
	}

	res := map[*impl]*results{hp: {}, vg: {}}
	for r := range rounds {
		order := []*impl{hp, vg}
		if r%2 == 1 {
			order = []*impl{vg, hp}
		}
		for _, im := range order {
			url := fmt.Sprintf("http://127.0.0.1:%d/", im.base)
			s, err := wrk(h, dir, duration, conns, url, false, im.proc.Cmd.Process.Pid)
			if err != nil {
				return fmt.Errorf("%s keep-alive: %w", im.name, err)
			}
			res[im].keepAlive = append(res[im].keepAlive, s)
			if s, err = wrk(h, dir, duration, conns, url, true, im.proc.Cmd.Process.Pid); err != nil {
				return fmt.Errorf("%s new connection per request: %w", im.name, err)
			}
			res[im].perConn = append(res[im].perConn, s)
			var mbps []float64 // a transfer is short: several per round
			for range bulkRuns {
				m, err := bulk(h, im.base+1, bulkMiB)
				if err != nil {
					return fmt.Errorf("%s bulk: %w", im.name, err)
				}
				mbps = append(mbps, m)
			}
			res[im].mbps = append(res[im].mbps, mbps...)
			fmt.Printf("round %d %-8s keep-alive %.0f req/s p99 %.2fms, per-connection %.0f conn/s p99 %.2fms, bulk %.0f MB/s\n",
				r+1, im.name, res[im].keepAlive[r].rps, res[im].keepAlive[r].p99, s.rps, s.p99, benchdoc.Median(mbps))
		}
	}
	for _, im := range []*impl{hp, vg} {
		base, full, err := idleRSS(h, im, idle, servers)
		if err != nil {
			return fmt.Errorf("%s idle connections: %w", im.name, err)
		}
		res[im].baseRSS, res[im].idleRSS = base, full
		fmt.Printf("%-8s RSS %.1f MiB idle (anon %.1f), %.1f MiB with %d idle connections (anon %.1f)\n", im.name, base.total, base.anon, full.total, idle, full.anon)
	}
	for r := range detectRounds {
		d, rec, err := detection(h, servers, []*impl{hp, vg})
		if err != nil {
			return fmt.Errorf("detection round %d: %w", r+1, err)
		}
		for i, im := range []*impl{hp, vg} {
			res[im].detect = append(res[im].detect, d[i])
			res[im].recover = append(res[im].recover, rec[i])
		}
		fmt.Printf("detection round %d: HAProxy %v / vigil %v down, %v / %v up\n", r+1, d[0], d[1], rec[0], rec[1])
	}
	table := render(res[hp], res[vg], duration, rounds, conns, idle, bulkMiB, detectRounds, firstLine(string(haproxyVersion)))
	fmt.Print(table)
	return benchdoc.WriteSection(out, "proxy", "L4 balancer: vigil vs HAProxy", table)
}

func haproxyConfig() string {
	b := haproxyBase
	return fmt.Sprintf(`global
    maxconn 9800
defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
    retries 3
    option redispatch
frontend web
    bind 127.0.0.1:%d
    default_backend web
backend web
    balance roundrobin
    server w1 127.0.0.1:%d check inter 1s fall 2 rise 2
    server w2 127.0.0.1:%d check inter 1s fall 2 rise 2
frontend bulk
    bind 127.0.0.1:%d
    default_backend bulk
backend bulk
    server b1 127.0.0.1:%d
frontend det
    bind 127.0.0.1:%d
    default_backend det
backend det
    server d1 127.0.0.1:%d check inter 1s fall 2 rise 2
frontend monitor
    mode http
    bind 127.0.0.1:%d
    monitor-uri /readyz
    monitor fail if { nbsrv(det) lt 1 }
`, b, web1, web2, b+1, bulkPort, b+2, detPort, b+3)
}

func vigilConfig() string {
	b := vigilBase
	return fmt.Sprintf(`balancers:
  - name: web
    listen: ["127.0.0.1:%d"]
    max_conn: 9800
    backends: [{address: "127.0.0.1:%d"}, {address: "127.0.0.1:%d"}]
    check: {interval: 1s, fall: 2, rise: 2}
  - name: bulk
    listen: ["127.0.0.1:%d"]
    backends: [{address: "127.0.0.1:%d"}]
  - name: det
    listen: ["127.0.0.1:%d"]
    monitor: {listen: "127.0.0.1:%d", path: /readyz}
    backends: [{address: "127.0.0.1:%d"}]
    check: {interval: 1s, fall: 2, rise: 2}
`, b, web1, web2, b+1, bulkPort, b+2, b+3, detPort)
}

func logTo(cmd *exec.Cmd, path string) *exec.Cmd {
	f, err := os.Create(path)
	if err == nil {
		cmd.Stdout, cmd.Stderr = f, f
	}
	return cmd
}

// vigilEnv is extra environment for the vigil process.
var vigilEnv string

// bulkRuns is how many bulk transfers each round makes; the table shows the
// median of all of them.
const bulkRuns = 3

// backends are the servers both implementations share.
type backends struct {
	h        *netlab.Host
	web      []*http.Server
	bulk     net.Listener
	det      net.Listener
	accepted atomic.Int64 // connections the web servers accepted (idle test)
	open     atomic.Int64 // of those, not closed yet
	mu       sync.Mutex
	held     []net.Conn
}

var chunk = make([]byte, 1<<20)

func startBackends(h *netlab.Host) (*backends, error) {
	s := &backends{h: h}
	for _, port := range []int{web1, web2} {
		l, err := h.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return nil, err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, "ok\n")
		}), ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.accepted.Add(1)
				s.open.Add(1)
			} else if st == http.StateClosed || st == http.StateHijacked {
				s.open.Add(-1)
			}
		}}
		go srv.Serve(l)
		s.web = append(s.web, srv)
	}
	l, err := h.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", bulkPort))
	if err != nil {
		return nil, err
	}
	s.bulk = l
	netlab.Serve(l, func(c net.Conn) {
		// The client says how many MiB it wants in one line.
		line, err := bufio.NewReader(c).ReadString('\n')
		n, _ := strconv.Atoi(strings.TrimSpace(line))
		if err != nil || n <= 0 || n > 1<<16 {
			return
		}
		for range n {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	return s, s.listenDet()
}

// listenDet (re)starts the detection backend, which accepts and closes.
func (s *backends) listenDet() error {
	l, err := s.h.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", detPort))
	if err != nil {
		return err
	}
	s.det = l
	netlab.Serve(l, func(net.Conn) {}) // accept and close
	return nil
}

func (s *backends) close() {
	for _, srv := range s.web {
		srv.Close()
	}
	s.bulk.Close()
	s.det.Close()
}

var (
	rpsRE   = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	countRE = regexp.MustCompile(`(\d+) requests in`)
	latRE   = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	errRE   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)|Non-2xx or 3xx responses: (\d+)`)
)

// wrk runs one bounded wrk load inside the namespace.
func wrk(h *netlab.Host, dir string, d time.Duration, conns int, url string, closeEach bool, proxyPid int) (sample, error) {
	args := []string{"-t2", "-c" + strconv.Itoa(conns), "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency", "--timeout", "5s"}
	if closeEach {
		args = append(args, "-H", "Connection: close")
	}
	outFile := filepath.Join(dir, "wrk.out")
	f, err := os.Create(outFile)
	if err != nil {
		return sample{}, err
	}
	defer f.Close()
	cmd := exec.Command("wrk", append(args, url)...)
	cmd.Stdout, cmd.Stderr = f, f
	before, err := takeTimes(proxyPid)
	if err != nil {
		return sample{}, err
	}
	p, err := h.Start(cmd)
	if err != nil {
		return sample{}, err
	}
	if exited, err := p.Wait(d + 30*time.Second); !exited || err != nil {
		p.Kill()
		return sample{}, fmt.Errorf("wrk: exited=%v err=%v", exited, err)
	}
	after, err := takeTimes(proxyPid)
	if err != nil {
		return sample{}, err
	}
	text, _ := os.ReadFile(outFile)
	s, err := parseWrk(string(text))
	if err != nil {
		return s, err
	}
	if n := s.requests; n > 0 {
		ru, _ := p.Cmd.ProcessState.SysUsage().(*syscall.Rusage)
		var wrkTime time.Duration
		if ru != nil {
			wrkTime = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
		per := func(ticks uint64) float64 { return float64(ticks) * 1e6 / userHZ / n }
		s.cpu = cpuPerRequest{
			proxy:    per(after.proxy - before.proxy),
			backends: per(after.self - before.self),
			wrk:      float64(wrkTime.Microseconds()) / n,
			idle:     per(after.idle - before.idle),
			steal:    per(after.steal - before.steal),
		}
	}
	return s, nil
}

// userHZ is the unit of the times in /proc: fixed at 100 per second by the
// kernel's ABI, whatever the kernel's own tick.
const userHZ = 100

// times are CPU time counters in /proc, in ticks of 1/userHZ s.
type times struct {
	proxy, self uint64 // user + system of the proxy's process and this one
	idle, steal uint64 // all cores: idle + iowait, and steal
}

func takeTimes(proxyPid int) (times, error) {
	var t times
	var err error
	if t.proxy, err = processTicks(strconv.Itoa(proxyPid)); err != nil {
		return t, err
	}
	if t.self, err = processTicks("self"); err != nil {
		return t, err
	}
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return t, err
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return t, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	n := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
	t.idle, t.steal = n(4)+n(5), n(8)
	return t, nil
}

// processTicks is a process's user + system time from /proc/<pid>/stat.
func processTicks(pid string) (uint64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; the fields after it do not.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%s/stat: too short", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%s/stat: %w", pid, err)
	}
	return utime + stime, nil
}

func parseWrk(text string) (sample, error) {
	m := rpsRE.FindStringSubmatch(text)
	if m == nil {
		return sample{}, fmt.Errorf("no Requests/sec in wrk output:\n%s", text)
	}
	var s sample
	s.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := countRE.FindStringSubmatch(text); m != nil {
		s.requests, _ = strconv.ParseFloat(m[1], 64)
	}
	for _, l := range latRE.FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseFloat(l[2], 64)
		switch l[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if l[1] == "50" {
			s.p50 = v
		} else {
			s.p99 = v
		}
	}
	for _, e := range errRE.FindAllStringSubmatch(text, -1) {
		for _, n := range e[1:] {
			k, _ := strconv.Atoi(n)
			s.errors += k
		}
	}
	return s, nil
}

// bulk reads mib MiB through the frontend on port and returns MB/s.
func bulk(h *netlab.Host, port, mib int) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := h.Dial(ctx, "tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	t0 := time.Now()
	fmt.Fprintf(c, "%d\n", mib)
	n, err := io.Copy(io.Discard, c)
	took := time.Since(t0)
	if err != nil || n != int64(mib)<<20 {
		return 0, fmt.Errorf("read %d of %d bytes: %v", n, int64(mib)<<20, err)
	}
	return float64(n) / 1e6 / took.Seconds(), nil
}

// idleRSS opens n connections through the web frontend, waits until the
// backends have accepted all of them, and reads the proxy's RSS before and
// with them.
func idleRSS(h *netlab.Host, im *impl, n int, s *backends) (base, full memory, err error) {
	base, err = rss(im.proc.Cmd.Process.Pid)
	if err != nil {
		return memory{}, memory{}, err
	}
	// The previous phase's connections must be gone first: this process
	// holds both ends of every idle connection, and its descriptors are
	// bounded by the machine's hard limit.
	for wait := time.Now().Add(30 * time.Second); s.open.Load() > 0 && time.Now().Before(wait); {
		time.Sleep(20 * time.Millisecond)
	}
	d := h.Dialer(4)
	defer d.Close()
	before := s.accepted.Load()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", im.base)
	for len(conns) < n {
		c, err := d.TryDial(context.Background(), "tcp4", addr)
		if errors.Is(err, netlab.ErrBusy) {
			continue
		}
		if err != nil {
			return memory{}, memory{}, fmt.Errorf("after %d connections: %w", len(conns), err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.accepted.Load()-before < int64(n) {
		if time.Now().After(deadline) {
			return memory{}, memory{}, fmt.Errorf("backends accepted %d of %d", s.accepted.Load()-before, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	full, err = rss(im.proc.Cmd.Process.Pid)
	return base, full, err
}

// memory is a process's resident set in MiB, split as the kernel counts it:
// anon is private memory (heap, stacks), file the mapped pages of the
// executable and its libraries, which are shared page cache. A Go binary
// is large and this kernel maps its page cache in large folios, so file
// dominates vigil's total and depends on how the binary was cached (just
// built: most of it; after a cold start: about half).
type memory struct{ total, anon, file float64 }

func rss(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	var m memory
	fields := map[string]*float64{"VmRSS:": &m.total, "RssAnon:": &m.anon, "RssFile:": &m.file}
	seen := 0
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && fields[f[0]] != nil {
			kb, _ := strconv.ParseFloat(f[1], 64)
			*fields[f[0]] = kb / 1024
			seen++
		}
	}
	if seen != len(fields) {
		return memory{}, errors.New("no VmRSS, RssAnon or RssFile in /proc/PID/status")
	}
	return m, nil
}

// detection kills the shared detection backend and times until each
// implementation's monitor answers 503, then restores it and times until 200.
func detection(h *netlab.Host, s *backends, ims []*impl) (down, up []time.Duration, err error) {
	// A random phase against both check schedules, so neither is favoured.
	time.Sleep(rand.N(time.Second))
	t0 := time.Now()
	s.det.Close()
	if down, err = waitMonitors(h, ims, 503, t0); err != nil {
		return nil, nil, err
	}
	t1 := time.Now()
	time.Sleep(rand.N(time.Second))
	if err := s.listenDet(); err != nil {
		return nil, nil, err
	}
	if up, err = waitMonitors(h, ims, 200, t1); err != nil {
		return nil, nil, err
	}
	return down, up, nil
}

func waitMonitors(h *netlab.Host, ims []*impl, code int, t0 time.Time) ([]time.Duration, error) {
	out := make([]time.Duration, len(ims))
	var wg sync.WaitGroup
	errs := make([]error, len(ims))
	for i, im := range ims {
		wg.Go(func() {
			url := fmt.Sprintf("http://127.0.0.1:%d/readyz", im.base+3)
			errs[i] = waitHTTP(h, url, code, 10*time.Second)
			out[i] = time.Since(t0)
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// waitHTTP polls url every 5ms until it answers code.
func waitHTTP(h *netlab.Host, url string, code int, d time.Duration) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return h.Dial(ctx, network, addr) }}}
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == code {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer %d within %v (last: %s)", url, code, d, last)
}

// med is the median of one figure over the rounds' samples.
func med(ss []sample, f func(sample) float64) float64 {
	var xs []float64
	for _, s := range ss {
		xs = append(xs, f(s))
	}
	return benchdoc.Median(xs)
}

func render(hp, vg *results, d time.Duration, rounds, conns, idle, bulkMiB, detectRounds int, version string) string {
	errs := func(ss []sample) int {
		n := 0
		for _, s := range ss {
			n += s.errors
		}
		return n
	}
	rps := func(s sample) float64 { return s.rps }
	p50 := func(s sample) float64 { return s.p50 }
	p99 := func(s sample) float64 { return s.p99 }
	var b strings.Builder
	fmt.Fprintf(&b, "Written by `make bench-proxy` on %s. %s and vigil in one network namespace, loopback only, "+
		"the same two Go HTTP backends; wrk -t2 -c%d for %v per run, %d rounds alternating which goes first, medians shown; "+
		"2 cores shared by wrk, the proxy and the backends. Equivalent configs: roundrobin, TCP checks inter 1s fall 2 rise 2, "+
		"retries 3 with redispatch; vigil's default fast_interval (interval/4) against HAProxy's default fastinter (= inter). "+
		"Limits: HAProxy maxconn and vigil max_conn 9800, since this machine's hard file limit is 20000 and each proxied connection takes two. "+
		"Memory: RSS counts the mapped pages of the executable, shared page cache, beside the process's private memory (RssAnon); "+
		"vigil's static binary is ~85 MB (client-go, GoBGP, cilium/ebpf) and this kernel maps its page cache in large folios, "+
		"so most of vigil's RSS is its binary, and how much depends on how the file was cached (just built: most of it; after a cold start: about half).%s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), version, conns, d, rounds, envNote())
	b.WriteString("| measure | HAProxy | vigil | vigil / HAProxy | goal | ratio per round, lowest - highest |\n|---|---|---|---|---|---|\n")
	row := func(name string, h, v float64, unit, goal string, perRound ...float64) {
		spread := ""
		if len(perRound) > 0 {
			spread = fmt.Sprintf("%.2fx - %.2fx", slices.Min(perRound), slices.Max(perRound))
		}
		fmt.Fprintf(&b, "| %s | %.1f %s | %.1f %s | %.2fx | %s | %s |\n", name, h, unit, v, unit, v/h, goal, spread)
	}
	// Each round ran both back to back: its ratio shows how much of a
	// median's distance from a goal is the machine's noise.
	ratios := func(hs, vs []sample, f func(sample) float64) []float64 {
		var out []float64
		for i := range min(len(hs), len(vs)) {
			out = append(out, f(vs[i])/f(hs[i]))
		}
		return out
	}
	var bulkRatios []float64
	for i := 0; i+bulkRuns <= min(len(hp.mbps), len(vg.mbps)); i += bulkRuns {
		bulkRatios = append(bulkRatios, benchdoc.Median(vg.mbps[i:i+bulkRuns])/benchdoc.Median(hp.mbps[i:i+bulkRuns]))
	}
	row("requests/s, keep-alive", med(hp.keepAlive, rps), med(vg.keepAlive, rps), "req/s", ">= 1.0x", ratios(hp.keepAlive, vg.keepAlive, rps)...)
	row("p50 latency, keep-alive", med(hp.keepAlive, p50), med(vg.keepAlive, p50), "ms", "", ratios(hp.keepAlive, vg.keepAlive, p50)...)
	row("p99 latency, keep-alive", med(hp.keepAlive, p99), med(vg.keepAlive, p99), "ms", "<= 1.1x", ratios(hp.keepAlive, vg.keepAlive, p99)...)
	row("new connections/s (one request each)", med(hp.perConn, rps), med(vg.perConn, rps), "conn/s", ">= 0.8x", ratios(hp.perConn, vg.perConn, rps)...)
	row("p50 latency, new connection", med(hp.perConn, p50), med(vg.perConn, p50), "ms", "", ratios(hp.perConn, vg.perConn, p50)...)
	row("p99 latency, new connection", med(hp.perConn, p99), med(vg.perConn, p99), "ms", "<= 1.1x", ratios(hp.perConn, vg.perConn, p99)...)
	row(fmt.Sprintf("throughput, one connection, %d MiB, median of %d", bulkMiB, bulkRuns*rounds), benchdoc.Median(hp.mbps), benchdoc.Median(vg.mbps), "MB/s", ">= 1.0x", bulkRatios...)
	row(fmt.Sprintf("RSS with %d idle connections", idle), hp.idleRSS.total, vg.idleRSS.total, "MiB", "")
	row(fmt.Sprintf("private memory (RssAnon) with %d idle connections", idle), hp.idleRSS.anon, vg.idleRSS.anon, "MiB", "<= 1.0x")
	row("RSS before them", hp.baseRSS.total, vg.baseRSS.total, "MiB", "")
	row("private memory (RssAnon) before them", hp.baseRSS.anon, vg.baseRSS.anon, "MiB", "<= 1.0x")
	row("mapped executable and libraries (RssFile) before them", hp.baseRSS.file, vg.baseRSS.file, "MiB", "")
	ms := func(ds []time.Duration) float64 { return float64(benchdoc.Median(ds).Microseconds()) / 1000 }
	worst := func(ds []time.Duration) float64 {
		w := ds[0]
		for _, x := range ds {
			w = max(w, x)
		}
		return float64(w.Microseconds()) / 1000
	}
	row(fmt.Sprintf("backend killed -> out of rotation, median of %d", detectRounds), ms(hp.detect), ms(vg.detect), "ms", "<= 1.0x")
	row("backend killed -> out of rotation, worst", worst(hp.detect), worst(vg.detect), "ms", "")
	row("backend back -> in rotation, median", ms(hp.recover), ms(vg.recover), "ms", "")
	b.WriteString(cpuTable(hp, vg))
	fmt.Fprintf(&b, "\nwrk socket errors and non-2xx answers over all runs: HAProxy %d, vigil %d. "+
		"Detection is timed to each one's monitor answering 503 (HAProxy: monitor fail if nbsrv < 1), polled every 5 ms.\n",
		errs(hp.keepAlive)+errs(hp.perConn), errs(vg.keepAlive)+errs(vg.perConn))
	return b.String()
}

// cpuTable says where the machine's time went per request in the wrk runs
// (medians over the rounds): the column for the proxy alone is not the
// whole story on two cores that wrk and the backends share.
func cpuTable(hp, vg *results) string {
	var b strings.Builder
	b.WriteString("\nWhere the time went, microseconds per request (median over the rounds; CPU time from /proc, both cores):\n\n")
	b.WriteString("| per request | keep-alive, HAProxy | keep-alive, vigil | new connection, HAProxy | new connection, vigil |\n|---|---|---|---|---|\n")
	rows := []struct {
		name string
		f    func(sample) float64
	}{
		{"the proxy's process", func(s sample) float64 { return s.cpu.proxy }},
		{"the backends' process", func(s sample) float64 { return s.cpu.backends }},
		{"wrk", func(s sample) float64 { return s.cpu.wrk }},
		{"cores idle", func(s sample) float64 { return s.cpu.idle }},
		{"taken by the hypervisor (steal)", func(s sample) float64 { return s.cpu.steal }},
		{"both cores' time (2 s / requests)", func(s sample) float64 { return 2e6 / s.rps }},
	}
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.1f | %.1f |\n", r.name,
			med(hp.keepAlive, r.f), med(vg.keepAlive, r.f), med(hp.perConn, r.f), med(vg.perConn, r.f))
	}
	return b.String()
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

func envNote() string {
	if vigilEnv == "" {
		return " vigil with its defaults (an event loop per core, GOMAXPROCS = cores + 1)."
	}
	return " vigil run with " + vigilEnv + "."
}
