// Command failover measures VIP failover of vigil and keepalived side by side
// in one run, with the same settings in the same namespace lab, and writes
// the table into docs/benchmarks.md between its markers. Needs root and
// keepalived. Every loop is bounded by a round count and timeouts.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-lb/vigil/internal/benchdoc"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/pool"
	"github.com/vigil-lb/vigil/internal/vrrplab"
	"golang.org/x/net/ipv4"
)

type scenario struct {
	name     string
	version  int
	interval time.Duration
	signal   syscall.Signal
	// aligned kills right after the client sees an advert from the master,
	// so every round faces the full master-down interval and the two
	// implementations are compared without the luck of the kill's phase.
	aligned bool
	// defaults gives each implementation its own default settings instead
	// of the version and interval above.
	defaults bool
}

type result struct {
	client []time.Duration // kill -> client answered by the backup
	vipGap []time.Duration // backup holds the VIP -> client answered
	neigh  []time.Duration // backup holds the VIP -> router's neighbour entry names it
}

func main() {
	rounds := flag.Int("rounds", 10, "rounds per scenario and implementation")
	out := flag.String("out", "docs/benchmarks.md", "markdown file to update")
	flag.Parse()
	if err := run(*rounds, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench/failover:", err)
		os.Exit(1)
	}
}

func run(rounds int, out string) error {
	if !netlab.Root() {
		return fmt.Errorf("needs root to build the namespace lab")
	}
	if _, err := exec.LookPath("keepalived"); err != nil {
		return fmt.Errorf("keepalived not installed: apt-get install keepalived")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	dir, bin, cleanup, err := benchdoc.BuildVigil("vigil-bench-")
	if err != nil {
		return err
	}
	defer cleanup()
	kv, _ := exec.Command("keepalived", "--version").CombinedOutput()
	scenarios := []scenario{
		{"crash (kill -9) just after an advert, each with its defaults (vigil v3 200ms, keepalived v2 1s)", 0, 0, syscall.SIGKILL, true, true},
		{"crash (kill -9) just after an advert, v2, advert 1s", 2, time.Second, syscall.SIGKILL, true, false},
		{"crash (kill -9) just after an advert, v3, advert 100ms", 3, 100 * time.Millisecond, syscall.SIGKILL, true, false},
		{"crash (kill -9) at a random phase, v3, advert 100ms", 3, 100 * time.Millisecond, syscall.SIGKILL, false, false},
		{"graceful stop (SIGTERM), v3, advert 100ms", 3, 100 * time.Millisecond, syscall.SIGTERM, false, false},
	}
	var table strings.Builder
	fmt.Fprintf(&table, "Written by `make bench-failover` (`go run ./bench/failover -rounds %d`) on %s: %d rounds per aligned row, %d per other row, vigil's rounds then keepalived's.\n",
		rounds, time.Now().UTC().Format("2006-01-02 15:04 MST"), rounds, 3*rounds)
	fmt.Fprintf(&table, "Peer: %s. Lab: two routers (priority 150 and 100) and a client on one bridge, each in its own namespace.\n", firstLine(string(kv)))
	table.WriteString("Failover time is from the signal to the client's first TCP answer from the backup on the VIP (overlapping probes every 1 ms). ")
	table.WriteString("\"Just after an advert\" rows kill the master as soon as the client sees its advert, so each round waits the full master-down interval ")
	table.WriteString("(3 × interval + skew: 3609 ms at 1s, 361 ms at 100ms for priority 100) and the ratio compares the implementations; ")
	table.WriteString("\"random phase\" rows kill at a random point of the interval, as a real crash does. ")
	table.WriteString("\"VIP → client\" is from the backup holding the VIP to that answer (the GARP reaching the client).\n\n")
	table.WriteString("\"VIP → router\" is from the backup holding the VIP to the client's neighbour entry naming the backup's MAC (median / worst, polled every 0.2 ms).\n\n")
	table.WriteString("| scenario | vigil median | vigil worst | keepalived median | keepalived worst | ratio (median) | vigil VIP → client (median) | keepalived VIP → client (median) | vigil VIP → router | keepalived VIP → router |\n")
	table.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, sc := range scenarios {
		res := map[vrrplab.Impl]result{}
		for _, impl := range []vrrplab.Impl{vrrplab.Vigil, vrrplab.Keepalived} {
			n := rounds
			if !sc.aligned {
				n = 3 * rounds // the phase varies by a whole interval: more samples
			}
			r, err := measure(ctx, sc, impl, bin, dir, n)
			if err != nil {
				return fmt.Errorf("%s, %s: %w", sc.name, impl, err)
			}
			res[impl] = r
			fmt.Printf("%-45s %-10s median %7.1f ms worst %7.1f ms  (VIP->client %5.1f ms)\n", sc.name, impl,
				ms(benchdoc.Median(r.client)), ms(slices.Max(r.client)), ms(benchdoc.Median(r.vipGap)))
		}
		v, k := res[vrrplab.Vigil], res[vrrplab.Keepalived]
		fmt.Fprintf(&table, "| %s | %.0f ms | %.0f ms | %.0f ms | %.0f ms | %.2fx | %.1f ms | %.1f ms | %.1f / %.1f ms | %.1f / %.1f ms |\n", sc.name,
			ms(benchdoc.Median(v.client)), ms(slices.Max(v.client)), ms(benchdoc.Median(k.client)), ms(slices.Max(k.client)),
			float64(benchdoc.Median(v.client))/float64(benchdoc.Median(k.client)), ms(benchdoc.Median(v.vipGap)), ms(benchdoc.Median(k.vipGap)),
			ms(benchdoc.Median(v.neigh)), ms(slices.Max(v.neigh)), ms(benchdoc.Median(k.neigh)), ms(slices.Max(k.neigh)))
	}
	mem, err := memory(ctx, bin, dir)
	if err != nil {
		return err
	}
	table.WriteString("\n" + mem)
	fmt.Print("\n" + table.String())
	if err := benchdoc.WriteSection(out, "failover", "VIP failover: vigil vs keepalived", table.String()); err != nil {
		return err
	}
	ps := poolTable()
	fmt.Print("\n" + ps)
	return benchdoc.WriteSection(out, "pool", "Pool assignment", ps)
}

func measure(ctx context.Context, sc scenario, impl vrrplab.Impl, bin, dir string, rounds int) (result, error) {
	if sc.defaults {
		sc.version, sc.interval = 3, config.DefaultAdvertInterval
		if impl == vrrplab.Keepalived {
			sc.version, sc.interval = 2, time.Second // keepalived's vrrp_version and advert_int defaults
		}
	}
	spec := vrrplab.Spec{Version: sc.version, Interval: sc.interval, VRID: 51, VIP: netip.MustParsePrefix("10.77.0.10/32"),
		Nodes: []vrrplab.NodeSpec{{Name: "lb1", Impl: impl, Priority: 150}, {Name: "lb2", Impl: impl, Priority: 100}}}
	sub := filepath.Join(dir, fmt.Sprintf("%s-v%d-%d", impl, sc.version, sc.interval.Milliseconds()))
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return result{}, err
	}
	c, err := vrrplab.Build(spec, bin, sub)
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	lb1, lb2 := c.Node("lb1"), c.Node("lb2")
	adverts, err := listenAdverts(c.Client)
	if err != nil {
		return result{}, err
	}
	defer adverts.Close()
	if err := lb2.Start(); err != nil {
		return result{}, err
	}
	var r result
	for i := range rounds {
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		if err := lb1.Start(); err != nil {
			return r, err
		}
		if err := c.WaitOwner(ctx, "lb1", 15*time.Second); err != nil {
			return r, fmt.Errorf("round %d: %w\n%s", i, err, lb1.Log())
		}
		if _, err := c.WaitAnswer(ctx, "lb1", time.Now(), 5*time.Second); err != nil {
			return r, fmt.Errorf("round %d: %w", i, err)
		}
		// Past Linux's 1s neighbour locktime, so the backup's GARP counts,
		// then a random phase of the advert interval.
		time.Sleep(1200*time.Millisecond + rand.N(sc.interval))
		if sc.aligned {
			if err := adverts.next(lb1.Host.Addr(false), 5*time.Second); err != nil {
				return r, fmt.Errorf("round %d: %w", i, err)
			}
		}
		vipAt, neighAt := make(chan time.Time, 1), make(chan time.Time, 1)
		watchCtx, stopWatch := context.WithTimeout(ctx, 15*time.Second)
		go func() {
			var at time.Time
			for watchCtx.Err() == nil && at.IsZero() {
				if lb2.HasVIP() {
					at = time.Now()
				}
				time.Sleep(200 * time.Microsecond)
			}
			vipAt <- at
			// Then the router (the client) learning the move from the GARP.
			for watchCtx.Err() == nil && !at.IsZero() {
				if mac, _ := c.Client.Neighbor(spec.VIP.Addr()); mac.String() == lb2.Host.MAC.String() {
					neighAt <- time.Now()
					return
				}
				time.Sleep(200 * time.Microsecond)
			}
			neighAt <- time.Time{}
		}()
		t0 := time.Now()
		if err := lb1.Kill(sc.signal); err != nil {
			stopWatch()
			return r, err
		}
		took, err := c.WaitAnswer(ctx, "lb2", t0, 15*time.Second)
		answered := time.Now()
		at := <-vipAt
		nat := <-neighAt
		stopWatch()
		if err != nil {
			return r, fmt.Errorf("round %d: %w\n%s", i, err, lb2.Log())
		}
		r.client = append(r.client, took)
		if !at.IsZero() {
			r.vipGap = append(r.vipGap, max(answered.Sub(at), 0))
		}
		if !at.IsZero() && !nat.IsZero() {
			r.neigh = append(r.neigh, nat.Sub(at))
		}
		lb1.Proc.Wait(5 * time.Second)
		lb1.Proc.Kill()
	}
	if len(r.vipGap) == 0 {
		r.vipGap = []time.Duration{0}
	}
	if len(r.neigh) == 0 {
		r.neigh = []time.Duration{0}
	}
	return r, nil
}

// poolTable reports the pool assignment for 255 VIPs over 16 nodes: balance
// of first choices, balance after any one node fails, and build time.
func poolTable() string {
	var vips []netip.Prefix
	for i := range 255 {
		vips = append(vips, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32))
	}
	var nodes []string
	for i := range 16 {
		nodes = append(nodes, fmt.Sprintf("node%02d", i))
	}
	const runs = 200
	start := time.Now()
	var as []pool.Assignment
	for range runs {
		as, _ = pool.Assign(vips, nodes)
	}
	per := time.Since(start) / runs
	first := map[string]int{}
	for _, a := range as {
		first[a.Nodes[0]]++
	}
	spread := func(m map[string]int, skip string) (lo, hi int) {
		lo = 1 << 30
		for _, n := range nodes {
			if n != skip {
				lo, hi = min(lo, m[n]), max(hi, m[n])
			}
		}
		return lo, hi
	}
	lo, hi := spread(first, "")
	worst := 0
	for _, failed := range nodes {
		owned := map[string]int{}
		for _, a := range as {
			o := a.Nodes[0]
			if o == failed {
				o = a.Nodes[1]
			}
			owned[o]++
		}
		l, h := spread(owned, failed)
		worst = max(worst, h-l)
	}
	return fmt.Sprintf("Written by `make bench-failover` on %s. `pool.Assign`, 255 VIPs over 16 nodes:\n\n"+
		"| VIPs per node (first choice) | spread after any one node fails (worst) | time per assignment |\n|---|---|---|\n"+
		"| %d to %d | %d | %v |\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), lo, hi, worst, per.Round(time.Microsecond))
}

// advertWatch receives VRRP adverts in the client namespace.
type advertWatch struct {
	*ipv4.PacketConn
}

func listenAdverts(h *netlab.Host) (*advertWatch, error) {
	var w *advertWatch
	err := h.Do(func() error {
		c, err := net.ListenPacket("ip4:112", "0.0.0.0")
		if err != nil {
			return err
		}
		p := ipv4.NewPacketConn(c)
		ifi, err := net.InterfaceByName("eth0")
		if err == nil {
			err = p.JoinGroup(ifi, &net.IPAddr{IP: net.IPv4(224, 0, 0, 18)})
		}
		if err != nil {
			c.Close()
			return fmt.Errorf("watch adverts: %w", err)
		}
		w = &advertWatch{p}
		return nil
	})
	return w, err
}

// next discards queued adverts, then waits for a fresh one from src.
func (w *advertWatch) next(src netip.Addr, timeout time.Duration) error {
	buf := make([]byte, 1500)
	// A deadline already passed returns at once without reading, so drain
	// with one slightly ahead; at most a socket buffer of queued adverts.
	for range 10000 {
		_ = w.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, _, _, err := w.ReadFrom(buf); err != nil {
			break
		}
	}
	_ = w.SetReadDeadline(time.Now().Add(timeout))
	for {
		_, _, from, err := w.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no advert from %s within %v: %w", src, timeout, err)
		}
		if a, ok := from.(*net.IPAddr); ok && a.IP.Equal(src.AsSlice()) {
			return nil
		}
	}
}

// memory compares resident memory with 50 instances (50 VRIDs, one VIP each).
func memory(ctx context.Context, bin, dir string) (string, error) {
	lab, err := netlab.New()
	if err != nil {
		return "", err
	}
	defer lab.Close()
	h, err := lab.AddHost("mem", netip.MustParsePrefix("10.78.0.1/24"))
	if err != nil {
		return "", err
	}
	var y, k strings.Builder
	y.WriteString("cluster: mem\nvrrp:\n  instances:\n")
	k.WriteString("global_defs {\n  vrrp_version 3\n}\n")
	for i := 1; i <= 50; i++ {
		fmt.Fprintf(&y, "    - {name: i%d, interface: eth0, vrid: %d, priority: 100, advert_interval: 1s, vips: [10.78.1.%d]}\n", i, i, i)
		fmt.Fprintf(&k, "vrrp_instance i%d {\n  state BACKUP\n  interface eth0\n  virtual_router_id %d\n  priority 100\n  advert_int 1\n  virtual_ipaddress {\n    10.78.1.%d/32 dev eth0\n  }\n}\n", i, i, i)
	}
	fmt.Fprintf(&y, "api: {socket: %q}\n", filepath.Join(dir, "mem.sock"))
	yc, kc := filepath.Join(dir, "mem.yaml"), filepath.Join(dir, "mem.conf")
	if err := os.WriteFile(yc, []byte(y.String()), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(kc, []byte(k.String()), 0o644); err != nil {
		return "", err
	}
	rss := func(cmd *exec.Cmd) (int, error) {
		p, err := h.Start(cmd)
		if err != nil {
			return 0, err
		}
		defer p.Kill()
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(6 * time.Second): // all 50 have become master
		}
		return groupRSS(p.Cmd.Process.Pid), nil
	}
	vk, err := rss(exec.Command(bin, "run", "-c", yc))
	if err != nil {
		return "", err
	}
	kk, err := rss(exec.Command("keepalived", "-f", kc, "-p", kc+".pid", "-r", kc+".vp", "-c", kc+".cp", "-P", "-n", "-G"))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("| memory, 50 instances (all master) | vigil | keepalived (all its processes) |\n|---|---|---|\n| RSS | %.1f MiB | %.1f MiB |\n",
		float64(vk)/1024, float64(kk)/1024), nil
}

// groupRSS sums VmRSS (KiB) over the process group of pid.
func groupRSS(pgid int) int {
	total := 0
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err != nil || g != pgid {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				n, _ := strconv.Atoi(f[1])
				total += n
			}
		}
	}
	return total
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
