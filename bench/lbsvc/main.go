// Command lbsvc measures vigil as the cluster's LoadBalancer implementation:
// a Service created until its address is in status and until a client gets
// an answer through it; a node's vigil killed until every address it owned
// answers from another node; and 1,000 Services at once (time to
// addresses, memory, and the ARP a client hears at rest). It runs a real
// kube-apiserver and etcd (internal/kubetest) in one host of a namespace
// lab, vigil on three node hosts and a client in another, times by traffic,
// and writes the table into docs/benchmarks.md between its markers. Needs
// root and tools/k8s/bin (tools/k8s/build.sh). Every loop is bounded by a
// count and a deadline.
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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/benchdoc"
	"github.com/vigil-lb/vigil/internal/kubetest"
	"github.com/vigil-lb/vigil/internal/netlab"
)

const (
	apiAddr    = "10.82.0.2"
	clientAddr = "10.82.0.100"
	labBits    = 16 // every host is on 10.82.0.0/16, so the pool is on-link
	poolCIDR   = "10.82.4.0/22"
	svcNS      = "bench"
	leaseNS    = "vigil-system"
	class      = "vigil.io/lb"
	nodeLabel  = "bench.vigil.io/lb"
	podPort    = 8080
	svcPort    = 80
	// maxRequests bounds the requests of one wait, with its deadline.
	maxRequests = 200000
)

var nodeNames = []string{"n1", "n2", "n3"}

// The anchors are documented figures, not measured here.
const (
	metallbDoc = "MetalLB's layer 2 docs (metallb.universe.tf/concepts/layer2): with clients that honour gratuitous ARP \"failover happens within a few seconds\"; " +
		"failure is detected by memberlist (older releases: a 10 s lease); users report much longer (metallb/metallb#298: minutes, tuned to sub-minute)"
	ciliumDoc = "Cilium L2 announcements' docs (docs.cilium.io/en/stable/network/l2-announcements, Leader Election): leaseDuration 15 s, leaseRenewDeadline 5 s, " +
		"leaseRetryPeriod 2 s by default, \"with the default values, failover occurs between 10s and 20s\""
)

var (
	ciliumBest  = 10 * time.Second // leaseDuration - leaseRenewDeadline
	ciliumWorst = 20 * time.Second // leaseDuration + leaseRenewDeadline
)

// clientTimeout bounds one request of the bench's client.
const clientTimeout = 100 * time.Millisecond

func main() {
	o := options{}
	flag.IntVar(&o.rounds, "rounds", 50, "rounds of a Service created, answered, deleted")
	flag.IntVar(&o.failover, "failover", 30, "Services allocated when a node's vigil is killed")
	flag.IntVar(&o.kills, "kills", 5, "kills of the node owning the most of them (restarted in between)")
	flag.IntVar(&o.scale, "scale", 1000, "Services created at once for the scale phase (0: skip)")
	flag.IntVar(&o.concurrency, "concurrency", 16, "API calls in flight when creating many Services")
	flag.DurationVar(&o.rest, "rest", 60*time.Second, "how long the client counts ARP/NA frames at rest")
	flag.DurationVar(&o.limit, "timeout", 10*time.Second, "limit of one change (address, answer, failover)")
	flag.StringVar(&o.out, "out", "docs/benchmarks.md", "markdown file to update (empty: print only)")
	flag.StringVar(&o.keepLogs, "keep-logs", "", "directory to copy the vigils' logs into at the end (empty: none)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/lbsvc:", err)
		os.Exit(1)
	}
}

type options struct {
	rounds, failover, kills, scale, concurrency int
	rest, limit                                 time.Duration
	out, keepLogs                               string
}

// node is one vigil node: its host, its vigil and its "pod".
type node struct {
	name    string
	host    *netlab.Host
	proc    *netlab.Proc
	cfg     string
	socket  string
	logPath string
	logf    *os.File
}

// bench is the lab with vigil running on its nodes.
type bench struct {
	o      options
	lab    *netlab.Lab
	admin  kubernetes.Interface
	client *netlab.Host
	dialer *netlab.Dialer
	http   *http.Client
	nodes  []*node
	bin    string
}

func run(o options) error {
	if o.rounds < 1 || o.failover < 1 || o.kills < 1 || o.concurrency < 1 {
		return errors.New("-rounds, -failover, -kills and -concurrency must be at least 1")
	}
	if !netlab.Root() {
		return errors.New("needs root to build the namespace lab")
	}
	apiBin, _, err := kubetest.Binaries()
	if err != nil {
		return fmt.Errorf("%w (make k8s-tools builds them)", err)
	}
	load := benchdoc.LoadAverage()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	dir, bin, cleanup, err := benchdoc.BuildVigil("vigil-bench-lbsvc-")
	if err != nil {
		return err
	}
	defer cleanup()

	lab, err := netlab.New()
	if err != nil {
		return err
	}
	defer lab.Close()
	b := &bench{o: o, lab: lab, bin: bin}
	defer b.closeLogs()
	if o.keepLogs != "" {
		defer b.copyLogs(o.keepLogs)
	}
	apiHost, err := lab.AddHost("api", netip.PrefixFrom(netip.MustParseAddr(apiAddr), labBits))
	if err != nil {
		return err
	}
	if b.client, err = lab.AddHost("client", netip.PrefixFrom(netip.MustParseAddr(clientAddr), labBits)); err != nil {
		return err
	}
	// Enough dial workers for one prober per address of a killed node.
	b.dialer = b.client.Dialer(64)
	defer b.dialer.Close()
	// 100 ms: a request that meets an address not held yet (its first SYN
	// lost to a stale neighbour entry or an unanswered ARP) is retried
	// soon, so "answered" is exact to about 100 ms; a real client would
	// wait for TCP's 1 s SYN retransmission instead.
	b.http = b.dialer.HTTPClient(clientTimeout)

	env, err := kubetest.Start(kubetest.Options{Host: apiHost})
	if err != nil {
		return err
	}
	defer env.Close()
	if b.admin, err = env.AdminClient(); err != nil {
		return err
	}
	for _, ns := range []string{leaseNS, svcNS} {
		if err := b.createNamespace(ctx, ns); err != nil {
			return err
		}
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := env.WriteKubeconfig(kubeconfig, "", env.AdminToken); err != nil {
		return err
	}
	for i, name := range nodeNames {
		h, err := lab.AddHost(name, netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("10.82.0.%d", 11+i)), labBits))
		if err != nil {
			return err
		}
		srv, err := servePod(h)
		if err != nil {
			return err
		}
		defer srv.Close()
		n := &node{name: name, host: h, cfg: filepath.Join(dir, name+".yaml"), socket: filepath.Join(dir, name+".sock"),
			logPath: filepath.Join(dir, name+".log")}
		cfg := vigilConfig(name, n.socket, kubeconfig, filepath.Join(dir, name+".json"))
		if err := os.WriteFile(n.cfg, []byte(cfg), 0o644); err != nil {
			return err
		}
		b.nodes = append(b.nodes, n)
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = kubetest.RegisterNode(rctx, b.admin, kubetest.Node(name, map[string]string{nodeLabel: "yes"}, true, h.Addr(false)))
		cancel()
		if err != nil {
			return err
		}
	}
	for _, n := range b.nodes {
		if err := b.start(n); err != nil {
			return err
		}
	}
	leader, err := b.settle(ctx, 60*time.Second)
	if err != nil {
		return b.withLogs(fmt.Errorf("vigil did not come up: %w", err))
	}
	fmt.Printf("three vigils up, allocator leader %s, every slot at its first choice\n", leader)

	created, err := b.created(ctx)
	if err != nil {
		return b.withLogs(err)
	}
	fo, err := b.failoverPhase(ctx)
	if err != nil {
		return b.withLogs(err)
	}
	var sc *scaleResult
	if o.scale > 0 {
		if sc, err = b.scalePhase(ctx); err != nil {
			return b.withLogs(err)
		}
	}
	version, _ := exec.Command(apiBin, "--version").Output()
	table := render(o, leader, created, fo, sc, strings.TrimSpace(string(version)), load)
	fmt.Print("\n" + table)
	if o.out == "" {
		return nil
	}
	return benchdoc.WriteSection(o.out, "lbsvc", "LoadBalancer Services: allocated, answered, failed over, at scale", table)
}

func vigilConfig(name, socket, kubeconfig, state string) string {
	return fmt.Sprintf(`log: {level: info}
cluster: bench
node: %s
api: {socket: %q, http: ""}
kubernetes:
  kubeconfig: %s
  state_file: %s
  services:
    dataplane: proxy
    hold: 1s
    lease_namespace: %s
    pools:
      - {name: lan, addresses: [%q], interface: eth0, nodes: %q}
`, name, socket, kubeconfig, state, leaseNS, poolCIDR, nodeLabel+"=yes")
}

// start starts n's vigil, appending to its log.
func (b *bench) start(n *node) error {
	if n.logf == nil {
		f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		n.logf = f
	}
	cmd := exec.Command(b.bin, "run", "-c", n.cfg, "--pid-file", "")
	cmd.Stdout, cmd.Stderr = n.logf, n.logf
	p, err := n.host.Start(cmd)
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

func (b *bench) closeLogs() {
	for _, n := range b.nodes {
		if n.logf != nil {
			n.logf.Close()
		}
	}
}

// copyLogs copies the vigils' logs into dir, also after a failure.
func (b *bench) copyLogs(dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "bench/lbsvc: keep logs:", err)
		return
	}
	for _, n := range b.nodes {
		if log, err := os.ReadFile(n.logPath); err == nil {
			_ = os.WriteFile(filepath.Join(dir, n.name+".log"), log, 0o644)
		}
	}
}

func (b *bench) createNamespace(ctx context.Context, ns string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := b.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create Namespace %s: %w", ns, err)
	}
	return nil
}

// servePod serves the host's name over HTTP on :8080, as a host-network pod.
func servePod(h *netlab.Host) (*http.Server, error) {
	l, err := h.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", podPort))
	if err != nil {
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, h.Name)
	})}
	go srv.Serve(l)
	return srv, nil
}

// newClient is an HTTP client in the client host: a new connection per
// request, and a short timeout, so that a SYN queued behind an unanswered
// ARP is retried by a new connection rather than by TCP's 1 s backoff.

// get sends one request to addr:80 and returns who answered.
func (b *bench) get(ctx context.Context, addr netip.Addr) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+netip.AddrPortFrom(addr, svcPort).String()+"/", nil)
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

// waitAnswer sends requests to addr back to back until one is answered by
// a pod, and returns when; failures counts those that were not.
func (b *bench) waitAnswer(ctx context.Context, addr netip.Addr, deadline time.Time) (at time.Time, failures int, err error) {
	for range maxRequests {
		if ctx.Err() != nil {
			return time.Time{}, failures, ctx.Err()
		}
		who, err := b.get(ctx, addr)
		now := time.Now()
		if err == nil && slices.Contains(nodeNames, who) {
			return now, failures, nil
		}
		failures++
		if now.After(deadline) {
			return time.Time{}, failures, fmt.Errorf("%s:%d not answered by a pod in time (%d failures, last %q %v)", addr, svcPort, failures, who, err)
		}
	}
	return time.Time{}, failures, fmt.Errorf("%s:%d not answered in %d requests", addr, svcPort, maxRequests)
}

// service is Service svcNS/name of type LoadBalancer, class vigil.io/lb,
// port 80 (http) to 8080.
func service(name string) *corev1.Service {
	cl := class
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: svcNS, Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &cl,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: svcPort, TargetPort: intstr.FromInt(podPort), Protocol: corev1.ProtocolTCP}}}}
}

// createService creates Service name and, as the EndpointSlice controller
// would, its slice with a ready endpoint on each node.
func (b *bench) createService(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := b.admin.CoreV1().Services(svcNS).Create(ctx, service(name), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Service %s/%s: %w", svcNS, name, err)
	}
	var eps []kubetest.Endpoint
	for _, n := range b.nodes {
		eps = append(eps, kubetest.Endpoint{Address: n.host.Addr(false), Node: n.name, Ready: true})
	}
	s := kubetest.Slice(svcNS, name+"-1", name, "http", podPort, eps...)
	if _, err := b.admin.DiscoveryV1().EndpointSlices(svcNS).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create EndpointSlice %s/%s: %w", svcNS, s.Name, err)
	}
	return nil
}

func (b *bench) deleteService(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.admin.CoreV1().Services(svcNS).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete Service %s/%s: %w", svcNS, name, err)
	}
	if err := b.admin.DiscoveryV1().EndpointSlices(svcNS).Delete(ctx, name+"-1", metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete EndpointSlice %s/%s-1: %w", svcNS, name, err)
	}
	return nil
}

// forEach runs f for every name with at most the configured calls in flight.
func (b *bench) forEach(names []string, f func(string) error) error {
	sem := make(chan struct{}, b.o.concurrency)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, name := range names {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(name); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d failed, first: %w", len(errs), len(names), errs[0])
	}
	return nil
}

// addresses lists the Services of svcNS and returns the address in each
// one's status, by name ("" while it has none).
func (b *bench) addresses(ctx context.Context) (map[string]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	list, err := b.admin.CoreV1().Services(svcNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]netip.Addr{}
	for _, s := range list.Items {
		var a netip.Addr
		if in := s.Status.LoadBalancer.Ingress; len(in) > 0 {
			a, _ = netip.ParseAddr(in[0].IP)
		}
		out[s.Name] = a
	}
	return out, nil
}

func (b *bench) status(ctx context.Context, n *node) (api.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return api.Fetch(ctx, n.socket)
}

// settle waits until every vigil answers, the allocator is synced with one
// leader all agree on, and every slot's master is its first-choice node.
// It returns the leader.
func (b *bench) settle(ctx context.Context, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	why := ""
	for range int(limit/(50*time.Millisecond)) + 1 {
		leader, reason := b.settled(ctx)
		if reason == "" {
			return leader, nil
		}
		why = reason
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("not settled after %v: %s", limit, why)
}

func (b *bench) settled(ctx context.Context) (leader, why string) {
	masters := map[string][]string{} // slot -> nodes that are its master
	for _, n := range b.nodes {
		st, err := b.status(ctx, n)
		if err != nil {
			return "", fmt.Sprintf("%s: %v", n.name, err)
		}
		a := st.Allocator
		if a == nil || !a.Synced || a.Leader == "" {
			return "", fmt.Sprintf("%s: allocator %+v", n.name, a)
		}
		if leader != "" && a.Leader != leader {
			return "", fmt.Sprintf("leaders %s and %s", leader, a.Leader)
		}
		leader = a.Leader
		for _, in := range st.Instances {
			if !strings.HasPrefix(in.Name, "slot/lan/") {
				continue
			}
			if _, ok := masters[in.Name]; !ok {
				masters[in.Name] = nil
			}
			if in.State == "MASTER" {
				masters[in.Name] = append(masters[in.Name], n.name)
			}
		}
	}
	if n := len(b.nodes); len(masters) != n*(n-1) {
		return "", fmt.Sprintf("slots %v, want one per pair of nodes", masters)
	}
	for slot, ms := range masters {
		if len(ms) != 1 || !strings.HasPrefix(slot, "slot/lan/"+ms[0]+"/") {
			return "", fmt.Sprintf("slot %s has masters %v", slot, ms)
		}
	}
	return leader, ""
}

// listed reports whether any vigil's status lists Service name.
func (b *bench) listed(ctx context.Context, name string) (bool, error) {
	for _, n := range b.nodes {
		st, err := b.status(ctx, n)
		if err != nil {
			return false, err
		}
		if slices.ContainsFunc(st.Services, func(s api.ServiceAddress) bool { return s.Service == svcNS+"/"+name }) {
			return true, nil
		}
	}
	return false, nil
}

// createdRound is one Service created and answered.
type createdRound struct {
	status, answer time.Duration // from just before the create
	call           time.Duration // the two create calls
	failures       int           // requests not answered before the first answer
	addr           netip.Addr
}

// created runs the rounds of phase 1.
func (b *bench) created(ctx context.Context) ([]createdRound, error) {
	var out []createdRound
	for i := range b.o.rounds {
		name := fmt.Sprintf("r%03d", i)
		r, err := b.createdRound(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", i+1, err)
		}
		out = append(out, r)
		fmt.Printf("round %2d: %s %-12s in status %6.1f ms, answered %6.1f ms (%d requests failed before)\n",
			i+1, name, r.addr, ms(r.status), ms(r.answer), r.failures)
		if err := b.deleteService(ctx, name); err != nil {
			return nil, err
		}
		// Gone from every node before the next round, then a random pause.
		deadline := time.Now().Add(b.o.limit)
		for {
			on, err := b.listed(ctx, name)
			if err == nil && !on {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("round %d: %s still listed %v after its deletion (err %v)", i+1, name, b.o.limit, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100*time.Millisecond + rand.N(200*time.Millisecond)):
		}
	}
	return out, nil
}

func (b *bench) createdRound(ctx context.Context, name string) (createdRound, error) {
	var r createdRound
	ctx, cancel := context.WithTimeout(ctx, b.o.limit+5*time.Second)
	defer cancel()
	// The watch starts before the create, so no status update is missed.
	w, err := b.admin.CoreV1().Services(svcNS).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		return r, err
	}
	defer w.Stop()
	t0 := time.Now()
	if err := b.createService(ctx, name); err != nil {
		return r, err
	}
	r.call = time.Since(t0)
	deadline := t0.Add(b.o.limit)
	for !r.addr.IsValid() {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return r, fmt.Errorf("watch of %s ended before an address", name)
			}
			if s, isSvc := ev.Object.(*corev1.Service); isSvc && len(s.Status.LoadBalancer.Ingress) > 0 {
				r.status = time.Since(t0)
				r.addr, _ = netip.ParseAddr(s.Status.LoadBalancer.Ingress[0].IP)
				if !r.addr.IsValid() {
					return r, fmt.Errorf("%s: bad address %q in status", name, s.Status.LoadBalancer.Ingress[0].IP)
				}
			}
		case <-time.After(time.Until(deadline)):
			return r, fmt.Errorf("%s has no address after %v", name, b.o.limit)
		}
	}
	at, failures, err := b.waitAnswer(ctx, r.addr, deadline)
	r.failures = failures
	if err != nil {
		return r, err
	}
	r.answer = at.Sub(t0)
	return r, nil
}

// killRound is one vigil killed.
type killRound struct {
	victim   string
	leader   bool            // the victim held the allocator's Lease
	addrs    int             // addresses it held
	all      time.Duration   // SIGKILL -> the last of them answered elsewhere
	each     []time.Duration // per address
	failures int
	takenBy  []string // the nodes holding them afterwards, with how many each ("n2 5")
	rightMAC bool     // the client's neighbour entry for each names the survivor that holds it
}

type failoverResult struct {
	services int
	rounds   []killRound
}

// failoverPhase allocates the failover Services, then kills, measures and
// restarts the vigil of the node holding the most of their addresses.
func (b *bench) failoverPhase(ctx context.Context) (*failoverResult, error) {
	var names []string
	for i := range b.o.failover {
		names = append(names, fmt.Sprintf("f%03d", i))
	}
	if err := b.forEach(names, func(n string) error { return b.createService(ctx, n) }); err != nil {
		return nil, err
	}
	addrs, err := b.waitAllocated(ctx, len(names), 30*time.Second)
	if err != nil {
		return nil, err
	}
	if err := b.answerAll(ctx, addrs, 30*time.Second); err != nil {
		return nil, fmt.Errorf("before the kills: %w", err)
	}
	res := &failoverResult{services: len(names)}
	for k := range b.o.kills {
		r, err := b.kill(ctx, addrs, k)
		if err != nil {
			return nil, fmt.Errorf("kill %d: %w", k+1, err)
		}
		res.rounds = append(res.rounds, r)
		fmt.Printf("kill %d: %s (leader %v) held %d addresses; all answered elsewhere %6.1f ms (median address %6.1f ms), now held by %v, neighbour entries naming the holders %v\n",
			k+1, r.victim, r.leader, r.addrs, ms(r.all), ms(benchdoc.Median(r.each)), r.takenBy, r.rightMAC)
	}
	if err := b.forEach(names, func(n string) error { return b.deleteService(ctx, n) }); err != nil {
		return nil, err
	}
	return res, nil
}

// waitAllocated waits until want Services of svcNS have an address, and
// returns the addresses.
func (b *bench) waitAllocated(ctx context.Context, want int, limit time.Duration) ([]netip.Addr, error) {
	deadline := time.Now().Add(limit)
	for range int(limit/(100*time.Millisecond)) + 1 {
		m, err := b.addresses(ctx)
		if err == nil {
			var out []netip.Addr
			for _, a := range m {
				if a.IsValid() {
					out = append(out, a)
				}
			}
			if len(out) == want {
				slices.SortFunc(out, netip.Addr.Compare)
				return out, nil
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("not every one of %d Services has an address after %v", want, limit)
}

// answerAll waits until every address answers, a few at a time.
func (b *bench) answerAll(ctx context.Context, addrs []netip.Addr, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	sem := make(chan struct{}, 16)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, a := range addrs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, _, err := b.waitAnswer(ctx, a, deadline); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d addresses do not answer, first: %w", len(errs), len(addrs), errs[0])
	}
	return nil
}

// holders returns, per node, the pool addresses on its eth0.
func (b *bench) holders() (map[string][]netip.Addr, error) {
	pool := netip.MustParsePrefix(poolCIDR)
	out := map[string][]netip.Addr{}
	for _, n := range b.nodes {
		hh, err := n.host.Netlink()
		if err != nil {
			return nil, err
		}
		list, err := hh.AddrList(nil, syscall.AF_INET)
		hh.Close()
		if err != nil {
			return nil, err
		}
		for _, x := range list {
			if a, ok := netip.AddrFromSlice(x.IP); ok && pool.Contains(a.Unmap()) {
				out[n.name] = append(out[n.name], a.Unmap())
			}
		}
	}
	return out, nil
}

func (b *bench) kill(ctx context.Context, addrs []netip.Addr, k int) (killRound, error) {
	var r killRound
	held, err := b.holders()
	if err != nil {
		return r, err
	}
	// The node holding the most; ties go round the nodes from kill to kill.
	var victim *node
	for i := range b.nodes {
		n := b.nodes[(k+i)%len(b.nodes)]
		if victim == nil || len(held[n.name]) > len(held[victim.name]) {
			victim = n
		}
	}
	r.victim, r.addrs = victim.name, len(held[victim.name])
	if r.addrs == 0 {
		return r, fmt.Errorf("no node holds any of %d addresses: %v", len(addrs), held)
	}
	if st, err := b.status(ctx, victim); err == nil && st.Allocator != nil {
		r.leader = st.Allocator.Leading
	}
	mine := held[victim.name]

	t0 := time.Now()
	if err := victim.proc.Signal(syscall.SIGKILL); err != nil {
		return r, err
	}
	if exited, _ := victim.proc.Wait(5 * time.Second); !exited {
		return r, fmt.Errorf("%s's vigil did not exit after SIGKILL", victim.name)
	}
	// One prober per address, each back to back until its first answer:
	// the killed vigil's proxy is gone, so an answer comes from another node.
	deadline := t0.Add(b.o.limit)
	r.each = make([]time.Duration, len(mine))
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for i, a := range mine {
		wg.Go(func() {
			at, failures, err := b.waitAnswer(ctx, a, deadline)
			mu.Lock()
			defer mu.Unlock()
			r.failures += failures
			if err != nil {
				errs = append(errs, err)
				return
			}
			r.each[i] = at.Sub(t0)
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return r, fmt.Errorf("after %s was killed, %d of its %d addresses: %w", victim.name, len(errs), len(mine), errors.Join(errs...))
	}
	r.all = slices.Max(r.each)

	// Who holds them now, and whom the client's neighbour table names.
	if held, err = b.holders(); err != nil {
		return r, err
	}
	holderOf := map[netip.Addr]*node{}
	for _, n := range b.nodes {
		if n == victim {
			continue
		}
		k := 0
		for _, a := range held[n.name] {
			if slices.Contains(mine, a) {
				holderOf[a] = n
				k++
			}
		}
		if k > 0 {
			r.takenBy = append(r.takenBy, fmt.Sprintf("%s %d", n.name, k))
		}
	}
	r.rightMAC = true
	for _, a := range mine {
		mac, err := b.client.Neighbor(a)
		if err != nil {
			return r, err
		}
		if n := holderOf[a]; n == nil || n.host.MAC.String() != mac.String() {
			r.rightMAC = false
		}
	}

	// Back up, and back to its first-choice slot, before the next kill.
	if err := b.start(victim); err != nil {
		return r, err
	}
	if _, err := b.settle(ctx, 30*time.Second); err != nil {
		return r, fmt.Errorf("after %s's restart: %w", victim.name, err)
	}
	if err := b.answerAll(ctx, addrs, 30*time.Second); err != nil {
		return r, fmt.Errorf("after %s's restart: %w", victim.name, err)
	}
	return r, nil
}

// scaleResult is phase 3.
type scaleResult struct {
	n, concurrency  int
	calls           time.Duration // the creates (Service + EndpointSlice each)
	status          time.Duration // first create -> the last Service with an address in status
	held            time.Duration // first create -> every address on some node's eth0
	answered        time.Duration // first create -> every address answered once, swept after held
	heldBy          map[string]int
	rssBefore       map[string]int // kB, before the Services
	rssAfter        map[string]int
	garpSent        map[string]uint64 // during the phase, per node
	garpSuppressed  map[string]uint64
	rest            frames
	logWarns        map[string][]string // node -> distinct warning/error messages
	servicesInState map[string]int      // Services each vigil's status lists
	macs            map[string]string   // node -> its eth0's MAC
}

func (b *bench) scalePhase(ctx context.Context) (*scaleResult, error) {
	o := b.o
	res := &scaleResult{n: o.scale, concurrency: o.concurrency, rssBefore: map[string]int{}, rssAfter: map[string]int{},
		garpSent: map[string]uint64{}, garpSuppressed: map[string]uint64{}, heldBy: map[string]int{},
		logWarns: map[string][]string{}, servicesInState: map[string]int{}, macs: map[string]string{}}
	for _, n := range b.nodes {
		res.macs[n.name] = n.host.MAC.String()
	}
	// The failover phase's Services gone from every node, and their
	// addresses past the hold.
	if _, err := b.waitAllocated(ctx, 0, 30*time.Second); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		held, err := b.holders()
		if err != nil {
			return nil, err
		}
		if len(held) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("addresses still held 30s after their Services went: %v", held)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	sent0, supp0, err := b.garpCounters(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range b.nodes {
		res.rssBefore[n.name] = rss(n.proc.Cmd.Process.Pid)
	}
	logStart := map[string]int64{}
	for _, n := range b.nodes {
		if fi, err := os.Stat(n.logPath); err == nil {
			logStart[n.name] = fi.Size()
		}
	}

	var names []string
	for i := range o.scale {
		names = append(names, fmt.Sprintf("s%04d", i))
	}
	// A watch started before the first create sees every status update.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	w, err := b.admin.CoreV1().Services(svcNS).Watch(wctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	t0 := time.Now()
	allocated := make(chan time.Duration, 1)
	go func() {
		defer close(allocated)
		with := map[string]bool{}
		for ev := range w.ResultChan() {
			if s, ok := ev.Object.(*corev1.Service); ok && len(s.Status.LoadBalancer.Ingress) > 0 {
				with[s.Name] = true
				if len(with) == o.scale {
					allocated <- time.Since(t0)
					return
				}
			}
		}
	}()
	if err := b.forEach(names, func(n string) error { return b.createService(ctx, n) }); err != nil {
		return nil, err
	}
	res.calls = time.Since(t0)
	fmt.Printf("scale: %d Services and EndpointSlices created in %.1f s (%d in flight)\n", o.scale, res.calls.Seconds(), o.concurrency)
	limit := 10 * time.Minute
	select {
	case d, ok := <-allocated:
		if !ok {
			return nil, errors.New("scale: the watch ended before every Service had an address")
		}
		res.status = d
	case <-time.After(limit):
		m, _ := b.addresses(ctx)
		n := 0
		for _, a := range m {
			if a.IsValid() {
				n++
			}
		}
		return nil, fmt.Errorf("scale: %d of %d Services have an address after %v", n, o.scale, limit)
	}
	fmt.Printf("scale: every Service has an address %.1f s after the first create\n", res.status.Seconds())
	addrs, err := b.waitAllocated(ctx, o.scale, 30*time.Second)
	if err != nil {
		return nil, err
	}
	// Every address on some node's interface (polled: a netlink dump per node).
	for range int(limit/(200*time.Millisecond)) + 1 {
		held, err := b.holders()
		if err != nil {
			return nil, err
		}
		total := 0
		for _, as := range held {
			total += len(as)
		}
		if total >= o.scale {
			res.held = time.Since(t0)
			for name, as := range held {
				res.heldBy[name] = len(as)
			}
			break
		}
		if time.Since(t0) > limit {
			return nil, fmt.Errorf("scale: %d of %d addresses on the nodes after %v: %v", total, o.scale, limit, held)
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Printf("scale: every address held by a node %.1f s after the first create: %v\n", res.held.Seconds(), res.heldBy)
	if err := b.answerAll(ctx, addrs, 2*time.Minute); err != nil {
		return nil, fmt.Errorf("scale: %w", err)
	}
	res.answered = time.Since(t0)
	fmt.Printf("scale: every address answered %.1f s after the first create\n", res.answered.Seconds())

	// At rest: the takeover bursts are over (5 rounds, 250 ms apart), the
	// client's own ARP entries settled; then count for the window.
	time.Sleep(10 * time.Second)
	for _, n := range b.nodes {
		res.rssAfter[n.name] = rss(n.proc.Cmd.Process.Pid)
		if st, err := b.status(ctx, n); err == nil {
			res.servicesInState[n.name] = len(st.Services)
		}
	}
	fmt.Printf("scale: counting the client's ARP/NA frames for %v\n", o.rest)
	if res.rest, err = capture(b.client, o.rest); err != nil {
		return nil, err
	}
	sent1, supp1, err := b.garpCounters(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range b.nodes {
		res.garpSent[n.name] = sent1[n.name] - sent0[n.name]
		res.garpSuppressed[n.name] = supp1[n.name] - supp0[n.name]
		res.logWarns[n.name] = warnings(n.logPath, logStart[n.name])
	}
	return res, nil
}

// garpCounters are the GARP frames each node sent and suppressed, over its
// interfaces.
func (b *bench) garpCounters(ctx context.Context) (sent, suppressed map[string]uint64, err error) {
	sent, suppressed = map[string]uint64{}, map[string]uint64{}
	for _, n := range b.nodes {
		st, err := b.status(ctx, n)
		if err != nil {
			return nil, nil, err
		}
		for _, i := range st.Interfaces {
			sent[n.name] += i.GARPSent
			suppressed[n.name] += i.GARPSuppressed
		}
	}
	return sent, suppressed, nil
}

// rss is the resident set of pid in kB (VmRSS), -1 if unknown.
func rss(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err == nil {
				return kb
			}
		}
	}
	return -1
}

// warnings are the distinct messages of the WARN and ERROR lines of the log
// at path from offset on, with their counts.
func warnings(path string, offset int64) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(f, 64<<20))
	counts := map[string]int{}
	var order []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "level=WARN") && !strings.Contains(line, "level=ERROR") {
			continue
		}
		msg := line
		if _, rest, ok := strings.Cut(line, "msg="); ok {
			msg = rest
			if strings.HasPrefix(msg, `"`) {
				if q, err := strconv.QuotedPrefix(msg); err == nil {
					msg = q
				}
			} else if m, _, ok := strings.Cut(msg, " "); ok {
				msg = m
			}
		}
		if counts[msg] == 0 {
			order = append(order, msg)
		}
		counts[msg]++
	}
	var out []string
	for _, m := range order {
		out = append(out, fmt.Sprintf("%s ×%d", m, counts[m]))
	}
	return out
}

// withLogs adds the end of every vigil's log to err.
func (b *bench) withLogs(err error) error {
	var s strings.Builder
	for _, n := range b.nodes {
		log, _ := os.ReadFile(n.logPath)
		if len(log) > 3000 {
			log = log[len(log)-3000:]
		}
		fmt.Fprintf(&s, "\n--- %s's vigil log (end) ---\n%s", n.name, log)
	}
	return fmt.Errorf("%w%s", err, s.String())
}

// machine names the CPU, its core count and the kernel.

// loadAverage is the one-minute load average.

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
