package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/netlab"
)

// statusAtErr is statusAt for a daemon that may not answer yet.
func statusAtErr(socket string) (api.Snapshot, error) {
	var snap api.Snapshot
	out, err := exec.Command(vigilBin, "status", "--socket", socket, "-o", "json").Output()
	if err == nil {
		err = json.Unmarshal(out, &snap)
	}
	return snap, err
}

// routeHeld polls the router's kernel route for the anycast VIP for d and
// returns how long it was missing in all (polls every 20 ms).
func routeHeld(t *testing.T, router *netlab.Host, d time.Duration) time.Duration {
	t.Helper()
	var missing time.Duration
	for t0 := time.Now(); time.Since(t0) < d; {
		t1 := time.Now()
		gone := nexthops(t, router, anycastVIP+"/32") == 0
		time.Sleep(20 * time.Millisecond)
		if gone {
			missing += time.Since(t1)
		}
	}
	return missing
}

// Graceful restart (RFC 4724) with FRR, a helper by default: SIGTERM sends
// no withdrawal and closes the session without a NOTIFICATION, so the
// router keeps the route (stale) while vigil is gone and while it comes
// back; vigil's new session and End-of-RIB take over without the route
// leaving the router's kernel table. A node that does not come back loses
// the route when the restart time (15 s here: a loaded machine
// takes seconds to start vigil) ends. Without graceful restart
// SIGTERM withdraws at once (TestBGPAnycastWithFRR's last step).
func TestBGPGracefulRestartWithFRR(t *testing.T) {
	router, nodes, start := bgpLabWith(t, 1, bgpOpts{extra: "  graceful_restart: {enabled: true, restart_time: 15s}\n"})
	n := nodes[0]
	waitNexthops(t, router, 1, 30*time.Second)

	n.proc.Signal(syscall.SIGTERM)
	if exited, _ := n.proc.Wait(15 * time.Second); !exited {
		t.Fatal("vigil did not stop after SIGTERM")
	}
	if gone := routeHeld(t, router, 2*time.Second); gone > 0 {
		t.Fatalf("with graceful restart, the route left the router for %v after vigil stopped", gone)
	}
	start(n)
	t0 := time.Now()
	for {
		if snap, err := statusAtErr(n.socket()); err == nil && snap.BGP != nil && len(snap.BGP.Sessions) == 1 && snap.BGP.Sessions[0].State == "established" {
			break
		}
		if nexthops(t, router, anycastVIP+"/32") == 0 {
			t.Fatalf("the route left the router %v into vigil's restart", time.Since(t0).Round(time.Millisecond))
		}
		if time.Since(t0) > 30*time.Second {
			t.Fatal("vigil's session did not come back within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(t0)
	if gone := routeHeld(t, router, 3*time.Second); gone > 0 {
		t.Fatalf("the route left the router for %v after vigil's session came back", gone)
	}
	t.Logf("vigil restarted (session back after %v): the route never left the router", took.Round(time.Millisecond))

	n.proc.Signal(syscall.SIGTERM)
	t0 = time.Now()
	waitNexthops(t, router, 0, 40*time.Second)
	gone := time.Since(t0)
	t.Logf("vigil stopped for good: the route went after %v (restart time 15 s)", gone.Round(time.Millisecond))
	if gone < 12*time.Second {
		t.Errorf("the route went after %v, before the restart time could end", gone)
	}
}

// vigil announces only: FRR announces 50 networks to it; vigil counts them
// (routes_received; FRR may also send vigil's own route back, with vigil's
// AS in its path), rejects them all on import and installs nothing (the
// node's kernel tables have none of them and are as before), while its own
// announcement reaches the router.
func TestBGPRejectsRoutesFromFRR(t *testing.T) {
	lines := []string{"no bgp network import-check"}
	for i := range 50 {
		lines = append(lines, fmt.Sprintf("network 10.200.%d.0/24", i))
	}
	tables := func(n *bgpNode) string {
		out, _ := execIn(t, n.host, 5*time.Second, "sh", "-c", "ip -4 route show table main; ip -6 route show table main")
		return out
	}
	router, nodes, _ := bgpLabWith(t, 1, bgpOpts{routerLines: lines})
	n := nodes[0]
	before := tables(n)
	waitNexthops(t, router, 1, 30*time.Second)
	var received uint64
	for t0 := time.Now(); received < 50; time.Sleep(100 * time.Millisecond) {
		if snap, err := statusAtErr(n.socket()); err == nil && snap.BGP != nil && len(snap.BGP.Sessions) == 1 {
			received = snap.BGP.Sessions[0].RoutesReceived
		}
		if time.Since(t0) > 20*time.Second {
			t.Fatalf("vigil's status counts %d routes received from FRR, want 50 or more", received)
		}
	}
	time.Sleep(time.Second) // what an install would take
	if after := tables(n); after != before {
		t.Fatalf("the node's routing table changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	all, _ := execIn(t, n.host, 5*time.Second, "ip", "route", "show", "table", "all")
	if strings.Contains(all, "10.200.") {
		t.Fatalf("a route from FRR reached the node's kernel:\n%s", all)
	}
	t.Logf("%d routes received from FRR, none in the node's tables; vigil's own route at the router: %s", received, routeOf(t, router, anycastVIP+"/32"))
}
