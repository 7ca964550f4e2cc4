package redirect

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigil-lb/vigil/internal/clock/clocktest"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
)

// fakeKernel records every call as a line ("remove", "sync a b"), and
// fails Sync while fail is set.
type fakeKernel struct {
	calls chan string
	mu    sync.Mutex
	fail  error
}

func newFake() *fakeKernel { return &fakeKernel{calls: make(chan string, 100)} }

func (f *fakeKernel) Sync(rules []Rule) error {
	names := []string{"sync"}
	for _, r := range rules {
		names = append(names, netip.AddrPortFrom(r.VIP, r.From).String())
	}
	f.calls <- strings.Join(names, " ")
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fail
}

func (f *fakeKernel) Remove() error { f.calls <- "remove"; return nil }

func (f *fakeKernel) setFail(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

func (f *fakeKernel) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-f.calls:
		if got != want {
			t.Fatalf("kernel call %q, want %q", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no kernel call, want %q", want)
	}
}

var (
	api4    = Rule{Balancer: "api", VIP: netip.MustParseAddr("192.0.2.10"), From: 6443, To: 9445}
	api6    = Rule{Balancer: "api", VIP: netip.MustParseAddr("2001:db8::10"), From: 6443, To: 9445}
	ingress = Rule{Balancer: "ingress", VIP: netip.MustParseAddr("192.0.2.11"), From: 443, To: 9443}
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func start(t *testing.T, r *Redirect) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// statusOnce returns the status line once ok holds, or after 5 s: the
// fake kernel reports a call before the component has recorded its result.
func statusOnce(r *Redirect, ok func(string) bool) string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := statusLine(r)
		if ok(s) || time.Now().After(deadline) {
			return s
		}
		time.Sleep(time.Millisecond)
	}
}

func statusLine(r *Redirect) string {
	var b strings.Builder
	for _, s := range r.Status() {
		b.WriteString(netip.AddrPortFrom(s.VIP, s.From).String())
		if s.Installed {
			b.WriteString("=on")
		} else {
			b.WriteString("=off")
		}
		if s.Reason != "" {
			b.WriteString("(" + s.Reason + ")")
		}
		b.WriteString(" ")
	}
	return strings.TrimSpace(b.String())
}

// The rules of a balancer are installed while its key is up, removed when
// it is down or unknown, the kernel is called only when that changes, and
// everything goes at start (a stale table) and at shutdown.
func TestFollowsBalancerHealth(t *testing.T) {
	defer goleak.VerifyNone(t)
	store := health.New()
	store.Set(health.BalancerKey("api"), health.State{Up: true})
	k := newFake()
	r := newWith([]Rule{ingress, api6, api4}, store, discard(), nil, k, clocktest.New(time.Unix(0, 0)))
	stop := start(t, r)
	k.expect(t, "remove")
	k.expect(t, "sync 192.0.2.10:6443 [2001:db8::10]:6443")
	if got, want := statusOnce(r, func(s string) bool {
		return s == "192.0.2.10:6443=on 192.0.2.11:443=off(balancer state unknown) [2001:db8::10]:6443=on"
	}), "192.0.2.10:6443=on 192.0.2.11:443=off(balancer state unknown) [2001:db8::10]:6443=on"; got != want {
		t.Fatalf("status %s, want %s", got, want)
	}

	store.Set(health.BalancerKey("ingress"), health.State{Up: true})
	k.expect(t, "sync 192.0.2.10:6443 192.0.2.11:443 [2001:db8::10]:6443")
	store.Set(health.BalancerKey("api"), health.State{Up: false, Reason: "no backend in rotation"})
	k.expect(t, "sync 192.0.2.11:443")
	// A new reason and keys of other kinds change nothing in the kernel.
	store.Set(health.BalancerKey("api"), health.State{Up: false, Reason: "other"})
	store.Set(health.BackendKey("api", netip.MustParseAddrPort("10.0.0.1:6443")), health.State{Up: true})
	store.Set(health.CheckKey("api"), health.State{Up: true})
	store.Delete(health.BalancerKey("ingress"))
	k.expect(t, "sync")
	if got, want := statusOnce(r, func(s string) bool {
		return s == "192.0.2.10:6443=off(balancer down: other) 192.0.2.11:443=off(balancer state unknown) [2001:db8::10]:6443=off(balancer down: other)"
	}), "192.0.2.10:6443=off(balancer down: other) 192.0.2.11:443=off(balancer state unknown) [2001:db8::10]:6443=off(balancer down: other)"; got != want {
		t.Fatalf("status %s, want %s", got, want)
	}

	// A reload: api's IPv6 rule goes, a new port comes; then api comes up.
	api4b := Rule{Balancer: "api", VIP: api4.VIP, From: 22623, To: 22624}
	ch, err := r.PlanRules([]Rule{api4, api4b})
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	store.Set(health.BalancerKey("api"), health.State{Up: true})
	k.expect(t, "sync 192.0.2.10:6443 192.0.2.10:22623")
	// Aborting a plan changes nothing; committing an empty set removes all.
	if ch, err = r.PlanRules(nil); err != nil {
		t.Fatal(err)
	}
	ch.Abort()
	if ch, err = r.PlanRules([]Rule{api4}); err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	k.expect(t, "sync 192.0.2.10:6443")

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	k.expect(t, "remove")
	if got, want := statusOnce(r, func(s string) bool { return s == "192.0.2.10:6443=off" }), "192.0.2.10:6443=off"; got != want {
		t.Fatalf("status after shutdown %s, want %s", got, want)
	}
	select {
	case c := <-k.calls:
		t.Fatalf("kernel call %q after shutdown", c)
	default:
	}
}

// A failed change leaves the kernel's last rule set, says so in the
// status, and is retried; the table is rebuilt now and then regardless.
func TestRetryAndResync(t *testing.T) {
	store := health.New()
	store.Set(health.BalancerKey("api"), health.State{Up: true})
	k := newFake()
	clk := clocktest.New(time.Unix(0, 0))
	r := newWith([]Rule{api4}, store, discard(), nil, k, clk)
	start(t, r)
	k.expect(t, "remove")
	k.expect(t, "sync 192.0.2.10:6443")

	k.setFail(errors.New("ENOBUFS"))
	store.Set(health.BalancerKey("api"), health.State{Up: false})
	k.expect(t, "sync")
	if !clk.BlockUntil(2) { // the resync ticker and the retry timer
		t.Fatal("no retry timer")
	}
	if got := statusOnce(r, func(s string) bool {
		return strings.Contains(s, "=on(balancer down (still installed: redirect: install 0 rules: ENOBUFS))")
	}); !strings.Contains(got, "=on(balancer down (still installed: redirect: install 0 rules: ENOBUFS))") {
		t.Fatalf("status after a failure: %s", got)
	}
	k.setFail(nil)
	clk.Advance(retryInterval)
	k.expect(t, "sync")
	if got, want := statusOnce(r, func(s string) bool { return s == "192.0.2.10:6443=off(balancer down)" }), "192.0.2.10:6443=off(balancer down)"; got != want {
		t.Fatalf("status %s, want %s", got, want)
	}
	clk.Advance(resyncInterval)
	k.expect(t, "sync")
}

// A kernel that refuses the first installation stops the component.
func TestFirstSyncFails(t *testing.T) {
	k := newFake()
	k.setFail(errors.New("operation not permitted"))
	r := newWith([]Rule{api4}, health.New(), discard(), nil, k, clocktest.New(time.Unix(0, 0)))
	err := r.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "operation not permitted") {
		t.Fatalf("Run: %v", err)
	}
}

func TestValidate(t *testing.T) {
	bad := []struct {
		name  string
		rules []Rule
		want  string
	}{
		{"no balancer", []Rule{{VIP: api4.VIP, From: 1, To: 2}}, "no balancer"},
		{"no VIP", []Rule{{Balancer: "api", From: 1, To: 2}}, "not an address"},
		{"unspecified", []Rule{{Balancer: "api", VIP: netip.IPv4Unspecified(), From: 1, To: 2}}, "not an address"},
		{"zone", []Rule{{Balancer: "api", VIP: netip.MustParseAddr("fe80::1%eth0"), From: 1, To: 2}}, "zone"},
		{"mapped", []Rule{{Balancer: "api", VIP: netip.MustParseAddr("::ffff:192.0.2.1"), From: 1, To: 2}}, "write 192.0.2.1"},
		{"port 0", []Rule{{Balancer: "api", VIP: api4.VIP, To: 2}}, "port 0"},
		{"onto itself", []Rule{{Balancer: "api", VIP: api4.VIP, From: 2, To: 2}}, "onto itself"},
		{"twice", []Rule{api4, {Balancer: "other", VIP: api4.VIP, From: 6443, To: 1}}, "already redirected by redirect 0 (balancer api)"},
	}
	r := newWith(nil, health.New(), discard(), nil, newFake(), clocktest.New(time.Unix(0, 0)))
	for _, tt := range bad {
		if err := Validate(tt.rules); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
		if _, err := r.PlanRules(tt.rules); err == nil {
			t.Errorf("%s: planned", tt.name)
		}
	}
	if err := Validate([]Rule{api4, api6, ingress, {Balancer: "api", VIP: api4.VIP, From: 22623, To: 22624}}); err != nil {
		t.Fatal(err)
	}
}

// Plan takes the rules from rulesOf, and changes nothing without it.
func TestPlan(t *testing.T) {
	cfg := &config.Config{}
	r := newWith([]Rule{api4}, health.New(), discard(), nil, newFake(), clocktest.New(time.Unix(0, 0)))
	ch, err := r.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	if s := r.Status(); len(s) != 1 || s[0].Rule != api4 {
		t.Fatalf("status %+v", s)
	}
	var asked *config.Config
	r = newWith([]Rule{api4}, health.New(), discard(), func(c *config.Config) []Rule { asked = c; return []Rule{api6} },
		newFake(), clocktest.New(time.Unix(0, 0)))
	if ch, err = r.Plan(cfg); err != nil {
		t.Fatal(err)
	}
	if s := r.Status(); s[0].Rule != api4 {
		t.Fatal("Plan changed the rules before Commit")
	}
	ch.Commit()
	if s := r.Status(); asked != cfg || len(s) != 1 || s[0].Rule != api6 {
		t.Fatalf("status %+v", s)
	}
}
