package importer

import (
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/config"
)

// kaScript is a keepalived.conf of one instance tracking one vrrp_script.
func kaScript(script string, weight int) string {
	return `vrrp_script chk {
    script "` + strings.ReplaceAll(script, `"`, `\"`) + `"
    interval 2
    weight ` + string(rune('0'+weight)) + `
    fall 2
    rise 3
}
vrrp_instance api {
    interface eth0
    virtual_router_id 7
    virtual_ipaddress {
        10.0.0.1/32
    }
    track_script {
        chk
    }
}
`
}

// Track scripts that are curl GETs become http checks (OpenShift's chk_ocp,
// inline or a script file of GETs joined by &&); anything else stays an exec
// check, noted as not running in the distroless image.
func TestCurlScriptsBecomeHTTPChecks(t *testing.T) {
	files := map[string]string{
		"/etc/keepalived/chk_ocp_script_both.sh": "#!/bin/bash\nset -e\n# both must answer\n/usr/bin/curl -o /dev/null -kLfs https://localhost:9445/readyz && /usr/bin/curl -o /dev/null -kLfs http://localhost:50936/readyz\n",
		"/etc/keepalived/other.sh":               "#!/bin/sh\npidof haproxy >/dev/null || exit 1\n",
	}
	read := func(p string) ([]byte, error) {
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, fs.ErrNotExist
	}
	type check struct {
		name, url string
		insecure  bool
		expect    []string
		timeout   time.Duration
	}
	for _, c := range []struct {
		script    string
		checks    []check // nil: not converted, an exec check
		note      string  // in the notes
		container bool    // a NOT IN THE CONTAINER IMAGE note
	}{
		{"/usr/bin/timeout 0.9 /usr/bin/curl -o /dev/null -kLfs https://localhost:6443/readyz",
			[]check{{"chk", "https://localhost:6443/readyz", true, nil, 900 * time.Millisecond}}, "the built-in http check chk", false},
		{"curl -o /dev/null -kLs https://0:6443/readyz", // no -f, host 0 (OpenShift's older template)
			[]check{{"chk", "https://127.0.0.1:6443/readyz", true, []string{"100-599"}, 2 * time.Second}}, "without -f passes on any HTTP answer", false},
		{"curl -fsS --max-time 1.5 'http://10.0.0.5:1936/healthz/ready'",
			[]check{{"chk", "http://10.0.0.5:1936/healthz/ready", false, nil, 1500 * time.Millisecond}}, "", false},
		{"/usr/bin/timeout 1.9 /etc/keepalived/chk_ocp_script_both.sh", []check{
			{"chk-1", "https://localhost:9445/readyz", true, nil, 1900 * time.Millisecond},
			{"chk-2", "http://localhost:50936/readyz", true, nil, 1900 * time.Millisecond}}, "script file /etc/keepalived/chk_ocp_script_both.sh", false},
		{"curl -H 'Authorization: x' -f https://localhost/readyz", nil, "", true}, // a header: not a plain GET
		{"curl -f https://a/readyz || curl -f https://b/readyz", nil, "", true},   // either: not expressible
		{"/etc/keepalived/other.sh", nil, "", true},
		{"/etc/keepalived/missing.sh", nil, "", true},
		{"killall -0 haproxy", nil, "", true},
	} {
		r, err := KeepalivedWith("k.conf", kaScript(c.script, 5), read)
		if err != nil {
			t.Fatalf("%s: %v", c.script, err)
		}
		notes := ""
		container := false
		for _, n := range r.Notes {
			notes += n.String() + "\n"
			container = container || n.Container
		}
		if container != c.container || !strings.Contains(notes, c.note) {
			t.Errorf("%s: notes\n%swant container note %v and %q", c.script, notes, c.container, c.note)
		}
		if r.Lost() {
			t.Errorf("%s: lost behaviour:\n%s", c.script, notes)
		}
		// The result validates, and the instance tracks every check with the script's weight.
		y, err := r.YAML()
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse(y)
		if err != nil {
			t.Fatalf("%s: does not validate: %v\n%s", c.script, err, y)
		}
		if c.checks == nil {
			if len(cfg.Checks) != 1 || cfg.Checks[0].Exec == nil || cfg.Checks[0].Exec.Script != c.script {
				t.Errorf("%s: checks %+v, want the exec check kept", c.script, cfg.Checks)
			}
			continue
		}
		if len(cfg.Checks) != len(c.checks) {
			t.Fatalf("%s: %d checks, want %d:\n%s", c.script, len(cfg.Checks), len(c.checks), y)
		}
		for i, want := range c.checks {
			got := cfg.Checks[i]
			if got.Exec != nil || got.HTTP == nil || got.Name != want.name || got.HTTP.URL != want.url || got.HTTP.InsecureSkipVerify != want.insecure ||
				got.Timeout != want.timeout || got.Interval != 2*time.Second || got.Rise != 3 || got.Fall != 2 {
				t.Errorf("%s: check %d: %+v %+v, want %+v", c.script, i, got, got.HTTP, want)
			}
			if exp := cmpOr(want.expect, []string{"200-399"}); !slices.Equal(got.HTTP.ExpectStatus, exp) {
				t.Errorf("%s: expect_status %v, want %v", c.script, got.HTTP.ExpectStatus, exp)
			}
			if tr := cfg.VRRP.Instances[0].Track.Checks; len(tr) != len(c.checks) || tr[i] != (config.TrackRef{Name: want.name, Weight: 5}) {
				t.Errorf("%s: tracked %+v", c.script, tr)
			}
		}
	}
}

func cmpOr(a, b []string) []string {
	if a != nil {
		return a
	}
	return b
}

// vrrp_garp_master_refresh (global) and garp_master_refresh (instance) are
// garp.refresh; options with no meaning in vigil are ignored, not lost;
// notify hooks are noted as not running in the image.
func TestGARPAndOptionsThatNeedNoConversion(t *testing.T) {
	src := `global_defs {
    max_auto_priority -1
    vrrp_garp_master_refresh 60
    vrrp_garp_master_repeat 3
    notification_email {
        ops@example.com
    }
    smtp_server 127.0.0.1
}
vrrp_instance a {
    interface eth0
    virtual_router_id 7
    virtual_ipaddress {
        10.0.0.1/32
    }
    notify /etc/keepalived/notify.sh
}
vrrp_instance b {
    interface eth0
    virtual_router_id 8
    garp_master_refresh 0
    garp_interval 0.1
    virtual_ipaddress {
        10.0.0.2/32
    }
}
`
	r, err := Keepalived("k.conf", src)
	if err != nil {
		t.Fatal(err)
	}
	var ignored, container []string
	for _, n := range r.Notes {
		switch {
		case n.Lost:
			t.Errorf("lost: %s", n)
		case n.Container:
			container = append(container, n.String())
		default:
			ignored = append(ignored, n.String())
		}
	}
	for _, want := range []string{"k.conf:2: ignored: max_auto_priority", "k.conf:5: ignored: notification_email", "k.conf:8: ignored: smtp_server"} {
		if !slices.ContainsFunc(ignored, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("no note %q in %q", want, ignored)
		}
	}
	if len(container) != 1 || !strings.HasPrefix(container[0], "k.conf:16: NOT IN THE CONTAINER IMAGE: notify /etc/keepalived/notify.sh") {
		t.Errorf("container notes %q", container)
	}
	a, b := r.Config.VRRP.Instances[0].GARP, r.Config.VRRP.Instances[1].GARP
	if a.Refresh == nil || *a.Refresh != time.Minute || a.Count == nil || *a.Count != 3 {
		t.Errorf("instance a garp %+v: want the global refresh 60s and count 3", a)
	}
	if b.Refresh == nil || *b.Refresh != 0 || b.Interval != 100*time.Millisecond || b.Count == nil || *b.Count != 3 {
		t.Errorf("instance b garp %+v: want its own refresh 0 (off), interval 100ms, the global count", b)
	}
	y, err := r.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse(y); err != nil {
		t.Fatalf("does not validate: %v\n%s", err, y)
	}
}

// A file of the wrong kind is refused in one line that says what it looks
// like, instead of a page of NOT CONVERTED notes.
func TestWrongKindOfFileIsRefused(t *testing.T) {
	haproxy, keepalived := load(t, "haproxy.cfg"), load(t, "keepalived.conf")
	metallb := load(t, "metallb/l2.yaml")
	vigil := "cluster: c\nvrrp:\n  instances: []\n"
	for _, c := range []struct {
		file, src string
		conv      func(string, string) (*Result, error)
		want      string
	}{
		{"haproxy.cfg", haproxy, Keepalived, "haproxy.cfg: not a keepalived.conf: it reads as an haproxy.cfg (use vigil import haproxy haproxy.cfg)"},
		{"l2.yaml", metallb, Keepalived, "l2.yaml: not a keepalived.conf: it reads as MetalLB YAML (use vigil import metallb l2.yaml)"},
		{"vigil.yaml", vigil, Keepalived, "vigil.yaml: not a keepalived.conf: it reads as YAML"},
		{"keepalived.conf", keepalived, HAProxy, "keepalived.conf: not a haproxy.cfg: it reads as a keepalived.conf (use vigil import keepalived keepalived.conf)"},
		{"vigil.yaml", vigil, HAProxy, "vigil.yaml: not a haproxy.cfg: it reads as YAML"},
		{"l2.yaml", metallb, HAProxy, "l2.yaml: not a haproxy.cfg: it reads as MetalLB YAML (use vigil import metallb l2.yaml)"},
	} {
		r, err := c.conv(c.file, c.src)
		if err == nil {
			t.Errorf("%s: converted, with %d notes", c.file, len(r.Notes))
			continue
		}
		if err.Error() != c.want || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %q, want %q", c.file, err, c.want)
		}
	}
	// The right kinds still convert.
	if _, err := Keepalived("k", keepalived); err != nil {
		t.Error(err)
	}
	if _, err := HAProxy("h", haproxy); err != nil {
		t.Error(err)
	}
}

// FuzzCurlScript: any script text, inline or a script file's, either is
// recognised as curl GETs of absolute http(s) URLs or is not; it never
// panics, and a recognised one converts to a config that validates.
func FuzzCurlScript(f *testing.F) {
	f.Add("/usr/bin/timeout 0.9 /usr/bin/curl -o /dev/null -kLfs https://localhost:6443/readyz")
	f.Add("#!/bin/bash\n/usr/bin/curl -o /dev/null -kLfs https://localhost:9445/readyz && /usr/bin/curl -kLfs http://0:50936/readyz\n")
	f.Add("curl -m 1.5 -o/dev/null 'http://[::1]:1936/healthz?x=1' >/dev/null 2>&1")
	f.Fuzz(func(t *testing.T, text string) {
		gets, ok := curlChain(text)
		if !ok {
			return
		}
		for _, g := range gets {
			if !strings.HasPrefix(g.URL, "http://") && !strings.HasPrefix(g.URL, "https://") {
				t.Fatalf("%q: URL %q", text, g.URL)
			}
		}
		if strings.ContainsAny(text, "\"\\\n") {
			return // not a keepalived script line
		}
		r, err := Keepalived("k.conf", kaScript(text, 5))
		if err != nil {
			return
		}
		y, err := r.YAML()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := config.Parse(y); err != nil && strings.Contains(err.Error(), "checks[") {
			t.Fatalf("%q: the http checks do not validate: %v", text, err)
		}
	})
}
