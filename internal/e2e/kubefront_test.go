package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/kubetest"
	"github.com/vigil-lb/vigil/internal/netlab"
)

// frontLab is OpenShift's on-prem front door run by vigil alone: two
// control-plane nodes, each with its "kube-apiserver" on :6443 (and a
// readiness port :6444), vigil holding the API VIP and the ingress VIP, a
// real kube-apiserver on host api for Nodes and the router's EndpointSlice.
type frontLab struct {
	lab    *netlab.Lab
	env    *kubetest.Env
	client *netlab.Host
	nodes  map[string]*frontNode
	dir    string
}

type frontNode struct {
	host    *netlab.Host
	readyz  net.Listener // :6444, closed to make the API balancer's check fail
	router  net.Listener // :8444, this node's ingress router
	socket  string
	logPath string
}

const (
	frontAPIVIP     = "10.79.0.10"
	frontIngressVIP = "10.79.0.20"
)

func newFrontLab(t *testing.T) *frontLab {
	t.Helper()
	if _, _, err := kubetest.Binaries(); err != nil {
		kubetest.Unavailable(t, err)
	}
	fl := &frontLab{lab: newLab(t), nodes: map[string]*frontNode{}, dir: t.TempDir()}
	apiHost, err := fl.lab.AddHost("api", mustPrefix("10.79.0.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	if fl.client, err = fl.lab.AddHost("client", mustPrefix("10.79.0.100/24")); err != nil {
		t.Fatal(err)
	}
	if fl.env, err = kubetest.Start(kubetest.Options{Host: apiHost}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fl.env.Close)
	kubetest.CreateNamespace(t, fl.env.Admin(t), "ingress")
	for i, name := range []string{"m1", "m2"} {
		h, err := fl.lab.AddHost(name, mustPrefix(fmt.Sprintf("10.79.0.%d/24", 11+i)))
		if err != nil {
			t.Fatal(err)
		}
		n := &frontNode{host: h, socket: filepath.Join(fl.dir, name+".sock"), logPath: filepath.Join(fl.dir, name+".log")}
		serveAnswer(t, h, "0.0.0.0:6443", "apiserver-"+name)
		n.readyz = serveAnswer(t, h, "0.0.0.0:6444", "ok")
		fl.nodes[name] = n
		kubetest.CreateNode(t, fl.env.Admin(t), kubetest.Node(name, map[string]string{cpLabel: ""}, true, h.Addr(false)))
	}
	return fl
}

// serveAnswer answers every connection to addr in h with answer.
func serveAnswer(t *testing.T, h *netlab.Host, addr, answer string) net.Listener {
	t.Helper()
	l, err := h.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	netlab.Serve(l, func(c net.Conn) { _, _ = io.WriteString(c, answer) })
	return l
}

// router makes node's router ready (listening on :8444 and a ready
// endpoint of ingress/router) and the other one's not.
func (fl *frontLab) router(t *testing.T, on string) {
	t.Helper()
	var eps []kubetest.Endpoint
	for name, n := range fl.nodes {
		if name == on && n.router == nil {
			n.router = serveAnswer(t, n.host, "0.0.0.0:8444", "router-"+name)
		}
		eps = append(eps, kubetest.Endpoint{Address: n.host.Addr(false), Node: name, Ready: name == on})
	}
	slices.SortFunc(eps, func(a, b kubetest.Endpoint) int { return a.Address.Compare(b.Address) })
	kubetest.ApplySlice(t, fl.env.Admin(t), kubetest.Slice("ingress", "router-1", "router", "https", 8444, eps...))
}

func (fl *frontLab) start(t *testing.T, name string, priority int) {
	t.Helper()
	n := fl.nodes[name]
	cfg := fmt.Sprintf(`log: {level: debug}
api: {socket: %[1]q, http: ""}
node: %[2]s
kubernetes: {kubeconfig: %[3]s, state_file: %[4]s}
vrrp:
  instances:
    - name: api
      interface: eth0
      vrid: 71
      priority: %[5]d
      advert_interval: 100ms
      vips: [%[6]s/24]
      unicast_peers_from: {nodes: {selector: %[7]q}}
    - name: ingress
      interface: eth0
      vrid: 72
      priority: %[5]d
      advert_interval: 100ms
      vips: [%[8]s/24]
      unicast_peers_from: {nodes: {selector: %[7]q}}
      track: {endpoints: [{service: ingress/router, weight: 0}]}
balancers:
  - name: api
    listen: ["%[6]s:9445"]
    redirect_from: 6443
    check: {port: 6444, interval: 200ms, timeout: 150ms, rise: 1, fall: 2}
    backends_from: {nodes: {selector: %[7]q, port: 6443}}
  - name: ingress
    listen: ["%[8]s:8443"]
    backends_from: {endpoints: {service: ingress/router, port: https}}
`, n.socket, name, fl.env.Kubeconfig(t, "", fl.env.AdminToken), filepath.Join(fl.dir, name+".json"),
		priority, frontAPIVIP, cpLabel, frontIngressVIP)
	path := filepath.Join(fl.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	startVigil(t, n.host, path, "", n.logPath)
	logOnFailure(t, name+" log", n.logPath)
}

func (fl *frontLab) status(t *testing.T, name string) (api.Snapshot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return api.Fetch(ctx, fl.nodes[name].socket)
}

// waitState waits until each node's instance is in the state given.
func (fl *frontLab) waitState(t *testing.T, instance string, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := map[string]string{}
		for name := range fl.nodes {
			if snap, err := fl.status(t, name); err == nil {
				for _, in := range snap.Instances {
					if in.Name == instance {
						got[name] = in.State
					}
				}
			}
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s: states %v after 20s, want %v", instance, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ask connects from the client to addr n times and counts the answers.
func (fl *frontLab) ask(t *testing.T, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		c, err := fl.client.Dial(ctx, "tcp4", addr)
		cancel()
		if err != nil {
			got["error: "+err.Error()]++
			continue
		}
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			got["error: "+err.Error()]++
			continue
		}
		got[string(b)]++
	}
	return got
}

// waitAnswers asks addr in rounds of n until the answers are exactly want's
// keys (each at least once).
func (fl *frontLab) waitAnswers(t *testing.T, addr string, n int, want ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := fl.ask(t, addr, n)
		keys := make([]string, 0, len(got))
		for k := range got {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if slices.Equal(keys, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s answered %v, want only %v", addr, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The whole control-plane front door from the API: peers, backends from
// Nodes and from the router's endpoints, the ingress VIP only where a router
// is ready, and the API port redirect only while the balancer is healthy.
func TestKubeControlPlaneFrontDoor(t *testing.T) {
	fl := newFrontLab(t)
	fl.router(t, "m2")
	fl.start(t, "m1", 150)
	fl.start(t, "m2", 100)

	// Unicast peers come from the Nodes: each node has the other.
	fl.waitState(t, "api", map[string]string{"m1": "MASTER", "m2": "BACKUP"})
	for name, other := range map[string]string{"m1": "10.79.0.12", "m2": "10.79.0.11"} {
		snap, err := fl.status(t, name)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range snap.Instances {
			if !slices.Equal(in.UnicastPeers, []string{other}) {
				t.Fatalf("%s instance %s: unicast peers %v, want [%s]", name, in.Name, in.UnicastPeers, other)
			}
		}
	}

	// Clients of VIP:6443 reach the balancer (both nodes' API servers),
	// and the ingress VIP is where the ready router is.
	fl.waitAnswers(t, frontAPIVIP+":6443", 10, "apiserver-m1", "apiserver-m2")
	fl.waitState(t, "ingress", map[string]string{"m1": "FAULT", "m2": "MASTER"})
	fl.waitAnswers(t, frontIngressVIP+":8443", 4, "router-m2")

	// The router moves to m1: so does the ingress VIP, and the ingress
	// balancer's backend.
	fl.router(t, "m1")
	fl.waitState(t, "ingress", map[string]string{"m1": "MASTER", "m2": "FAULT"})
	fl.waitAnswers(t, frontIngressVIP+":8443", 4, "router-m1")

	// Both readiness ports close: the API balancer has no backend, its
	// redirect goes, and VIP:6443 reaches m1's own API server directly.
	for _, n := range fl.nodes {
		n.readyz.Close()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		snap, err := fl.status(t, "m1")
		if err != nil {
			t.Fatal(err)
		}
		if len(snap.Redirects) != 1 || snap.Redirects[0].From != frontAPIVIP+":6443" {
			t.Fatalf("redirects %+v, want one from %s:6443", snap.Redirects, frontAPIVIP)
		}
		if !snap.Redirects[0].Installed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the redirect is still installed 20s after the balancer lost its backends: %+v", snap.Redirects)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// m1's own API server, not the balancer: m2 would answer half.
	fl.waitAnswers(t, frontAPIVIP+":6443", 10, "apiserver-m1")
}
