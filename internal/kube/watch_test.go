package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"go.uber.org/goleak"
)

// These tests run the Source's real informers over client-go's fake
// clientset; the integration tests run them against a kube-apiserver.

const testTimeout = 20 * time.Second

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSnapshot waits on Updates until Latest is synced and satisfies cond.
func waitSnapshot(t *testing.T, s *Source, what string, cond func(Snapshot) bool) Snapshot {
	t.Helper()
	timeout := time.After(testTimeout)
	for {
		if snap, ok := s.Latest(); ok && cond(snap) {
			return snap
		}
		select {
		case <-s.Updates():
		case <-timeout:
			snap, ok := s.Latest()
			t.Fatalf("timed out waiting for %s; latest (synced %v): %+v; status %+v", what, ok, snap, s.Status())
		}
	}
}

func nodeNames(s Snapshot) []string {
	var out []string
	for _, n := range s.Nodes {
		out = append(out, n.Name)
	}
	return out
}

func apiNode(name string, ready bool, addr string) *corev1.Node {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"role": "cp"}},
		Status: corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}, {Type: corev1.NodeHostName, Address: name}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st, LastHeartbeatTime: metav1.Now()}},
		},
	}
}

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// forbidder makes the fake refuse to list resource while on, as the API
// does without RBAC, and counts the attempts.
type forbidder struct {
	on    atomic.Bool
	calls atomic.Int64
}

func (f *forbidder) install(c *fake.Clientset, resource string) {
	f.on.Store(true)
	c.PrependReactor("list", resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		if !f.on.Load() {
			return false, nil, nil
		}
		f.calls.Add(1)
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: resource}, "",
			errors.New(`User "vigil-test" cannot list resource "`+resource+`"`))
	})
}

func TestSourceNodes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(apiNode("n1", true, "10.0.0.1"))
	s, err := newSource(Options{WatchNodes: true, Coalesce: 200 * time.Millisecond}, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, origin := s.Start(ctx, testTimeout)
	if origin != OriginAPI {
		t.Fatalf("origin %s, want api", origin)
	}
	want := []Node{{Name: "n1", Labels: map[string]string{"role": "cp"}, Ready: true,
		Addresses: []NodeAddress{{Type: "InternalIP", Address: netip.MustParseAddr("10.0.0.1")}}}}
	if !reflect.DeepEqual(snap.Nodes, want) {
		t.Fatalf("first snapshot %+v, want %+v", snap.Nodes, want)
	}
	if st := s.Status(); !st.Synced || st.Origin != OriginAPI || st.Nodes != 1 || st.LastSync.IsZero() || st.Changes != 0 {
		t.Fatalf("status after start: %+v", st)
	}
	// The fake's watch has no resource versions: an object created
	// before the watch is open would be lost.
	waitFor(t, "the watch", func() bool { return s.Status().WatchUp })

	// A burst is one wake.
	for _, n := range []string{"n5", "n3", "n4", "n2"} {
		if _, err := client.CoreV1().Nodes().Create(ctx, apiNode(n, false, "10.0.0.9"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	snap = waitSnapshot(t, s, "five nodes", func(s Snapshot) bool { return len(s.Nodes) == 5 })
	if got := nodeNames(snap); !slices.Equal(got, []string{"n1", "n2", "n3", "n4", "n5"}) {
		t.Errorf("nodes %v, want sorted n1..n5", got)
	}
	if c := s.Status().Changes; c != 1 {
		t.Errorf("%d wakes for one burst, want 1", c)
	}

	// A heartbeat changes nothing vigil reads: no new snapshot.
	n2, err := client.CoreV1().Nodes().Get(ctx, "n2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n2.Status.Conditions[0].LastHeartbeatTime = metav1.NewTime(time.Now().Add(time.Minute))
	if _, err := client.CoreV1().Nodes().Update(ctx, n2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the heartbeat in the store", func() bool {
		obj, ok, _ := s.watches[0].inf.GetStore().GetByKey("n2")
		return ok && obj.(*corev1.Node).Status.Conditions[0].LastHeartbeatTime.Equal(&n2.Status.Conditions[0].LastHeartbeatTime)
	})
	if _, changed := s.publish(); changed {
		t.Error("a heartbeat made a new snapshot")
	}

	if err := client.CoreV1().Nodes().Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, s, "n1 gone", func(s Snapshot) bool { return !slices.Contains(nodeNames(s), "n1") })
	if st := s.Status(); st.Changes != 2 || st.Nodes != 4 {
		t.Errorf("status after delete: %+v", st)
	}
}

func TestSourceForbiddenKeepsStateFile(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	path := filepath.Join(t.TempDir(), "kubernetes.json")
	saved := sampleSnapshot()
	if err := writeState(path, saved); err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset(apiNode("n1", true, "10.0.0.1"))
	var deny forbidder
	deny.install(client, "nodes")
	var logs logBuffer
	s, err := newSource(Options{WatchNodes: true, StateFile: path, Log: logs.logger()}, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, origin := s.Start(ctx, 200*time.Millisecond)
	if origin != OriginStateFile || !reflect.DeepEqual(snap, saved) {
		t.Fatalf("Start: origin %s, %+v; want the state file's", origin, snap)
	}
	if latest, ok := s.Latest(); ok || !reflect.DeepEqual(latest, saved) {
		t.Errorf("Latest: ok %v, %+v; want not synced and the state file's", ok, latest)
	}
	// Retries log the error once.
	waitFor(t, "a retry of the list", func() bool { return deny.calls.Load() >= 2 })
	st := s.Status()
	if st.Synced || st.WatchUp || st.Origin != OriginStateFile || st.Nodes != len(saved.Nodes) {
		t.Errorf("status while forbidden: %+v", st)
	}
	if !strings.HasPrefix(st.LastError, "list nodes: forbidden: ") || !strings.Contains(st.LastError, "vigil-test") {
		t.Errorf("LastError %q, want list nodes: forbidden: ...", st.LastError)
	}
	if n := logs.count("kubernetes watch failing"); n != 1 {
		t.Errorf("error logged %d times over %d attempts, want once", n, deny.calls.Load())
	}
	if got, err := loadState(path); err != nil || !reflect.DeepEqual(got, saved) {
		t.Errorf("state file changed while forbidden: %+v, %v", got, err)
	}

	// Granted: the API's snapshot replaces the state file's.
	deny.on.Store(false)
	snap = waitSnapshot(t, s, "the API's nodes", func(s Snapshot) bool { return true })
	if got := nodeNames(snap); !slices.Equal(got, []string{"n1"}) {
		t.Errorf("nodes %v, want n1", got)
	}
	waitFor(t, "the watch up", func() bool { return s.Status().WatchUp })
	if st := s.Status(); st.Origin != OriginAPI || st.LastError != "" || st.Changes != 1 {
		t.Errorf("status after the grant: %+v", st)
	}
	if logs.count("kubernetes watch up") != 1 {
		t.Errorf("recovery not logged once:\n%s", logs.buf.String())
	}
	if got, err := loadState(path); err != nil || !slices.Equal(nodeNames(got), []string{"n1"}) {
		t.Errorf("state file after the sync: %+v, %v", got, err)
	}
}

func TestSourceForbiddenNoStateFile(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(apiNode("n1", true, "10.0.0.1"))
	var deny forbidder
	deny.install(client, "nodes")
	path := filepath.Join(t.TempDir(), "missing.json")
	s, err := newSource(Options{WatchNodes: true, StateFile: path}, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, origin := s.Start(ctx, 100*time.Millisecond)
	if origin != OriginNone || len(snap.Nodes) != 0 || len(snap.Slices) != 0 {
		t.Fatalf("Start: %s %+v, want none and empty", origin, snap)
	}
	if st := s.Status(); st.Origin != OriginNone || st.Synced {
		t.Errorf("status: %+v", st)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file written without a sync: %v", err)
	}
}

func TestSourceEndpointSlices(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slice := func(ns, name, svc string, at discoveryv1.AddressType, addr string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: at,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("https"), Port: ptr[int32](8443)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}, NodeName: ptr("w-1")}},
		}
	}
	client := fake.NewClientset(
		slice("ns1", "web-b", "web", discoveryv1.AddressTypeIPv4, "10.128.0.2"),
		slice("ns1", "web-a", "web", discoveryv1.AddressTypeIPv6, "fd00::1"),
		slice("ns1", "db-a", "db", discoveryv1.AddressTypeFQDN, "db.example"),
		slice("ns1", "other-a", "other", discoveryv1.AddressTypeIPv4, "10.128.0.3"),
		slice("ns2", "api-a", "api", discoveryv1.AddressTypeIPv4, "10.128.1.1"),
		slice("ns3", "web-a", "web", discoveryv1.AddressTypeIPv4, "10.128.2.1"),
	)
	svcs := []ServiceRef{{"ns2", "api"}, {"ns1", "web"}, {"ns1", "db"}, {"ns1", "web"}}
	s, err := newSource(Options{Services: svcs}, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, origin := s.Start(ctx, testTimeout)
	if origin != OriginAPI {
		t.Fatalf("origin %s", origin)
	}
	var got []string
	for _, sl := range snap.Slices {
		got = append(got, sl.Namespace+"/"+sl.Name)
	}
	if want := []string{"ns1/web-a", "ns1/web-b", "ns2/api-a"}; !slices.Equal(got, want) {
		t.Errorf("slices %v, want %v (sorted; FQDN, other services and namespaces left out)", got, want)
	}
	eps := snap.ReadyEndpoints(ServiceRef{"ns1", "web"}, "https")
	if len(eps) != 2 || eps[0].Address != netip.MustParseAddrPort("10.128.0.2:8443") {
		t.Errorf("ready endpoints of ns1/web: %v", eps)
	}
	// One list per namespace, selecting only the services asked for.
	selectors := map[string]string{}
	for _, a := range client.Actions() {
		if l, ok := a.(k8stesting.ListAction); ok && a.GetResource().Resource == "endpointslices" {
			selectors[a.GetNamespace()] = l.GetListRestrictions().Labels.String()
		}
	}
	want := map[string]string{
		"ns1": "kubernetes.io/service-name in (db,web)",
		"ns2": "kubernetes.io/service-name in (api)",
	}
	if !reflect.DeepEqual(selectors, want) {
		t.Errorf("list selectors %v, want %v", selectors, want)
	}
}

func TestSourceWritesStateFile(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	path := filepath.Join(t.TempDir(), "var", "lib", "vigil", "kubernetes.json")
	client := fake.NewClientset(apiNode("n1", true, "10.0.0.1"))
	s, err := newSource(Options{WatchNodes: true, StateFile: path}, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := s.Start(ctx, testTimeout)
	got, err := loadState(path)
	if err != nil || !reflect.DeepEqual(got, snap) {
		t.Fatalf("state file after the first sync: %+v, %v; want %+v", got, err, snap)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode: %v %v", fi.Mode(), err)
	}
	waitFor(t, "the watch", func() bool { return s.Status().WatchUp })
	if _, err := client.CoreV1().Nodes().Create(ctx, apiNode("n2", true, "10.0.0.2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	snap = waitSnapshot(t, s, "n2", func(s Snapshot) bool { return len(s.Nodes) == 2 })
	// The file is written before the wake.
	if got, err := loadState(path); err != nil || !reflect.DeepEqual(got, snap) {
		t.Errorf("state file after a change: %+v, %v; want %+v", got, err, snap)
	}
	if st := s.Status(); st.StateFileError != "" {
		t.Errorf("StateFileError %q", st.StateFileError)
	}
}

func TestNewSourceErrors(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := NewSource(Options{WatchNodes: true}); err == nil || err.Error() != errNoKubeconfig.Error() {
		t.Errorf("no kubeconfig: %v", err)
	}
	if _, err := newSource(Options{}, fake.NewClientset(), nil); err == nil || !strings.Contains(err.Error(), "nothing to watch") {
		t.Errorf("nothing to watch: %v", err)
	}
	if _, err := newSource(Options{Services: []ServiceRef{{"ns", ""}}}, fake.NewClientset(), nil); err == nil || !strings.Contains(err.Error(), `service "ns/"`) {
		t.Errorf("bad service: %v", err)
	}
	if _, err := newSource(Options{Services: []ServiceRef{{"ns", "Not_A_Label!"}}}, fake.NewClientset(), nil); err == nil || !strings.Contains(err.Error(), "ns/[Not_A_Label!]") {
		t.Errorf("bad service name: %v", err)
	}
}

func TestDescribe(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", errors.New("no"))
	tests := []struct {
		err  error
		want string
	}{
		{forbidden, "forbidden: nodes is forbidden: no"},
		{fmt.Errorf("failed to list *v1.Node: %w", forbidden), "forbidden: nodes is forbidden: no"},
		{&url.Error{Op: "Get", URL: "https://127.0.0.1:6443/api/v1/nodes?timeoutSeconds=417&watch=true", Err: errors.New("dial tcp 127.0.0.1:6443: connect: connection refused")},
			"dial tcp 127.0.0.1:6443: connect: connection refused"},
		{errors.New("very short watch"), "very short watch"},
	}
	for _, tt := range tests {
		if got := describe(tt.err); got != tt.want {
			t.Errorf("describe(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// Cancelling Start's context stops every goroutine the Source started.
func TestSourceStopsWithContext(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(context.Background())
	client := fake.NewClientset(apiNode("n1", true, "10.0.0.1"),
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-a", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}}, AddressType: discoveryv1.AddressTypeIPv4})
	s, err := newSource(Options{WatchNodes: true, Services: []ServiceRef{{"ns", "web"}}}, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	if snap, origin := s.Start(ctx, testTimeout); origin != OriginAPI || len(snap.Nodes) != 1 || len(snap.Slices) != 1 {
		t.Fatalf("Start: %s %+v", origin, snap)
	}
	waitFor(t, "the watches", func() bool { return s.Status().WatchUp })
	cancel()
}

// Rights to list without rights to watch: the list's snapshot is served,
// the watch shows as down, and the retries log once.
func TestSourceWatchForbidden(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(apiNode("n1", true, "10.0.0.1"))
	var watches atomic.Int64
	client.PrependWatchReactor("nodes", func(k8stesting.Action) (bool, watch.Interface, error) {
		watches.Add(1)
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", errors.New(`User "vigil-test" cannot watch resource "nodes"`))
	})
	var logs logBuffer
	s, err := newSource(Options{WatchNodes: true, Log: logs.logger()}, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	if snap, origin := s.Start(ctx, testTimeout); origin != OriginAPI || len(snap.Nodes) != 1 {
		t.Fatalf("Start: %s %+v, want the list's node", origin, snap)
	}
	waitFor(t, "a retry of the watch", func() bool { return watches.Load() >= 2 })
	st := s.Status()
	if st.WatchUp || !strings.HasPrefix(st.LastError, "watch nodes: forbidden: ") {
		t.Errorf("status: %+v, want the watch down and forbidden", st)
	}
	if n := logs.count("kubernetes watch"); n != 1 {
		t.Errorf("%d log lines over %d watch attempts, want 1:\n%s", n, watches.Load(), logs.buf.String())
	}
}
