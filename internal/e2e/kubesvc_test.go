package e2e

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/vigil-lb/vigil/internal/garp"
	"github.com/vigil-lb/vigil/internal/kubetest"
	"github.com/vigil-lb/vigil/internal/kubeverify"
	"github.com/vigil-lb/vigil/internal/netlab"
)

// svcLab is a cluster whose LoadBalancer Services vigil serves: host api
// with the API server, nodes n1 and n2 (or those named) running vigil and
// each a "pod" of Service web/front on :8080 (host network), and a client.
type svcLab struct {
	lab    *netlab.Lab
	env    *kubetest.Env
	admin  kubernetes.Interface
	client *netlab.Host
	names  []string
	nodes  map[string]*netlab.Host
	procs  map[string]*netlab.Proc
	dir    string
	// dataplane is kubernetes.services.dataplane; "" is proxy.
	dataplane string
	pool      string // the addresses of the pool lan
}

const (
	svcPoolRange  = "10.80.0.200-10.80.0.220"
	svcPoolRange6 = "fd00:80::200-fd00:80::220"
)

func newSvcLab(t *testing.T) *svcLab { t.Helper(); return newSvcLabOf(t, "n1", "n2") }

// newSvcLabOf is newSvcLab with the nodes named, all with the label the
// pool selects (vigil=yes).
func newSvcLabOf(t *testing.T, names ...string) *svcLab {
	t.Helper()
	return newSvcLabWith(t, false, names...)
}

// newSvcLabWith is newSvcLabOf, with v6: the client and nodes also have
// fd00:80::N/64, the pods listen on IPv6 too, and the pool is IPv6
// (svcPoolRange6).
func newSvcLabWith(t *testing.T, v6 bool, names ...string) *svcLab {
	t.Helper()
	if _, _, err := kubetest.Binaries(); err != nil {
		kubetest.Unavailable(t, err)
	}
	sl := &svcLab{lab: newLab(t), names: names, nodes: map[string]*netlab.Host{}, procs: map[string]*netlab.Proc{}, dir: t.TempDir(),
		pool: svcPoolRange}
	addrs := func(v4 string, n int) []netip.Prefix {
		out := []netip.Prefix{mustPrefix(v4)}
		if v6 {
			out = append(out, mustPrefix(fmt.Sprintf("fd00:80::%d/64", n)))
		}
		return out
	}
	if v6 {
		sl.pool = svcPoolRange6
	}
	apiHost, err := sl.lab.AddHost("api", mustPrefix("10.80.0.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	if sl.client, err = sl.lab.AddHost("client", addrs("10.80.0.100/24", 100)...); err != nil {
		t.Fatal(err)
	}
	if sl.env, err = kubetest.Start(kubetest.Options{Host: apiHost}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sl.env.Close)
	sl.admin = sl.env.Admin(t)
	kubetest.CreateNamespace(t, sl.admin, "web")
	kubetest.CreateNamespace(t, sl.admin, "vigil-system") // the allocator's Lease
	var eps []kubetest.Endpoint
	for i, name := range names {
		h, err := sl.lab.AddHost(name, addrs(fmt.Sprintf("10.80.0.%d/24", 11+i), 11+i)...)
		if err != nil {
			t.Fatal(err)
		}
		sl.nodes[name] = h
		serveAnswer(t, h, "0.0.0.0:8080", "pod-"+name)
		if v6 {
			l, err := h.Listen("tcp6", "[::]:8080")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			netlab.Serve(l, func(c net.Conn) { _, _ = io.WriteString(c, "pod-"+name) })
		}
		kubetest.CreateNode(t, sl.admin, kubetest.Node(name, map[string]string{"vigil": "yes"}, true, h.Addr(false)))
		eps = append(eps, kubetest.Endpoint{Address: h.Addr(false), Node: name, Ready: true})
	}
	kubetest.ApplySlice(t, sl.admin, kubetest.Slice("web", "front-1", "front", "http", 8080, eps...))
	return sl
}

// service creates web/NAME of type LoadBalancer and class vigil.io/lb,
// port 80 (http) to 8080, after edit changes it (if given).
func (sl *svcLab) service(t *testing.T, name string, edit ...func(*corev1.Service)) *corev1.Service {
	t.Helper()
	class := "vigil.io/lb"
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &class,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(8080), Protocol: corev1.ProtocolTCP}}}}
	for _, e := range edit {
		e(svc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := sl.admin.CoreV1().Services("web").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create Service web/%s: %v", name, err)
	}
	return out
}

// waitAddress waits until the allocator has written an address into the
// Service's status and returns it with its ipMode.
func (sl *svcLab) waitAddress(t *testing.T, name string) (addr, mode string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		svc, err := sl.admin.CoreV1().Services("web").Get(ctx, name, metav1.GetOptions{})
		cancel()
		if err == nil && len(svc.Status.LoadBalancer.Ingress) > 0 {
			in := svc.Status.LoadBalancer.Ingress[0]
			if in.IPMode != nil {
				mode = string(*in.IPMode)
			}
			return in.IP, mode
		}
		if time.Now().After(deadline) {
			t.Fatalf("Service web/%s has no address after 30s (err %v)", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// events are the reasons and messages of the Events about web/name.
func (sl *svcLab) events(t *testing.T, name string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := sl.admin.CoreV1().Events("web").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, e.Reason+": "+e.Message)
	}
	return out
}

func (sl *svcLab) start(t *testing.T, name string) {
	t.Helper()
	h := sl.nodes[name]
	dataplane := cmp.Or(sl.dataplane, "proxy")
	cfg := fmt.Sprintf(`log: {level: debug}
cluster: lab
node: %[1]s
api: {socket: %[2]q, http: ""}
kubernetes:
  kubeconfig: %[3]s
  state_file: %[4]s
  services:
    dataplane: %[6]s
    hold: 1s
    pools:
      - {name: lan, addresses: [%[5]q], interface: eth0, nodes: "vigil=yes"}
`, name, filepath.Join(sl.dir, name+".sock"), sl.env.Kubeconfig(t, "", sl.env.AdminToken),
		filepath.Join(sl.dir, name+".json"), sl.pool, dataplane)
	path := filepath.Join(sl.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(sl.dir, name+".log")
	sl.procs[name] = startVigil(t, h, path, "", logPath)
	logOnFailure(t, name+" log", logPath)
}

// holders are the nodes that have addr on eth0.
func (sl *svcLab) holders(t *testing.T, addr string) []string {
	t.Helper()
	var out []string
	for _, name := range sl.names {
		ok, err := sl.nodes[name].HasAddr(netip.MustParseAddr(addr))
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			out = append(out, name)
		}
	}
	return out
}

// A Service's address from its status is announced by exactly one node
// (its L2 slot's master) and proxied by vigil to the Service's ready
// endpoints; when that node dies, the other takes the address over on the
// wire, with no API call.
func TestKubeServiceAnnouncedAndProxied(t *testing.T) {
	sl := newSvcLab(t)
	sl.start(t, "n1")
	sl.start(t, "n2")
	t0 := time.Now()
	sl.service(t, "front")
	addr, mode := sl.waitAddress(t, "front")
	t.Logf("address %s (ipMode %s) in status %v after the Service was created", addr, mode, time.Since(t0))
	if addr != "10.80.0.200" || mode != "Proxy" {
		t.Fatalf("allocated %s with ipMode %q, want the pool's first, 10.80.0.200, with Proxy (vigil's dataplane)", addr, mode)
	}

	fl := &frontLab{client: sl.client}
	fl.waitAnswers(t, "10.80.0.200:80", 10, "pod-n1", "pod-n2")
	t.Logf("first answers through the address %v after the Service was created", time.Since(t0))
	deadline := time.Now().Add(10 * time.Second)
	for !slices.ContainsFunc(sl.events(t, "front"), func(e string) bool { return strings.HasPrefix(e, "AddressAllocated: 10.80.0.200") }) {
		if time.Now().After(deadline) {
			t.Fatalf("no AddressAllocated event: %v", sl.events(t, "front"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	owners := sl.holders(t, "10.80.0.200")
	if len(owners) != 1 {
		t.Fatalf("10.80.0.200 held by %v, want exactly one node", owners)
	}
	st := statusAt(t, filepath.Join(sl.dir, owners[0]+".sock"))
	if len(st.Services) != 1 || st.Services[0].Service != "web/front" || !st.Services[0].Here ||
		st.Services[0].Owner != owners[0] || st.Services[0].Endpoints != 2 || st.Services[0].Pool != "lan" {
		t.Fatalf("status of %s lists Services %+v", owners[0], st.Services)
	}

	// The owner dies without a word: the other node's backup slot takes
	// over at VRRP speed.
	t0 = time.Now()
	sl.procs[owners[0]].Cmd.Process.Signal(syscall.SIGKILL)
	sl.procs[owners[0]].Wait(5 * time.Second)
	other := map[string]string{"n1": "n2", "n2": "n1"}[owners[0]]
	deadline = time.Now().Add(10 * time.Second)
	for {
		if slices.Contains(sl.holders(t, "10.80.0.200"), other) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10.80.0.200 not taken over by %s within 10s of %s's death", other, owners[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s took 10.80.0.200 over %v after %s was killed", other, time.Since(t0), owners[0])
	// The dead node's address stays on its interface (a crash leaves it);
	// the client's neighbour entry follows the takeover's GARP, which may
	// come a moment after the address is on the survivor's interface (and
	// Linux takes one ARP update a second per entry): until it does, the
	// client still reaches the dead node, which refuses. Once it names the
	// survivor, the dead node's pod is still an endpoint (no kubelet
	// here), so both pods may answer: each request must succeed.
	a := netip.MustParseAddr("10.80.0.200")
	for deadline = time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m, _ := sl.client.Neighbor(a); m.String() == sl.nodes[other].MAC.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after the takeover the client's neighbour entry for %s does not name %s", a, other)
		}
	}
	got := fl.ask(t, "10.80.0.200:80", 10)
	for k := range got {
		if k != "pod-n1" && k != "pod-n2" {
			t.Fatalf("after the takeover: %v", got)
		}
	}
}

// Without the API nothing is lost: the API server down for 60 s, and a
// vigil restarted meanwhile (it reads the Services from its state file),
// the address answers all along.
func TestKubeServiceSurvivesAPIOutage(t *testing.T) {
	sl := newSvcLab(t)
	sl.start(t, "n1")
	sl.start(t, "n2")
	sl.service(t, "front")
	addr, _ := sl.waitAddress(t, "front")
	fl := &frontLab{client: sl.client}
	fl.waitAnswers(t, addr+":80", 10, "pod-n1", "pod-n2")

	sl.env.StopAPI()
	outage := time.Now()
	restarted := false
	for time.Since(outage) < 60*time.Second {
		got := fl.ask(t, addr+":80", 4)
		if got["pod-n1"]+got["pod-n2"] != 4 {
			t.Fatalf("%v into the API outage: %v", time.Since(outage).Round(time.Second), got)
		}
		if !restarted && time.Since(outage) > 20*time.Second {
			// n2 restarts without the API: its state file has the Service.
			if err := sl.procs["n2"].Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if exited, _ := sl.procs["n2"].Wait(15 * time.Second); !exited {
				t.Fatal("n2 did not stop")
			}
			sl.start(t, "n2")
			restarted = true
		}
		time.Sleep(500 * time.Millisecond)
	}
	if h := sl.holders(t, addr); len(h) != 1 {
		t.Fatalf("after the outage %s is held by %v, want one node", addr, h)
	}
	st := statusAt(t, filepath.Join(sl.dir, "n2.sock"))
	if st.Kubernetes == nil || st.Kubernetes.Origin != "state-file" || len(st.Services) != 1 {
		t.Fatalf("n2 restarted without the API: kubernetes %+v, services %+v", st.Kubernetes, st.Services)
	}
}

// A Service deleted right after an API server restart (etcd kept) frees
// its address within a bounded time. Once, a re-established watch
// delivered nothing and the address stayed held past 30 s; every informer
// is now checked against a consistent list (kubeverify), so the bound is
// its period and grace, with time for a loaded machine.
func TestKubeServiceDeleteAfterAPIRestart(t *testing.T) {
	sl := newSvcLab(t)
	sl.start(t, "n1")
	sl.start(t, "n2")
	sl.service(t, "front")
	addr, _ := sl.waitAddress(t, "front")
	held := time.Now().Add(30 * time.Second)
	for len(sl.holders(t, addr)) != 1 {
		if time.Now().After(held) {
			t.Fatalf("%s held by %v, want one node", addr, sl.holders(t, addr))
		}
		time.Sleep(50 * time.Millisecond)
	}
	sl.env.StopAPI()
	if err := sl.env.StartAPI(); err != nil {
		t.Fatalf("restart the API server: %v", err)
	}
	// The deletion comes once the watches are up again.
	deadline := time.Now().Add(90 * time.Second)
	for _, name := range sl.names {
		for {
			k := statusAt(t, filepath.Join(sl.dir, name+".sock")).Kubernetes
			if k != nil && k.WatchUp && k.LastError == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the watches not up again after the restart: %+v", name, k)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sl.admin.CoreV1().Services("web").Delete(ctx, "front", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	limit := kubeverify.DefaultEvery + kubeverify.Grace + 15*time.Second
	for len(sl.holders(t, addr)) > 0 {
		if time.Since(deleted) > limit {
			t.Fatalf("%s still held by %v %v after its Service was deleted", addr, sl.holders(t, addr), limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("address freed %v after the deletion that followed the API restart", time.Since(deleted).Round(time.Millisecond))
}

// A Service deleted frees its address: no node holds it any more, nobody
// answers ARP for it on the wire, and the proxy no longer listens on it.
func TestKubeServiceDeleteFrees(t *testing.T) {
	sl := newSvcLab(t)
	sl.start(t, "n1")
	sl.start(t, "n2")
	sl.service(t, "front")
	addr, _ := sl.waitAddress(t, "front")
	fl := &frontLab{client: sl.client}
	fl.waitAnswers(t, addr+":80", 10, "pod-n1", "pod-n2")
	holder := sl.holders(t, addr)
	if len(holder) != 1 {
		t.Fatalf("%s held by %v", addr, holder)
	}
	if bad := sl.answeredByOne(t, map[string]string{addr: holder[0]}); len(bad) > 0 {
		t.Fatalf("before the deletion: %v", bad)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sl.admin.CoreV1().Services("web").Delete(ctx, "front", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(sl.holders(t, addr)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s still held by %v 30s after its Service was deleted", addr, sl.holders(t, addr))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// On the wire: ARP probes (RFC 5227, from the client) over two
	// seconds find no one answering for the freed address.
	for range 4 {
		var res garp.ProbeResult
		err := sl.client.Do(func() error {
			var err error
			res, err = garp.Probe(context.Background(), "eth0", netip.MustParseAddr(addr), 500*time.Millisecond)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.MACs) > 0 {
			t.Fatalf("%s answered on the wire by %v after its Service was deleted", addr, res.MACs)
		}
	}
	for _, name := range []string{"n1", "n2"} {
		if st := statusAt(t, filepath.Join(sl.dir, name+".sock")); len(st.Services) != 0 || len(st.Balancers) != 0 {
			t.Fatalf("%s still serves %+v with balancers %+v", name, st.Services, st.Balancers)
		}
	}
}

// externalTrafficPolicy Local: the address goes to the slot of the node
// with the ready endpoint, and follows the endpoint when it moves.
func TestKubeServiceLocalFollowsTheEndpoint(t *testing.T) {
	sl := newSvcLab(t)
	sl.start(t, "n1")
	sl.start(t, "n2")
	svc := sl.service(t, "local")
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := sl.admin.CoreV1().Services("web").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ready := func(on string) {
		var eps []kubetest.Endpoint
		for _, name := range []string{"n1", "n2"} {
			eps = append(eps, kubetest.Endpoint{Address: sl.nodes[name].Addr(false), Node: name, Ready: name == on})
		}
		kubetest.ApplySlice(t, sl.admin, kubetest.Slice("web", "local-1", "local", "http", 8080, eps...))
	}
	waitHolder := func(addr, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			if h := sl.holders(t, addr); len(h) == 1 && h[0] == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s held by %v after 20s, want %s (its only ready endpoint)", addr, sl.holders(t, addr), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, on := range []string{"n2", "n1", "n2"} {
		ready(on)
		addr, _ := sl.waitAddress(t, "local")
		waitHolder(addr, on)
		fl := &frontLab{client: sl.client}
		fl.waitAnswers(t, addr+":80", 6, "pod-"+on)
	}
}
