// Package demo is `vigil demo`: a failover shown end to end in a throw-away
// namespace lab, with the failover time measured from the client's side, and
// the L4 balancer on the VIP carrying on through it.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/vrrplab"
)

// Run runs the demo with vigilBin as the node daemon, printing to out. It
// removes everything it created before returning, also when ctx is cancelled.
func Run(ctx context.Context, vigilBin string, out io.Writer) (err error) {
	if !netlab.Root() {
		return errors.New("demo needs root: it creates network namespaces, a bridge and veth pairs " +
			"(CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW); run it with sudo")
	}
	dir, err := os.MkdirTemp("", "vigil-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Fprintf(out, "[%6.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	// Both nodes also run an L4 balancer on the VIP in front of the two
	// nodes' whoami servers; the backup's listener is bound in advance.
	balancer := fmt.Sprintf(`balancers:
  - name: web
    listen: ["%s:%d"]
    backends: [{address: "10.77.0.11:%d"}, {address: "10.77.0.12:%d"}]
    check: {interval: 500ms}
`, "10.77.0.10", balancerPort, vrrplab.WhoamiPort, vrrplab.WhoamiPort)
	spec := vrrplab.Spec{Version: 3, Interval: 100 * time.Millisecond, VRID: 51,
		VIP: netip.MustParsePrefix("10.77.0.10/32"),
		Nodes: []vrrplab.NodeSpec{{Name: "lb1", Impl: vrrplab.Vigil, Priority: 150, TopYAML: balancer},
			{Name: "lb2", Impl: vrrplab.Vigil, Priority: 100, TopYAML: balancer}}}
	say("building the lab: namespaces lb1, lb2 and client on one bridge (10.77.0.0/24)")
	c, err := vrrplab.Build(spec, vigilBin, dir)
	if err != nil {
		return err
	}
	defer func() {
		say("cleaning up: stopping daemons, removing namespaces")
		if cerr := c.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	fail := func(err error) error {
		for _, n := range c.Nodes {
			fmt.Fprintf(out, "--- log of %s ---\n%s\n", n.Name, n.Log())
		}
		return err
	}
	for _, n := range c.Nodes {
		if err := n.Start(); err != nil {
			return err
		}
	}
	say("vigil runs on lb1 (priority 150) and lb2 (priority 100): VRRPv3, advert every 100ms, VIP %s", spec.VIP.Addr())
	if err := c.WaitOwner(ctx, "lb1", 5*time.Second); err != nil {
		return fail(err)
	}
	say("lb1 is master and holds the VIP; lb2 is backup")
	got, err := c.Ask(ctx, time.Second)
	if err != nil {
		return fail(err)
	}
	say("client -> %s:%d answered by %s", spec.VIP.Addr(), vrrplab.WhoamiPort, got)
	say("client -> %s:%d (vigil's L4 balancer on lb1, round robin): %s", spec.VIP.Addr(), balancerPort, spread(ctx, c, 6))

	say("kill -9 vigil on lb1 (a crash: no goodbye advert, the VIP stays configured there)")
	t0 := time.Now()
	if err := c.Node("lb1").Kill(syscall.SIGKILL); err != nil {
		return err
	}
	took, err := c.WaitAnswer(ctx, "lb2", t0, 10*time.Second)
	if err != nil {
		return fail(err)
	}
	say("client reaches the VIP through lb2 after %.0f ms (master-down interval 361 ms from the last advert; keepalived side by side: docs/benchmarks.md)", ms(took))
	say("client -> %s:%d, now lb2's balancer, listening since its start: %s", spec.VIP.Addr(), balancerPort, spread(ctx, c, 6))
	if snap, err := api.Fetch(ctx, c.Node("lb2").Socket()); err == nil {
		say("vigil status on lb2:")
		api.WriteTable(out, snap, time.Now())
	}

	say("restarting vigil on lb1: it first removes the VIP its crash left behind, then preempts")
	t0 = time.Now()
	if err := c.Node("lb1").Start(); err != nil {
		return err
	}
	if err := c.WaitOwner(ctx, "lb1", 5*time.Second); err != nil {
		return fail(err)
	}
	if _, err := c.WaitAnswer(ctx, "lb1", t0, 5*time.Second); err != nil {
		return fail(err)
	}
	say("lb1 is master again after %.0f ms; lb2 released the VIP", ms(time.Since(t0)))

	say("graceful stop of lb1 (SIGTERM): it sends a priority-0 advert, lb2 takes over after its skew time")
	t0 = time.Now()
	if err := c.Node("lb1").Kill(syscall.SIGTERM); err != nil {
		return err
	}
	if took, err = c.WaitAnswer(ctx, "lb2", t0, 5*time.Second); err != nil {
		return fail(err)
	}
	say("client reaches the VIP through lb2 after %.0f ms; VIP now on %v", ms(took), c.Owners())
	if ctx.Err() != nil {
		return ctx.Err()
	}
	say("done")
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// balancerPort is where the demo's balancer listens on the VIP.
const balancerPort = 9445

// spread makes n connections through the balancer and says who answered.
func spread(ctx context.Context, c *vrrplab.Cluster, n int) string {
	var who []string
	for range n {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := c.Client.Dial(dctx, "tcp", fmt.Sprintf("10.77.0.10:%d", balancerPort))
		cancel()
		if err != nil {
			who = append(who, "error")
			continue
		}
		conn.SetDeadline(time.Now().Add(time.Second))
		b, _ := io.ReadAll(conn)
		conn.Close()
		who = append(who, strings.TrimSpace(string(b)))
	}
	return strings.Join(who, " ")
}
