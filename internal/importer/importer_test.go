package importer

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/config"
)

var update = flag.Bool("update", false, "rewrite golden files")

func load(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The configs an on-prem OpenShift control plane runs convert into one
// vigil config that validates; only notify_master is lost.
func TestOpenShiftControlPlane(t *testing.T) {
	ka, err := Keepalived("keepalived.conf", load(t, "keepalived.conf"))
	if err != nil {
		t.Fatal(err)
	}
	ha, err := HAProxy("haproxy.cfg", load(t, "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	ka.Merge(ha)
	y, err := ka.YAML()
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "openshift.golden.yaml")
	if *update {
		os.WriteFile(golden, y, 0o644)
	}
	if want, _ := os.ReadFile(golden); string(want) != string(y) {
		t.Fatalf("output differs from %s (go test -update rewrites it):\n%s", golden, y)
	}
	cfg, err := config.Parse(y)
	if err != nil {
		t.Fatalf("the converted config does not validate: %v", err)
	}
	api := cfg.VRRP.Instances[0]
	if api.VRID != 97 || api.Priority != 40 || *api.Preempt || api.AuthPass != "ostest_a" || len(api.UnicastPeers) != 2 ||
		api.Track.Checks[0] != (config.TrackRef{Name: "chk_ocp_lb", Weight: 50}) || api.Notify != "/etc/keepalived/notify.sh" {
		t.Fatalf("api instance %+v", api)
	}
	// chk_ocp_lb is a curl GET: the built-in http check, which runs in
	// the distroless image.
	if c := cfg.Checks[0]; c.Exec != nil || c.HTTP == nil || c.HTTP.URL != "https://localhost:9445/readyz" || !c.HTTP.InsecureSkipVerify || c.Rise != 3 || c.Fall != 2 {
		t.Fatalf("check %+v", c)
	}
	if r := api.GARP.Refresh; r == nil || *r != time.Minute {
		t.Fatalf("vrrp_garp_master_refresh 60: garp %+v", api.GARP)
	}
	b := cfg.Balancers[0]
	if b.Listen[0] != ":9445" || len(b.Backends) != 3 || b.Check.HTTP.Path != "/readyz" || !b.Check.HTTP.TLS ||
		b.Check.Interval.String() != "3s" || b.Check.Rise != 3 || b.Monitor.Listen != ":50936" || b.Monitor.Path != "/readyz" {
		t.Fatalf("balancer %+v check %+v", b, b.Check)
	}
	var lost []string
	for _, n := range ka.Notes {
		if n.Lost {
			lost = append(lost, n.String())
		}
	}
	if len(lost) != 1 || !strings.HasPrefix(lost[0], "keepalived.conf:60: NOT CONVERTED: notify_master") {
		t.Fatalf("lost: %q", lost)
	}
}

func TestEverythingLostIsListedWithItsLine(t *testing.T) {
	ka := `vrrp_instance a {
    interface eth0
    virtual_router_id 1
    virtual_ipaddress {
        10.0.0.1 dev eth1
    }
    smtp_alert
}
virtual_server 10.0.0.1 80 {
    lb_algo rr
}
`
	r, err := Keepalived("k.conf", ka)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"k.conf:5: NOT CONVERTED: VIP 10.0.0.1 on dev eth1: vigil adds VIPs to the instance's interface eth0",
		"k.conf:7: NOT CONVERTED: vrrp_instance a: smtp_alert is not converted",
		"k.conf:9: NOT CONVERTED: virtual_server: no vigil equivalent",
	}
	r.Sort()
	var got []string
	for _, n := range r.Notes {
		got = append(got, n.String())
	}
	for i, w := range want {
		if i >= len(got) || !strings.HasPrefix(got[i], w) {
			t.Fatalf("notes %q, want prefixes %q", got, want)
		}
	}
	ha := `frontend web
  bind 10.0.0.1:80
  mode http
  default_backend b
backend b
  balance source
  server s1 10.0.0.2:80 check backup
`
	r, err = HAProxy("h.cfg", ha)
	if err != nil {
		t.Fatal(err)
	}
	r.Sort()
	got = got[:0]
	for _, n := range r.Notes {
		got = append(got, n.String())
	}
	if len(got) != 2 || !strings.Contains(got[0], "h.cfg:1: NOT CONVERTED: frontend web is mode http") ||
		!strings.Contains(got[1], "h.cfg:5: NOT CONVERTED: backend b is used by no frontend") {
		t.Fatalf("notes %q", got)
	}
}

// A number that is not one is noted, not turned into 0: the encoder leaves
// zeros out, so priority 0 would quietly read back as the default 100.
func TestBadNumbersAreNoted(t *testing.T) {
	r, err := Keepalived("k.conf", "vrrp_instance a {\n interface eth0\n virtual_router_id 7\n priority high\n version x\n virtual_ipaddress {\n  10.0.0.1\n }\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	r.Sort()
	var got []string
	for _, n := range r.Notes {
		got = append(got, n.String())
	}
	want := []string{`k.conf:4: NOT CONVERTED: priority "high" is not a number`, `k.conf:5: NOT CONVERTED: version "x" is not a number`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("notes %q, want %q", got, want)
	}
	if in := r.Config.VRRP.Instances[0]; in.VRID != 7 || in.Priority != config.DefaultPriority || in.Version != 2 {
		t.Fatalf("instance %+v keeps keepalived's defaults", in)
	}
}

func TestKeepalivedSyntaxErrors(t *testing.T) {
	for src, want := range map[string]string{
		"vrrp_instance a {\n  interface eth0\n": "block vrrp_instance opened on line 1 is not closed",
		"}\n":                                   "line 1: } without an open block",
		"vrrp_script s {\n script \"/bin/true\n}\n": "line 2: unterminated quote",
	} {
		if _, err := Keepalived("k.conf", src); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", src, err, want)
		}
	}
}

func TestCleanConfigLosesNothing(t *testing.T) {
	r, err := Keepalived("k.conf", "vrrp_instance a {\n interface eth0\n virtual_router_id 7\n priority 150\n advert_int 1\n virtual_ipaddress {\n  10.0.0.1/32\n }\n}\n")
	if err != nil || r.Lost() || len(r.Notes) != 0 {
		t.Fatalf("%v %+v", err, r.Notes)
	}
	y, _ := r.YAML()
	if _, err := config.Parse(y); err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
}

// TestBalanceSourceBecomesMaglev: HAProxy's client-address affinity maps
// to vigil's, which hashes consistently.
func TestBalanceSourceBecomesMaglev(t *testing.T) {
	r, err := HAProxy("h.cfg", "frontend api\n  bind :9445\n  mode tcp\n  default_backend b\nbackend b\n  mode tcp\n  balance source\n  hash-type consistent\n  server s1 10.0.0.2:6443 check\n")
	if err != nil || r.Lost() {
		t.Fatalf("%v %+v", err, r.Notes)
	}
	y, _ := r.YAML()
	c, err := config.Parse(y)
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if c.Balancers[0].Algorithm != "maglev" {
		t.Fatalf("algorithm %q, want maglev\n%s", c.Balancers[0].Algorithm, y)
	}
}

func FuzzKeepalived(f *testing.F) {
	f.Add(load(f, "keepalived.conf"))
	f.Add("vrrp_instance a { interface eth0 }")
	f.Fuzz(func(t *testing.T, src string) {
		r, err := Keepalived("f", src)
		if err != nil {
			return
		}
		if _, err := r.YAML(); err != nil {
			t.Fatal(err)
		}
		checkRoundTrip(t, r, false)
	})
}

func FuzzHAProxy(f *testing.F) {
	f.Add(load(f, "haproxy.cfg"))
	f.Fuzz(func(t *testing.T, src string) {
		r, err := HAProxy("f", src)
		if err != nil {
			return
		}
		if _, err := r.YAML(); err != nil {
			t.Fatal(err)
		}
		checkRoundTrip(t, r, false)
	})
}

func TestSyncGroupAndTrackWeights(t *testing.T) {
	src := `vrrp_script chk {
 script "/bin/true"
 weight -20
}
vrrp_instance a {
 interface eth0
 virtual_router_id 1
 virtual_ipaddress { 10.0.0.1 }
 track_script { chk weight 30 }
}
vrrp_instance b {
 interface eth1
 virtual_router_id 2
 virtual_ipaddress { 10.0.1.1 }
 track_script { chk }
}
vrrp_sync_group g { group { a b } notify /etc/keepalived/g.sh }
`
	r, err := Keepalived("k.conf", src)
	if err != nil || r.Lost() {
		t.Fatalf("%v %+v", err, r.Notes)
	}
	ins := r.Config.VRRP.Instances
	if ins[0].Track.Checks[0].Weight != 30 || ins[1].Track.Checks[0].Weight != -20 {
		t.Fatalf("track weights %+v %+v (the line's weight wins over the script's)", ins[0].Track, ins[1].Track)
	}
	g := r.Config.VRRP.SyncGroups[0]
	if g.Name != "g" || strings.Join(g.Instances, ",") != "a,b" || g.Notify != "/etc/keepalived/g.sh" {
		t.Fatalf("sync group %+v", g)
	}
	y, _ := r.YAML()
	if _, err := config.Parse(y); err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
}
