package e2e

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
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
