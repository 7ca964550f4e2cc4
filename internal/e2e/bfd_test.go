package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/netlab"
)

// frrBFD is the router's side of BFD: bfdd runs with profile vigil
// (interval both ways, detect multiplier mult), and bgpd asks for a BFD
// session with each of peers.
type frrBFD struct {
	peers    []string
	interval time.Duration
	mult     int
}

// orNone is f as startFRRIn's optional argument: none without peers.
func (f frrBFD) orNone() []frrBFD {
	if len(f.peers) == 0 {
		return nil
	}
	return []frrBFD{f}
}

func (f frrBFD) profile() string {
	ms := f.interval.Milliseconds()
	return fmt.Sprintf("hostname router\nbfd\n profile vigil\n  detect-multiplier %d\n  receive-interval %d\n  transmit-interval %d\n exit\nexit\n",
		f.mult, ms, ms)
}

func (f frrBFD) neighbors() string {
	var b strings.Builder
	for _, p := range f.peers {
		fmt.Fprintf(&b, " neighbor %s bfd\n neighbor %s bfd profile vigil\n", p, p)
	}
	return b.String()
}

// nodeBFD is node i's neighbor bfd entry for the node config, "" for none.
func nodeBFD(perNode []string, i int) string {
	if i >= len(perNode) || perNode[i] == "" {
		return ""
	}
	return ", bfd: " + perNode[i]
}

// frrBFDPeers is `show bfd peers json` on the router: status by peer.
func frrBFDPeers(t *testing.T, router *netlab.Host, dir string) map[string]string {
	t.Helper()
	out, _ := execIn(t, router, 10*time.Second, "vtysh", "--vty_socket", dir, "-c", "show bfd peers json")
	var peers []struct {
		Peer   string `json:"peer"`
		Status string `json:"status"`
	}
	got := map[string]string{}
	if json.Unmarshal([]byte(out), &peers) != nil {
		return got // bfdd not answering
	}
	for _, p := range peers {
		got[p.Peer] = p.Status
	}
	return got
}

// waitFRRBFD waits until the router's BFD session with peer has status.
func waitFRRBFD(t *testing.T, router *netlab.Host, dir, peer, status string, d time.Duration) {
	t.Helper()
	var got map[string]string
	for t0 := time.Now(); time.Since(t0) < d; time.Sleep(100 * time.Millisecond) {
		if got = frrBFDPeers(t, router, dir); got[peer] == status {
			return
		}
	}
	t.Fatalf("the router's BFD session with %s is not %s within %v: %v", peer, status, d, got)
}

// nodeBFDSession is the node's BFD session and BGP session as its status
// shows them.
func nodeBFDSession(t *testing.T, n *bgpNode) (api.BFDSession, api.BGPSession) {
	t.Helper()
	snap := statusAt(t, n.socket())
	if snap.BFD == nil || len(snap.BFD.Sessions) != 1 || snap.BGP == nil || len(snap.BGP.Sessions) != 1 {
		t.Fatalf("%s: status without one BFD and one BGP session: %+v %+v", n.host.Name, snap.BFD, snap.BGP)
	}
	return snap.BFD.Sessions[0], snap.BGP.Sessions[0]
}

// waitNodeBFD waits until the node's BFD session is in state and its BGP
// session established (bgpUp) or not.
func waitNodeBFD(t *testing.T, n *bgpNode, state string, bgpUp bool, d time.Duration) (api.BFDSession, api.BGPSession) {
	t.Helper()
	var bfd api.BFDSession
	var bgp api.BGPSession
	for t0 := time.Now(); time.Since(t0) < d; time.Sleep(100 * time.Millisecond) {
		if bfd, bgp = nodeBFDSession(t, n); bfd.State == state && (bgp.State == "established") == bgpUp {
			return bfd, bgp
		}
	}
	t.Fatalf("%s: BFD %s and BGP established=%v not reached within %v: BFD %+v, BGP %+v", n.host.Name, state, bgpUp, d, bfd, bgp)
	return bfd, bgp
}

const bfd100ms = "{min_rx: 100ms, min_tx: 100ms, multiplier: 3}"

// bfdLab is two vigil nodes peering with FRR, hold time 3 s; lb1 also runs
// BFD with the router (100 ms x 3 both ways), lb2 does not.
func bfdLab(t *testing.T) (router *netlab.Host, nodes []*bgpNode, frrDir string, start func(*bgpNode)) {
	t.Helper()
	router, nodes, start = bgpLabWith(t, 2, bgpOpts{bfd: []string{bfd100ms},
		routerBFD: frrBFD{interval: 100 * time.Millisecond, mult: 3}, frrDir: &frrDir})
	took := waitNexthops(t, router, 2, 30*time.Second)
	waitFRRBFD(t, router, frrDir, "10.82.0.1", "up", 30*time.Second)
	bfd, _ := waitNodeBFD(t, nodes[0], "Up", true, 30*time.Second)
	t.Logf("two next hops after %v; lb1's BFD session up both ways: %+v", took, bfd)
	// FRR starts a new BFD session (new discriminator, Down) once the BGP
	// session is up, to fix its source address: vigil's session goes Down
	// and Up again, but the path worked throughout and the BGP session
	// must stay.
	if b, _ := os.ReadFile(filepath.Join(nodes[0].dir, "vigil.log")); strings.Contains(string(b), "bgp session closed") {
		t.Errorf("lb1 closed its BGP session while BFD came up")
	}
	if bfd.TxInterval != 100*time.Millisecond || bfd.RxInterval != 100*time.Millisecond || bfd.DetectionTime != 300*time.Millisecond ||
		bfd.LocalDiscr == 0 || bfd.RemoteDiscr == 0 {
		t.Fatalf("lb1's BFD session did not negotiate 100 ms x 3: %+v", bfd)
	}
	return router, nodes, frrDir, start
}

// A node's cable is cut at the switch (no reset, no goodbye: its TCP
// session is silently dead). With BFD the router drops its next hop long
// before the 3 s hold time, and vigil closes its own BGP session as soon
// as its BFD session times out; once the cable is back, BFD comes up and
// the session and route come back. Without BFD (lb2) the route stays until
// the hold time expires.
func TestBFDCableCutWithFRR(t *testing.T) {
	router, nodes, frrDir, _ := bfdLab(t)

	if err := nodes[0].host.SetCable(false); err != nil {
		t.Fatal(err)
	}
	took := waitRouteGone(t, router, "10.82.0.1", 10*time.Second)
	t.Logf("lb1's cable cut (BFD 100 ms x 3) -> the router dropped its next hop after %v", took)
	if took > 2500*time.Millisecond {
		t.Errorf("the route went after %v: that is the 3 s hold time, not BFD", took)
	}
	if st := frrBFDPeers(t, router, frrDir)["10.82.0.1"]; st == "up" {
		t.Errorf("the router's BFD session with lb1 is still up")
	}
	bfd, bgp := waitNodeBFD(t, nodes[0], "Down", false, 5*time.Second)
	if bfd.Diag != "control detection time expired" || bfd.Flaps < 1 || !strings.Contains(bgp.LastError, "bfd") {
		t.Errorf("lb1 after the cut: BFD %+v, BGP %+v", bfd, bgp)
	}
	b, _ := os.ReadFile(filepath.Join(nodes[0].dir, "vigil.log"))
	if !strings.Contains(string(b), "bgp session closed: the neighbor's bfd session is down") {
		t.Errorf("lb1's log does not say its BGP session was closed for BFD")
	}

	if err := nodes[0].host.SetCable(true); err != nil {
		t.Fatal(err)
	}
	waitFRRBFD(t, router, frrDir, "10.82.0.1", "up", 30*time.Second)
	took = waitNexthops(t, router, 2, 30*time.Second)
	waitNodeBFD(t, nodes[0], "Up", true, 10*time.Second)
	t.Logf("lb1's cable back -> BFD up, two next hops after %v", took)

	if err := nodes[1].host.SetCable(false); err != nil {
		t.Fatal(err)
	}
	took = waitRouteGone(t, router, "10.82.0.2", 10*time.Second)
	t.Logf("lb2's cable cut (no BFD) -> the router dropped its next hop after %v (hold time 3 s)", took)
	if took < 1500*time.Millisecond {
		t.Errorf("lb2's route went after %v, before its hold time could expire", took)
	}
	if err := nodes[1].host.SetCable(true); err != nil {
		t.Fatal(err)
	}
	waitNexthops(t, router, 2, 30*time.Second)
}

// The router's bfdd dies (kill -9: no AdminDown): vigil's BFD session times
// out and vigil closes its BGP session at once, though BGP itself is fine;
// it stays closed until bfdd is back and BFD is up again.
func TestBFDRouterBFDDownClosesSession(t *testing.T) {
	router, nodes, frrDir, _ := bfdLab(t)

	pid, err := os.ReadFile(filepath.Join(frrDir, "bfdd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(pid)))
	if err != nil {
		t.Fatalf("bfdd.pid: %v", err)
	}
	if err := syscall.Kill(n, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := waitRouteGone(t, router, "10.82.0.1", 10*time.Second)
	bfd, bgp := waitNodeBFD(t, nodes[0], "Down", false, 5*time.Second)
	t.Logf("the router's bfdd killed -> lb1 closed its BGP session, the router dropped its next hop after %v; BFD %s (%s), BGP %s (%s)",
		took, bfd.State, bfd.Diag, bgp.State, bgp.LastError)
	if took > 2500*time.Millisecond {
		t.Errorf("the route went after %v: that is the 3 s hold time, not vigil closing the session", took)
	}
	time.Sleep(6 * time.Second) // GoBGP would have reconnected by now (idle hold 5 s) were vigil not holding it
	if _, bgp := nodeBFDSession(t, nodes[0]); bgp.State == "established" {
		t.Fatalf("lb1's BGP session is established again while BFD is down: %+v", bgp)
	}

	if _, err := router.Start(frrDaemon(frrDir, "bfdd")); err != nil {
		t.Fatal(err)
	}
	waitFRRBFD(t, router, frrDir, "10.82.0.1", "up", 30*time.Second)
	waitNodeBFD(t, nodes[0], "Up", true, 30*time.Second)
	took = waitNexthops(t, router, 2, 30*time.Second)
	t.Logf("bfdd back -> BFD up, lb1's session and route back (route after %v)", took)
}

// cableCuts cuts lb1's cable (BFD 100 ms x 3) and lb2's (no BFD; hold time
// 3 s) rounds times each, in turn, at a random phase, and times each cut
// until the router's kernel route loses that node's next hop (the node's
// own updates cannot reach the router then, so a check of another node that
// flaps under load does not count). Each cable goes back and both next hops
// return before the next cut; lb2's vigil is restarted then, since a session
// lost to its hold time again and again is backed off up to a minute.
func cableCuts(t *testing.T, rounds int) (withBFD, without []time.Duration) {
	t.Helper()
	router, nodes, _, start := bfdLab(t)
	cut := func(n *bgpNode, via string) time.Duration {
		t.Helper()
		waitNexthops(t, router, 2, 60*time.Second)
		time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond)
		if err := n.host.SetCable(false); err != nil {
			t.Fatal(err)
		}
		took := waitRouteGone(t, router, via, 10*time.Second)
		if err := n.host.SetCable(true); err != nil {
			t.Fatal(err)
		}
		return took
	}
	for range rounds {
		withBFD = append(withBFD, cut(nodes[0], "10.82.0.1"))
		without = append(without, cut(nodes[1], "10.82.0.2"))
		nodes[1].proc.Kill()
		start(nodes[1])
	}
	return withBFD, without
}

// waitRouteGone waits until the router's route to the anycast VIP has no
// next hop via the node address via. Unlike a count of next hops, another
// node's check flapping under load does not end the wait.
func waitRouteGone(t *testing.T, router *netlab.Host, via string, d time.Duration) time.Duration {
	t.Helper()
	return waitRouteGoneFor(t, router, anycastVIP+"/32", via, d)
}

// waitRouteGoneFor is waitRouteGone for the route to prefix.
func waitRouteGoneFor(t *testing.T, router *netlab.Host, prefix, via string, d time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	for strings.Contains(routeOf(t, router, prefix), "via "+via+" ") {
		if time.Since(t0) > d {
			t.Fatalf("the router still routes via %s after %v", via, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(t0)
}

// BFD over IPv6 (RFC 5881 over UDP/IPv6, hop limit 255), with the node
// peering with the router's global address and, in the second lab, with
// link-local addresses only (neighbor fe80::254%eth0; FRR's neighbor
// fe80::1 interface eth0): both sides bring the session Up, the /128 is in
// the router's kernel table, and a cable cut at the switch takes lb1's next
// hop away well before the 3 s hold time would.
func TestBFDOverIPv6WithFRR(t *testing.T) {
	for _, tc := range []struct {
		name           string
		linkLocal      bool
		neighbor, peer string // lb1's neighbor (the router) and the router's peer (lb1)
	}{
		{"global", false, "fd00:82::254", "fd00:82::1"},
		{"link-local", true, "fe80::254%eth0", "fe80::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var frrDir string
			router, nodes, _ := bgpLabWith(t, 2, bgpOpts{v6: true, linkLocal: tc.linkLocal, bfd: []string{bfd100ms},
				routerBFD: frrBFD{interval: 100 * time.Millisecond, mult: 3}, frrDir: &frrDir,
				// lb2 must not flap under load: its next hop is the
				// one that stays.
				checkTiming: "interval: 1s, timeout: 900ms, rise: 1, fall: 3"})
			host := anycastVIP6 + "/128"
			took := waitNexthopsFor(t, router, host, 2, 30*time.Second)
			waitFRRBFD(t, router, frrDir, tc.peer, "up", 30*time.Second)
			bfd, bgp := waitNodeBFD(t, nodes[0], "Up", true, 30*time.Second)
			t.Logf("two IPv6 next hops after %v; lb1's BFD session up both ways: %+v", took, bfd)
			if bfd.Neighbor != tc.neighbor || bgp.Neighbor != tc.neighbor || bfd.RemoteDiscr == 0 || bfd.DetectionTime != 300*time.Millisecond {
				t.Fatalf("lb1's sessions: BFD %+v, BGP %+v", bfd, bgp)
			}
			table, _ := exec.Command(vigilBin, "status", "--socket", nodes[0].socket()).CombinedOutput()
			if !strings.Contains(string(table), "BFD NEIGHBOR") || !strings.Contains(string(table), tc.neighbor) {
				t.Fatalf("vigil status has no BFD session with %s:\n%s", tc.neighbor, table)
			}
			if b, _ := os.ReadFile(filepath.Join(nodes[0].dir, "vigil.log")); strings.Contains(string(b), "bgp session closed") {
				t.Errorf("lb1 closed its BGP session while BFD came up")
			}
			// The next hops are the nodes' addresses the router peers with.
			lb2 := strings.TrimSuffix(tc.peer, "1") + "2"
			if r := routeOf(t, router, host); !strings.Contains(r, "via "+tc.peer+" ") || !strings.Contains(r, "via "+lb2+" ") {
				t.Fatalf("the router's route has not lb1's and lb2's next hops: %s", r)
			}

			if err := nodes[0].host.SetCable(false); err != nil {
				t.Fatal(err)
			}
			took = waitRouteGoneFor(t, router, host, tc.peer, 10*time.Second)
			t.Logf("lb1's cable cut (BFD 100 ms x 3) -> the router dropped its IPv6 next hop after %v", took)
			if took > 2500*time.Millisecond {
				t.Errorf("the route went after %v: that is the 3 s hold time, not BFD", took)
			}
			if r := routeOf(t, router, host); !strings.Contains(r, "via "+lb2+" ") {
				t.Errorf("lb2's next hop went with lb1's: %q", r)
			}
			if st := frrBFDPeers(t, router, frrDir)[tc.peer]; st == "up" {
				t.Errorf("the router's BFD session with lb1 is still up")
			}
			if bfd, bgp := waitNodeBFD(t, nodes[0], "Down", false, 5*time.Second); bfd.Diag != "control detection time expired" || !strings.Contains(bgp.LastError, "bfd") {
				t.Errorf("lb1 after the cut: BFD %+v, BGP %+v", bfd, bgp)
			}

			if err := nodes[0].host.SetCable(true); err != nil {
				t.Fatal(err)
			}
			waitFRRBFD(t, router, frrDir, tc.peer, "up", 30*time.Second)
			took = waitNexthopsFor(t, router, host, 2, 30*time.Second)
			waitNodeBFD(t, nodes[0], "Up", true, 10*time.Second)
			t.Logf("lb1's cable back -> BFD up, two IPv6 next hops after %v", took)
		})
	}
}
