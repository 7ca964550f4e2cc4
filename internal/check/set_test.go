package check

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
)

const checksYAML = `checks:
  - {name: readyz, http: {url: "https://127.0.0.1:6443/readyz", insecure_skip_verify: true}}
  - {name: script, exec: {script: "true"}}
balancers:
  - name: api
    listen: ["127.0.0.1:9445"]
    backends: [{address: "10.0.0.11:6443"}, {address: "10.0.0.12:6443"}]
    check: {http: {path: /readyz, tls: true}, interval: 1s}
`

func parse(t *testing.T, src string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func specConfigs(t *testing.T, src string) map[health.Key]string {
	t.Helper()
	specs, err := Specs(parse(t, src))
	if err != nil {
		t.Fatal(err)
	}
	out := map[health.Key]string{}
	for _, s := range specs {
		out[s.Key] = s.config
	}
	return out
}

// A reload of the same file keeps every check runner: settings keys depend
// on the check's settings only, not on where the parsed config lives in
// memory.
func TestCheckSettingsChangeOnlyWithTheCheck(t *testing.T) {
	a, b := specConfigs(t, checksYAML), specConfigs(t, checksYAML)
	if len(a) != 4 {
		t.Fatalf("%d specs", len(a))
	}
	for k, c := range a {
		if b[k] != c {
			t.Errorf("%v: settings changed between two parses of the same config:\n%s\n%s", k, c, b[k])
		}
	}
	c := specConfigs(t, checksYAML[:len(checksYAML)-len("interval: 1s}\n")]+"interval: 2s}\n")
	be := health.BackendKey("api", netip.MustParseAddrPort("10.0.0.11:6443"))
	if c[be] == a[be] || c[health.CheckKey("readyz")] != a[health.CheckKey("readyz")] {
		t.Error("a changed balancer check must change only its backends' settings")
	}
}

// A Set publishes every check's state, keeps a check that went down down
// across a reload that changes its settings, and deletes the key of a
// check a reload removes.
func TestSetReloadKeepsStateAndDeletesRemoved(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := l.Addr().String()
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l2.Addr().String()
	l2.Close() // refused from now on
	defer l.Close()
	src := func(interval string, both bool) string {
		s := "checks:\n  - {name: up, tcp: {address: \"" + up + "\"}, interval: " + interval + ", rise: 1, fall: 1}\n"
		if both {
			s += "  - {name: down, tcp: {address: \"" + down + "\"}, interval: " + interval + ", rise: 1, fall: 1}\n"
		}
		return s
	}
	store := health.New()
	set, err := NewSet(parse(t, src("50ms", true)), store, discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- set.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	waitState(t, store, health.CheckKey("down"), false)
	waitState(t, store, health.CheckKey("up"), true)

	// New settings restart the check from its current state: it is down
	// from its first moment, never up in between.
	sub := store.Subscribe()
	defer sub.Close()
	sub.Changes()
	ch, err := set.Plan(parse(t, src("1h", true)))
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	time.Sleep(100 * time.Millisecond)
	for _, c := range sub.Changes() {
		if c.Key == health.CheckKey("down") && c.State.Up {
			t.Fatal("a restarted check that was down came up before it passed")
		}
	}
	if st, _ := store.Get(health.CheckKey("down")); st.Up {
		t.Fatal("restarted check is up")
	}
	ch, err = set.Plan(parse(t, src("1h", false)))
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	if _, ok := store.Get(health.CheckKey("down")); ok {
		t.Fatal("a removed check's key is still in the store")
	}
	if got := set.Statuses(); len(got) != 1 || got[0].Name != "up" {
		t.Fatalf("statuses %+v", got)
	}
	// Back in the config, a check that went while down starts down.
	ch, err = set.Plan(parse(t, src("1h", true)))
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	if st, ok := store.Get(health.CheckKey("down")); !ok || st.Up {
		t.Fatalf("a check that came back is %+v (known %v), want down", st, ok)
	}
}

// A Plan that cannot build a prober is refused with the check's key and
// changes nothing.
func TestSetPlanRefusesBadProber(t *testing.T) {
	store := health.New()
	set, err := NewSet(parse(t, "checks:\n  - {name: a, exec: {script: \"true\"}}\n"), store, discard())
	if err != nil {
		t.Fatal(err)
	}
	_, err = set.Plan(parse(t, "checks:\n  - {name: a, http: {url: \"https://127.0.0.1:1/\", ca_file: /nonexistent/ca.pem}}\n"))
	if err == nil || !strings.Contains(err.Error(), "checks[0] (a)") {
		t.Fatalf("err %v", err)
	}
}
