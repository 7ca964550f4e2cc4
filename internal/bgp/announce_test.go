package bgp

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
)

// fakeRouter records what is announced.
type fakeRouter struct {
	on   map[netip.Prefix]Route
	log  []string
	fail bool
}

func (r *fakeRouter) Announce(rt Route) error {
	if r.fail {
		return errors.New("router down")
	}
	r.on[rt.Prefix] = rt
	r.log = append(r.log, "+"+rt.Prefix.String())
	return nil
}

func (r *fakeRouter) Withdraw(p netip.Prefix) error {
	if r.fail {
		return errors.New("router down")
	}
	delete(r.on, p)
	r.log = append(r.log, "-"+p.String())
	return nil
}

func (r *fakeRouter) prefixes() []string {
	var out []string
	for p := range r.on {
		out = append(out, p.String())
	}
	slices.Sort(out)
	return out
}

const announceYAML = `cluster: test
vrrp:
  instances:
    - {name: api, interface: lo, priority: 100, vips: [192.0.2.1/32, 192.0.2.2/32, 192.0.2.3/32, 192.0.2.4/32, 192.0.2.5/32, 192.0.2.6/32]}
checks:
  - {name: readyz, exec: {script: "true"}}
balancers:
  - name: web
    listen: ["127.0.0.1:8080"]
    backends: [{address: "127.0.0.1:9000"}]
bgp:
  asn: 64512
  router_id: 10.0.0.1
  neighbors: [{address: 10.0.0.254, asn: 64500}]
  announce:
    - {prefix: 192.0.2.1/32}
    - {prefix: 192.0.2.2/32, when_healthy: readyz}
    - {prefix: 192.0.2.3/32, when_healthy: web}
    - {prefix: 192.0.2.4/32, when_master: api}
    - {prefix: 192.0.2.5/32, when_healthy: web, when_master: api}
`

func parseConfig(t *testing.T, src string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Each announcement follows the health keys it names, resolved once: a
// check unknown is up, a balancer or an instance unknown is not.
func TestAnnouncementsFollowHealth(t *testing.T) {
	store := health.New()
	r := &fakeRouter{on: map[netip.Prefix]Route{}}
	an := &announcer{router: r, list: announcementsOf(parseConfig(t, announceYAML)), log: slog.New(slog.DiscardHandler)}
	step := func(name string, want ...string) {
		t.Helper()
		an.update(store)
		if got := r.prefixes(); !slices.Equal(got, want) {
			t.Fatalf("%s: announced %v, want %v", name, got, want)
		}
	}
	step("nothing reported", "192.0.2.1/32", "192.0.2.2/32")
	store.Set(health.BalancerKey("web"), health.State{Up: true})
	step("balancer up", "192.0.2.1/32", "192.0.2.2/32", "192.0.2.3/32")
	store.Set(health.MasterKey("api"), health.State{Up: true})
	step("master", "192.0.2.1/32", "192.0.2.2/32", "192.0.2.3/32", "192.0.2.4/32", "192.0.2.5/32")
	store.Set(health.CheckKey("readyz"), health.State{Up: false})
	store.Set(health.BalancerKey("web"), health.State{Up: false, Reason: "no backend in rotation"})
	step("check and balancer down", "192.0.2.1/32", "192.0.2.4/32")
	store.Set(health.CheckKey("web"), health.State{Up: true}) // a check of the balancer's name does not count
	step("a check named like the balancer", "192.0.2.1/32", "192.0.2.4/32")
	store.Set(health.MasterKey("api"), health.State{Up: false})
	step("backup", "192.0.2.1/32")

	// A router error leaves the change to the next update.
	store.Set(health.BalancerKey("web"), health.State{Up: true})
	r.fail = true
	step("router failing", "192.0.2.1/32")
	r.fail = false
	step("router back", "192.0.2.1/32", "192.0.2.3/32")
}

// A reload withdraws removed prefixes, leaves unchanged ones alone and
// re-announces one whose attributes changed.
func TestAnnouncementsReplace(t *testing.T) {
	store := health.New()
	r := &fakeRouter{on: map[netip.Prefix]Route{}}
	log := slog.New(slog.DiscardHandler)
	an := &announcer{router: r, list: announcementsOf(parseConfig(t, announceYAML)), log: log}
	store.Set(health.BalancerKey("web"), health.State{Up: true})
	an.update(store)
	r.log = nil
	next := parseConfig(t, `cluster: test
vrrp:
  instances:
    - {name: api, interface: lo, priority: 100, vips: [192.0.2.1/32, 192.0.2.2/32, 192.0.2.6/32]}
bgp:
  asn: 64512
  router_id: 10.0.0.1
  neighbors: [{address: 10.0.0.254, asn: 64500}]
  announce:
    - {prefix: 192.0.2.1/32}
    - {prefix: 192.0.2.2/32, med: 50}
    - {prefix: 192.0.2.6/32}
`)
	an.replace(announcementsOf(next))
	an.update(store)
	if want := []string{"-192.0.2.3/32", "+192.0.2.2/32", "+192.0.2.6/32"}; !slices.Equal(r.log, want) {
		t.Fatalf("router calls %v", r.log)
	}
	if got := r.prefixes(); !slices.Equal(got, []string{"192.0.2.1/32", "192.0.2.2/32", "192.0.2.6/32"}) {
		t.Fatalf("announced %v", got)
	}
	if r.on[netip.MustParsePrefix("192.0.2.2/32")].MED != 50 {
		t.Fatal("the changed attributes were not announced")
	}
}

// A reload may change the announce list, not the session.
func TestAnnouncementsPlanRefusesSessionChanges(t *testing.T) {
	a := NewAnnouncements(parseConfig(t, announceYAML), health.New(), slog.New(slog.DiscardHandler))
	if _, err := a.Plan(parseConfig(t, announceYAML[:len(announceYAML)-len("    - {prefix: 192.0.2.5/32, when_healthy: web, when_master: api}\n")])); err != nil {
		t.Fatalf("announce change refused: %v", err)
	}
	other := parseConfig(t, announceYAML)
	other.BGP.Neighbors[0].ASN = 64501
	if _, err := a.Plan(other); err == nil {
		t.Fatal("a neighbor change was accepted")
	}
}
