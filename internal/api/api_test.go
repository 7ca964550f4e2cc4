package api

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
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
				Foreign: &Foreign{Source: "10.0.0.9", VIPs: []string{"192.0.2.99"}, Reason: "vip_mismatch", LastSeen: t0.Add(-3 * time.Second), Count: 12}},
			{Name: "ingress", Interface: "eth0", VRID: 52, Version: 3, State: "BACKUP", Priority: 100, EffectivePriority: 50,
				Master: "10.0.0.2", VIPs: []string{"192.0.2.11", "192.0.2.12"}, Since: t0.Add(-30 * time.Second), AdvertsReceived: 300,
				Transitions: 1, ARPConflicts: 1},
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
		BGP: &BGP{Sessions: []BGPSession{{Neighbor: "10.0.0.254", ASN: 64500, State: "established", Since: t0.Add(-time.Hour)},
			{Neighbor: "10.0.0.253", ASN: 64501, State: "idle", LastError: "bad peer as", Failures: 3, RetryAt: t0.Add(15 * time.Second)}},
			Announced: []string{"192.0.2.10/32"}},
		Kubernetes: &Kubernetes{Server: "127.0.0.1:6443", WatchUp: false, Synced: true, Origin: "api", Nodes: 3, Slices: 2,
			LastSync: t0.Add(-2 * time.Minute), LastError: "watch nodes: connection refused", ChangesApplied: 7,
			Notes: []string{"balancers[0] api: Node m4 has no address in 192.0.2.0/24 or InternalIP of IPv4; left out"}},
		Redirects: []Redirect{{Balancer: "api", From: "192.0.2.10:6443", To: "192.0.2.10:9445", Installed: true}},
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
		want   string
	}{{true, 1, "up"}, {true, 0, "drain"}, {false, 1, "down"}, {false, 0, "down"}} {
		if got := BackendState(c.up, c.weight); got != c.want {
			t.Errorf("BackendState(up %v, weight %d) = %s, want %s", c.up, c.weight, got, c.want)
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
		"vigil_check_up", "vigil_check_latency_seconds", "vigil_backend_up", "vigil_backend_bytes_total", "vigil_balancer_connections_refused_total"} {
		if !names[want] {
			t.Errorf("metric %s missing", want)
		}
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
	if m := get("/metrics"); !strings.Contains(m, `vigil_vrrp_state{instance="api",state="MASTER"} 1`) {
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

func TestFetchWithoutDaemon(t *testing.T) {
	_, err := Fetch(context.Background(), filepath.Join(t.TempDir(), "none.sock"))
	if err == nil || !strings.HasPrefix(err.Error(), "no vigil daemon answers on ") || strings.Count(err.Error(), "\n") > 0 {
		t.Fatalf("err = %v", err)
	}
}

// Every metric the Grafana dashboard in docs/ queries exists.
func TestDashboardUsesRealMetrics(t *testing.T) {
	b, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := NewRegistry(func() Snapshot { return sample() }).Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	used := regexp.MustCompile(`vigil_[a-z_]+`).FindAllString(string(b), -1)
	if len(used) < 10 {
		t.Fatalf("dashboard uses only %d metrics", len(used))
	}
	for _, m := range used {
		if !have[m] {
			t.Errorf("dashboard queries %s, which vigil does not export", m)
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
