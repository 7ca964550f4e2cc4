package lbsvc

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/vigil-lb/vigil/internal/kubetest"
	"github.com/vigil-lb/vigil/internal/kubeverify"
	"github.com/vigil-lb/vigil/internal/lbipam"
	"github.com/vigil-lb/vigil/internal/manifest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

func rng(first, last string) lbipam.Range {
	return lbipam.Range{First: netip.MustParseAddr(first), Last: netip.MustParseAddr(last)}
}

var testPools = []lbipam.Pool{
	{Name: "default", AutoAssign: true, Ranges: []lbipam.Range{rng("192.0.2.10", "192.0.2.19"), rng("2001:db8::10", "2001:db8::1f")}},
	{Name: "other", Ranges: []lbipam.Range{rng("198.51.100.1", "198.51.100.3")}},
	{Name: "one", Ranges: []lbipam.Range{rng("203.0.113.1", "203.0.113.1")}},
}

// fixture is one test's namespace on the shared API server; controllers
// run as the non-admin user bound to the manifest's ClusterRole.
type fixture struct {
	t     *testing.T
	env   *kubetest.Env
	admin kubernetes.Interface
	user  kubernetes.Interface
	ns    string
}

var nsName = regexp.MustCompile(`[^a-z0-9]+`)

func setup(t *testing.T) *fixture {
	t.Helper()
	env := kubetest.Shared(t)
	f := &fixture{t: t, env: env, admin: env.Admin(t)}
	f.ns = strings.Trim(nsName.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(f.ns) > 40 {
		f.ns = f.ns[:40]
	}
	// Unique per run: without a namespace controller a deleted namespace
	// stays (Terminating) for the API server's life.
	f.ns += "-" + strings.ToLower(rand.Text()[:6])
	kubetest.CreateNamespace(t, f.admin, f.ns)
	t.Cleanup(func() {
		_ = f.admin.CoreV1().Namespaces().Delete(context.Background(), f.ns, metav1.DeleteOptions{})
	})
	env.Bind(t, manifest.ClusterRole(true))
	user, err := kubernetes.NewForConfig(env.UserConfig())
	if err != nil {
		t.Fatal(err)
	}
	f.user = user
	return f
}

// testOptions are fast election timings; the Lease and the Services are
// the test namespace's.
func (f *fixture) options(node string) Options {
	return Options{
		Pools: testPools, Node: node, LeaseNamespace: f.ns, Namespace: f.ns,
		Hold:          time.Second,
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 300 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(testWriter{f.t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", node),
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	if os.Getenv("VIGIL_TEST_LOG") != "" {
		w.t.Log(strings.TrimSpace(string(b)))
	}
	return len(b), nil
}

type running struct {
	*Controller
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *running) stop() {
	r.cancel()
	<-r.done
}

func (f *fixture) start(o Options, before ...func(*Controller)) *running {
	f.t.Helper()
	c, err := New(f.user, o)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, b := range before {
		b(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Controller: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := c.Run(ctx); err != nil {
			f.t.Errorf("Run: %v", err)
		}
	}()
	f.t.Cleanup(r.stop)
	return r
}

// leader waits until one of rs leads and its takeover hold has passed.
func (f *fixture) leader(rs ...*running) *running {
	f.t.Helper()
	var lead *running
	eventually(f.t, 20*time.Second, "a leader", func() bool {
		for _, r := range rs {
			if r.Status().Leading {
				lead = r
				return true
			}
		}
		return false
	})
	time.Sleep(lead.o.Hold)
	return lead
}

func eventually(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func class(s string) *string { return &s }

// svc creates a LoadBalancer Service of vigil's class, single-stack IPv4,
// one TCP port (80 → 8080), changed by mut.
func (f *fixture) svc(name string, mut ...func(*corev1.Service)) *corev1.Service {
	f.t.Helper()
	single := corev1.IPFamilyPolicySingleStack
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns, Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: class(Class),
			IPFamilyPolicy:    &single,
			Selector:          map[string]string{"app": name},
			Ports:             []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt(8080)}},
		},
	}
	for _, m := range mut {
		m(s)
	}
	created, err := f.admin.CoreV1().Services(f.ns).Create(context.Background(), s, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatalf("create Service %s/%s: %v", f.ns, name, err)
	}
	return created
}

func (f *fixture) get(name string) *corev1.Service {
	f.t.Helper()
	s, err := f.admin.CoreV1().Services(f.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *fixture) addrs(name string) []string {
	f.t.Helper()
	var out []string
	for _, in := range f.get(name).Status.LoadBalancer.Ingress {
		out = append(out, in.IP)
	}
	return out
}

// wait waits until name has n addresses and returns them.
func (f *fixture) wait(name string, n int) []string {
	f.t.Helper()
	var got []string
	eventually(f.t, 20*time.Second, fmt.Sprintf("%d addresses for %s", n, name), func() bool {
		got = f.addrs(name)
		return len(got) == n
	})
	return got
}

// event waits for an Event of reason on name whose message contains all of want.
func (f *fixture) event(name, reason string, want ...string) corev1.Event {
	f.t.Helper()
	var found corev1.Event
	eventually(f.t, 20*time.Second, fmt.Sprintf("%s event on %s with %q", reason, name, want), func() bool {
		evs, err := f.admin.CoreV1().Events(f.ns).List(context.Background(), metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + name + ",reason=" + reason})
		if err != nil {
			f.t.Fatal(err)
		}
		for _, e := range evs.Items {
			if !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(e.Message, w) }) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

func annotate(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Annotations[k] = v }
}

func TestAllocateFromPool(t *testing.T) {
	f := setup(t)
	a := f.start(f.options("node-a"))
	b := f.start(f.options("node-b"))
	lead := f.leader(a, b)
	f.svc("web", func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromString("dns")})
	})
	if got := f.wait("web", 1); got[0] != "192.0.2.10" {
		t.Fatalf("addresses %v, want the pool's first", got)
	}
	if in := f.get("web").Status.LoadBalancer.Ingress[0]; in.IPMode == nil || *in.IPMode != corev1.LoadBalancerIPModeVIP {
		t.Fatalf("ingress %+v: want ipMode VIP", in)
	}
	e := f.event("web", ReasonAllocated, "192.0.2.10 from pool default")
	if e.Type != corev1.EventTypeNormal || e.Source.Host != lead.o.Node {
		t.Fatalf("event %+v", e)
	}
	want := []Service{{
		Key: Key{f.ns, "web"}, Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, Pool: "default",
		ExternalTrafficPolicy: "Local", Families: []lbipam.Family{lbipam.IPv4},
	}}
	// Every node serves it, elected or not.
	for _, r := range []*running{a, b} {
		eventually(t, 10*time.Second, "web in Latest of "+r.o.Node, func() bool { return len(r.Latest()) == 1 })
		got := r.Latest()[0]
		ports := got.Ports
		got.Ports = nil
		if !equalServices([]Service{got}, want) {
			t.Fatalf("%s serves %+v, want %+v", r.o.Node, got, want[0])
		}
		if len(ports) != 2 || ports[0].Port != 80 || ports[0].TargetPort != 8080 || ports[0].Protocol != "TCP" ||
			ports[1].TargetPortName != "dns" || ports[1].Protocol != "UDP" || ports[0].NodePort == 0 {
			t.Fatalf("%s ports %+v", r.o.Node, ports)
		}
	}
	st := lead.Status()
	if st.Leader != lead.o.Node || st.Identity != lead.o.Node || len(st.Services) != 1 || st.Writes == 0 {
		t.Fatalf("leader status %+v", st)
	}
}

func equalServices(a, b []Service) bool {
	return fmt.Sprintf("%+v", a) == fmt.Sprintf("%+v", b)
}

// Requested addresses (annotation or spec.loadBalancerIP), a named pool,
// and bad annotations, which change no status.
func TestRequested(t *testing.T) {
	f := setup(t)
	f.leader(f.start(f.options("node-a")))
	f.svc("ann", annotate(AnnotationAddress, "192.0.2.15"))
	f.svc("field", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "192.0.2.16" })
	f.svc("pool", annotate(AnnotationPool, "other"))
	f.svc("bad", annotate(AnnotationAddress, "192.0.2.300"))
	f.svc("nopool", annotate(AnnotationPool, "nonesuch"))
	f.svc("outside", annotate(AnnotationAddress, "10.1.2.3"))
	for name, want := range map[string]string{"ann": "192.0.2.15", "field": "192.0.2.16", "pool": "198.51.100.1"} {
		if got := f.wait(name, 1); got[0] != want {
			t.Errorf("%s: %v, want %s", name, got, want)
		}
	}
	f.event("bad", ReasonFailed, AnnotationAddress, `"192.0.2.300"`)
	f.event("nopool", ReasonFailed, AnnotationPool, `"nonesuch"`, "unknown pool")
	f.event("outside", ReasonFailed, "address in no pool", "10.1.2.3")
	for _, name := range []string{"bad", "nopool", "outside"} {
		if got := f.addrs(name); len(got) != 0 {
			t.Errorf("%s: %v, want none", name, got)
		}
	}
	// A bad edit of a Service that has an address keeps it.
	s := f.get("ann")
	s.Annotations[AnnotationPool] = "typo"
	if _, err := f.admin.CoreV1().Services(f.ns).Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.event("ann", ReasonFailed, `"typo"`)
	if got := f.addrs("ann"); !slices.Equal(got, []string{"192.0.2.15"}) {
		t.Fatalf("after a bad edit: %v", got)
	}
}

// An address an older Service holds is not given to a newer one.
func TestRequestedTaken(t *testing.T) {
	f := setup(t)
	f.leader(f.start(f.options("node-a")))
	f.svc("old", annotate(AnnotationAddress, "192.0.2.12"))
	f.wait("old", 1)
	time.Sleep(1100 * time.Millisecond) // creationTimestamp has seconds
	f.svc("new", annotate(AnnotationAddress, "192.0.2.12"))
	e := f.event("new", ReasonFailed, "address taken", "192.0.2.12", f.ns+"/old")
	if e.Type != corev1.EventTypeWarning {
		t.Fatalf("event type %s", e.Type)
	}
	if got := f.addrs("new"); len(got) != 0 {
		t.Fatalf("new got %v", got)
	}
	if got := f.addrs("old"); !slices.Equal(got, []string{"192.0.2.12"}) {
		t.Fatalf("old has %v", got)
	}
}

func TestSharingKey(t *testing.T) {
	f := setup(t)
	f.leader(f.start(f.options("node-a")))
	port := func(p int32) func(*corev1.Service) {
		return func(s *corev1.Service) { s.Spec.Ports[0].Port = p }
	}
	f.svc("http", annotate(AnnotationSharingKey, "k"), port(80))
	first := f.wait("http", 1)
	f.svc("https", annotate(AnnotationSharingKey, "k"), port(443))
	f.svc("clash", annotate(AnnotationSharingKey, "k"), port(80))
	if got := f.wait("https", 1); !slices.Equal(got, first) {
		t.Fatalf("https %v, want http's %v", got, first)
	}
	if got := f.wait("clash", 1); slices.Equal(got, first) {
		t.Fatalf("clash shares %v although its port clashes", got)
	}
}

func TestPoolExhausted(t *testing.T) {
	f := setup(t)
	f.leader(f.start(f.options("node-a")))
	for i := range 3 {
		f.svc(fmt.Sprintf("s%d", i), annotate(AnnotationPool, "other"))
	}
	for i := range 3 {
		f.wait(fmt.Sprintf("s%d", i), 1)
	}
	f.svc("s3", annotate(AnnotationPool, "other"))
	f.event("s3", ReasonFailed, "pool exhausted", "pool other")
	if got := f.addrs("s3"); len(got) != 0 {
		t.Fatalf("s3 got %v", got)
	}
}

// Another class, and no class without default_class, are left alone; a
// Service that stops being of type LoadBalancer gives its address back.
func TestClass(t *testing.T) {
	f := setup(t)
	f.leader(f.start(f.options("node-a")))
	f.svc("other", func(s *corev1.Service) { s.Spec.LoadBalancerClass = class("example.com/lb") })
	f.svc("none", func(s *corev1.Service) { s.Spec.LoadBalancerClass = nil })
	f.svc("ours")
	f.wait("ours", 1)
	time.Sleep(300 * time.Millisecond) // several coalesce windows
	for _, name := range []string{"other", "none"} {
		if got := f.addrs(name); len(got) != 0 {
			t.Fatalf("%s got %v", name, got)
		}
	}

	s := f.get("ours")
	s.Spec.Type = corev1.ServiceTypeClusterIP
	s.Spec.LoadBalancerClass = nil
	for i := range s.Spec.Ports {
		s.Spec.Ports[i].NodePort = 0
	}
	s.Spec.ExternalTrafficPolicy = ""
	if _, err := f.admin.CoreV1().Services(f.ns).Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "ours cleared", func() bool { return len(f.addrs("ours")) == 0 })
}

func TestDefaultClass(t *testing.T) {
	f := setup(t)
	o := f.options("node-a")
	o.DefaultClass = true
	f.leader(f.start(o))
	f.svc("none", func(s *corev1.Service) { s.Spec.LoadBalancerClass = nil })
	f.svc("other", func(s *corev1.Service) { s.Spec.LoadBalancerClass = class("example.com/lb") })
	f.wait("none", 1)
	time.Sleep(300 * time.Millisecond)
	if got := f.addrs("other"); len(got) != 0 {
		t.Fatalf("other got %v", got)
	}
}

// A freed address goes to no other Service for Hold.
func TestHold(t *testing.T) {
	f := setup(t)
	o := f.options("node-a")
	o.Hold = 3 * time.Second
	f.leader(f.start(o))
	f.svc("a", annotate(AnnotationPool, "one"))
	f.wait("a", 1)
	if err := f.admin.CoreV1().Services(f.ns).Delete(context.Background(), "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	f.svc("b", annotate(AnnotationPool, "one"))
	f.event("b", ReasonFailed, "pool exhausted")
	got := f.wait("b", 1)
	after := time.Since(deleted)
	if got[0] != "203.0.113.1" || after < o.Hold {
		t.Fatalf("b got %v %v after a's delete, want 203.0.113.1 after %v", got, after, o.Hold)
	}
	t.Logf("freed address reused after %v (hold %v)", after.Round(time.Millisecond), o.Hold)
}

// 200 Services created at once, three controllers: every Service gets
// exactly one address, no two the same.
func TestRace(t *testing.T) {
	f := setup(t)
	pools := []lbipam.Pool{{Name: "big", AutoAssign: true, Ranges: []lbipam.Range{rng("10.200.0.1", "10.200.3.254")}}}
	var rs []*running
	for i := range 3 {
		o := f.options(fmt.Sprintf("node-%d", i))
		o.Pools = pools
		rs = append(rs, f.start(o))
	}
	f.leader(rs...)
	const n = 200
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 20)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			f.svc(fmt.Sprintf("s%03d", i))
		}()
	}
	wg.Wait()
	created := time.Since(start)
	var list *corev1.ServiceList
	eventually(t, 60*time.Second, "an address for every Service", func() bool {
		var err error
		list, err = f.admin.CoreV1().Services(f.ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list.Items {
			if len(s.Status.LoadBalancer.Ingress) == 0 {
				return false
			}
		}
		return len(list.Items) == n
	})
	took := time.Since(start)
	seen := map[string]string{}
	for _, s := range list.Items {
		if len(s.Status.LoadBalancer.Ingress) != 1 {
			t.Fatalf("%s has %v", s.Name, s.Status.LoadBalancer.Ingress)
		}
		ip := s.Status.LoadBalancer.Ingress[0].IP
		if other, dup := seen[ip]; dup {
			t.Fatalf("%s and %s both have %s", other, s.Name, ip)
		}
		seen[ip] = s.Name
	}
	// Settled: nothing is rewritten.
	time.Sleep(500 * time.Millisecond)
	again, _ := f.admin.CoreV1().Services(f.ns).List(context.Background(), metav1.ListOptions{})
	if changedStatus(list, again) {
		t.Fatal("statuses still changing after every Service had an address")
	}
	var writes, conflicts uint64
	for _, r := range rs {
		st := r.Status()
		writes += st.Writes
		conflicts += st.Conflicts
	}
	t.Logf("%d Services created in %v, all with an address after %v; %d writes, %d conflicts", n,
		created.Round(time.Millisecond), took.Round(time.Millisecond), writes, conflicts)
	for _, r := range rs {
		eventually(t, 10*time.Second, "every Service in Latest of "+r.o.Node, func() bool { return len(r.Latest()) == n })
	}
}

func changedStatus(a, b *corev1.ServiceList) bool {
	m := map[string]string{}
	for _, s := range a.Items {
		m[s.Name] = s.ResourceVersion
	}
	for _, s := range b.Items {
		if m[s.Name] != s.ResourceVersion {
			return true
		}
	}
	return len(a.Items) != len(b.Items)
}

// The leader stops: another takes over and allocates; a restart of every
// controller keeps every address, writing nothing.
func TestFailoverAndRestart(t *testing.T) {
	f := setup(t)
	var rs []*running
	for i := range 3 {
		rs = append(rs, f.start(f.options(fmt.Sprintf("node-%d", i))))
	}
	lead := f.leader(rs...)
	f.svc("before")
	f.wait("before", 1)

	stopped := time.Now()
	lead.stop()
	var rest []*running
	for _, r := range rs {
		if r != lead {
			rest = append(rest, r)
		}
	}
	var next *running
	eventually(t, 20*time.Second, "a new leader", func() bool {
		for _, r := range rest {
			if r.Status().Leading {
				next = r
				return true
			}
		}
		return false
	})
	t.Logf("%s took over from %s after %v", next.o.Node, lead.o.Node, time.Since(stopped).Round(time.Millisecond))
	f.svc("after")
	f.wait("after", 1)
	if a, b := f.addrs("before"), f.addrs("after"); a[0] == b[0] {
		t.Fatalf("before and after share %v", a)
	}

	// Restart: every controller stops, new ones start.
	want := map[string]string{}
	list, err := f.admin.CoreV1().Services(f.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Items {
		want[s.Name] = s.ResourceVersion
	}
	for _, r := range rest {
		r.stop()
	}
	var again []*running
	for i := range 3 {
		again = append(again, f.start(f.options(fmt.Sprintf("node-%d", i+3))))
	}
	newLead := f.leader(again...)
	time.Sleep(500 * time.Millisecond)
	for name, rv := range want {
		if got := f.get(name); got.ResourceVersion != rv {
			t.Errorf("%s rewritten after the restart: %v", name, got.Status.LoadBalancer.Ingress)
		}
	}
	if st := newLead.Status(); st.Writes != 0 {
		t.Errorf("new leader wrote %d statuses", st.Writes)
	}
	for _, r := range again {
		eventually(t, 10*time.Second, "2 Services in Latest of "+r.o.Node, func() bool { return len(r.Latest()) == 2 })
	}
}

// The manifest grants the Lease this package takes.
func TestLeaseNameInManifest(t *testing.T) {
	if LeaseName != manifest.LBLease {
		t.Fatalf("lbsvc.LeaseName %q, manifest.LBLease %q", LeaseName, manifest.LBLease)
	}
}

func stack(pol corev1.IPFamilyPolicy, fams ...corev1.IPFamily) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.IPFamilyPolicy, s.Spec.IPFamilies = &pol, fams }
}

// IPv6 and dual-stack Services get one address per family, in
// spec.ipFamilies' order (kubetest's API server is dual-stack).
func TestIPv6AndDualStack(t *testing.T) {
	f := setup(t)
	r := f.start(f.options("node-a"))
	f.leader(r)
	f.svc("v6", stack(corev1.IPFamilyPolicySingleStack, corev1.IPv6Protocol))
	if got := f.wait("v6", 1); got[0] != "2001:db8::10" {
		t.Fatalf("v6: %v", got)
	}
	f.svc("dual", stack(corev1.IPFamilyPolicyRequireDualStack, corev1.IPv6Protocol, corev1.IPv4Protocol))
	if got := f.wait("dual", 2); !slices.Equal(got, []string{"2001:db8::11", "192.0.2.10"}) {
		t.Fatalf("dual: %v", got)
	}
	f.svc("asked", stack(corev1.IPFamilyPolicyPreferDualStack), annotate(AnnotationAddress, "192.0.2.17, 2001:db8::17"))
	if got := f.wait("asked", 2); !slices.Equal(got, []string{"192.0.2.17", "2001:db8::17"}) {
		t.Fatalf("asked: %v", got)
	}
	f.event("asked", ReasonAllocated, "192.0.2.17, 2001:db8::17 from pool default")
	f.svc("wrongfamily", annotate(AnnotationAddress, "2001:db8::18"))
	f.event("wrongfamily", ReasonFailed, AnnotationAddress, "2001:db8::18 is IPv6")
	eventually(t, 10*time.Second, "three Services served", func() bool { return len(r.Latest()) == 3 })
	for _, s := range r.Latest() {
		if s.Name == "dual" && (len(s.Families) != 2 || s.Families[0] != lbipam.IPv6 || len(s.Addrs) != 2) {
			t.Fatalf("dual served as %+v", s)
		}
	}
}

// The leader dies without giving the Lease up: another takes over once
// it expires, and allocates without duplicates.
func TestFailoverAfterExpiry(t *testing.T) {
	f := setup(t)
	var rs []*running
	for i := range 2 {
		o := f.options(fmt.Sprintf("node-%d", i))
		rs = append(rs, f.start(o, func(c *Controller) { c.keepLease = true }))
	}
	lead := f.leader(rs...)
	f.svc("before")
	f.wait("before", 1)
	stopped := time.Now()
	lead.stop()
	next := rs[0]
	if next == lead {
		next = rs[1]
	}
	eventually(t, 20*time.Second, "a new leader", func() bool { return next.Status().Leading })
	took := time.Since(stopped)
	// The Lease expires LeaseDuration after the follower saw the last
	// renewal, which it polls for every RetryPeriod (with jitter).
	if took < next.o.LeaseDuration-3*next.o.RetryPeriod {
		t.Fatalf("took over after %v, before the Lease (%v) expired", took, next.o.LeaseDuration)
	}
	t.Logf("%s took over after %v (lease %v)", next.o.Node, took.Round(time.Millisecond), next.o.LeaseDuration)
	f.svc("after")
	if a, b := f.addrs("before"), f.wait("after", 1); a[0] == b[0] {
		t.Fatalf("before and after share %v", a)
	}
}

// A Services watch that is up but delivers nothing (seen after an API
// server restart) would keep a deleted Service served, and its address
// announced, until a relist: the verifier makes the informer relist
// within its period and the grace.
func TestSilentWatchRelists(t *testing.T) {
	f := setup(t)
	o := f.options("node-a")
	o.VerifyEvery = 2 * time.Second
	var silent atomic.Bool
	r := f.start(o, func(c *Controller) { c.verify.Drop = silent.Load })
	f.leader(r)
	f.svc("web")
	f.wait("web", 1)
	eventually(t, 10*time.Second, "web in Latest", func() bool { return len(r.Latest()) == 1 })
	silent.Store(true)
	if err := f.admin.CoreV1().Services(f.ns).Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	eventually(t, o.VerifyEvery+kubeverify.Grace+10*time.Second, "web gone from Latest", func() bool { return len(r.Latest()) == 0 })
	t.Logf("deletion served after %v with the watch silent", time.Since(deleted).Round(time.Millisecond))
}
