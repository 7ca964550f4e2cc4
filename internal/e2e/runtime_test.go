package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
)

// vigilCLI runs the vigil binary from the test's side of the socket and
// returns its exit code and output.
func vigilCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(vigilBin, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// vigil backend drain through the CLI takes a backend out of rotation for
// new connections (none reaches it), shows it as DRAIN in vigil status,
// survives a reload, and vigil backend enable brings it back. Unknown names
// exit 1 naming them.
func TestBackendDrainThroughTheCLI(t *testing.T) {
	bl := newBalancerLab(t)
	bl.config(t, []string{"be1", "be2"}, "")
	bl.start(t)
	sock := filepath.Join(filepath.Dir(bl.cfg), "vigil.sock")
	be1 := bl.backends["be1"].host.Addr(false).String() + ":6443"

	if code, out := vigilCLI(t, "backend", "drain", "api", be1, "--socket", sock); code != 0 {
		t.Fatalf("vigil backend drain: exit %d: %s", code, out)
	}
	hits := bl.backends["be1"].hits.Load()
	answers, failures := bl.load(30, 5*time.Millisecond)
	if got := tally(answers); len(failures) > 0 || got["be2"] != 30 {
		t.Fatalf("with be1 drained: %v, failures %v", got, failures)
	}
	if n := bl.backends["be1"].hits.Load() - hits; n != 0 {
		t.Fatalf("%d new connections reached the drained be1", n)
	}
	snap := statusAt(t, sock)
	for _, be := range snap.Balancers[0].Backends {
		if be.Address == be1 && (be.State != "drain" || be.Admin != "drain") {
			t.Fatalf("drained be1 in status: state %q admin %q", be.State, be.Admin)
		}
	}
	if code, out := vigilCLI(t, "status", "--socket", sock); code != 0 ||
		!regexp.MustCompile(`(?m)^  `+regexp.QuoteMeta(be1)+` +DRAIN `).MatchString(out) {
		t.Fatalf("vigil status table: exit %d:\n%s", code, out)
	}

	// A reload keeps the drain of a backend that stays.
	_, off := bl.logSince(0)
	bl.proc.Signal(syscall.SIGHUP)
	waitLog(t, bl, off, "config reloaded", 3*time.Second)
	answers, failures = bl.load(20, 5*time.Millisecond)
	if got := tally(answers); len(failures) > 0 || got["be2"] != 20 {
		t.Fatalf("drained be1 after a reload: %v, failures %v", got, failures)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"backend", "drain", "nope", be1}, `unknown balancer "nope"`},
		{[]string{"backend", "disable", "api", "10.78.0.99:6443"}, "balancer api: unknown backend 10.78.0.99:6443"},
		{[]string{"instance", "resign", "nope"}, `unknown instance "nope"`},
	} {
		code, out := vigilCLI(t, append(c.args, "--socket", sock)...)
		if code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("vigil %s: exit %d, want 1 with %q:\n%s", strings.Join(c.args, " "), code, c.want, out)
		}
	}

	if code, out := vigilCLI(t, "backend", "enable", "api", be1, "--socket", sock); code != 0 {
		t.Fatalf("vigil backend enable: exit %d: %s", code, out)
	}
	answers, _ = bl.load(20, 5*time.Millisecond)
	if got := tally(answers); got["be1"] < 5 {
		t.Fatalf("be1 did not rejoin after enable: %v", got)
	}
}

// heldConn is a keep-alive HTTP connection through the balancer, and the
// backend that answered on it.
type heldConn struct {
	c  net.Conn
	r  *bufio.Reader
	be string
}

// ask sends one request on the held connection and returns who answered.
func (h *heldConn) ask() (string, error) {
	h.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(h.c, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(h.r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// hold opens n keep-alive connections through the balancer, each asked
// once, and returns them by the backend that answered.
func (bl *balancerLab) hold(t *testing.T, n int) map[string][]*heldConn {
	t.Helper()
	out := map[string][]*heldConn{}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		var c net.Conn
		var err error
		for c == nil && ctx.Err() == nil {
			if c, err = bl.dialer.TryDial(ctx, "tcp", balancerVIP+":9445"); errors.Is(err, netlab.ErrBusy) {
				c = nil
				time.Sleep(time.Millisecond)
			} else if err != nil {
				cancel()
				t.Fatalf("dial through the balancer: %v", err)
			}
		}
		cancel()
		if c == nil {
			t.Fatal("no dialer worker free for 3s")
		}
		t.Cleanup(func() { c.Close() })
		h := &heldConn{c: c, r: bufio.NewReader(c)}
		if h.be, err = h.ask(); err != nil {
			t.Fatalf("first request on a held connection: %v", err)
		}
		out[h.be] = append(out[h.be], h)
	}
	return out
}

// vigil backend disable closes the backend's established connections at
// once and sends it no new ones; the other backend's connections go on;
// status shows DISABLED (MAINT); enable brings it back.
func TestBackendDisableThroughTheCLI(t *testing.T) {
	bl := newBalancerLab(t)
	bl.config(t, []string{"be1", "be2"}, "")
	bl.start(t)
	sock := filepath.Join(filepath.Dir(bl.cfg), "vigil.sock")
	be1 := bl.backends["be1"].host.Addr(false).String() + ":6443"
	held := bl.hold(t, 6) // round robin: three on each
	if len(held["be1"]) == 0 || len(held["be2"]) == 0 {
		t.Fatalf("held connections by backend: be1 %d, be2 %d", len(held["be1"]), len(held["be2"]))
	}

	_, off := bl.logSince(0)
	t0 := time.Now()
	if code, out := vigilCLI(t, "backend", "disable", "api", be1, "--socket", sock); code != 0 {
		t.Fatalf("vigil backend disable: exit %d: %s", code, out)
	}
	// be1's connections are closed: a read ends (EOF or reset), not a timeout.
	for _, h := range held["be1"] {
		h.c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err := h.r.ReadByte()
		if err == nil || os.IsTimeout(err) {
			t.Fatalf("a connection to disabled be1 stayed open: %v", err)
		}
	}
	t.Logf("be1's %d connections closed %v after vigil backend disable", len(held["be1"]), time.Since(t0))
	for _, h := range held["be2"] {
		if who, err := h.ask(); err != nil || who != "be2" {
			t.Fatalf("be2's established connection after be1 was disabled: %q %v", who, err)
		}
	}
	hits := bl.backends["be1"].hits.Load()
	answers, failures := bl.load(30, 5*time.Millisecond)
	if got := tally(answers); len(failures) > 0 || got["be2"] != 30 {
		t.Fatalf("with be1 disabled: %v, failures %v", got, failures)
	}
	if n := bl.backends["be1"].hits.Load() - hits; n != 0 {
		t.Fatalf("%d requests reached disabled be1", n)
	}
	waitLog(t, bl, off, `msg="backend admin state change" balancer=api backend=`+be1+` `, 3*time.Second)
	if code, out := vigilCLI(t, "status", "balancer", "api", "--socket", sock); code != 0 ||
		!regexp.MustCompile(`(?m)^  `+regexp.QuoteMeta(be1)+` +DISABLED \(MAINT\) `).MatchString(out) ||
		strings.Contains(out, "VRRP INSTANCE") {
		t.Fatalf("vigil status balancer api: exit %d:\n%s", code, out)
	}

	if code, out := vigilCLI(t, "backend", "enable", "api", be1, "--socket", sock); code != 0 {
		t.Fatalf("vigil backend enable: exit %d: %s", code, out)
	}
	answers, _ = bl.load(20, 5*time.Millisecond)
	if got := tally(answers); got["be1"] < 5 {
		t.Fatalf("be1 did not rejoin after enable: %v", got)
	}
}

// vigil instance resign hands over with priority 0: the peer takes over at
// once (its reason says hand-over, not a master-down timer) and the
// resigned node stays backup; vigil instance resume lets it preempt back;
// vigil instance maint is resign.
func TestInstanceResignAndResumeThroughTheCLI(t *testing.T) {
	spec := fast
	spec.PeerNames = true
	c := twoNodes(t, spec)
	lb1 := c.Node("lb1").Socket()

	t0 := time.Now()
	if code, out := vigilCLI(t, "instance", "resign", "vip", "--socket", lb1); code != 0 {
		t.Fatalf("vigil instance resign: exit %d: %s", code, out)
	}
	took := waitAnswer(t, c, "lb2", t0, 3*time.Second)
	t.Logf("resign: lb2 answers on the VIP %v after the command", took)
	in2 := status(t, c.Node("lb2")).Instances[0]
	if tr := in2.LastTransition; in2.State != "MASTER" || tr == nil || tr.Cause != "handover" || tr.PeerNode != "lb1" {
		t.Fatalf("lb2 after lb1 resigned: %s, last transition %+v", in2.State, in2.LastTransition)
	}
	// Held off: lb1 takes nothing back while resigned, though it has the
	// higher priority and preempt is on.
	stable(t, c, "lb2", time.Second)
	in1 := status(t, c.Node("lb1")).Instances[0]
	if tr := in1.LastTransition; in1.State != "BACKUP" || !in1.Resigned || tr == nil || tr.Cause != "resign" ||
		in1.MasterNode != "lb2" || in1.MasterPriority != 100 {
		t.Fatalf("lb1 resigned: %s resigned %v master %s (%d), last transition %+v", in1.State, in1.Resigned,
			in1.MasterNode, in1.MasterPriority, in1.LastTransition)
	}
	if code, out := vigilCLI(t, "status", "instance", "vip", "--socket", lb1); code != 0 ||
		!regexp.MustCompile(`(?m)^vip .* BACKUP \(RESIGNED\) +150 +lb2 \(100\) .*MASTER>BACKUP: resigned by operator`).MatchString(out) {
		t.Fatalf("vigil status instance vip on lb1: exit %d:\n%s", code, out)
	}

	if code, out := vigilCLI(t, "instance", "resume", "vip", "--socket", lb1); code != 0 {
		t.Fatalf("vigil instance resume: exit %d: %s", code, out)
	}
	waitOwner(t, c, "lb1", 5*time.Second)
	in1 = status(t, c.Node("lb1")).Instances[0]
	if tr := in1.LastTransition; in1.Resigned || tr == nil || tr.Cause != "preempt" || tr.PeerNode != "lb2" ||
		!strings.Contains(tr.Reason, "after resume") {
		t.Fatalf("lb1 resumed: resigned %v, last transition %+v", in1.Resigned, in1.LastTransition)
	}
	in2 = status(t, c.Node("lb2")).Instances[0]
	if tr := in2.LastTransition; tr == nil || tr.Cause != "preempted" || tr.PeerNode != "lb1" || tr.PeerPriority != 150 {
		t.Fatalf("lb2 after lb1 resumed: last transition %+v", in2.LastTransition)
	}

	// maint is another name for resign.
	t0 = time.Now()
	if code, out := vigilCLI(t, "instance", "maint", "vip", "--socket", lb1); code != 0 {
		t.Fatalf("vigil instance maint: exit %d: %s", code, out)
	}
	waitAnswer(t, c, "lb2", t0, 3*time.Second)
	if in1 := status(t, c.Node("lb1")).Instances[0]; !in1.Resigned {
		t.Fatal("vigil instance maint did not resign lb1")
	}
}
