package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/vip"
)

// clientBehindRouter plugs a client into a network of its own behind the
// router (its eth1: 10.83.0.254/24, fd00:83::254/64), routes both families
// through it and makes the router forward, spreading flows by ports too.
func clientBehindRouter(t *testing.T, router *netlab.Host) *netlab.Host {
	t.Helper()
	wan := newLab(t)
	client, err := wan.AddHost("client", mustPrefix("10.83.0.100/24"), mustPrefix("fd00:83::100/64"))
	if err != nil {
		t.Fatal(err)
	}
	if err := wan.Plug(router, "eth1", mustPrefix("10.83.0.254/24"), mustPrefix("fd00:83::254/64")); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][]string{{"-4", "default", "via", "10.83.0.254"}, {"-6", "default", "via", "fd00:83::254"}} {
		if out, code := execIn(t, client, 5*time.Second, "ip", append([]string{r[0], "route", "add"}, r[1:]...)...); code != 0 {
			t.Fatalf("route on the client: %s", out)
		}
	}
	for _, kv := range [][2]string{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv6/conf/all/forwarding", "1"},
		{"net/ipv4/fib_multipath_hash_policy", "1"}, // by ports too: one client, many flows
		{"net/ipv6/fib_multipath_hash_policy", "1"},
	} {
		if err := router.Sysctl(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	return client
}

// proxyAnycastNodes gives every node a backend on its own loopback that
// answers with the node's name (the nodes' proxy balancer forwards to
// 127.0.0.1:8080), and routes back to the client's network.
func proxyAnycastNodes(t *testing.T, nodes []*bgpNode) {
	t.Helper()
	for _, n := range nodes {
		serveAnswer(t, n.host, "127.0.0.1:8080", n.host.Name)
		for _, r := range [][]string{{"-4", "default", "via", "10.82.0.254"}, {"-6", "default", "via", "fd00:82::254"}} {
			if out, code := execIn(t, n.host, 5*time.Second, "ip", append([]string{r[0], "route", "add"}, r[1:]...)...); code != 0 {
				t.Fatalf("route on %s: %s", n.host.Name, out)
			}
		}
	}
}

// tolerantCheck times the lab's check so that a loaded machine does not
// make it flap: these tests time nothing.
const tolerantCheck = "interval: 1s, timeout: 1s, rise: 1, fall: 2"

// proxyBalancer is the nodes' proxy balancer on addr (host:port), over
// their own backend.
func proxyBalancer(addr string) string {
	return fmt.Sprintf(`{name: web, listen: [%q], backends: [{address: "127.0.0.1:8080"}]}`, addr)
}

// askAll makes n connections from the client to addr and counts the
// answers per node; failures are listed.
func askAll(client *netlab.Host, addr string, n int) (map[string]int, []string) {
	got, failed := map[string]int{}, []string(nil)
	for range n {
		ans, err := readAllFrom(client, addr)
		if err != nil || ans == "" {
			failed = append(failed, fmt.Sprintf("%v %q", err, ans))
			continue
		}
		got[ans]++
	}
	return got, failed
}

// accepted is the node's local route for a (table local), as ip prints it:
// empty when the node does not accept a.
func accepted(t *testing.T, h *netlab.Host, a string) string {
	t.Helper()
	family := "-4"
	if strings.Contains(a, ":") {
		family = "-6"
	}
	out, _ := execIn(t, h, 5*time.Second, "ip", family, "route", "show", "table", "local", a)
	return strings.TrimSpace(out)
}

// waitAccepted waits until the node accepts a (want) or no longer does.
func waitAccepted(t *testing.T, h *netlab.Host, a string, want bool, d time.Duration) {
	t.Helper()
	for t0 := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		r := accepted(t, h, a)
		if (r != "") == want {
			return
		}
		if time.Since(t0) > d {
			t.Fatalf("%s: local route for %s is %q after %v, want present=%v", h.Name, a, r, d, want)
		}
	}
}

// anycastTablePresent reports whether vigil's arp table is in h.
func anycastTablePresent(t *testing.T, h *netlab.Host) bool {
	t.Helper()
	return nftTablePresent(t, h, vip.AnycastARPTable)
}

// nftTablePresent reports whether h has an nftables table named name.
func nftTablePresent(t *testing.T, h *netlab.Host, name string) bool {
	t.Helper()
	found := false
	err := h.Do(func() error {
		conn, err := nftables.New()
		if err != nil {
			return err
		}
		tables, err := conn.ListTables()
		for _, tb := range tables {
			found = found || tb.Name == name
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// arpAnswered reports whether anyone answers arping from h on eth0 for a.
func arpAnswered(t *testing.T, h *netlab.Host, a string) (bool, string) {
	t.Helper()
	out, _ := execIn(t, h, 10*time.Second, "arping", "-c", "2", "-w", "2", "-I", "eth0", a)
	return strings.Contains(out, "bytes from"), out
}

// Issue 21 part 1: three nodes announce an anycast address to FRR while a
// check passes and serve it with a proxy balancer. Each node accepts the
// address (a local route, no interface) while it announces it, so a client
// behind the router is answered, by more than one node; no node answers
// ARP for it on the LAN. A failing check withdraws the route and the
// acceptance; SIGTERM removes both, and vigil's arp table.
func TestBGPProxyAnycastAccepted(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/arping"); err != nil {
		t.Skip("arping is not installed (make deps installs it)")
	}
	var client *netlab.Host
	router, nodes, _ := bgpLabWith(t, 3, bgpOpts{balancer: proxyBalancer(anycastVIP + ":80"), checkTiming: tolerantCheck,
		setup: func(_ *netlab.Lab, router *netlab.Host) { client = clientBehindRouter(t, router) }})
	proxyAnycastNodes(t, nodes)
	waitNexthops(t, router, 3, 30*time.Second)
	got, failed := askAll(client, anycastVIP+":80", 30)
	t.Logf("30 requests from behind the router: answers %v, failures %d", got, len(failed))
	if len(failed) > 0 {
		t.Fatalf("%d of 30 requests failed: %v", len(failed), failed)
	}
	if len(got) < 2 {
		t.Errorf("answers %v: the router did not spread the flows over the nodes", got)
	}

	for _, n := range nodes {
		waitAccepted(t, n.host, anycastVIP, true, 5*time.Second)
	}
	t.Logf("lb1 accepts the address: %s", accepted(t, nodes[0].host, anycastVIP))
	if ok, out := arpAnswered(t, router, "10.82.0.1"); !ok {
		t.Fatalf("control: lb1's own address is not answered by ARP: %s", out)
	}
	if ok, out := arpAnswered(t, router, anycastVIP); ok {
		t.Fatalf("a node answers ARP for the anycast address on the LAN:\n%s", out)
	}

	os.Remove(nodes[0].flag)
	waitNexthops(t, router, 2, 15*time.Second)
	waitAccepted(t, nodes[0].host, anycastVIP, false, 10*time.Second)
	got, failed = askAll(client, anycastVIP+":80", 20)
	t.Logf("lb1's check failed: withdrawn and no longer accepted there; 20 requests: %v, failures %d", got, len(failed))
	if len(failed) > 0 || got["lb1"] > 0 {
		t.Fatalf("after lb1's withdrawal: answers %v, failures %v", got, failed)
	}
	if !anycastTablePresent(t, nodes[1].host) {
		t.Error("lb2 accepts an IPv4 anycast address without its arp table")
	}

	nodes[1].proc.Signal(syscall.SIGTERM)
	if exited, _ := nodes[1].proc.Wait(15 * time.Second); !exited {
		t.Fatal("lb2 did not stop after SIGTERM")
	}
	waitNexthops(t, router, 1, 15*time.Second)
	if r := accepted(t, nodes[1].host, anycastVIP); r != "" || anycastTablePresent(t, nodes[1].host) {
		t.Fatalf("lb2 stopped, but left its local route %q or its arp table", r)
	}
	got, failed = askAll(client, anycastVIP+":80", 10)
	t.Logf("lb2 stopped (SIGTERM): route and table gone; 10 requests: %v, failures %d", got, len(failed))
	if len(failed) > 0 || got["lb3"] != 10 {
		t.Fatalf("after lb2's stop: answers %v, failures %v", got, failed)
	}
}

// A node whose VRRP VIP is the anycast address keeps it as VRRP put it (on
// eth0, the kernel's local route): vigil adds no route of its own, and a
// withdrawal does not take the address away.
func TestBGPAnycastVRRPVIPLeftAlone(t *testing.T) {
	var client *netlab.Host
	router, nodes, _ := bgpLabWith(t, 1, bgpOpts{balancer: proxyBalancer(anycastVIP + ":80"), checkTiming: tolerantCheck,
		setup: func(_ *netlab.Lab, router *netlab.Host) { client = clientBehindRouter(t, router) },
		extra: fmt.Sprintf(`cluster: anycast
vrrp:
  instances:
    - {name: front, interface: eth0, vrid: 73, priority: 150, advert_interval: 100ms, vips: [%s/32]}
`, anycastVIP)})
	proxyAnycastNodes(t, nodes)
	lb1 := nodes[0].host
	waitNexthops(t, router, 1, 30*time.Second)
	vipOn := func() bool {
		has, err := lb1.HasAddr(netip.MustParseAddr(anycastVIP))
		return err == nil && has
	}
	for t0 := time.Now(); !vipOn(); time.Sleep(50 * time.Millisecond) {
		if time.Since(t0) > 10*time.Second {
			t.Fatal("lb1 never took the VRRP VIP")
		}
	}
	if r := accepted(t, lb1, anycastVIP); !strings.Contains(r, "dev eth0") || strings.Contains(r, "dev lo") || strings.Contains(r, "proto 86") {
		t.Fatalf("local route %q: want the kernel's on eth0, none of vigil's", r)
	}
	if got, failed := askAll(client, anycastVIP+":80", 5); len(failed) > 0 || got["lb1"] != 5 {
		t.Fatalf("answers %v, failures %v", got, failed)
	}
	os.Remove(nodes[0].flag)
	waitNexthops(t, router, 0, 15*time.Second)
	time.Sleep(500 * time.Millisecond) // what a removal would take
	if !vipOn() || !strings.Contains(accepted(t, lb1, anycastVIP), "dev eth0") {
		t.Fatal("the withdrawal took the VRRP VIP away")
	}
	t.Logf("withdrawn; the VRRP VIP stays: %s", accepted(t, lb1, anycastVIP))
}

// The same over IPv6 (issue 21 part 3): sessions to the router's IPv6
// address, the /128 accepted by both nodes while announced and answered to
// a client behind the router; neighbour discovery for it is not answered on
// the LAN (a probe host that takes the address as on-link gets no
// advertisement), and a failing check takes the acceptance away.
func TestBGPProxyAnycastAcceptedIPv6(t *testing.T) {
	var client, probe *netlab.Host
	router, nodes, _ := bgpLabWith(t, 2, bgpOpts{v6: true, balancer: proxyBalancer("[" + anycastVIP6 + "]:80"), checkTiming: tolerantCheck,
		setup: func(lab *netlab.Lab, router *netlab.Host) {
			client = clientBehindRouter(t, router)
			var err error
			if probe, err = lab.AddHost("probe", mustPrefix("fd00:82::99/64")); err != nil {
				t.Fatal(err)
			}
		}})
	proxyAnycastNodes(t, nodes)
	host := anycastVIP6 + "/128"
	waitNexthopsFor(t, router, host, 2, 30*time.Second)
	for _, n := range nodes {
		waitAccepted(t, n.host, anycastVIP6, true, 5*time.Second)
	}
	t.Logf("lb1 accepts the address: %s; the router: %s", accepted(t, nodes[0].host, anycastVIP6), routeOf(t, router, host))
	addr := "[" + anycastVIP6 + "]:80"
	got, failed := askAll(client, addr, 20)
	t.Logf("20 requests from behind the router: answers %v, failures %d", got, len(failed))
	if len(failed) > 0 {
		t.Fatalf("%d of 20 requests failed: %v", len(failed), failed)
	}

	// Neighbour discovery: the probe solicits the address on the LAN.
	if out, code := execIn(t, probe, 5*time.Second, "ip", "-6", "route", "add", host, "dev", "eth0"); code != 0 {
		t.Fatalf("route on the probe: %s", out)
	}
	execIn(t, probe, 10*time.Second, "ping", "-6", "-c", "2", "-W", "1", anycastVIP6)
	execIn(t, probe, 10*time.Second, "ping", "-6", "-c", "1", "-W", "1", "fd00:82::1") // control
	neigh, _ := execIn(t, probe, 5*time.Second, "ip", "-6", "neigh", "show", "dev", "eth0")
	if !strings.Contains(neigh, "fd00:82::1 lladdr") {
		t.Fatalf("control: the probe did not resolve lb1's own address:\n%s", neigh)
	}
	for _, l := range strings.Split(neigh, "\n") {
		if strings.HasPrefix(l, anycastVIP6+" ") && strings.Contains(l, "lladdr") {
			t.Fatalf("a node answered neighbour discovery for the anycast address: %s", l)
		}
	}

	os.Remove(nodes[0].flag)
	waitNexthopsFor(t, router, host, 1, 15*time.Second)
	waitAccepted(t, nodes[0].host, anycastVIP6, false, 10*time.Second)
	got, failed = askAll(client, addr, 10)
	t.Logf("lb1's check failed: withdrawn and no longer accepted there; 10 requests: %v, failures %d", got, len(failed))
	if len(failed) > 0 || got["lb2"] != 10 {
		t.Fatalf("after lb1's withdrawal: answers %v, failures %v", got, failed)
	}
}

// A link-local neighbor (issue 21 part 3): vigil peers with the router's
// fe80::254%eth0, FRR with the node's fe80::1 on eth0; the /128 arrives
// with a link-local next hop, is accepted by the node and answered from
// behind the router.
func TestBGPLinkLocalNeighbor(t *testing.T) {
	var client *netlab.Host
	router, nodes, _ := bgpLabWith(t, 1, bgpOpts{v6: true, linkLocal: true, balancer: proxyBalancer("[" + anycastVIP6 + "]:80"),
		checkTiming: tolerantCheck, setup: func(_ *netlab.Lab, router *netlab.Host) { client = clientBehindRouter(t, router) }})
	proxyAnycastNodes(t, nodes)
	host := anycastVIP6 + "/128"
	waitNexthopsFor(t, router, host, 1, 30*time.Second)
	route := routeOf(t, router, host)
	if !strings.Contains(route, "via fe80::1 dev eth0") {
		t.Fatalf("the router's route %q: want via the node's link-local address", route)
	}
	snap := statusAt(t, nodes[0].socket())
	if len(snap.BGP.Sessions) != 1 || snap.BGP.Sessions[0].Neighbor != "fe80::254%eth0" || snap.BGP.Sessions[0].State != "established" {
		t.Fatalf("sessions %+v", snap.BGP.Sessions)
	}
	got, failed := askAll(client, "["+anycastVIP6+"]:80", 10)
	t.Logf("session with %s; the router: %s; 10 requests from behind it: %v, failures %d", snap.BGP.Sessions[0].Neighbor, route, got, len(failed))
	if len(failed) > 0 || got["lb1"] != 10 {
		t.Fatalf("answers %v, failures %v", got, failed)
	}
}
