// Command kube measures how fast a Kubernetes Node change reaches the
// rotation of vigil's balancer: a Node added until its backend answers
// through the VIP, a Node deleted until its backend stops answering. It
// runs a real kube-apiserver and etcd (internal/kubetest) in one host of a
// namespace lab and vigil in another, times each change by the traffic a
// client sends through the VIP, and writes the table into
// docs/benchmarks.md between its markers. Needs root and tools/k8s/bin
// (tools/k8s/build.sh). Every loop is bounded by a count and a deadline.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/benchdoc"
	"github.com/vigil-lb/vigil/internal/kubetest"
	"github.com/vigil-lb/vigil/internal/netlab"
)

const (
	lbAddr      = "10.79.0.1"
	apiAddr     = "10.79.0.2"
	vip         = "10.79.0.10"
	clientAddr  = "10.79.0.100"
	servicePort = 9445
	cpLabel     = "node-role.kubernetes.io/control-plane"
	// statusPoll is how often the membership is read from vigil's status.
	statusPoll = 5 * time.Millisecond
	// maxRequests bounds the requests of one phase, with its deadline.
	maxRequests = 100000
)

// The anchor: runtimecfg's monitor reads the API every 6 s and applies a
// change after 3 identical readings, so haproxy sees it 12 to 18 s later,
// 15 s at the median over the phase of the loop.
const (
	anchorLoop     = 6 * time.Second
	anchorReadings = 3
	anchorBest     = (anchorReadings - 1) * anchorLoop // 12 s: the change just before a reading
	anchorWorst    = anchorReadings * anchorLoop       // 18 s: just after one
	anchorMedian   = anchorBest + anchorLoop/2         // 15 s
)

// backendNames are the backend hosts; three of them are Nodes at a time.
var backendNames = []string{"be1", "be2", "be3", "be4"}

func main() {
	rounds := flag.Int("rounds", 20, "rounds of Node added then Node deleted")
	out := flag.String("out", "docs/benchmarks.md", "markdown file to update (empty: print only)")
	limit := flag.Duration("timeout", 10*time.Second, "limit of one change reaching the rotation")
	flag.Parse()
	if err := run(*rounds, *out, *limit); err != nil {
		fmt.Fprintln(os.Stderr, "bench/kube:", err)
		os.Exit(1)
	}
}

// bench is the lab with vigil running in it.
type bench struct {
	lab      *netlab.Lab
	hosts    map[string]*netlab.Host // the backends by name
	admin    kubernetes.Interface
	socket   string
	http     *http.Client
	limit    time.Duration
	vigilLog string
}

// phase is one change measured.
type phase struct {
	traffic  time.Duration // t0 -> the rotation changed, seen by the client
	member   time.Duration // t0 -> the membership changed, seen in vigil's status
	call     time.Duration // the API calls themselves
	requests int           // answered during the phase
	failures int           // requests that failed
	elapsed  time.Duration // length of the phase's traffic
}

func run(rounds int, out string, limit time.Duration) error {
	if rounds < 1 {
		return errors.New("-rounds must be at least 1")
	}
	if !netlab.Root() {
		return errors.New("needs root to build the namespace lab")
	}
	apiBin, _, err := kubetest.Binaries()
	if err != nil {
		return fmt.Errorf("%w (make k8s-tools builds them)", err)
	}
	// The machine may be shared: say how busy it was.
	load := benchdoc.LoadAverage()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	dir, bin, cleanup, err := benchdoc.BuildVigil("vigil-bench-kube-")
	if err != nil {
		return err
	}
	defer cleanup()

	lab, err := netlab.New()
	if err != nil {
		return err
	}
	defer lab.Close()
	b := &bench{lab: lab, hosts: map[string]*netlab.Host{}, socket: filepath.Join(dir, "vigil.sock"), limit: limit,
		vigilLog: filepath.Join(dir, "vigil.log")}
	lb, err := lab.AddHost("lb", netip.MustParsePrefix(lbAddr+"/24"))
	if err != nil {
		return err
	}
	apiHost, err := lab.AddHost("api", netip.MustParsePrefix(apiAddr+"/24"))
	if err != nil {
		return err
	}
	client, err := lab.AddHost("client", netip.MustParsePrefix(clientAddr+"/24"))
	if err != nil {
		return err
	}
	for i, name := range backendNames {
		h, err := lab.AddHost(name, netip.MustParsePrefix(fmt.Sprintf("10.79.0.%d/24", 11+i)))
		if err != nil {
			return err
		}
		srv, err := serveWhoAmI(h)
		if err != nil {
			return err
		}
		defer srv.Close()
		b.hosts[name] = h
	}
	dialer := client.Dialer(2)
	defer dialer.Close()
	b.http = dialer.HTTPClient(2 * time.Second)

	env, err := kubetest.Start(kubetest.Options{Host: apiHost})
	if err != nil {
		return err
	}
	defer env.Close()
	if b.admin, err = env.AdminClient(); err != nil {
		return err
	}
	for _, name := range backendNames[:3] {
		if err := b.register(ctx, name); err != nil {
			return err
		}
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := env.WriteKubeconfig(kubeconfig, "", env.AdminToken); err != nil {
		return err
	}
	cfg := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfg, []byte(vigilConfig(b.socket, kubeconfig, filepath.Join(dir, "kubernetes.json"))), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(b.vigilLog)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "run", "-c", cfg, "--pid-file", "")
	cmd.Stdout, cmd.Stderr = logf, logf
	proc, err := lb.Start(cmd)
	if err != nil {
		return err
	}
	defer proc.Kill()

	in := slices.Clone(backendNames[:3])
	if err := b.settle(ctx, in, 30*time.Second); err != nil {
		return b.withLog(fmt.Errorf("vigil did not come up with %v: %w", in, err))
	}
	var added, deleted []phase
	for i := range rounds {
		// The missing backend comes in; then the oldest of the others goes,
		// so each deletion takes a backend long in rotation.
		add, del := backendNames[(3+i)%4], backendNames[i%4]
		p, err := b.measure(ctx, add, true, len(in))
		if err != nil {
			return b.withLog(fmt.Errorf("round %d, %s added: %w", i+1, add, err))
		}
		added = append(added, p)
		in = append(in, add)
		if err := b.settle(ctx, in, limit); err != nil {
			return b.withLog(fmt.Errorf("round %d, after %s added: %w", i+1, add, err))
		}
		in = slices.DeleteFunc(in, func(n string) bool { return n == del })
		q, err := b.measure(ctx, del, false, len(in))
		if err != nil {
			return b.withLog(fmt.Errorf("round %d, %s deleted: %w", i+1, del, err))
		}
		deleted = append(deleted, q)
		if err := b.settle(ctx, in, limit); err != nil {
			return b.withLog(fmt.Errorf("round %d, after %s deleted: %w", i+1, del, err))
		}
		fmt.Printf("round %2d: %s added, in rotation %6.1f ms (member %6.1f ms); %s deleted, out %6.1f ms (member %6.1f ms)\n",
			i+1, add, ms(p.traffic), ms(p.member), del, ms(q.traffic), ms(q.member))
	}
	version, _ := exec.Command(apiBin, "--version").Output()
	table := render(rounds, added, deleted, strings.TrimSpace(string(version)), load)
	fmt.Print("\n" + table)
	if out == "" {
		return nil
	}
	return benchdoc.WriteSection(out, "kube", "Kubernetes Nodes into the rotation", table)
}

func vigilConfig(socket, kubeconfig, state string) string {
	return fmt.Sprintf(`log: {level: info}
api: {socket: %q}
node: lb
kubernetes:
  kubeconfig: %s
  state_file: %s
vrrp:
  instances:
    - {name: api, interface: eth0, vrid: 61, priority: 150, advert_interval: 100ms, vips: [%s/24]}
balancers:
  - name: api
    listen: ["%s:%d"]
    algorithm: roundrobin
    check: {http: {path: /readyz}, interval: 200ms, timeout: 150ms, rise: 1, fall: 2}
    drain_timeout: 1s
    backends_from: {nodes: {selector: %q, port: 6443}}
`, socket, kubeconfig, state, vip, vip, servicePort, cpLabel)
}

// serveWhoAmI serves the host's name on :6443, and "ok" on /readyz.
func serveWhoAmI(h *netlab.Host) (*http.Server, error) {
	l, err := h.Listen("tcp4", "0.0.0.0:6443")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			io.WriteString(w, "ok")
			return
		}
		io.WriteString(w, h.Name)
	})}
	go srv.Serve(l)
	return srv, nil
}

// newClient is an HTTP client in the client host: a new connection per
// request, so that each request is balanced.

// get sends one request through the VIP and returns who answered.
func (b *bench) get(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d/", vip, servicePort), nil)
	if err != nil {
		return "", err
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s: %s", resp.Status, body)
	}
	return string(body), err
}

// register creates backend name's Node as the kubelet does.
func (b *bench) register(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := kubetest.RegisterNode(ctx, b.admin, kubetest.Node(name, map[string]string{cpLabel: ""}, true, b.hosts[name].Addr(false)))
	return err
}

func (b *bench) unregister(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.admin.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete Node %s: %w", name, err)
	}
	return nil
}

// members returns the balancer's backends by host name, and which are up.
func (b *bench) members(ctx context.Context) (all, up []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	snap, err := api.Fetch(ctx, b.socket)
	if err != nil {
		return nil, nil, err
	}
	for _, bal := range snap.Balancers {
		for _, be := range bal.Backends {
			name := b.hostOf(be.Address)
			all = append(all, name)
			if be.Up {
				up = append(up, name)
			}
		}
	}
	slices.Sort(all)
	slices.Sort(up)
	return all, up, nil
}

func (b *bench) hostOf(addr string) string {
	for name, h := range b.hosts {
		if addr == netip.AddrPortFrom(h.Addr(false), 6443).String() {
			return name
		}
	}
	return addr
}

// settle waits until exactly want are members and up, and every one of
// them answers through the VIP, then a random pause so that the next
// change falls at a random phase of the health checks.
func (b *bench) settle(ctx context.Context, want []string, limit time.Duration) error {
	want = slices.Sorted(slices.Values(want))
	deadline := time.Now().Add(limit)
	var all, up []string
	var err error
	for {
		all, up, err = b.members(ctx)
		if err == nil && slices.Equal(all, want) && slices.Equal(up, want) {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("members %v, up %v after %v (err %v), want %v", all, up, limit, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	seen := map[string]bool{}
	for range 10 * len(want) {
		if who, err := b.get(ctx); err == nil {
			seen[who] = true
		}
	}
	for _, w := range want {
		if !seen[w] {
			return fmt.Errorf("%s is up but did not answer in %d requests: %v", w, 10*len(want), seen)
		}
	}
	if len(seen) != len(want) {
		return fmt.Errorf("answers from %v, want only %v", seen, want)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(200*time.Millisecond + rand.N(200*time.Millisecond)):
	}
	return nil
}

// measure adds (or deletes) backend name's Node and times, from just
// before the first API call, the client seeing the change and vigil's
// status listing it. others is how many backends stay in rotation.
func (b *bench) measure(ctx context.Context, name string, add bool, others int) (phase, error) {
	var p phase
	ctx, cancel := context.WithTimeout(ctx, b.limit)
	defer cancel()
	t0 := time.Now()

	// The membership, from the status, until it changes.
	memberAt := make(chan time.Duration, 1)
	go func() {
		for ctx.Err() == nil {
			if all, _, err := b.members(ctx); err == nil && slices.Contains(all, name) == add {
				memberAt <- time.Since(t0)
				return
			}
			time.Sleep(statusPoll)
		}
		memberAt <- -1
	}()
	// The API calls, concurrent with the traffic below.
	type callResult struct {
		took time.Duration
		err  error
	}
	called := make(chan callResult, 1)
	go func() {
		var err error
		if add {
			err = b.register(ctx, name)
		} else {
			err = b.unregister(ctx, name)
		}
		called <- callResult{time.Since(t0), err}
	}()

	// Requests back to back until the client sees the change. Deleted:
	// the change is the start of the first run of 3 answers per remaining
	// backend none of which came from the deleted one.
	need := 3 * others
	var runStart time.Time
	run := 0
	for p.traffic == 0 {
		if p.requests+p.failures >= maxRequests {
			return p, fmt.Errorf("no change seen in %d requests", maxRequests)
		}
		who, err := b.get(ctx)
		at := time.Now()
		if ctx.Err() != nil {
			return p, fmt.Errorf("no change seen by the client within %v (%d answers, %d failures)", b.limit, p.requests, p.failures)
		}
		if err != nil {
			p.failures++
			continue
		}
		p.requests++
		switch {
		case add && who == name:
			p.traffic = at.Sub(t0)
		case !add && who == name:
			run = 0
		case !add:
			if run == 0 {
				runStart = at
			}
			if run++; run >= need {
				p.traffic = runStart.Sub(t0)
			}
		}
	}
	p.elapsed = time.Since(t0)
	c := <-called
	if p.call = c.took; c.err != nil {
		return p, c.err
	}
	if p.member = <-memberAt; p.member < 0 {
		return p, fmt.Errorf("status did not show %s's membership change within %v", name, b.limit)
	}
	return p, nil
}

// withLog adds the end of vigil's log to err.
func (b *bench) withLog(err error) error {
	log, _ := os.ReadFile(b.vigilLog)
	if len(log) > 4000 {
		log = log[len(log)-4000:]
	}
	return fmt.Errorf("%w\n--- vigil log (end) ---\n%s", err, log)
}

func render(rounds int, added, deleted []phase, apiVersion, load string) string {
	pick := func(ps []phase, f func(phase) time.Duration) []time.Duration {
		var ds []time.Duration
		for _, p := range ps {
			ds = append(ds, f(p))
		}
		return ds
	}
	traffic := func(p phase) time.Duration { return p.traffic }
	member := func(p phase) time.Duration { return p.member }
	call := func(p phase) time.Duration { return p.call }
	var requests, failures int
	var elapsed time.Duration
	for _, p := range slices.Concat(added, deleted) {
		requests, failures, elapsed = requests+p.requests, failures+p.failures, elapsed+p.elapsed
	}
	rate := float64(requests+failures) / elapsed.Seconds()

	var t strings.Builder
	fmt.Fprintf(&t, "Written by `make bench-kube` (`go run ./bench/kube -rounds %d`) on %s, on %s (load average %s at the start): %d rounds of a Node added, then another deleted.\n",
		rounds, time.Now().UTC().Format("2006-01-02 15:04 MST"), benchdoc.Machine(), load, rounds)
	fmt.Fprintf(&t, "Lab: namespaces on one switch. Host `api` runs etcd and kube-apiserver (%s, internal/kubetest); host `lb` runs vigil with a VRRP instance holding the VIP "+
		"and a proxy balancer (roundrobin) on VIP:%d whose backends are `backends_from: {nodes: {selector: %q, port: 6443}}`, read through a kubeconfig naming the `api` host; "+
		"health check http GET /readyz, interval 200ms, timeout 150ms, rise 1, fall 2 (a new backend's check starts up, as keepalived's do, so it does not hold an addition back); "+
		"four backend hosts serve \"who am I\" on :6443, three of them Nodes at a time; a client host. "+
		"A Node is added as the kubelet registers one (create, then UpdateStatus with Ready and its InternalIP), and deleted with one call; "+
		"each deletion takes the backend longest in rotation.\n\n", apiVersion, servicePort, cpLabel)
	fmt.Fprintf(&t, "Times run from just before the (first) API call and are measured by traffic: the client sends requests back to back through the VIP, "+
		"a new connection each (%.0f requests/s, so a change shows within a few ms). "+
		"In rotation: the first answer from the new backend. Out of rotation: the start of the first run of 9 answers (3 × the 3 remaining backends) none from the deleted one. "+
		"\"Membership in status\" is when vigil's status (its control socket, read in process with internal/api's Fetch every %v) first lists, or no longer lists, the backend: "+
		"the API's watch, vigil's %v coalescing of events and the reload; the traffic time beyond it is the health check and the balancer taking the new set (the status is polled, so it can trail the traffic by a poll). "+
		"The API calls themselves took %.1f ms (add, median) and %.1f ms (delete). Requests failed over all rounds: %d of %d.\n\n",
		rate, statusPoll, 50*time.Millisecond, ms(benchdoc.Median(pick(added, call))), ms(benchdoc.Median(pick(deleted, call))), failures, requests+failures)
	fmt.Fprintf(&t, "Anchor: runtimecfg's design, not measured here (runtimecfg is not available): its monitor re-reads the API every %v and applies a change after %d identical readings, "+
		"so a change reaches haproxy %v to %v later, %v at the median over the phase of its loop.\n\n", anchorLoop, anchorReadings, anchorBest, anchorWorst, anchorMedian)
	t.WriteString("| change | median | worst | membership in status, median / worst | goal | vs anchor, median / worst |\n|---|---|---|---|---|---|\n")
	row := func(what string, ps []phase) {
		tr := pick(ps, traffic)
		med, worst := benchdoc.Median(tr), slices.Max(tr)
		mb := pick(ps, member)
		fmt.Fprintf(&t, "| %s | %.0f ms | %.0f ms | %.0f / %.0f ms | < 200 ms median, < 1 s worst | %.3fx / %.3fx |\n", what, ms(med), ms(worst),
			ms(benchdoc.Median(mb)), ms(slices.Max(mb)), float64(med)/float64(anchorMedian), float64(worst)/float64(anchorWorst))
	}
	row("vigil: Node added -> backend in rotation", added)
	row("vigil: Node deleted -> backend out of rotation", deleted)
	fmt.Fprintf(&t, "| runtimecfg design anchor (%v loop × %d readings, not measured) | %.0f ms | %.0f ms |  |  | 1.000x / 1.000x |\n",
		anchorLoop, anchorReadings, ms(anchorMedian), ms(anchorWorst))
	return t.String()
}

// machine names the CPU, its core count and the kernel.

// loadAverage is the one-minute load average.

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
