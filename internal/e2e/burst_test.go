package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/netlab"
)

// A burst on the health bus, end to end (issue 23, item 10): a balancer
// with 1,000 backends, each a listener of one lab host; the listeners close
// at once, every check fails within the same interval, and the daemon must
// take every backend out of rotation, none missed. The bus is level-
// triggered (the latest state of each key), so a burst costs no update.
func TestThousandBackendsDownAtOnce(t *testing.T) {
	const n = 1000
	lab := newLab(t)
	lb, err := lab.AddHost("lb", mustPrefix("10.91.0.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	be, err := lab.AddHost("be", mustPrefix("10.91.0.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	listeners := make([]net.Listener, 0, n)
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	t.Cleanup(closeAll)
	var backends strings.Builder
	for i := range n {
		addr := fmt.Sprintf("10.91.0.2:%d", 20000+i)
		l, err := be.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		netlab.Serve(l, func(net.Conn) {})
		listeners = append(listeners, l)
		fmt.Fprintf(&backends, "      - {address: %q}\n", addr)
	}
	dir := t.TempDir()
	sock, cfg, logPath := filepath.Join(dir, "vigil.sock"), filepath.Join(dir, "vigil.yaml"), filepath.Join(dir, "vigil.log")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`api: {socket: %q, http: ""}
balancers:
  - name: many
    listen: ["10.91.0.1:9445"]
    check: {interval: 1s, timeout: 500ms, rise: 1, fall: 1}
    backends:
%s`, sock, backends.String())), 0o644); err != nil {
		t.Fatal(err)
	}
	startVigil(t, lb, cfg, filepath.Join(dir, "vigil.pid"), logPath)
	logOnFailure(t, "vigil log", logPath)

	// Every check has passed a probe: the state before the burst is
	// measured, not the initial "up" a check starts with. A status call
	// may time out while the daemon is busy (1,000 probes a second on a
	// loaded machine): the next one asks again.
	var snap api.Snapshot
	var lastErr error
	ask := func() bool {
		snap, lastErr = tryStatus(sock)
		return lastErr == nil
	}
	count := func() (passed, up int) {
		for _, c := range snap.Checks {
			if c.Up && c.Probes > c.Failures {
				passed++
			}
		}
		for _, b := range snap.Balancers {
			for _, be := range b.Backends {
				if be.Up {
					up++
				}
			}
		}
		return passed, up
	}
	waitFor(t, 30*time.Second, func() bool {
		if !ask() {
			return false
		}
		p, up := count()
		return p == n && up == n
	},
		func() string {
			p, up := count()
			return fmt.Sprintf("%d checks passed, %d backends up, want %d (last status error: %v)", p, up, n, lastErr)
		})

	// All listeners close at once: connects are refused from now on.
	t0 := time.Now()
	closeAll()
	inRotation := func() []string {
		var still []string
		for _, b := range snap.Balancers {
			for _, be := range b.Backends {
				if be.Up || be.State != "down" {
					still = append(still, be.Address+" "+be.State)
				}
			}
		}
		return still
	}
	waitFor(t, 30*time.Second, func() bool { return ask() && len(inRotation()) == 0 },
		func() string {
			s := inRotation()
			return fmt.Sprintf("%d of %d backends still in rotation, e.g. %v (last status error: %v)", len(s), n, s[:min(5, len(s))], lastErr)
		})
	t.Logf("%d backends out of rotation %v after their listeners closed (check interval 1s, fall 1)", n, time.Since(t0).Round(10*time.Millisecond))
	if got := len(snap.Balancers[0].Backends); got != n {
		t.Fatalf("status lists %d backends, want %d", got, n)
	}
	// And they stay out: nothing comes back up on its own.
	time.Sleep(2 * time.Second)
	waitFor(t, 30*time.Second, ask, func() string { return fmt.Sprintf("status: %v", lastErr) })
	if s := inRotation(); len(s) != 0 {
		t.Fatalf("%d backends back in rotation with no listener, e.g. %v", len(s), s[:min(5, len(s))])
	}
}

// tryStatus asks a daemon for its status, as statusAt does, but returns
// the error: the daemon may not answer yet, or not within vigil status's
// timeout.
func tryStatus(socket string) (api.Snapshot, error) {
	var snap api.Snapshot
	out, err := exec.Command(vigilBin, "status", "--socket", socket, "-o", "json").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		return snap, err
	}
	return snap, json.Unmarshal(out, &snap)
}

// waitFor polls cond until it holds or d passes; then it fails with what
// says.
func waitFor(t *testing.T, d time.Duration, cond func() bool, what func() string) {
	t.Helper()
	for end := time.Now().Add(d); ; time.Sleep(200 * time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("after %v: %s", d, what())
		}
	}
}
