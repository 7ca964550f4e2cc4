package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vigil-lb/vigil/internal/kubetest"
	"github.com/vigil-lb/vigil/internal/netlab"
)

// The bgp pool of TestKubeServiceBGP: outside the lab's subnet, so the
// router reaches it only through the nodes' announcements.
const (
	svcBGPPool      = "10.85.0.0/28"
	svcBGPCommunity = "64512:7"
	svcBGPRouter    = "10.80.0.254"
)

// startBGP runs vigil on node name of sl with a bgp section peering with
// the router at svcBGPRouter (AS 64500, hold time 3 s) and one
// kubernetes.services pool announced over BGP with community
// svcBGPCommunity (with dataplane dsr, its XDP program on eth0).
func (sl *svcLab) startBGP(t *testing.T, name string) {
	t.Helper()
	h := sl.nodes[name]
	cfg := fmt.Sprintf(`log: {level: debug}
cluster: lab
node: %[1]s
api: {socket: %[2]q, http: ""}
bgp:
  asn: 64512
  router_id: %[6]s
  neighbors: [{address: %[7]s, asn: 64500, hold_time: 3s}]
kubernetes:
  kubeconfig: %[3]s
  state_file: %[4]s
  services:
    dataplane: %[9]s
    hold: 1s
    pools:
      - {name: edge, addresses: [%[5]q], announce: bgp, nodes: "vigil=yes", bgp: {communities: [%[8]q]}%[10]s}
`, name, filepath.Join(sl.dir, name+".sock"), sl.env.Kubeconfig(t, "", sl.env.AdminToken),
		filepath.Join(sl.dir, name+".json"), svcBGPPool, h.Addr(false), svcBGPRouter, svcBGPCommunity,
		cmp.Or(sl.dataplane, "proxy"), map[bool]string{true: ", interface: eth0"}[sl.dataplane == "dsr"])
	path := filepath.Join(sl.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(sl.dir, name+".log")
	sl.procs[name] = startVigil(t, h, path, "", logPath)
	logOnFailure(t, name+" log", logPath)
}

// bgpPath is one path of the router's BGP table for a prefix: the peer it
// came from and its communities.
type bgpPath struct {
	Peer        string
	Communities string
}

// routerPaths asks the router's bgpd (vtysh on its vty sockets in vty) for
// the paths it holds for prefix, sorted by peer.
func routerPaths(t *testing.T, vty, prefix string) []bgpPath {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "vtysh", "--vty_socket", vty, "-c", "show bgp ipv4 unicast "+prefix+" json").Output()
	if err != nil {
		t.Fatalf("vtysh: %v %s", err, out)
	}
	var rt struct {
		Paths []struct {
			Peer struct {
				PeerID string `json:"peerId"`
			} `json:"peer"`
			Community struct {
				String string `json:"string"`
			} `json:"community"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(out, &rt); err != nil {
		t.Fatalf("vtysh answered %q: %v", out, err)
	}
	var ps []bgpPath
	for _, p := range rt.Paths {
		ps = append(ps, bgpPath{Peer: p.Peer.PeerID, Communities: p.Community.String})
	}
	slices.SortFunc(ps, func(a, b bgpPath) int { return strings.Compare(a.Peer, b.Peer) })
	return ps
}

// waitPaths waits up to 20 s until the router's paths for prefix come from
// exactly the peers given, each with svcBGPCommunity, and the kernel route
// has as many next hops; it returns how long that took.
func waitPaths(t *testing.T, router *netlab.Host, vty, prefix, why string, peers ...string) time.Duration {
	t.Helper()
	t0 := time.Now()
	for {
		ps := routerPaths(t, vty, prefix)
		var got []string
		ok := true
		for _, p := range ps {
			got = append(got, p.Peer)
			ok = ok && slices.Contains(strings.Fields(p.Communities), svcBGPCommunity)
		}
		if ok && slices.Equal(got, peers) && nexthops(t, router, prefix) == len(peers) {
			return time.Since(t0)
		}
		if time.Since(t0) > 20*time.Second {
			t.Fatalf("%s: after 20s the router has paths %+v for %s (kernel route %q), want one from each of %v with community %s",
				why, ps, prefix, routeOf(t, router, prefix), peers, svcBGPCommunity)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A Service of a bgp pool is announced by every eligible node as a /32
// with the pool's community: the router has one path from each (ECMP).
// With externalTrafficPolicy Local only the node with a ready endpoint
// announces it; SIGTERM withdraws the node's path. A client behind the
// router reaches the Service through the route.
func TestKubeServiceBGP(t *testing.T) {
	sl := newSvcLab(t)
	router, err := sl.lab.AddHost("router", mustPrefix(svcBGPRouter+"/24"))
	if err != nil {
		t.Fatal(err)
	}
	n1, n2 := sl.nodes["n1"].Addr(false).String(), sl.nodes["n2"].Addr(false).String()
	// A client behind the router, on its own network; the nodes route
	// back to it through the router.
	wan := newLab(t)
	client, err := wan.AddHost("client", mustPrefix("10.86.0.100/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := wan.Plug(router, "eth1", mustPrefix("10.86.0.254/24")); err != nil {
		t.Fatal(err)
	}
	if err := router.Sysctl("net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	for h, route := range map[*netlab.Host][]string{client: {"default", "via", "10.86.0.254"},
		sl.nodes["n1"]: {"10.86.0.0/24", "via", svcBGPRouter}, sl.nodes["n2"]: {"10.86.0.0/24", "via", svcBGPRouter}} {
		if out, code := execIn(t, h, 5*time.Second, "ip", slices.Concat([]string{"route", "add"}, route)...); code != 0 {
			t.Fatalf("ip route add %v in %s: %s", route, h.Name, out)
		}
	}
	vty := startFRRIn(t, router, []string{n1, n2}, "", nil)
	sl.startBGP(t, "n1")
	sl.startBGP(t, "n2")

	t0 := time.Now()
	sl.service(t, "front")
	addr, mode := sl.waitAddress(t, "front")
	if addr != "10.85.0.1" || mode != "Proxy" {
		t.Fatalf("allocated %s with ipMode %q, want the pool's first usable, 10.85.0.1, with Proxy", addr, mode)
	}
	host := addr + "/32"
	took := waitPaths(t, router, vty, host, "Cluster policy, endpoints on both nodes", n1, n2)
	t.Logf("%s from n1 and n2 with %s, two next hops, %v after the Service was created (%v after its address)",
		host, svcBGPCommunity, time.Since(t0), took)
	for _, name := range []string{"n1", "n2"} {
		st := statusAt(t, filepath.Join(sl.dir, name+".sock"))
		if st.BGP == nil || !slices.Contains(st.BGP.Announced, host) {
			t.Fatalf("%s's status does not list %s as announced: %+v", name, host, st.BGP)
		}
		if len(st.Services) != 1 || st.Services[0].Service != "web/front" || st.Services[0].Pool != "edge" {
			t.Fatalf("%s's status lists Services %+v", name, st.Services)
		}
	}

	// Traffic through the route: the client's connections reach a node's
	// proxy. Not fatal, so that the announcements are checked on; it
	// needs the node to take the address as its own (a local route), which
	// an l2 slot gives by adding it to the interface.
	fl := &frontLab{client: client}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := fl.ask(t, addr+":80", 4)
		if got["pod-n1"]+got["pod-n2"] == 4 {
			t.Logf("the client behind the router gets answers through %s:80: %v", addr, got)
			break
		}
		if time.Now().After(deadline) {
			var local []string
			for _, n := range []string{"n1", "n2"} {
				out, _ := execIn(t, sl.nodes[n], 5*time.Second, "ip", "route", "get", addr)
				local = append(local, n+": "+strings.TrimSpace(out))
			}
			t.Errorf("the client behind the router gets no answer through %s:80 after 20s (%v); "+
				"the nodes announce it but do not take it as theirs (ip route get %s: %v)", addr, got, addr, local)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}

	// externalTrafficPolicy Local, the one ready endpoint on n2: n1 withdraws.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := sl.admin.CoreV1().Services("web").Get(ctx, "front", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	if _, err := sl.admin.CoreV1().Services("web").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.ApplySlice(t, sl.admin, kubetest.Slice("web", "front-1", "front", "http", 8080,
		kubetest.Endpoint{Address: sl.nodes["n1"].Addr(false), Node: "n1", Ready: false},
		kubetest.Endpoint{Address: sl.nodes["n2"].Addr(false), Node: "n2", Ready: true}))
	took = waitPaths(t, router, vty, host, "Local policy, the ready endpoint on n2 only", n2)
	t.Logf("Local, endpoint on n2 only: n1's path withdrawn, n2's kept, after %v", took)
	// It stays that way: n1 does not come back on its own.
	time.Sleep(3 * time.Second)
	waitPaths(t, router, vty, host, "Local policy, 3 s later", n2)

	// SIGTERM on n2: it withdraws before it closes its session.
	if err := sl.procs["n2"].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	took = waitPaths(t, router, vty, host, "n2 stopped with SIGTERM")
	t.Logf("n2 stopped (SIGTERM): its path withdrawn after %v", took)
	if exited, _ := sl.procs["n2"].Wait(15 * time.Second); !exited {
		t.Fatal("n2 did not exit within 15s of SIGTERM")
	}
}
