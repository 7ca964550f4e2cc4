package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/kubetest"
	"github.com/vigil-lb/vigil/internal/manifest"
)

// kubeLab is the balancer lab with a real kube-apiserver on host "api"
// (10.78.0.2), reached by vigil over the lab switch, and the three backend
// hosts as control-plane Nodes.
type kubeLab struct {
	*balancerLab
	env   *kubetest.Env
	admin kubernetes.Interface
	state string // the state file
}

const (
	kubeAPIAddr  = "10.78.0.2"
	kubeDeadAddr = "10.78.0.9" // the kubeconfig's server in the fallback test: nobody there
	cpLabel      = "node-role.kubernetes.io/control-plane"
)

func newKubeLab(t *testing.T) *kubeLab {
	t.Helper()
	if _, _, err := kubetest.Binaries(); err != nil {
		kubetest.Unavailable(t, err)
	}
	kl := &kubeLab{balancerLab: newBalancerLab(t)}
	apiHost, err := kl.lab.AddHost("api", mustPrefix(kubeAPIAddr+"/24"))
	if err != nil {
		t.Fatal(err)
	}
	kl.env, err = kubetest.Start(kubetest.Options{Host: apiHost, SANs: []netip.Addr{netip.MustParseAddr(kubeDeadAddr)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kl.env.Close)
	kl.admin = kl.env.Admin(t)
	kl.state = filepath.Join(filepath.Dir(kl.cfg), "kubernetes.json")
	return kl
}

// node creates backend host name as a control-plane Node.
func (kl *kubeLab) node(t *testing.T, name string) {
	t.Helper()
	kubetest.CreateNode(t, kl.admin, kubetest.Node(name, map[string]string{cpLabel: ""}, true,
		kl.backends[name].host.Addr(false)))
}

// config writes vigil's config: the API balancer's backends are the
// control-plane Nodes, read with token from the kubeconfig's server
// (with the fallback servers given).
func (kl *kubeLab) config(t *testing.T, token, server string, fallbacks ...string) {
	t.Helper()
	kubeconfig := kl.env.Kubeconfig(t, server, token)
	fb := ""
	if len(fallbacks) > 0 {
		fb = fmt.Sprintf("\n  fallback_servers: [%s]", strings.Join(fallbacks, ", "))
	}
	cfg := fmt.Sprintf(`log: {level: debug}
api: {socket: %q}
node: lb
kubernetes:
  kubeconfig: %s
  state_file: %s%s
vrrp:
  instances:
    - {name: api, interface: eth0, vrid: 61, priority: 150, advert_interval: 100ms, vips: [%s/24]}
balancers:
  - name: api
    listen: ["%s:9445"]
    check: {http: {path: /readyz}, interval: 200ms, timeout: 150ms, rise: 1, fall: 2}
    drain_timeout: 1s
    backends_from: {nodes: {selector: %q, port: 6443}}
`, kl.socket(), kubeconfig, kl.state, fb, balancerVIP, balancerVIP, cpLabel)
	if err := os.WriteFile(kl.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (kl *kubeLab) socket() string { return filepath.Join(filepath.Dir(kl.cfg), "vigil.sock") }

// startVigil starts the daemon and waits for its control socket.
func (kl *kubeLab) startVigil(t *testing.T) {
	t.Helper()
	kl.proc = startVigil(t, kl.lb, kl.cfg, filepath.Join(filepath.Dir(kl.cfg), "vigil.pid"), kl.log)
	logOnFailure(t, "vigil log", kl.log)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(kl.socket()); err == nil {
			return
		}
		if kl.proc.Exited() || time.Now().After(deadline) {
			t.Fatal("vigil did not open its control socket within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (kl *kubeLab) stopVigil(t *testing.T) {
	t.Helper()
	if err := kl.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if exited, _ := kl.proc.Wait(15 * time.Second); !exited {
		t.Fatal("vigil did not stop within 15s of SIGTERM")
	}
}

// rotation is the balancer's backends that are up, by backend host name.
func (kl *kubeLab) rotation(t *testing.T) (names []string, snap api.Snapshot) {
	t.Helper()
	// In process: a race-built vigil status takes a second to start.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	snap, err := api.Fetch(ctx, kl.socket())
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, b := range snap.Balancers {
		for _, be := range b.Backends {
			if be.Up {
				names = append(names, kl.hostOf(be.Address))
			}
		}
	}
	slices.Sort(names)
	return names, snap
}

func (kl *kubeLab) hostOf(addr string) string {
	for name, b := range kl.backends {
		if strings.HasPrefix(addr, b.host.Addr(false).String()+":") {
			return name
		}
	}
	return addr
}

// waitRotation waits until exactly want is in rotation and returns how
// long that took.
func (kl *kubeLab) waitRotation(t *testing.T, d time.Duration, want ...string) time.Duration {
	t.Helper()
	t0 := time.Now()
	for {
		got, _ := kl.rotation(t)
		if slices.Equal(got, want) {
			return time.Since(t0)
		}
		if time.Since(t0) > d {
			t.Fatalf("rotation %v after %v, want %v", got, d, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answers sends n requests through the VIP and returns who answered.
func (kl *kubeLab) answers(t *testing.T, n int) map[string]int {
	t.Helper()
	got, failures := kl.load(n, 0)
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed, first: %v", len(failures), n, failures[0])
	}
	return tally(got)
}

// blockAPI cuts the network between the balancer host and the API (an
// nftables table dropping both directions, so an open watch hears nothing
// either) or mends it.
func (kl *kubeLab) blockAPI(t *testing.T, block bool) {
	t.Helper()
	args := []string{"delete", "table", "inet", "kube_cut"}
	if block {
		rules := filepath.Join(t.TempDir(), "cut.nft")
		err := os.WriteFile(rules, []byte(`table inet kube_cut {
	chain in { type filter hook input priority 0; ip saddr `+kubeAPIAddr+` drop; }
	chain out { type filter hook output priority 0; ip daddr `+kubeAPIAddr+` drop; }
}
`), 0o644)
		if err != nil {
			t.Fatal(err)
		}
		args = []string{"-f", rules}
	}
	if out, code := execIn(t, kl.lb, 10*time.Second, "nft", args...); code != 0 {
		t.Fatalf("cutting the API off (%v): %s", block, out)
	}
}

// The shipped ClusterRole is enough: with a non-admin token bound to it,
// Nodes added and deleted change the rotation, hitless for the others; the
// status says where each backend came from and what the source read.
func TestKubeNodesDriveTheRotation(t *testing.T) {
	kl := newKubeLab(t)
	kl.env.Bind(t, manifest.ClusterRole(false))
	kl.node(t, "be1")
	kl.node(t, "be2")
	kl.config(t, kl.env.UserToken, "")
	kl.startVigil(t)
	kl.waitRotation(t, 15*time.Second, "be1", "be2")
	if got := kl.answers(t, 20); got["be1"] == 0 || got["be2"] == 0 || len(got) != 2 {
		t.Fatalf("answers %v, want be1 and be2", got)
	}

	kl.node(t, "be3")
	added := kl.waitRotation(t, 10*time.Second, "be1", "be2", "be3")
	kubetest.DeleteNode(t, kl.admin, "be1")
	removed := kl.waitRotation(t, 10*time.Second, "be2", "be3")
	t.Logf("Node added -> in rotation %v; Node deleted -> out %v (status polled every 20 ms)", added, removed)
	if got := kl.answers(t, 20); got["be1"] != 0 || got["be2"] == 0 || got["be3"] == 0 {
		t.Fatalf("answers after the changes %v, want be2 and be3 only", got)
	}

	_, snap := kl.rotation(t)
	k := snap.Kubernetes
	if k == nil || !k.Synced || !k.WatchUp || k.Origin != "api" || k.Nodes != 2 || k.ChangesApplied < 2 ||
		k.Server != kubeAPIAddr+":6443" {
		t.Fatalf("kubernetes status %+v", k)
	}
	for _, be := range snap.Balancers[0].Backends {
		if want := "node " + kl.hostOf(be.Address); be.Source != want {
			t.Fatalf("backend %s source %q, want %q", be.Address, be.Source, want)
		}
	}
	m := metrics(t, kl.lb)
	for _, want := range []string{"vigil_kubernetes_watch_up 1", "vigil_kubernetes_synced 1",
		`vigil_kubernetes_objects{kind="node"} 2`, "vigil_kubernetes_changes_applied_total", "vigil_kubernetes_last_sync_timestamp_seconds"} {
		if !strings.Contains(m, want) {
			t.Fatalf("metrics lack %q", want)
		}
	}
	log, _ := os.ReadFile(kl.log)
	if !strings.Contains(string(log), "member change applied") || !strings.Contains(string(log), "node be3") {
		t.Fatal("the log does not say which member change was applied")
	}
}

// Without the API nothing changes: cut off for 10 s, killed, and with a
// Node deleted meanwhile, vigil keeps its rotation, says so in status, and
// applies the deletion once the API is reachable again. A restart while the
// API is down serves the state file's members.
func TestKubeAPIOutageChangesNothing(t *testing.T) {
	kl := newKubeLab(t)
	for _, n := range []string{"be1", "be2", "be3"} {
		kl.node(t, n)
	}
	kl.config(t, kl.env.AdminToken, "")
	kl.startVigil(t)
	kl.waitRotation(t, 15*time.Second, "be1", "be2", "be3")

	kl.blockAPI(t, true)
	kubetest.DeleteNode(t, kl.admin, "be2") // vigil cannot see this
	kl.env.StopAPI()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		if got, _ := kl.rotation(t); !slices.Equal(got, []string{"be1", "be2", "be3"}) {
			t.Fatalf("rotation changed without the API: %v", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := kl.answers(t, 30); len(got) != 3 {
		t.Fatalf("answers without the API %v, want all three", got)
	}

	// A restart while the API is down: the state file holds all three.
	kl.stopVigil(t)
	kl.startVigil(t)
	kl.waitRotation(t, 15*time.Second, "be1", "be2", "be3")
	if _, snap := kl.rotation(t); snap.Kubernetes == nil || snap.Kubernetes.Origin != "state-file" || snap.Kubernetes.Synced {
		t.Fatalf("after a restart without the API: kubernetes status %+v", snap.Kubernetes)
	}

	if err := kl.env.StartAPI(); err != nil {
		t.Fatal(err)
	}
	kl.blockAPI(t, false)
	kl.waitRotation(t, 30*time.Second, "be1", "be3")
	if _, snap := kl.rotation(t); !snap.Kubernetes.Synced || snap.Kubernetes.Origin != "api" {
		t.Fatalf("after the API came back: kubernetes status %+v", snap.Kubernetes)
	}
}

// The kubeconfig's server (the API VIP in a bootstrap) does not answer:
// vigil reads the API through its fallback server, with the kubeconfig
// server's certificate name.
func TestKubeFallbackServer(t *testing.T) {
	kl := newKubeLab(t)
	kl.node(t, "be1")
	kl.config(t, kl.env.AdminToken, "https://"+kubeDeadAddr+":6443", kl.env.URL)
	kl.startVigil(t)
	kl.waitRotation(t, 20*time.Second, "be1")
	if _, snap := kl.rotation(t); snap.Kubernetes.Server != kubeAPIAddr+":6443" {
		t.Fatalf("server in use %q, want the fallback %s:6443", snap.Kubernetes.Server, kubeAPIAddr)
	}
}

// A token without the ClusterRole is refused by RBAC: vigil says why in its
// status and changes nothing (no members, the balancer has no backend).
func TestKubeRBACDenialIsReported(t *testing.T) {
	kl := newKubeLab(t)
	kl.node(t, "be1")
	kl.config(t, kl.env.UserToken, "")
	kl.startVigil(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		names, snap := kl.rotation(t)
		if len(names) != 0 {
			t.Fatalf("backends %v from an API that refused vigil", names)
		}
		if k := snap.Kubernetes; k != nil && strings.Contains(k.LastError, "forbidden") && !k.Synced && !k.WatchUp {
			if !strings.Contains(k.LastError, "nodes") {
				t.Fatalf("the error does not name the resource: %q", k.LastError)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no forbidden error in status after 20s: %+v", snap.Kubernetes)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
