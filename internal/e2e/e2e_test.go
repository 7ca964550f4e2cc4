// Package e2e runs the vigil binary in network namespaces against itself and
// against keepalived. It needs root; CI runs it as root.
package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/vrrplab"
)

var vigilBin string

func TestMain(m *testing.M) {
	if !netlab.Root() {
		fmt.Println("e2e: skipping namespace tests: they need root to create network namespaces")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "vigil-e2e-")
	if err != nil {
		panic(err)
	}
	vigilBin = filepath.Join(dir, "vigil")
	build := exec.Command("go", "build", "-race", "-o", vigilBin, "../../cmd/vigil")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Println("e2e: building vigil failed:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cluster builds a lab for spec, starts every node in order and registers cleanup.
func cluster(t *testing.T, spec vrrplab.Spec) *vrrplab.Cluster {
	t.Helper()
	if !netlab.Root() {
		t.Skip("needs root to create network namespaces")
	}
	if spec.VIP == (netip.Prefix{}) {
		spec.VIP = netip.MustParsePrefix("10.77.0.10/32")
	}
	if spec.VRID == 0 {
		spec.VRID = 51
	}
	for _, n := range spec.Nodes {
		if n.Impl == vrrplab.Keepalived {
			if _, err := exec.LookPath("keepalived"); err != nil {
				t.Fatal("keepalived is not installed (.ci/run installs it)")
			}
		}
	}
	c, err := vrrplab.Build(spec, vigilBin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("--- %s (%s) ---\n%s", n.Name, n.Impl, n.Log())
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	return c
}

func start(t *testing.T, c *vrrplab.Cluster, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := c.Node(n).Start(); err != nil {
			t.Fatal(err)
		}
	}
}

func waitOwner(t *testing.T, c *vrrplab.Cluster, name string, d time.Duration) {
	t.Helper()
	if err := c.WaitOwner(context.Background(), name, d); err != nil {
		t.Fatal(err)
	}
}

func waitAnswer(t *testing.T, c *vrrplab.Cluster, name string, t0 time.Time, d time.Duration) time.Duration {
	t.Helper()
	took, err := c.WaitAnswer(context.Background(), name, t0, d)
	if err != nil {
		t.Fatal(err)
	}
	return took
}

// failover signals the daemon on from and returns how long until to answers
// on the VIP.
func failover(t *testing.T, c *vrrplab.Cluster, from string, sig syscall.Signal, to string, d time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	if err := c.Node(from).Kill(sig); err != nil {
		t.Fatal(err)
	}
	return waitAnswer(t, c, to, t0, d)
}

// newLab builds an empty lab removed at cleanup; it skips without root.
func newLab(t *testing.T) *netlab.Lab {
	t.Helper()
	if !netlab.Root() {
		t.Skip("needs root to create network namespaces")
	}
	lab, err := netlab.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	return lab
}

// oneHost builds a lab with a single host n at 10.79.0.1/24.
func oneHost(t *testing.T) *netlab.Host {
	t.Helper()
	h, err := newLab(t).AddHost("n", mustPrefix("10.79.0.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// stable checks that for d the VIP stays on exactly one node, the named one.
func stable(t *testing.T, c *vrrplab.Cluster, name string, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if got := c.Owners(); len(got) != 1 || got[0] != name {
			t.Fatalf("VIP owners %v, want only %s", got, name)
		}
	}
}

func pair(impl1, impl2 vrrplab.Impl, p1, p2 int) []vrrplab.NodeSpec {
	return []vrrplab.NodeSpec{{Name: "lb1", Impl: impl1, Priority: p1}, {Name: "lb2", Impl: impl2, Priority: p2}}
}

var fast = vrrplab.Spec{Version: 3, Interval: 100 * time.Millisecond}

// twoNodes runs spec with vigil on lb1 (priority 150) and lb2 (100), started
// together, and returns once lb1 holds the VIP.
func twoNodes(t *testing.T, spec vrrplab.Spec) *vrrplab.Cluster {
	t.Helper()
	spec.Nodes = pair(vrrplab.Vigil, vrrplab.Vigil, 150, 100)
	c := cluster(t, spec)
	start(t, c, "lb1", "lb2")
	waitOwner(t, c, "lb1", 5*time.Second)
	return c
}

func TestFailoverOnKillAndStaleVIPCleanup(t *testing.T) {
	c := twoNodes(t, fast)
	took := failover(t, c, "lb1", syscall.SIGKILL, "lb2", 5*time.Second)
	t.Logf("kill -9 failover: client reached lb2 after %v", took)
	if !c.Node("lb2").HasVIP() {
		t.Fatal("lb2 answers but does not hold the VIP")
	}
	// The crashed node still holds the VIP; its restart must remove it
	// before anything else, then win back as the higher priority.
	if !c.Node("lb1").HasVIP() {
		t.Fatal("lab assumption: kill -9 leaves the VIP on lb1")
	}
	start(t, c, "lb1")
	waitOwner(t, c, "lb1", 5*time.Second)
	if !strings.Contains(c.Node("lb1").Log(), "removing VIPs left from an earlier run") {
		t.Fatal("restart did not report removing the stale VIP")
	}
	waitAnswer(t, c, "lb1", time.Now(), 3*time.Second)
}

func TestFailoverOnSIGTERMIsFastAndClean(t *testing.T) {
	c := twoNodes(t, fast)
	took := failover(t, c, "lb1", syscall.SIGTERM, "lb2", 3*time.Second)
	t.Logf("SIGTERM failover: %v", took)
	if exited, err := c.Node("lb1").Proc.Wait(5 * time.Second); !exited || err != nil {
		t.Fatalf("vigil did not exit cleanly on SIGTERM: exited=%v err=%v", exited, err)
	}
	if c.Node("lb1").HasVIP() {
		t.Fatal("lb1 kept the VIP after a graceful stop")
	}
	// Priority 0 means the backup waits only its skew time (61ms here),
	// not three intervals: well under the 361ms master-down interval.
	if took > 300*time.Millisecond {
		t.Logf("note: SIGTERM failover took %v on this busy machine", took)
	}
	if !strings.Contains(c.Node("lb1").Log(), "event=vrrp state=STOP") {
		t.Fatal("no STOP transition logged")
	}
}

func TestFaultOnCarrierLossAndRecovery(t *testing.T) {
	c := twoNodes(t, fast)
	lb1 := c.Node("lb1")
	if err := lb1.Host.SetCable(false); err != nil {
		t.Fatal(err)
	}
	waitOwner(t, c, "lb2", 5*time.Second) // lb1 in FAULT removed its VIP too
	if !strings.Contains(lb1.Log(), "event=vrrp state=FAULT") {
		t.Fatal("lb1 did not enter FAULT on carrier loss")
	}
	if err := lb1.Host.SetCable(true); err != nil {
		t.Fatal(err)
	}
	waitOwner(t, c, "lb1", 5*time.Second)
	waitAnswer(t, c, "lb1", time.Now(), 3*time.Second)
}

func TestAdminLinkDown(t *testing.T) {
	c := twoNodes(t, fast)
	if err := c.Node("lb1").Host.SetLink(false); err != nil {
		t.Fatal(err)
	}
	// Addresses on a down interface stay listed: what counts is that the
	// client reaches lb2.
	waitAnswer(t, c, "lb2", time.Now(), 5*time.Second)
	if err := c.Node("lb1").Host.SetLink(true); err != nil {
		t.Fatal(err)
	}
	waitOwner(t, c, "lb1", 5*time.Second)
}

func TestNoPreemptKeepsLowerMaster(t *testing.T) {
	spec := fast
	spec.NoPreempt = true
	spec.Nodes = pair(vrrplab.Vigil, vrrplab.Vigil, 150, 100)
	c := cluster(t, spec)
	start(t, c, "lb2")
	waitOwner(t, c, "lb2", 5*time.Second)
	start(t, c, "lb1")
	stable(t, c, "lb2", 1500*time.Millisecond)
}

func TestPreemptTakesOverFromLowerMaster(t *testing.T) {
	spec := fast
	spec.Nodes = pair(vrrplab.Vigil, vrrplab.Vigil, 150, 100)
	c := cluster(t, spec)
	start(t, c, "lb2")
	waitOwner(t, c, "lb2", 5*time.Second)
	start(t, c, "lb1")
	waitOwner(t, c, "lb1", 5*time.Second)
	stable(t, c, "lb1", 500*time.Millisecond)
	// A graceful preemption is no ARP conflict: lb1's takeover audit waits
	// until lb2 has released the VIP (it used to probe before, and warn in
	// most rounds). Three hand-overs, lb2 back as master between them.
	for round := range 3 {
		if round > 0 {
			if err := c.Node("lb1").Stop(); err != nil {
				t.Fatal(err)
			}
			waitOwner(t, c, "lb2", 5*time.Second)
			start(t, c, "lb1")
			waitOwner(t, c, "lb1", 5*time.Second)
		}
		time.Sleep(spec.Interval + 800*time.Millisecond) // the release window, and the probe's wait
		if log, _ := os.ReadFile(c.Node("lb1").LogPath); strings.Contains(string(log), "address conflict") {
			t.Fatalf("round %d: a graceful preemption was reported as an ARP conflict:\n%s", round, log)
		}
	}
}

func TestUnicastPeers(t *testing.T) {
	spec := fast
	spec.Unicast = true
	c := twoNodes(t, spec)
	stable(t, c, "lb1", 500*time.Millisecond)
	failover(t, c, "lb1", syscall.SIGKILL, "lb2", 5*time.Second)
}

func TestVersion2WithAuth(t *testing.T) {
	spec := vrrplab.Spec{Version: 2, Interval: time.Second, AuthPass: "s3cret",
		Nodes: pair(vrrplab.Vigil, vrrplab.Vigil, 150, 100)}
	c := cluster(t, spec)
	start(t, c, "lb1", "lb2")
	waitOwner(t, c, "lb1", 8*time.Second)
	stable(t, c, "lb1", 2500*time.Millisecond) // lb2 hears and accepts the adverts
	took := failover(t, c, "lb1", syscall.SIGKILL, "lb2", 8*time.Second)
	t.Logf("v2 kill -9 failover with 1s adverts: %v", took)
}

func TestIPv6VIP(t *testing.T) {
	spec := fast
	spec.IPv6 = true
	spec.VIP = netip.MustParsePrefix("fd00:77::10/128")
	c := twoNodes(t, spec)
	waitAnswer(t, c, "lb1", time.Now(), 3*time.Second)
	stable(t, c, "lb1", 500*time.Millisecond)
	failover(t, c, "lb1", syscall.SIGTERM, "lb2", 5*time.Second)
	waitOwner(t, c, "lb2", 2*time.Second)
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// startVigil runs `vigil run -c cfg` in h (with --pid-file pidFile, "" for
// none), its output appended to the file at logPath, so that a restart
// adds to the same log. A wrap command (setpriv ...) runs it when given.
func startVigil(t *testing.T, h *netlab.Host, cfg, pidFile, logPath string, wrap ...string) *netlab.Proc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	args := slices.Concat(wrap, []string{vigilBin, "run", "-c", cfg, "--pid-file", pidFile})
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := h.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// logOnFailure shows the file at path under title if the test fails.
func logOnFailure(t *testing.T, title, path string) {
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(path)
			t.Logf("--- %s ---\n%s", title, b)
		}
	})
}
