package supervisor

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/clock/clocktest"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/vrrp"
)

// fakeRegistrar records which instance each VRID routes to.
type fakeRegistrar struct {
	mu sync.Mutex
	by map[uint8]vrrp.Receiver
}

func (f *fakeRegistrar) Register(v uint8, ch vrrp.Receiver) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.by[v]; ok {
		return errAlready
	}
	f.by[v] = ch
	return nil
}

func (f *fakeRegistrar) Unregister(v uint8) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.by, v)
	return nil
}

func (f *fakeRegistrar) routes(v uint8, in *vrrp.Instance) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.by[v] == vrrp.Receiver(in)
}

var errAlready = errors.New("VRID registered twice")

// slotCfg is a generated slot instance for the tests.
func slotCfg(name string, vrid, prio int, extra ...string) config.Instance {
	t, f := true, false
	count, refresh := 0, time.Duration(0)
	ic := config.Instance{Name: name, Interface: "eth0", VRID: vrid, Version: 3, Priority: prio,
		AdvertInterval: 10 * time.Millisecond, Preempt: &t, Accept: &f, VIPs: []string{"0.0.0.0/32"},
		GARP: config.GARP{Count: &count, Refresh: &refresh}, Slot: &config.Slot{Pool: "lan"}}
	for _, e := range extra {
		ic.Slot.Extra = append(ic.Slot.Extra, netip.MustParsePrefix(e+"/32"))
	}
	return ic
}

// given is what the set last handed the slot.
func (s *slotSet) givenTo(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.runs[name].given {
		out = append(out, p.Addr().String())
	}
	return out
}

// A reload adds, removes and changes slots live: a removed slot stops
// (its run ends), a VRID moves to the slot that now has it, priorities
// and addresses change in place, any other difference replaces the slot,
// and an address moving to a slot added just now stays where it was until
// that slot has had settle to win.
func TestSlotSetFollowsTheConfig(t *testing.T) {
	clk := clocktest.New(time.Unix(1000, 0))
	reg := &fakeRegistrar{by: map[uint8]vrrp.Receiver{}}
	f := fakeLink{}
	log := slog.New(slog.DiscardHandler)
	const settle = time.Second
	s := newSlotSet(log, health.New(), clk, settle, func(ic config.Instance) (*slotRun, error) {
		in := vrrp.NewInstance(instanceConfig(ic, []netip.Prefix{netip.MustParsePrefix(ic.VIPs[0])}), f, anchorOnly{}, f, log,
			vrrp.WithExtraAddresses(nopExtra{}))
		return &slotRun{in: in, reg: reg}, nil
	})
	a := slotCfg("slot/lan/n1/n2", 1, 250, "192.0.2.1", "192.0.2.2")
	b := slotCfg("slot/lan/n2/n1", 2, 130, "192.0.2.3")
	if err := s.init([]config.Instance{a, b}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	s.mu.Lock()
	runA, runB := s.runs[a.Name], s.runs[b.Name]
	s.mu.Unlock()
	eventually(t, "slots started", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return runB.stop != nil
	})

	// The same config: nothing to do.
	if c, err := s.plan([]config.Instance{b, a}); err != nil || !c.empty() {
		t.Fatalf("same slots: %+v, %v", c, err)
	}
	// a moves to VRID 3 at priority 130 and gives 192.0.2.2 to a new slot
	// c, which takes b's VRID; b goes.
	a2 := slotCfg(a.Name, 3, 130, "192.0.2.1")
	c := slotCfg("slot/lan/n3/n1", 2, 250, "192.0.2.2")
	ch, err := s.plan([]config.Instance{a2, c})
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.update) != 1 || ch.update[0].Name != a.Name || !slices.Equal(ch.remove, []string{b.Name}) || len(ch.add) != 1 || ch.add[0].Name != c.Name {
		t.Fatalf("change %+v", ch)
	}
	s.commit(ch)
	select {
	case <-runB.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the removed slot still runs")
	}
	s.mu.Lock()
	runC := s.runs[c.Name]
	_, stillB := s.runs[b.Name]
	s.mu.Unlock()
	if stillB || !reg.routes(3, runA.in) || !reg.routes(2, runC.in) || reg.routes(1, runA.in) {
		t.Fatalf("VRIDs: %v", reg.by)
	}
	eventually(t, "a on VRID 3 at 130", func() bool {
		st := runA.in.Status()
		return st.VRID == 3 && st.Priority == 130
	})
	// a keeps 192.0.2.2 until c has had settle to win it.
	if got := s.givenTo(a.Name); !slices.Equal(got, []string{"192.0.2.1", "192.0.2.2"}) {
		t.Fatalf("a given %v right after the change", got)
	}
	if got := s.givenTo(c.Name); !slices.Equal(got, []string{"192.0.2.2"}) {
		t.Fatalf("c given %v", got)
	}
	clk.BlockUntil(1)
	clk.Advance(settle)
	eventually(t, "a without 192.0.2.2", func() bool { return slices.Equal(s.givenTo(a.Name), []string{"192.0.2.1"}) })

	// Both masters here (no other node speaks): 192.0.2.1 moves from a to
	// c and stays in a too until c's worker has had slotHandover.
	eventually(t, "a and c masters", func() bool {
		return runA.in.Status().State == vrrp.Master && runC.in.Status().State == vrrp.Master
	})
	a3, c3 := slotCfg(a.Name, 3, 130), slotCfg(c.Name, 2, 250, "192.0.2.1", "192.0.2.2")
	ch, err = s.plan([]config.Instance{a3, c3})
	if err != nil || len(ch.update) != 2 {
		t.Fatalf("move between masters: %+v, %v", ch, err)
	}
	s.commit(ch)
	if got := s.givenTo(a.Name); !slices.Equal(got, []string{"192.0.2.1"}) {
		t.Fatalf("a given %v right after the move, want it to keep 192.0.2.1 for now", got)
	}
	if got := s.givenTo(c.Name); !slices.Equal(got, []string{"192.0.2.1", "192.0.2.2"}) {
		t.Fatalf("c given %v", got)
	}
	clk.BlockUntil(1)
	clk.Advance(slotHandover)
	eventually(t, "a without 192.0.2.1", func() bool { return len(s.givenTo(a.Name)) == 0 })
	a2, c = a3, c3

	// Another interface is not a live change: c is replaced.
	c2 := c
	c2.Interface = "eth1"
	if ch, err := s.plan([]config.Instance{a2, c2}); err != nil || !slices.Equal(ch.remove, []string{c.Name}) || len(ch.add) != 1 {
		t.Fatalf("interface changed: %+v, %v", ch, err)
	}
	// Two slots on one VRID are refused before anything changes.
	clash := slotCfg("slot/lan/n4/n1", 3, 250)
	if _, err := s.plan([]config.Instance{a2, c, clash}); err == nil || !strings.Contains(err.Error(), "both VRID 3") {
		t.Fatalf("VRID clash: %v", err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// nopExtra configures nothing.
type nopExtra struct{}

func (nopExtra) Acquire([]netip.Prefix) error { return nil }
func (nopExtra) Release([]netip.Prefix) error { return nil }
