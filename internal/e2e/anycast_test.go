package e2e

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
)

// A client behind an FRR router reaches an anycast VIP that three vigil
// nodes announce over BGP and serve with the XDP dsr balancer; the router
// spreads flows over them by ECMP (layer-4 hash). One node is withdrawn
// (its check fails), then another stops (SIGTERM): the router sends their
// flows to the nodes left, which have no connection-tracking entries for
// them but pick the same real server from the same Maglev table, so the
// established connections go on. Replies go from the real servers straight
// to the router.
func TestDSRAnycastConnectionsSurviveWithdrawal(t *testing.T) {
	var client *netlab.Host
	setup := func(lan *netlab.Lab, router *netlab.Host) {
		routedRealServers(t, lan, "10.82.0", anycastVIP, echo)
		wan := newLab(t)
		var err error
		if client, err = wan.AddHost("client", mustPrefix("10.83.0.100/24")); err != nil {
			t.Fatal(err)
		}
		if err := wan.Plug(router, "eth1", mustPrefix("10.83.0.254/24")); err != nil {
			t.Fatal(err)
		}
		if out, code := execIn(t, client, 5*time.Second, "ip", "route", "add", "default", "via", "10.83.0.254"); code != 0 {
			t.Fatalf("route on the client: %s", out)
		}
		for _, kv := range [][2]string{
			{"net/ipv4/ip_forward", "1"},
			{"net/ipv4/fib_multipath_hash_policy", "1"}, // spread by ports too: one client, many flows
		} {
			if err := router.Sysctl(kv[0], kv[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	dsr := fmt.Sprintf(`{name: web, mode: dsr, interface: eth0, xdp_mode: generic, listen: ["%s:80"], `+
		`backends: [{address: "10.82.0.11:80"}, {address: "10.82.0.12:80"}], check: {interval: 200ms, fall: 2, rise: 2}}`, anycastVIP)
	router, nodes, _ := bgpLabWith(t, 3, bgpOpts{balancer: dsr, setup: setup})
	for _, n := range nodes {
		waitBackendsUp(t, n.socket(), 2)
	}
	waitNexthops(t, router, 3, 30*time.Second)

	tx := func(n *bgpNode) uint64 { return statusAt(t, n.socket()).XDP["tx"] }
	const conns = 100
	streams := startEchoStreams(t, client, anycastVIP+":80", conns)
	time.Sleep(time.Second)
	spread := map[string]uint64{}
	for _, n := range nodes {
		if spread[n.host.Name] = tx(n); spread[n.host.Name] == 0 {
			t.Fatalf("%s steered no packet: the router did not spread the flows over the three nodes", n.host.Name)
		}
	}
	t.Logf("%d connections; packets steered per node in the first second: %v", conns, spread)
	// step withdraws node i, checks that its flows left it (while it still
	// runs) and that the established connections go on through the others.
	step := func(what string, i int, withdraw func(), running bool) {
		t.Helper()
		withdraw()
		took := waitNexthops(t, router, 2-i, 5*time.Second)
		streams.mark()
		time.Sleep(200 * time.Millisecond) // packets already on their way
		if running {
			before := tx(nodes[i])
			time.Sleep(time.Second)
			if after := tx(nodes[i]); after != before {
				t.Errorf("%s still steered %d packets a second after its route went", nodes[i].host.Name, after-before)
			}
		}
		time.Sleep(2 * time.Second)
		survived, failed := streams.survivors(20)
		t.Logf("%s: the router dropped its next hop after %v; %d of %d connections went on (>= 20 exchanges since)",
			what, took, survived, conns)
		if survived*100 < 99*conns {
			t.Fatalf("only %d of %d connections survived %s: %v", survived, conns, what, failed)
		}
	}
	step("lb1's check failed (withdrawn)", 0, func() { os.Remove(nodes[0].flag) }, true)
	step("lb2 stopped (SIGTERM)", 1, func() { nodes[1].proc.Signal(syscall.SIGTERM) }, false)
	streams.close()
	if _, failed := streams.survivors(0); len(failed) > 0 {
		t.Fatalf("failures: %v", failed)
	}
}
