package bgp

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/vigil-lb/vigil/internal/health"
)

// fakeAcceptor records what is accepted, in the same log as the router's
// calls so that their order shows.
type fakeAcceptor struct {
	r      *fakeRouter
	now    []netip.Prefix
	fail   bool
	closed bool
}

func (f *fakeAcceptor) Set(want []netip.Prefix) error {
	if f.fail {
		return errors.New("netlink: operation not permitted")
	}
	f.now = slices.Clone(want)
	f.r.log = append(f.r.log, "accept "+f.String())
	return nil
}

func (f *fakeAcceptor) Close() error {
	f.closed, f.now = true, nil
	f.r.log = append(f.r.log, "close")
	return nil
}

func (f *fakeAcceptor) String() string {
	s := "["
	for i, p := range f.now {
		if i > 0 {
			s += " "
		}
		s += p.String()
	}
	return s + "]"
}

const acceptYAML = `cluster: test
vrrp:
  instances:
    - {name: api, interface: lo, priority: 100, vips: [192.0.2.1/32]}
balancers:
  - {name: web, listen: ["192.0.2.9:80", "[2001:db8::9]:80"], backends: [{address: "127.0.0.1:9000"}]}
  - {name: vipweb, listen: ["192.0.2.1:80"], backends: [{address: "127.0.0.1:9000"}]}
  - {name: fast, mode: dsr, interface: lo, listen: ["192.0.2.8:80"], backends: [{address: "10.0.0.5:80"}]}
bgp:
  asn: 64512
  router_id: 10.0.0.1
  neighbors: [{address: 10.0.0.254, asn: 64500}]
  announce:
    - {prefix: 192.0.2.9/32, when_healthy: web}
    - {prefix: "2001:db8::9/128", when_healthy: web}
    - {prefix: 192.0.2.1/32}
    - {prefix: 192.0.2.8/32}
`

// An announced host address that a proxy balancer listens on is accepted
// before it is announced and until it is withdrawn; a VRRP VIP of the node
// and a dsr balancer's address are announced but never accepted; stopping
// closes the acceptor. While the acceptor fails the address is not
// announced; it is tried again at the next update.
func TestAnnouncedProxyAddressesAccepted(t *testing.T) {
	store := health.New()
	r := &fakeRouter{on: map[netip.Prefix]Route{}}
	acc := &fakeAcceptor{r: r}
	opened := 0
	an := &announcer{router: r, list: announcementsOf(parseConfig(t, acceptYAML)), log: slog.New(slog.DiscardHandler),
		openLocal: func() (Acceptor, error) { opened++; return acc, nil }}
	step := func(name string, want ...string) {
		t.Helper()
		r.log = nil
		an.update(store)
		if !slices.Equal(r.log, want) {
			t.Fatalf("%s: calls %q, want %q", name, r.log, want)
		}
	}
	step("start: the VIP and the dsr address, nothing to accept", "+192.0.2.1/32", "+192.0.2.8/32")
	if opened != 0 {
		t.Fatal("the acceptor was opened with nothing to accept")
	}
	store.Set(health.BalancerKey("web"), health.State{Up: true})
	step("balancer up", "accept [192.0.2.9/32 2001:db8::9/128]", "+192.0.2.9/32", "+2001:db8::9/128")
	step("no change")
	store.Set(health.BalancerKey("web"), health.State{Up: false})
	step("balancer down", "-192.0.2.9/32", "-2001:db8::9/128", "accept []")

	acc.fail = true
	store.Set(health.BalancerKey("web"), health.State{Up: true})
	step("acceptor failing: not announced")
	acc.fail = false
	store.Set(health.CheckKey("other"), health.State{Up: true}) // any wake
	step("acceptor back", "accept [192.0.2.9/32 2001:db8::9/128]", "+192.0.2.9/32", "+2001:db8::9/128")

	an.close()
	if !acc.closed || opened != 1 {
		t.Fatalf("closed %v, opened %d times", acc.closed, opened)
	}
}

// A reload that drops an accepted prefix withdraws it, then stops
// accepting it.
func TestAcceptedPrefixRemovedByReload(t *testing.T) {
	store := health.New()
	store.Set(health.BalancerKey("web"), health.State{Up: true})
	r := &fakeRouter{on: map[netip.Prefix]Route{}}
	acc := &fakeAcceptor{r: r}
	an := &announcer{router: r, list: announcementsOf(parseConfig(t, acceptYAML)), log: slog.New(slog.DiscardHandler),
		openLocal: func() (Acceptor, error) { return acc, nil }}
	an.update(store)
	r.log = nil
	next := parseConfig(t, acceptYAML[:len(acceptYAML)-len("    - {prefix: \"2001:db8::9/128\", when_healthy: web}\n    - {prefix: 192.0.2.1/32}\n    - {prefix: 192.0.2.8/32}\n")])
	an.replace(announcementsOf(next))
	an.update(store)
	if want := []string{"-2001:db8::9/128", "-192.0.2.1/32", "-192.0.2.8/32", "accept [192.0.2.9/32]"}; !slices.Equal(r.log, want) {
		t.Fatalf("calls %q, want %q", r.log, want)
	}
}
