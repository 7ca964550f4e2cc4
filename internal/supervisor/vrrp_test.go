package supervisor

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/clock"
	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/vrrp"
)

// vrrpYAML is a config with a unicast instance (api), a multicast one (db)
// and a pool; edit replaces one string of it.
const vrrpYAML = `cluster: lab
node: n1
vrrp:
  instances:
    - name: api
      interface: eth0
      priority: 150
      vips: ["10.0.0.10"]
      unicast_peers: ["10.0.0.2", "10.0.0.3"]
    - name: db
      interface: eth0
      vips: ["10.0.0.20"]
  pools:
    - name: web
      interface: eth0
      vips: ["10.0.0.30", "10.0.0.31"]
      nodes: [n1, n2]
  sync_groups:
    - name: both
      instances: [api, db]
`

func parse(t *testing.T, edits ...string) *config.Config {
	t.Helper()
	return parseEdited(t, vrrpYAML, edits...)
}

// parseEdited parses y after replacing, in pairs, edits[i] by edits[i+1].
func parseEdited(t *testing.T, y string, edits ...string) *config.Config {
	t.Helper()
	for i := 0; i < len(edits); i += 2 {
		if !strings.Contains(y, edits[i]) {
			t.Fatalf("edit: %q is not in the config", edits[i])
		}
		y = strings.Replace(y, edits[i], edits[i+1], 1)
	}
	c, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	return c
}

func TestVRRPPlanAcceptsOnlyPeerChanges(t *testing.T) {
	peers := `unicast_peers: ["10.0.0.2", "10.0.0.3"]`
	cases := []struct {
		name  string
		edits []string
		want  map[int][]netip.Addr // nil: no change
		err   string
	}{
		{name: "same config"},
		{name: "peers reordered and repeated", edits: []string{peers, `unicast_peers: ["10.0.0.3", "10.0.0.2", "10.0.0.3"]`}},
		{name: "peer added", edits: []string{peers, `unicast_peers: ["10.0.0.2", "10.0.0.3", "10.0.0.4"]`},
			want: map[int][]netip.Addr{0: addrList("10.0.0.2", "10.0.0.3", "10.0.0.4")}},
		{name: "peer replaced", edits: []string{peers, `unicast_peers: ["10.0.0.4", "10.0.0.2"]`},
			want: map[int][]netip.Addr{0: addrList("10.0.0.2", "10.0.0.4")}},
		{name: "priority", edits: []string{"priority: 150", "priority: 120"},
			err: "vrrp.instances[0] (api).priority changed: VRRP changes need a restart"},
		{name: "peers and priority", edits: []string{peers, `unicast_peers: ["10.0.0.4"]`, "priority: 150", "priority: 120"},
			err: "vrrp.instances[0] (api).priority changed: VRRP changes need a restart"},
		{name: "vips", edits: []string{`["10.0.0.20"]`, `["10.0.0.21"]`},
			err: "vrrp.instances[1] (db).vips changed: VRRP changes need a restart"},
		{name: "garp", edits: []string{`vips: ["10.0.0.20"]`, `vips: ["10.0.0.20"]` + "\n      garp: {count: 2}"},
			err: "vrrp.instances[1] (db).garp changed: VRRP changes need a restart"},
		{name: "multicast to unicast", edits: []string{`vips: ["10.0.0.20"]`, `vips: ["10.0.0.20"]` + "\n      unicast_peers: [10.0.0.2]"},
			err: "vrrp.instances[1] (db).unicast_peers: switching between multicast and unicast needs a restart"},
		{name: "unicast to multicast", edits: []string{"      " + peers + "\n", ""},
			err: "vrrp.instances[0] (api).unicast_peers: switching between multicast and unicast needs a restart"},
		{name: "instance added", edits: []string{"  pools:", "    - {name: dns, interface: eth0, vips: [10.0.0.40]}\n  pools:"},
			err: "vrrp.instances: 3 instances, was 2: VRRP changes need a restart"},
		{name: "node", edits: []string{"node: n1", "node: n2"}, err: "node changed: VRRP changes need a restart"},
		{name: "cluster", edits: []string{"cluster: lab", "cluster: lab2"}, err: "cluster changed: VRRP changes need a restart"},
		{name: "pool", edits: []string{"nodes: [n1, n2]", "nodes: [n1, n2]\n      move_back_delay: 2s"}, err: "vrrp.pools changed: VRRP changes need a restart"},
		{name: "sync group", edits: []string{"instances: [api, db]", "instances: [db, api]"},
			err: "vrrp.sync_groups changed: VRRP changes need a restart"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := peerChanges(parse(t), parse(t, c.edits...))
			switch {
			case c.err != "":
				if err == nil || err.Error() != c.err {
					t.Fatalf("got %v, want the error %q", err, c.err)
				}
			case err != nil:
				t.Fatal(err)
			case len(got) != len(c.want):
				t.Fatalf("changes %v, want %v", got, c.want)
			}
			for i, ps := range c.want {
				if !slices.Equal(got[i], ps) {
					t.Fatalf("instance %d: new peers %v, want %v", i, got[i], ps)
				}
			}
		})
	}
	_, err := peerChanges(parse(t), parse(t, "      "+peers+"\n", ""))
	if !errors.Is(err, vrrp.ErrPeerMode) {
		t.Fatalf("a mode switch is not ErrPeerMode: %v", err)
	}
}

// Commit gives the running instance its new peers, and the next Plan
// compares with the committed config.
func TestVRRPCommitSetsPeers(t *testing.T) {
	old := parse(t)
	f := fakeLink{}
	in := vrrp.NewInstance(vrrp.Config{Name: "api", Interface: "eth0", VRID: 7, Version: 3, Priority: 150,
		Interval: time.Second, VIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.10/32")},
		Peers: addrList("10.0.0.2", "10.0.0.3")}, f, f, f, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	defer func() { cancel(); <-done }()
	g := &vrrpGroup{cfg: old, log: slog.New(slog.DiscardHandler), instances: []*vrrp.Instance{in}}
	g.slots = newSlotSet(g.log, health.New(), clock.Real{}, time.Second, nil)

	next := parse(t, `unicast_peers: ["10.0.0.2", "10.0.0.3"]`, `unicast_peers: ["10.0.0.4", "10.0.0.3"]`)
	ch := plan(t, g, next)
	ch.Commit()
	want := addrList("10.0.0.3", "10.0.0.4")
	for end := time.Now().Add(5 * time.Second); !slices.Equal(in.Status().Peers, want); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("peers in force %v, want %v", in.Status().Peers, want)
		}
	}
	if g.cfg != next {
		t.Fatal("Commit kept the old config")
	}
	// Back to the first set: a change again, against the committed config.
	if got, err := peerChanges(g.cfg, old); err != nil || len(got) != 1 {
		t.Fatalf("planning the old config after the commit: %v, %v", got, err)
	}
}

func plan(t *testing.T, g *vrrpGroup, cfg *config.Config) component.Change {
	t.Helper()
	ch, err := g.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func addrList(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// fakeLink is a transport, VIP set and announcer that do nothing.
type fakeLink struct{}

func (fakeLink) Send([]byte, netip.Addr) error                                 { return nil }
func (fakeLink) Local() netip.Addr                                             { return netip.MustParseAddr("10.0.0.1") }
func (fakeLink) Add() error                                                    { return nil }
func (fakeLink) Remove() error                                                 { return nil }
func (fakeLink) Present() ([]netip.Prefix, error)                              { return nil, nil }
func (fakeLink) Announce([]netip.Addr) error                                   { return nil }
func (fakeLink) Burst(context.Context, []netip.Addr, int, time.Duration) error { return nil }
