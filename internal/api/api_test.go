package api

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/vigil-lb/vigil/internal/clock"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/history"
)

var update = flag.Bool("update", false, "rewrite golden files")

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// sample is a snapshot with one of everything, and a VRID conflict.
func sample() Snapshot {
	return Snapshot{Node: "lb1", Cluster: "prod-east", Version: "v0.3.0", Started: t0.Add(-90 * time.Minute), Taken: t0,
		Instances: []Instance{
			{Name: "api", Interface: "eth0", VRID: 51, Version: 3, State: "MASTER", Priority: 150, EffectivePriority: 150,
				Master: "10.0.0.1", VIPs: []string{"192.0.2.10"}, Since: t0.Add(-75 * time.Minute), AdvertsSent: 27000,
				Transitions: 2, Drops: map[string]uint64{"vip_mismatch": 12},
				Foreign:    &Foreign{Source: "10.0.0.9", VIPs: []string{"192.0.2.99"}, Reason: "vip_mismatch", LastSeen: t0.Add(-3 * time.Second), Count: 12},
				MasterNode: "lb1", MasterPriority: 150,
				LastTransition: &Transition{PrevState: "BACKUP", State: "MASTER", At: t0.Add(-75 * time.Minute), Cause: "master_down",
					Reason: "master down timer expired: lb2 (10.0.0.2) (priority 200) silent for 3.609s", Peer: "10.0.0.2", PeerNode: "lb2",
					PeerPriority: 200, Priority: 150}},
			{Name: "ingress", Interface: "eth0", VRID: 52, Version: 3, State: "BACKUP", Priority: 100, EffectivePriority: 50,
				Master: "10.0.0.2", VIPs: []string{"192.0.2.11", "192.0.2.12"}, Since: t0.Add(-30 * time.Second), AdvertsReceived: 300,
				Transitions: 1, ARPConflicts: 2, ARPConflictsNow: []ARPConflict{{VIP: "192.0.2.12", MACs: []string{"02:00:00:00:00:09"},
					Peer: "10.0.0.9", LastSeen: t0.Add(-4 * time.Second)}},
				MasterNode: "lb2", MasterPriority: 90, Tracked: []string{"check api-readyz down (weight -50)"},
				LastTransition: &Transition{PrevState: "MASTER", State: "BACKUP", At: t0.Add(-30 * time.Second), Cause: "tracked",
					Reason: "tracking lowered our priority 100 to 50: lb2 (10.0.0.2) (priority 90) took over: check api-readyz down (weight -50)",
					Peer:   "10.0.0.2", PeerNode: "lb2", PeerPriority: 90, Priority: 50, Tracked: []string{"check api-readyz down (weight -50)"}}},
			{Name: "web-192.0.2.101", Interface: "eth0", VRID: 60, Version: 3, State: "MASTER", Priority: 249, EffectivePriority: 249,
				Master: "10.0.0.1", MasterNode: "lb1", MasterPriority: 249, VIPs: []string{"192.0.2.101/32"}, Since: t0.Add(-10 * time.Second),
				LastTransition: &Transition{PrevState: "BACKUP", State: "MASTER", At: t0.Add(-10 * time.Second), Cause: "handover",
					Reason: "priority-0 hand-over from lb2 (10.0.0.2)", Peer: "10.0.0.2", PeerNode: "lb2", Priority: 249},
				Pool: &PoolVIP{Pool: "web", Ranking: []string{"lb2", "lb1"}, Preferred: "lb2",
					Why: "here (choice 2 of 2): lb2 is not advertising (down, in fault, resigned, or waiting out move_back_delay)"}},
			{Name: "web-192.0.2.102", Interface: "eth0", VRID: 61, Version: 3, State: "MASTER", Priority: 250, EffectivePriority: 250,
				Master: "10.0.0.1", MasterNode: "lb1", MasterPriority: 250, VIPs: []string{"192.0.2.102/32"}, Since: t0.Add(-time.Hour),
				LastTransition: &Transition{PrevState: "BACKUP", State: "MASTER", At: t0.Add(-time.Hour), Cause: "startup",
					Reason: "startup: no master heard", Priority: 250},
				Pool: &PoolVIP{Pool: "web", Ranking: []string{"lb1", "lb2"}, Preferred: "lb1", OnPreferred: true, Why: "here, its preferred node"}},
		},
		Interfaces: []Interface{{Name: "eth0", GARPSent: 14, GARPSuppressed: 0}},
		Checks: []Check{{Name: "api-readyz", Up: true, LastProbe: t0.Add(-time.Second), Latency: 2300 * time.Microsecond, Probes: 1800},
			{Name: "balancer/api/10.0.0.12:6443", Up: false, LastProbe: t0, LastError: "tcp 10.0.0.12:6443: connection refused", Latency: 400 * time.Microsecond, Probes: 1800, Failures: 4}},
		Balancers: []Balancer{{Name: "api", Listen: []string{"192.0.2.10:9445"}, Algorithm: "roundrobin", Active: 3, Accepted: 5120, Refused: 0, NoBackend: 1,
			Backends: []Backend{{Address: "10.0.0.11:6443", Up: true, State: "up", Weight: 1, Active: 3, Connections: 4000, BytesIn: 1 << 20, BytesOut: 9 << 20, Source: "node m1"},
				{Address: "10.0.0.12:6443", Up: false, State: "down", Weight: 1, Connections: 1120, ConnectErrors: 2, Source: "static"},
				{Address: "10.0.0.13:6443", Up: true, State: "drain", Weight: 0, Active: 1, Connections: 70, Source: "static"}}},
			{Name: "web", Mode: "dsr", XDPMode: "native", Listen: []string{"192.0.2.20:80"}, Algorithm: "maglev", Packets: 9000, Bytes: 5400000,
				Backends: []Backend{{Address: "10.0.0.21:80", Up: true, State: "up", Weight: 1, Packets: 4600, BytesIn: 2760000},
					{Address: "10.0.0.22:80", Up: true, State: "up", Weight: 1, Packets: 4400, BytesIn: 2640000}}},
			{Name: "udp", Mode: "dsr", Listen: []string{"192.0.2.30:53"}, Algorithm: "maglev",
				Error:    "xdp: the BPF program could not be loaded: permission denied: it needs CAP_BPF and CAP_NET_ADMIN (root)",
				Backends: []Backend{{Address: "10.0.0.31:53", State: "down", Weight: 1}}}},
		XDP: map[string]uint64{"tx": 9000, "pass": 120},
		BGP: &BGP{Sessions: []BGPSession{{Neighbor: "10.0.0.254", ASN: 64500, State: "established", Since: t0.Add(-time.Hour), RoutesReceived: 3},
			{Neighbor: "10.0.0.253", ASN: 64501, State: "idle", LastError: "bad peer as", Failures: 3, RetryAt: t0.Add(15 * time.Second)}},
			Announced: []string{"192.0.2.10/32"}},
		BFD: &BFD{Sessions: []BFDSession{{Neighbor: "10.0.0.254", State: "Up", RemoteState: "Up", Diag: "control detection time expired",
			LocalDiscr: 0x1234, RemoteDiscr: 7, TxInterval: 300 * time.Millisecond, RxInterval: 300 * time.Millisecond,
			DetectionTime: 900 * time.Millisecond, Since: t0.Add(-time.Minute), Flaps: 1, Sent: 4000, Received: 3990}},
			Dropped: map[string]uint64{"ttl not 255": 2}},
		Kubernetes: &Kubernetes{Server: "127.0.0.1:6443", WatchUp: false, Synced: true, Origin: "api", Nodes: 3, Slices: 2,
			LastSync: t0.Add(-2 * time.Minute), LastError: "watch nodes: connection refused", ChangesApplied: 7,
			Notes: []string{"balancers[0] api: Node m4 has no address in 192.0.2.0/24 or InternalIP of IPv4; left out"}},
		Redirects: []Redirect{{Balancer: "api", From: "192.0.2.10:6443", To: "192.0.2.10:9445", Installed: true}},
		Services: []ServiceAddress{{Service: "web/front", Address: "192.0.2.200", Pool: "lan", Announce: "l2", Owner: "lb1", Here: true, Endpoints: 3},
			{Service: "web/db", Address: "192.0.2.201", Pool: "lan", Announce: "l2", Owner: "lb2", Local: true, Endpoints: 1}},
		Pools: []PoolUsage{{Name: "lan", Announce: "l2", Size: 51, InUse: 2}},
		Allocator: &Allocator{Identity: "lb1", Leader: "lb1", Leading: true, Synced: true, Services: 3, Held: 1,
			Failures: []AllocationFailure{{Service: "web/big", Reason: "pool exhausted: lan"}}},
	}
}

func TestTableGolden(t *testing.T) {
	var out bytes.Buffer
	if err := WriteTable(&out, sample(), t0); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "status.golden")
	if *update {
		os.WriteFile(golden, out.Bytes(), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Fatalf("status table differs from %s (go test -update to rewrite):\n%s", golden, out.String())
	}
}

func TestBackendState(t *testing.T) {
	for _, c := range []struct {
		up     bool
		weight int
		admin  string
		want   string
	}{{true, 1, "", "up"}, {true, 0, "", "drain"}, {false, 1, "", "down"}, {false, 0, "", "down"},
		{true, 1, "drain", "drain"}, {false, 1, "drain", "down"}, {true, 1, "disabled", "disabled"}, {false, 0, "disabled", "disabled"}} {
		if got := BackendState(c.up, c.weight, c.admin); got != c.want {
			t.Errorf("BackendState(up %v, weight %d, admin %q) = %s, want %s", c.up, c.weight, c.admin, got, c.want)
		}
	}
}

// A drained backend reads DRAIN in the table and drain in the metrics,
// not up.
func TestDrainedBackendIsShown(t *testing.T) {
	var out bytes.Buffer
	if err := WriteTable(&out, sample(), t0); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^  10\.0\.0\.13:6443 +DRAIN +0 `).MatchString(out.String()) {
		t.Fatalf("drained backend not shown as DRAIN:\n%s", out.String())
	}
	got := gathered(t, NewRegistry(func() Snapshot { return sample() }), "vigil_backend_state")
	for st, v := range map[string]float64{"up": 0, "down": 0, "drain": 1} {
		key := `backend="10.0.0.13:6443",balancer="api",state="` + st + `"`
		if got[key] != v {
			t.Errorf("vigil_backend_state{%s} = %v, want %v (all: %v)", key, got[key], v, got)
		}
	}
}

// gathered returns the samples of one metric family, by their labels
// written as name="value" in the order Gather sorts them (by name).
func gathered(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out[strings.Join(ls, ",")] = v
		}
	}
	return out
}

// The current ARP conflicts are a gauge that clears; the counter stays.
func TestARPConflictGaugeClears(t *testing.T) {
	snap := sample()
	reg := NewRegistry(func() Snapshot { return snap })
	if got := gathered(t, reg, "vigil_vrrp_arp_conflict"); got[`vrrp_instance="ingress"`] != 1 || got[`vrrp_instance="api"`] != 0 {
		t.Fatalf("vigil_vrrp_arp_conflict %v, want ingress 1 and api 0", got)
	}
	snap.Instances[1].ARPConflictsNow = nil
	if got := gathered(t, reg, "vigil_vrrp_arp_conflict"); got[`vrrp_instance="ingress"`] != 0 {
		t.Fatalf("vigil_vrrp_arp_conflict %v after it cleared, want 0", got)
	}
	if got := gathered(t, reg, "vigil_vrrp_arp_conflicts_total"); got[`vrrp_instance="ingress"`] != 2 {
		t.Fatalf("vigil_vrrp_arp_conflicts_total %v, want 2 still", got)
	}
	var out bytes.Buffer
	WriteTable(&out, snap, t0)
	if strings.Contains(out.String(), "ARP 192.0.2.12") || strings.Contains(out.String(), " ARP\n") {
		t.Fatalf("a cleared conflict still shows:\n%s", out.String())
	}
}

func TestMetricNamesLint(t *testing.T) {
	reg := NewRegistry(func() Snapshot { return sample() })
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"vigil_vrrp_state", "vigil_vrrp_transitions_total", "vigil_vrrp_adverts_dropped_total",
		"vigil_vrrp_vrid_conflict_adverts_total", "vigil_vrrp_arp_conflicts_total", "vigil_garp_sent_total", "vigil_garp_suppressed_total",
		"vigil_vrrp_socket_drops_total",
		"vigil_check_up", "vigil_check_latency_seconds", "vigil_backend_up", "vigil_backend_bytes_total", "vigil_balancer_connections_refused_total"} {
		if !names[want] {
			t.Errorf("metric %s missing", want)
		}
	}
}

// No metric carries a label Prometheus sets on every target (instance,
// job): a scrape would rename it exported_instance. No two families share
// an OpenMetrics name: a counter X_total is family X there, so a gauge X
// beside it is a second family of that name.
func TestMetricLabelsAndFamilies(t *testing.T) {
	mfs, err := NewRegistry(func() Snapshot { return sample() }).Gather()
	if err != nil {
		t.Fatal(err)
	}
	families := map[string]string{}
	for _, mf := range mfs {
		if m := mf.GetMetric(); len(m) > 0 {
			for _, l := range m[0].GetLabel() {
				if l.GetName() == "instance" || l.GetName() == "job" {
					t.Errorf("%s has the label %q, which Prometheus sets on the target", mf.GetName(), l.GetName())
				}
			}
		}
		family := mf.GetName()
		if !strings.HasPrefix(family, "vigil_") {
			continue // the Go collector's go_memstats_alloc_bytes{,_total} are client_golang's
		}
		if mf.GetType().String() == "COUNTER" {
			family = strings.TrimSuffix(family, "_total")
		}
		if other, ok := families[family]; ok {
			t.Errorf("%s and %s are both the OpenMetrics family %s", other, mf.GetName(), family)
		}
		families[family] = mf.GetName()
	}
}

// promtool, Prometheus' own checker, finds nothing wrong with /metrics.
// Without promtool the test skips, unless VIGIL_REQUIRE_TOOLS or CI is set
// (make test installs it: Debian package prometheus).
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := needPromtool(t)
	h := promhttp.HandlerFor(NewRegistry(func() Snapshot { return sample() }), promhttp.HandlerOpts{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "vigil_vrrp_state") {
		t.Fatalf("/metrics: %d\n%s", rec.Code, rec.Body.String())
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = rec.Body
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// needPromtool returns promtool's path. Without it the test skips, unless
// VIGIL_REQUIRE_TOOLS or CI is set: then it fails.
func needPromtool(t *testing.T) string {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("VIGIL_REQUIRE_TOOLS") != "" || os.Getenv("CI") != "" {
			t.Fatal("promtool is not installed (make deps installs the Debian package prometheus)")
		}
		t.Skip("promtool is not installed (Debian package prometheus); set VIGIL_REQUIRE_TOOLS to fail instead")
	}
	return promtool
}

// Every query of the Grafana dashboard is valid PromQL: promtool parses
// them as recording rules (with the variables at their All value).
func TestPromtoolParsesDashboardQueries(t *testing.T) {
	promtool := needPromtool(t)
	b, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if e, ok := v["expr"].(string); ok {
				exprs = append(exprs, e)
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	walk(d)
	if len(exprs) < 10 {
		t.Fatalf("only %d queries found", len(exprs))
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		e = strings.NewReplacer("$cluster", ".*", "$node", ".*").Replace(e)
		fmt.Fprintf(&rules, "      - record: dashboard:query%d\n        expr: %s\n", i, strconv.Quote(e))
	}
	path := filepath.Join(t.TempDir(), "dashboard.rules.yaml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s\n%s", err, out, rules.String())
	}
}

func TestServer(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "vigil.sock")
	log := slog.New(slog.DiscardHandler)
	src := func() Snapshot { return sample() }
	s, err := Listen(sock, "127.0.0.1:0", src, log)
	if err != nil {
		t.Fatal(err)
	}
	defer serve(s)()

	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	snap, err := Fetch(context.Background(), sock)
	if err != nil || snap.Node != "lb1" || snap.Instances[0].Foreign.Source != "10.0.0.9" {
		t.Fatalf("fetch: %+v %v", snap, err)
	}
	if _, err := Listen(sock, "", src, log); err == nil || !strings.Contains(err.Error(), "another vigil answers") {
		t.Fatalf("second daemon on the same socket: %v", err)
	}
	get := func(path string) string {
		resp, err := http.Get("http://" + s.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", path, resp.Status)
		}
		return string(b)
	}
	if m := get("/metrics"); !strings.Contains(m, `vigil_vrrp_state{state="MASTER",vrrp_instance="api"} 1`) ||
		!strings.Contains(m, `vigil_bgp_routes_received{neighbor="10.0.0.254"} 3`) {
		t.Fatalf("metrics:\n%s", m)
	}
	if p := get("/"); !strings.Contains(p, "<title>vigil</title>") || strings.Contains(p, "http://") || strings.Contains(p, "https://") {
		t.Fatal("status page missing or loads external assets")
	}
	if j := get("/api/v1/status"); !strings.Contains(j, `"vrid_conflict"`) {
		t.Fatalf("json status:\n%s", j)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vigil.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // the file stays, nobody answers: a crashed daemon's leftover
	s, err := Listen(sock, "", func() Snapshot { return sample() }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	s.Close()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left after Close: %v", err)
	}
}

// api.socket naming the config file passed vigil check and deleted the
// config at vigil run: Listen removed whatever the path named. Only a socket
// nobody answers on is removed; any other file is an error, left alone.
func TestListenRefusesWhatIsNotASocket(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(file, []byte("node: lb1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "run")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{file, sub, link} {
		s, err := Listen(path, "", func() Snapshot { return sample() }, slog.New(slog.DiscardHandler))
		if err == nil {
			s.Close()
			t.Fatalf("%s: Listen took it", path)
		}
		if want := "api.socket: " + path + " exists and is not a socket"; !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: error %q, want %q", path, err, want)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "node: lb1\n" {
		t.Fatalf("the file is gone or changed: %q %v", b, err)
	}
	if fi, err := os.Stat(sub); err != nil || !fi.IsDir() {
		t.Fatalf("the directory is gone: %v", err)
	}
	if _, err := os.Lstat(link); err != nil {
		t.Fatalf("the symlink is gone: %v", err)
	}
}

func TestFetchWithoutDaemon(t *testing.T) {
	_, err := Fetch(context.Background(), filepath.Join(t.TempDir(), "none.sock"))
	if err == nil || !strings.HasPrefix(err.Error(), "no vigil daemon answers on ") || strings.Count(err.Error(), "\n") > 0 {
		t.Fatalf("err = %v", err)
	}
}

// Every metric the Grafana dashboard in docs/ queries exists; every
// legend names labels its query's series have (never the scrape target's
// instance or job); every query is narrowed by the node and cluster
// variables, which come from vigil_info, joined on the target.
func TestDashboardUsesRealMetrics(t *testing.T) {
	b, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := NewRegistry(richSample).Gather()
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]map[string]bool{} // metric: its label names
	for _, mf := range mfs {
		labels[mf.GetName()] = map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[mf.GetName()][l.GetName()] = true
			}
		}
	}
	metricRE := regexp.MustCompile(`vigil_[a-z_]+`)
	used := metricRE.FindAllString(string(b), -1)
	if len(used) < 10 {
		t.Fatalf("dashboard uses only %d metrics", len(used))
	}
	for _, m := range used {
		if labels[m] == nil {
			t.Errorf("dashboard queries %s, which vigil does not export", m)
		}
	}
	type query struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
		TitleFormat  string `json:"titleFormat"`
	}
	var d struct {
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Annotations struct {
			List []query `json:"list"`
		} `json:"annotations"`
		Panels []struct {
			Title   string  `json:"title"`
			Targets []query `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Definition
	}
	for _, v := range []string{"node", "cluster"} {
		if !strings.HasPrefix(vars[v], "label_values(vigil_info") {
			t.Errorf("variable %s: %q, want label_values of vigil_info", v, vars[v])
		}
	}
	if len(d.Annotations.List) == 0 {
		t.Error("no annotations (VRRP transitions)")
	}
	queries := map[string]query{}
	for _, a := range d.Annotations.List {
		queries["annotation "+a.Expr] = query{Expr: a.Expr, LegendFormat: a.TitleFormat}
	}
	for _, p := range d.Panels {
		for i, q := range p.Targets {
			queries[fmt.Sprintf("%s [%d]", p.Title, i)] = q
		}
	}
	join := `group_left (node, cluster) max by (instance, job, node, cluster) (vigil_info{cluster=~"$cluster", node=~"$node"})`
	legendRE := regexp.MustCompile(`{{\s*(\w+)\s*}}`)
	for where, q := range queries {
		if !strings.Contains(q.Expr, join) {
			t.Errorf("%s: %s is not narrowed by $node and $cluster", where, q.Expr)
		}
		have := map[string]bool{}
		if strings.Contains(q.Expr, join) {
			have["node"], have["cluster"] = true, true
		}
		for _, m := range metricRE.FindAllString(q.Expr, -1) {
			if m != "vigil_info" {
				for l := range labels[m] {
					have[l] = true
				}
			}
		}
		for _, m := range legendRE.FindAllStringSubmatch(q.LegendFormat, -1) {
			if l := m[1]; l == "instance" || l == "job" || !have[l] {
				t.Errorf("%s: legend %q names %s, which its series do not have (or the scrape target's)", where, q.LegendFormat, l)
			}
		}
	}
}

// A reload moves the socket and the status page: the new ones answer, the
// old ones do not, and a failed move changes nothing.
func TestServerMove(t *testing.T) {
	dir := t.TempDir()
	sock, sock2 := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	log := slog.New(slog.DiscardHandler)
	s, err := Listen(sock, "127.0.0.1:0", func() Snapshot { return sample() }, log)
	if err != nil {
		t.Fatal(err)
	}
	defer serve(s)()
	old := s.HTTPAddr()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if _, _, err := s.Move(sock2, busy.Addr().String()); err == nil || !strings.Contains(err.Error(), "api.http") {
		t.Fatalf("move to a busy address: %v", err)
	}
	if _, err := os.Stat(sock2); err == nil {
		t.Fatal("a failed move left its socket file")
	}
	if _, err := Fetch(context.Background(), sock); err != nil {
		t.Fatalf("after a failed move: %v", err)
	}
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	next := free.Addr().String()
	free.Close()
	commit, _, err := s.Move(sock2, next)
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if _, err := Fetch(context.Background(), sock2); err != nil {
		t.Fatalf("new socket: %v", err)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Fatal("the old socket file is still there")
	}
	if s.HTTPAddr() != next {
		t.Fatalf("http on %s, want %s", s.HTTPAddr(), next)
	}
	resp, err := http.Get("http://" + s.HTTPAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := http.Get("http://" + old + "/healthz"); err == nil {
		t.Fatal("the old http address still answers")
	}
	commit, _, err = s.Move(sock2, "")
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if s.HTTPAddr() != "" {
		t.Fatal("http not turned off")
	}
}

// serve runs s until the returned function is called.
func serve(s *Server) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// A POST on the control socket runs the daemon's reload and answers once
// it is done: refused with the reason, or applied with what changed; the
// outcome of the last one is in the metrics.
func TestReloadOverTheSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vigil.sock")
	snap := sample()
	snap.LastReload = &ReloadStatus{Successful: true, LastSuccess: t0.Add(-time.Hour)}
	s, err := Listen(sock, "", func() Snapshot { return snap }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var refuse atomic.Bool
	refuse.Store(true)
	s.OnReload(func(context.Context) ReloadResult {
		if refuse.Load() {
			return ReloadResult{Config: "/etc/vigil/vigil.yaml", Error: "reload: vrrp: cluster changed: VRRP changes need a restart (nothing applied)"}
		}
		return ReloadResult{Config: "/etc/vigil/vigil.yaml", Applied: true, Changed: []string{"balancer api changed"}}
	})
	defer serve(s)()
	res, err := Reload(context.Background(), sock)
	if err != nil || res.Applied || !strings.Contains(res.Error, "cluster changed") {
		t.Fatalf("refused reload: %+v %v", res, err)
	}
	refuse.Store(false)
	res, err = Reload(context.Background(), sock)
	if err != nil || !res.Applied || res.Error != "" || len(res.Changed) != 1 {
		t.Fatalf("applied reload: %+v %v", res, err)
	}
	if _, err := Reload(context.Background(), filepath.Join(t.TempDir(), "none.sock")); err == nil || !strings.HasPrefix(err.Error(), "no vigil daemon answers on ") {
		t.Fatalf("reload without a daemon: %v", err)
	}

	reg := NewRegistry(func() Snapshot { return snap })
	if got := gathered(t, reg, "vigil_config_last_reload_successful"); got[""] != 1 {
		t.Fatalf("vigil_config_last_reload_successful %v, want 1", got)
	}
	snap.LastReload = &ReloadStatus{At: t0, Successful: false, Error: "x", LastSuccess: t0.Add(-time.Hour)}
	if got := gathered(t, reg, "vigil_config_last_reload_successful"); got[""] != 0 {
		t.Fatalf("vigil_config_last_reload_successful after a refusal %v, want 0", got)
	}
	if got := gathered(t, reg, "vigil_config_last_reload_success_timestamp_seconds"); got[""] != float64(t0.Add(-time.Hour).Unix()) {
		t.Fatalf("vigil_config_last_reload_success_timestamp_seconds %v, want %d", got, t0.Add(-time.Hour).Unix())
	}
}

// fakeControl is a daemon with one balancer (api, one backend) and one
// instance (api).
type fakeControl struct{ backend, instance []string }

func (f *fakeControl) SetBackendAdmin(balancer, addr, action string) error {
	switch {
	case balancer != "api":
		return fmt.Errorf("%w balancer %q", ErrUnknown, balancer)
	case addr != "10.0.0.11:6443":
		return fmt.Errorf("balancer %s: %w backend %s", balancer, ErrUnknown, addr)
	}
	f.backend = append(f.backend, action)
	return nil
}

func (f *fakeControl) SetResigned(instance string, resigned bool) error {
	if instance != "api" {
		return fmt.Errorf("%w instance %q", ErrUnknown, instance)
	}
	f.instance = append(f.instance, strconv.FormatBool(resigned))
	return nil
}

func TestRuntimeCommandsOverTheSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vigil.sock")
	s, err := Listen(sock, "", func() Snapshot { return sample() }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// Before OnControl: the daemon says it takes none.
	func() {
		defer serve(s)()
		if err := SetBackend(context.Background(), sock, "api", "10.0.0.11:6443", AdminDrain); err == nil ||
			!strings.Contains(err.Error(), "no runtime commands") {
			t.Fatalf("without a Control: %v", err)
		}
	}()
	s, err = Listen(sock, "", func() Snapshot { return sample() }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fc := &fakeControl{}
	s.OnControl(fc)
	defer serve(s)()
	ctx := context.Background()
	for _, a := range []string{AdminDrain, AdminDisable, AdminEnable} {
		if err := SetBackend(ctx, sock, "api", "10.0.0.11:6443", a); err != nil {
			t.Fatalf("backend %s: %v", a, err)
		}
	}
	if err := SetInstance(ctx, sock, "api", Resign); err != nil {
		t.Fatal(err)
	}
	if err := SetInstance(ctx, sock, "api", Resume); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(fc.backend, fc.instance) != "[drain disable enable] [true false]" {
		t.Fatalf("applied: %v %v", fc.backend, fc.instance)
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{SetBackend(ctx, sock, "nope", "10.0.0.11:6443", AdminDrain), `unknown balancer "nope"`},
		{SetBackend(ctx, sock, "api", "10.0.0.99:6443", AdminDrain), "balancer api: unknown backend 10.0.0.99:6443"},
		{SetBackend(ctx, sock, "api", "10.0.0.11:6443", "pause"), `backend action "pause": want drain, disable or enable`},
		{SetInstance(ctx, sock, "nope", Resign), `unknown instance "nope"`},
		{SetInstance(ctx, sock, "api", "maint"), `instance action "maint": want resign or resume`},
	} {
		if c.err == nil || c.err.Error() != c.want {
			t.Errorf("got %v, want %q", c.err, c.want)
		}
	}
	if len(fc.backend) != 3 || len(fc.instance) != 2 {
		t.Fatalf("a refused command was applied: %v %v", fc.backend, fc.instance)
	}
}

// Admin states read in the table and the metrics.
func TestAdminStatesAreShown(t *testing.T) {
	snap := sample()
	snap.Instances[1].Resigned = true
	bes := snap.Balancers[0].Backends
	bes[0].Admin, bes[0].State = BackendDisabled, BackendDisabled
	bes[1].Admin = BackendDrain // down, and drained once it is back
	var out bytes.Buffer
	if err := WriteTable(&out, snap, t0); err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{`(?m)^ingress +eth0 +52 v3 +BACKUP \(RESIGNED\) `, `(?m)^  10\.0\.0\.11:6443 +DISABLED \(MAINT\) +1 `,
		`(?m)^  10\.0\.0\.12:6443 +DOWN \(drain set\) +1 `} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("no match for %s in:\n%s", re, out.String())
		}
	}
	got := gathered(t, NewRegistry(func() Snapshot { return snap }), "vigil_backend_state")
	if key := `backend="10.0.0.11:6443",balancer="api",state="disabled"`; got[key] != 1 {
		t.Errorf("vigil_backend_state{%s} = %v, want 1", key, got[key])
	}
	b, _ := json.Marshal(snap.Instances[1])
	if !strings.Contains(string(b), `"resigned":true`) {
		t.Errorf("instance JSON: %s", b)
	}
}

// GET /api/v1/history answers the recorder's view, which the status page
// draws; a daemon without one answers 404. The page itself loads nothing
// from elsewhere: no script, style or image source, no link.
func TestHistoryEndpointAndSelfContainedPage(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	s, err := Listen(filepath.Join(t.TempDir(), "vigil.sock"), "127.0.0.1:0", func() Snapshot { return sample() }, log)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	store := health.New()
	rec := history.New(store, clock.Real{}, nil, log)
	be := health.BackendKey("api", netip.MustParseAddrPort("10.0.0.2:8000"))
	rec.Observe([]health.Change{{Key: be, State: health.State{Up: false, Reason: "connection refused"}, Known: true}}, time.Now())
	s.OnHistory(rec.View)
	defer serve(s)()
	code, body := get("/api/v1/history")
	var v history.View
	if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil || len(v.Events) != 1 || v.Events[0].Addr != "10.0.0.2:8000" ||
		v.Events[0].Reason != "connection refused" || len(v.Keys) != 1 || v.Step != history.Step {
		t.Fatalf("history: %d %v\n%s", code, err, body)
	}
	_, page := get("/")
	for _, ref := range []string{"src=", "href=", "<link", "@import", "url("} {
		if strings.Contains(page, ref) {
			t.Errorf("the status page has %q: it must not load anything from elsewhere", ref)
		}
	}
	none, err := Listen(filepath.Join(t.TempDir(), "vigil.sock"), "127.0.0.1:0", func() Snapshot { return sample() }, log)
	if err != nil {
		t.Fatal(err)
	}
	defer serve(none)()
	resp, err := http.Get("http://" + none.HTTPAddr() + "/api/v1/history")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("no recorder: %s, want 404", resp.Status)
	}
}
