package dsr

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/xdp"
)

// threeBackends is the dsr balancer web with backends .5, .6 and .7 on
// eth0's subnet; reloads replace the backends line.
const threeBackends = `
balancers:
  - {name: proxied, listen: ["10.0.0.10:8080"], backends: [{address: "127.0.0.1:18080"}]}
  - name: web
    mode: dsr
    interface: eth0
    listen: ["10.0.0.20:80"]
    backends: [{address: "10.0.0.5:80"}, {address: "10.0.0.6:80"}, {address: "10.0.0.7:80"}]
`

func withBackends(addrs ...string) string {
	var bs []string
	for _, a := range addrs {
		bs = append(bs, `{address: "`+a+`"}`)
	}
	return strings.Replace(threeBackends, `{address: "10.0.0.5:80"}, {address: "10.0.0.6:80"}, {address: "10.0.0.7:80"}`, strings.Join(bs, ", "), 1)
}

// resolvingKernel is newKernel with every 10.0.0.x and 10.0.1.x backend
// in the neighbour table.
func resolvingKernel() *fakeKernel {
	k := newKernel()
	for i := 2; i < 20; i++ {
		k.setNeighbour("10.0.0."+strconv.Itoa(i), mac(byte(i)))
		k.setNeighbour("10.0.1."+strconv.Itoa(i), mac(byte(100+i)))
	}
	return k
}

func TestReloadChangesBackendsOnlyOnCommit(t *testing.T) {
	k := resolvingKernel()
	p, store := newPlane(t, k, threeBackends)
	p.resolveMACs(context.Background(), true)
	if got := inTable(t, p, k.dp, 0); len(got) != 3 {
		t.Fatalf("table %v", got)
	}
	// .6 removed, .8 and .9 added, .7's weight changed.
	next := strings.Replace(withBackends("10.0.0.5:80", "10.0.0.7:80", "10.0.0.8:80", "10.0.0.9:80"), `{address: "10.0.0.7:80"}`, `{address: "10.0.0.7:80", weight: 2}`, 1)
	ch, err := p.Plan(parse(t, next))
	if err != nil {
		t.Fatal(err)
	}
	writes := k.dp.writes
	ch.Abort()
	if k.dp.writes != writes {
		t.Fatal("Plan or Abort wrote to the program")
	}
	if got := inTable(t, p, k.dp, 0); !slices.Equal(got, []string{"10.0.0.5:80", "10.0.0.6:80", "10.0.0.7:80"}) {
		t.Fatalf("after Abort the table is %v", got)
	}

	ch, err = p.Plan(parse(t, next))
	if err != nil {
		t.Fatal(err)
	}
	if k.dp.writes != writes {
		t.Fatal("Plan wrote to the program")
	}
	ch.Commit()
	// Never-used slots first: .8 and .9 take 3 and 4; .6's 1 stays free
	// for the flows still tracked to it.
	if a, b := p.idx(t, "web", "10.0.0.8:80"), p.idx(t, "web", "10.0.0.9:80"); a != 3 || b != 4 {
		t.Errorf("new backends in slots %d and %d, want 3 and 4", a, b)
	}
	if p.idx(t, "web", "10.0.0.5:80") != 0 || p.idx(t, "web", "10.0.0.7:80") != 2 {
		t.Error("kept backends changed slots")
	}
	// Committed before their MACs are known: the new ones are not in yet.
	if got := inTable(t, p, k.dp, 0); !slices.Equal(got, []string{"10.0.0.5:80", "10.0.0.7:80"}) {
		t.Errorf("table right after Commit: %v", got)
	}
	select {
	case <-p.resolve:
	default:
		t.Error("Commit of added backends did not ask for their MACs")
	}
	p.resolveMACs(context.Background(), false)
	if got := inTable(t, p, k.dp, 0); !slices.Equal(got, []string{"10.0.0.5:80", "10.0.0.7:80", "10.0.0.8:80", "10.0.0.9:80"}) {
		t.Errorf("table once the MACs are known: %v", got)
	}
	bals, _ := p.Status()
	if w := bals[0].Backends[1]; w.Address != "10.0.0.7:80" || w.Weight != 2 {
		t.Errorf("kept backend after the reload: %+v", w)
	}
	if st, _ := balancerState(store, "web"); !st.Up {
		t.Errorf("web %+v", st)
	}
	// The next reload too takes a never-used slot, not .6's.
	ch, err = p.Plan(parse(t, withBackends("10.0.0.5:80", "10.0.0.7:80", "10.0.0.8:80", "10.0.0.9:80", "10.0.0.10:80")))
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	if got := p.idx(t, "web", "10.0.0.10:80"); got != 5 {
		t.Errorf("a backend added by the next reload is in slot %d, want 5", got)
	}
}

func TestReloadReusesSlotsWhenNoNeverUsedOneIsLeft(t *testing.T) {
	k := resolvingKernel()
	p, _ := newPlane(t, k, threeBackends)
	// Remove .5 (slot 0), then .6 (slot 1); with every slot used once,
	// additions take them back oldest first.
	commit := func(addrs ...string) {
		t.Helper()
		ch, err := p.Plan(parse(t, withBackends(addrs...)))
		if err != nil {
			t.Fatal(err)
		}
		ch.Commit()
	}
	commit("10.0.0.6:80", "10.0.0.7:80")
	commit("10.0.0.7:80")
	p.mu.Lock()
	p.slots.next = xdp.MaxBackends
	p.mu.Unlock()
	commit("10.0.0.7:80", "10.0.0.8:80")
	if got := p.idx(t, "web", "10.0.0.8:80"); got != 0 {
		t.Errorf("first reused slot %d, want 0 (.5's, given back first)", got)
	}
	commit("10.0.0.7:80", "10.0.0.8:80", "10.0.0.9:80")
	if got := p.idx(t, "web", "10.0.0.9:80"); got != 1 {
		t.Errorf("second reused slot %d, want 1", got)
	}
	if _, err := p.Plan(parse(t, withBackends("10.0.0.7:80", "10.0.0.8:80", "10.0.0.9:80", "10.0.0.10:80"))); err == nil ||
		err.Error() != "balancer web: backend 10.0.0.10:80: all 4096 dsr backend slots are in use" {
		t.Errorf("with no slot left: %v", err)
	}
}

// A backend added whose key in the store says down comes in down; a kept
// one whose key went down while the plane did not follow the store is read
// again.
func TestCommitReadsTheStore(t *testing.T) {
	k := resolvingKernel()
	p, store := newPlane(t, k, threeBackends)
	p.resolveMACs(context.Background(), true)
	store.Set(health.BackendKey("web", netip.MustParseAddrPort("10.0.0.8:80")), health.State{Reason: "refused"})
	store.Set(health.BackendKey("web", netip.MustParseAddrPort("10.0.0.5:80")), health.State{Reason: "refused"})
	ch, err := p.Plan(parse(t, withBackends("10.0.0.5:80", "10.0.0.7:80", "10.0.0.8:80")))
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	p.resolveMACs(context.Background(), false)
	if got := inTable(t, p, k.dp, 0); !slices.Equal(got, []string{"10.0.0.7:80"}) {
		t.Fatalf("table %v, want .7 alone", got)
	}
	bals, _ := p.Status()
	if b := bals[0].Backends; len(b) != 3 || b[0].Up || !b[1].Up || b[2].Up {
		t.Errorf("status %+v", b)
	}
}

func TestReloadRefusesWhatNeedsARestart(t *testing.T) {
	k := resolvingKernel()
	p, _ := newPlane(t, k, threeBackends)
	for _, c := range []struct{ name, cfg, want string }{
		{"a changed listen address", strings.Replace(threeBackends, "10.0.0.20:80", "10.0.0.30:80", 1),
			"balancers[1] (web): a dsr balancer's settings other than its backends and their check changed: that needs a restart"},
		{"a changed xdp_mode", strings.Replace(threeBackends, "interface: eth0", "interface: eth0\n    xdp_mode: generic", 1),
			"balancers[1] (web): a dsr balancer's settings other than its backends"},
		{"udp", strings.Replace(threeBackends, "interface: eth0", "interface: eth0\n    protocol: udp", 1),
			"balancers[1] (web): a dsr balancer's settings other than its backends"},
		{"a renamed balancer", strings.Replace(threeBackends, "name: web", "name: www", 1),
			"balancers[1] (www): a dsr balancer's settings other than its backends"},
		{"a dsr balancer added", threeBackends + `  - {name: more, mode: dsr, interface: eth0, listen: ["10.0.0.21:80"], backends: [{address: "10.0.0.5:80"}]}` + "\n",
			"dsr balancers added or removed (1 running, 2 in the new config): that needs a restart"},
		{"a backend on no subnet", withBackends("10.0.0.5:80", "10.9.0.5:80"),
			"balancers[1] (web): backend 10.9.0.5:80 is not on a subnet of eth0 or of another interface"},
	} {
		if _, err := p.Plan(parse(t, c.cfg)); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	// Backends and their check may change.
	withCheck := strings.Replace(withBackends("10.0.0.5:80"), `listen: ["10.0.0.20:80"]`, `listen: ["10.0.0.20:80"]`+"\n    check: {interval: 1s}", 1)
	if _, err := p.Plan(parse(t, withCheck)); err != nil {
		t.Errorf("a check added: %v", err)
	}
	if k.dp.writes != 1 { // New's empty table
		t.Errorf("refused plans wrote %d times", k.dp.writes)
	}
}

// A program in native mode on a NIC: a reload that moves a backend behind
// a veth whose peer runs no program would lose its frames.
func TestReloadRefusesRedirectsNativeModeWouldDrop(t *testing.T) {
	k := resolvingKernel()
	k.links[1].Kind = "veth"
	k.features["eth1"] = xdp.FeatureBasic
	p, _ := newPlane(t, k, strings.Replace(threeBackends, "interface: eth0", "interface: eth0\n    xdp_mode: native", 1))
	next := strings.Replace(withBackends("10.0.0.5:80", "10.0.1.5:80"), "interface: eth0", "interface: eth0\n    xdp_mode: native", 1)
	_, err := p.Plan(parse(t, next))
	if want := "the program runs in native mode on eth0, where it would drop frames: backend 10.0.1.5:80 is reached through eth1, and it is a veth whose peer runs no XDP program"; err == nil || err.Error() != want {
		t.Fatalf("%v, want %q", err, want)
	}
}
