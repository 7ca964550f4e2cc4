package kube

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vigil-lb/vigil/internal/kubetest"
	"github.com/vigil-lb/vigil/internal/manifest"
)

// The tests in this file run the Source against a real kube-apiserver
// (kubetest.Shared); they skip without its binaries.

func TestMain(m *testing.M) { kubetest.Main(m) }

func startSource(t *testing.T, o Options, wait time.Duration) (*Source, Snapshot, Origin) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := NewSource(o)
	if err != nil {
		t.Fatal(err)
	}
	snap, origin := s.Start(ctx, wait)
	return s, snap, origin
}

func hasNode(s Snapshot, name string) bool { return slices.Contains(nodeNames(s), name) }

func TestAPINodesFollowed(t *testing.T) {
	env := kubetest.Shared(t)
	admin := env.Admin(t)
	kubetest.CreateNode(t, admin, kubetest.Node("api-follow-1", map[string]string{"node-role.kubernetes.io/control-plane": ""}, true, netip.MustParseAddr("192.0.2.11")))
	t.Cleanup(func() { kubetest.DeleteNode(t, admin, "api-follow-1") })

	s, snap, origin := startSource(t, Options{Kubeconfig: env.Kubeconfig(t, "", env.AdminToken), WatchNodes: true}, testTimeout)
	if origin != OriginAPI {
		t.Fatalf("origin %s, status %+v", origin, s.Status())
	}
	i := slices.IndexFunc(snap.Nodes, func(n Node) bool { return n.Name == "api-follow-1" })
	if i < 0 {
		t.Fatalf("api-follow-1 not in %v", nodeNames(snap))
	}
	want := Node{
		Name:      "api-follow-1",
		Labels:    map[string]string{"node-role.kubernetes.io/control-plane": ""},
		Addresses: []NodeAddress{{Type: "InternalIP", Address: netip.MustParseAddr("192.0.2.11")}}, // Hostname left out
		Ready:     true,
	}
	if !reflect.DeepEqual(snap.Nodes[i], want) {
		t.Errorf("node %+v, want %+v", snap.Nodes[i], want)
	}
	st := s.Status()
	if !st.Synced || st.Origin != OriginAPI || st.Server != env.Addr.String() {
		t.Errorf("status %+v, want synced from %s", st, env.Addr)
	}

	changes := st.Changes
	kubetest.CreateNode(t, admin, kubetest.Node("api-follow-2", nil, false, netip.MustParseAddr("192.0.2.12")))
	snap = waitSnapshot(t, s, "api-follow-2", func(s Snapshot) bool { return hasNode(s, "api-follow-2") })
	kubetest.DeleteNode(t, admin, "api-follow-2")
	waitSnapshot(t, s, "api-follow-2 gone", func(s Snapshot) bool { return !hasNode(s, "api-follow-2") })
	if st := s.Status(); st.Changes < changes+2 || !st.WatchUp || st.LastError != "" {
		t.Errorf("status after create and delete: %+v (changes before %d)", st, changes)
	}
}

var namespaces int

func TestAPIEndpointSlices(t *testing.T) {
	env := kubetest.Shared(t)
	admin := env.Admin(t)
	// Namespaces are never deleted here (no namespace controller runs):
	// a name of its own for each run of the test.
	namespaces++
	ns := fmt.Sprintf("api-slices-%d", namespaces)
	kubetest.CreateNamespace(t, admin, ns)
	ep := func(a string, ready bool) kubetest.Endpoint {
		return kubetest.Endpoint{Address: netip.MustParseAddr(a), Node: "w-1", Ready: ready}
	}
	kubetest.ApplySlice(t, admin, kubetest.Slice(ns, "web-1", "web", "https", 8443, ep("10.128.0.1", true), ep("10.128.0.2", false)))
	kubetest.ApplySlice(t, admin, kubetest.Slice(ns, "other-1", "other", "https", 8443, ep("10.128.0.9", true)))

	web := ServiceRef{ns, "web"}
	s, snap, origin := startSource(t, Options{Kubeconfig: env.Kubeconfig(t, "", env.AdminToken), Services: []ServiceRef{web}}, testTimeout)
	if origin != OriginAPI {
		t.Fatalf("origin %s, status %+v", origin, s.Status())
	}
	if len(snap.Slices) != 1 || snap.Slices[0].Name != "web-1" {
		t.Fatalf("slices %+v, want web-1 only", snap.Slices)
	}
	if eps := snap.ReadyEndpoints(web, "https"); len(eps) != 1 || eps[0].Address != netip.MustParseAddrPort("10.128.0.1:8443") {
		t.Errorf("ready endpoints %v", eps)
	}
	kubetest.ApplySlice(t, admin, kubetest.Slice(ns, "web-1", "web", "https", 8443, ep("10.128.0.1", false), ep("10.128.0.2", true)))
	snap = waitSnapshot(t, s, "10.128.0.2 ready", func(s Snapshot) bool {
		eps := s.ReadyEndpoints(web, "https")
		return len(eps) == 1 && eps[0].Address.Addr() == netip.MustParseAddr("10.128.0.2")
	})
	if !snap.ReadyOn(web, "w-1") {
		t.Error("ReadyOn w-1 false")
	}
}

func TestAPIFallbackServer(t *testing.T) {
	env := kubetest.Shared(t)
	down := "https://" + closedPort(t)
	s, _, origin := startSource(t, Options{
		Kubeconfig:      env.Kubeconfig(t, down, env.AdminToken),
		FallbackServers: []string{"https://" + closedPort(t), env.URL},
		WatchNodes:      true,
	}, testTimeout)
	if origin != OriginAPI {
		t.Fatalf("origin %s with a fallback server up; status %+v", origin, s.Status())
	}
	if st := s.Status(); st.Server != env.Addr.String() || !st.Synced {
		t.Errorf("status %+v, want server %s", st, env.Addr)
	}
}

func TestAPIForbidden(t *testing.T) {
	env := kubetest.Shared(t)
	state := filepath.Join(t.TempDir(), "kubernetes.json")
	o := Options{Kubeconfig: env.Kubeconfig(t, "", env.UserToken), WatchNodes: true, StateFile: state}

	s, snap, origin := startSource(t, o, time.Second)
	if origin != OriginNone || len(snap.Nodes) != 0 {
		t.Fatalf("Start without rights or state file: %s %+v, want none", origin, snap)
	}
	waitFor(t, "the forbidden error", func() bool { return s.Status().LastError != "" })
	st := s.Status()
	t.Logf("status while forbidden: %+v", st)
	if !strings.HasPrefix(st.LastError, "list nodes: forbidden: ") || !strings.Contains(st.LastError, env.UserName) {
		t.Errorf("LastError %q, want list nodes: forbidden: ... naming %s", st.LastError, env.UserName)
	}
	if st.WatchUp || st.Synced || st.Origin != OriginNone {
		t.Errorf("status while forbidden: %+v", st)
	}

	saved := sampleSnapshot()
	if err := writeState(state, saved); err != nil {
		t.Fatal(err)
	}
	s2, snap, origin := startSource(t, o, time.Second)
	if origin != OriginStateFile || !reflect.DeepEqual(snap, saved) {
		t.Fatalf("Start without rights: %s %+v, want the state file's", origin, snap)
	}

	// The ClusterRole vigil ships is enough; the informers retry and sync.
	env.Bind(t, manifest.ClusterRole(false))
	waitSnapshot(t, s2, "a sync after the grant", func(Snapshot) bool { return true })
	waitFor(t, "the watch up", func() bool { st := s2.Status(); return st.WatchUp && st.LastError == "" })
}

func TestAPIStateFileAcrossRestart(t *testing.T) {
	env := kubetest.Shared(t)
	admin := env.Admin(t)
	kubetest.CreateNode(t, admin, kubetest.Node("api-state-1", nil, true, netip.MustParseAddr("192.0.2.21")))
	t.Cleanup(func() { kubetest.DeleteNode(t, admin, "api-state-1") })
	state := filepath.Join(t.TempDir(), "lib", "kubernetes.json")

	first, snap, origin := startSource(t, Options{Kubeconfig: env.Kubeconfig(t, "", env.AdminToken), WatchNodes: true, StateFile: state}, testTimeout)
	if origin != OriginAPI || !hasNode(snap, "api-state-1") {
		t.Fatalf("first Source: %s %v; status %+v", origin, nodeNames(snap), first.Status())
	}

	// A second vigil whose API server is unreachable serves the first's.
	down := "https://" + closedPort(t)
	second, snap2, origin := startSource(t, Options{Kubeconfig: env.Kubeconfig(t, down, env.AdminToken), WatchNodes: true, StateFile: state}, time.Second)
	if origin != OriginStateFile || !reflect.DeepEqual(snap2, snap) {
		t.Fatalf("second Source: %s %v, want the first's %v", origin, nodeNames(snap2), nodeNames(snap))
	}
	waitFor(t, "the connection error", func() bool { return second.Status().LastError != "" })
	st := second.Status()
	t.Logf("status with the API server unreachable: %+v", st)
	if st.WatchUp || st.Synced || !strings.Contains(st.LastError, "connection refused") {
		t.Errorf("second's status: %+v", st)
	}
}

// An API outage after the sync keeps the snapshot (it never looks like
// "no nodes"), shows in Status, and the watch resumes after it.
func TestAPIOutage(t *testing.T) {
	env := kubetest.Shared(t)
	admin := env.Admin(t)
	kubetest.CreateNode(t, admin, kubetest.Node("api-outage-1", nil, true, netip.MustParseAddr("192.0.2.31")))
	t.Cleanup(func() { kubetest.DeleteNode(t, admin, "api-outage-1") })
	var logs logBuffer
	s, snap, origin := startSource(t, Options{Kubeconfig: env.Kubeconfig(t, "", env.AdminToken), WatchNodes: true, Log: logs.logger()}, testTimeout)
	if origin != OriginAPI || !hasNode(snap, "api-outage-1") {
		t.Fatalf("Start: %s %v", origin, nodeNames(snap))
	}
	waitFor(t, "the watch", func() bool { return s.Status().WatchUp })

	env.StopAPI()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			if err := env.StartAPI(); err != nil {
				t.Errorf("restart the API server: %v", err)
			}
		}
	})
	waitFor(t, "the watch down", func() bool { st := s.Status(); return !st.WatchUp && st.LastError != "" })
	st := s.Status()
	t.Logf("status during the outage: %+v", st)
	if latest, ok := s.Latest(); !ok || !hasNode(latest, "api-outage-1") || !st.Synced {
		t.Errorf("during the outage: synced %v, nodes %v", ok, nodeNames(latest))
	}

	restarted = true
	if err := env.StartAPI(); err != nil {
		t.Fatalf("restart the API server: %v", err)
	}
	kubetest.CreateNode(t, admin, kubetest.Node("api-outage-2", nil, true, netip.MustParseAddr("192.0.2.32")))
	t.Cleanup(func() { kubetest.DeleteNode(t, admin, "api-outage-2") })
	waitSnapshot(t, s, "api-outage-2", func(s Snapshot) bool { return hasNode(s, "api-outage-2") })
	waitFor(t, "the watch up again", func() bool { st := s.Status(); return st.WatchUp && st.LastError == "" })
	// The retries during the outage log a text once, not per retry (the
	// watch and the relist fail with a text each).
	if n := logs.count("kubernetes watch failing"); n < 1 || n > 2 {
		t.Errorf("%d lines for one outage, want 1 or 2:\n%s", n, logs.buf.String())
	}
}

// AllSlices follows every Service's slices, in every namespace, and a
// slice of a Service created after the start.
func TestAPIAllSlices(t *testing.T) {
	env := kubetest.Shared(t)
	admin := env.Admin(t)
	namespaces++
	a, b := fmt.Sprintf("api-all-a-%d", namespaces), fmt.Sprintf("api-all-b-%d", namespaces)
	kubetest.CreateNamespace(t, admin, a)
	kubetest.CreateNamespace(t, admin, b)
	ep := kubetest.Endpoint{Address: netip.MustParseAddr("10.129.0.1"), Node: "w-1", Ready: true}
	kubetest.ApplySlice(t, admin, kubetest.Slice(a, "web-1", "web", "http", 8080, ep))
	s, snap, origin := startSource(t, Options{Kubeconfig: env.Kubeconfig(t, "", env.AdminToken), AllSlices: true}, testTimeout)
	if origin != OriginAPI || len(snap.ReadyEndpoints(ServiceRef{a, "web"}, "http")) != 1 {
		t.Fatalf("origin %s, slices %+v", origin, snap.Slices)
	}
	kubetest.ApplySlice(t, admin, kubetest.Slice(b, "db-1", "db", "pg", 5432, ep))
	waitSnapshot(t, s, "db's slice", func(s Snapshot) bool {
		eps := s.ReadyEndpoints(ServiceRef{b, "db"}, "pg")
		return len(eps) == 1 && eps[0].Address == netip.MustParseAddrPort("10.129.0.1:5432")
	})
}

// WatchServices holds the LoadBalancer Services with the addresses their
// status gives, and follows a status update.
func TestAPIServices(t *testing.T) {
	env := kubetest.Shared(t)
	admin := env.Admin(t)
	namespaces++
	ns := fmt.Sprintf("api-svc-%d", namespaces)
	kubetest.CreateNamespace(t, admin, ns)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	mk := func(name string, typ corev1.ServiceType) *corev1.Service {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{Type: typ, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
		out, err := admin.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	lb := mk("front", corev1.ServiceTypeLoadBalancer)
	mk("inner", corev1.ServiceTypeClusterIP)
	s, snap, origin := startSource(t, Options{Kubeconfig: env.Kubeconfig(t, "", env.AdminToken), WatchServices: true}, testTimeout)
	if origin != OriginAPI {
		t.Fatalf("origin %s", origin)
	}
	var mine []Service
	for _, svc := range snap.Services {
		if svc.Namespace == ns {
			mine = append(mine, svc)
		}
	}
	if len(mine) != 1 || mine[0].Name != "front" || len(mine[0].Addresses) != 0 {
		t.Fatalf("services %+v, want front without addresses", mine)
	}
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.50"}}
	if _, err := admin.CoreV1().Services(ns).UpdateStatus(ctx, lb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, s, "front's address", func(s Snapshot) bool {
		for _, svc := range s.Services {
			if svc.Namespace == ns && svc.Name == "front" {
				return slices.Equal(svc.Addresses, []netip.Addr{netip.MustParseAddr("192.0.2.50")})
			}
		}
		return false
	})
}
