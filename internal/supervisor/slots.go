package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigil-lb/vigil/internal/clock"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/vrrp"
)

// slotSet runs the generated VRRP instances, the L2 slots of
// kubernetes.services, and follows the API's membership with them live: a
// reload adds the slots of a Node that joins, removes those of one that
// leaves, and moves priorities, VRIDs and addresses of the ones that stay.
// The configured instances (vrrp.instances, vrrp.pools) change only their
// unicast peers; slots are the members the API makes, so they may change
// in every way the API can change them.
//
// An added slot listens before it claims, as at start. Addresses that move
// to it from a slot that stays are kept by that slot until the new one has
// had time to win (settle), so a Node joining moves addresses without a
// gap; so are addresses moving between two slots this node masters, for a
// moment (slotHandover). A removed slot stops as at shutdown: a master sends priority 0 and
// removes its addresses.
type slotSet struct {
	log    *slog.Logger
	store  *health.Store
	clock  clock.Clock
	build  func(ic config.Instance) (*slotRun, error)
	settle time.Duration

	mu   sync.Mutex
	runs map[string]*slotRun
	// handing holds, for an address moving between two slots this node
	// masters, until when the old slot keeps it too.
	handing map[netip.Prefix]time.Time
	ctx     context.Context // where slots run; nil before Run and after it
	wg      sync.WaitGroup
	wake    chan struct{} // the settle timer has a new deadline
}

// slotRun is one slot instance, running or ready to run.
type slotRun struct {
	cfg    config.Instance // VRID, priority and Service addresses in force
	in     *vrrp.Instance
	reg    registrar
	stop   context.CancelFunc // nil until started
	done   chan struct{}
	added  time.Time
	given  []netip.Prefix // handed to the instance: cfg's, and those it keeps while a new slot settles
	handed bool
}

// registrar is the part of a transport that routes a VRID's adverts.
type registrar interface {
	Register(vrid uint8, r vrrp.Receiver) error
	Unregister(vrid uint8) error
}

func newSlotSet(log *slog.Logger, store *health.Store, clk clock.Clock, settle time.Duration,
	build func(config.Instance) (*slotRun, error)) *slotSet {
	return &slotSet{log: log, store: store, clock: clk, build: build, settle: settle, runs: map[string]*slotRun{},
		handing: map[netip.Prefix]time.Time{},
		wake:    make(chan struct{}, 1)}
}

// slotChange is what a reload does to the slots, by name.
type slotChange struct {
	remove []string
	update []config.Instance // the same slot: only its VRID, priority or addresses differ
	add    []config.Instance
}

func (c slotChange) empty() bool { return len(c.remove)+len(c.update)+len(c.add) == 0 }

// liveKeys are the fields of a slot instance that change in place; any
// other difference replaces the instance (removed, then added).
var liveKeys = []string{"VRID", "Priority", "Slot"}

// plan compares the running slots with now.
func (s *slotSet) plan(now []config.Instance) (slotChange, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var c slotChange
	seen := map[string]bool{}
	for _, ic := range now {
		if seen[ic.Name] {
			return c, fmt.Errorf("kubernetes.services L2 slot %s: generated twice", ic.Name)
		}
		seen[ic.Name] = true
		r, ok := s.runs[ic.Name]
		switch {
		case !ok:
			c.add = append(c.add, ic)
		case differingKey(r.cfg, ic, liveKeys...) != "" || r.cfg.Slot.Pool != ic.Slot.Pool:
			c.remove = append(c.remove, ic.Name)
			c.add = append(c.add, ic)
		case r.cfg.VRID != ic.VRID || r.cfg.Priority != ic.Priority || !slices.Equal(r.cfg.Slot.Extra, ic.Slot.Extra):
			c.update = append(c.update, ic)
		}
	}
	for name := range s.runs {
		if !seen[name] {
			c.remove = append(c.remove, name)
		}
	}
	slices.Sort(c.remove)
	// VRIDs must be free before they are taken: new ones are checked here,
	// so that commit cannot fail half-way.
	vrids := map[string]map[uint8]string{} // transport key -> VRID -> slot
	for name, r := range s.runs {
		if !slices.Contains(c.remove, name) && !slices.ContainsFunc(c.update, func(ic config.Instance) bool { return ic.Name == name }) {
			claimVRID(vrids, r.cfg, name)
		}
	}
	for _, ic := range append(slices.Clone(c.update), c.add...) {
		if other := claimVRID(vrids, ic, ic.Name); other != "" {
			return c, fmt.Errorf("kubernetes.services L2 slots %s and %s: both VRID %d on %s", other, ic.Name, ic.VRID, ic.Interface)
		}
	}
	return c, nil
}

// claimVRID records that slot name uses ic's VRID on its transport, and
// returns the slot that had it already ("" if none).
func claimVRID(vrids map[string]map[uint8]string, ic config.Instance, name string) string {
	key := ic.Interface + "/" + fmt.Sprint(strings.HasPrefix(ic.VIPs[0], "::"))
	if vrids[key] == nil {
		vrids[key] = map[uint8]string{}
	}
	if other, ok := vrids[key][uint8(ic.VRID)]; ok {
		return other
	}
	vrids[key][uint8(ic.VRID)] = name
	return ""
}

// commit applies c: slots that stay get their new priority and addresses
// first, then the removed ones stop (their addresses, if they moved to a
// slot this node masters, are held there already), VRIDs move, and the
// added ones start. Instances build and register here; errors are logged,
// as the plan has ruled out the ones it can foresee.
func (s *slotSet) commit(c slotChange) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	var moved []*slotRun
	for _, ic := range c.update {
		r := s.runs[ic.Name]
		if ic.Priority != r.cfg.Priority {
			if err := r.in.SetPriority(uint8(ic.Priority)); err != nil {
				s.log.Error("slot priority not changed", "instance", ic.Name, "err", err)
			}
		}
		if ic.VRID != r.cfg.VRID {
			if err := r.reg.Unregister(uint8(r.cfg.VRID)); err != nil {
				s.log.Warn("slot's old VRID still passes the socket filter", "instance", ic.Name, "vrid", r.cfg.VRID, "err", err)
			}
			moved = append(moved, r)
		}
		r.cfg = ic
	}
	for _, name := range c.remove {
		r := s.runs[name]
		delete(s.runs, name)
		if r.stop != nil {
			r.stop()
			<-r.done
		}
		if err := r.reg.Unregister(uint8(r.cfg.VRID)); err != nil {
			s.log.Warn("removed slot's VRID still passes the socket filter", "instance", name, "vrid", r.cfg.VRID, "err", err)
		}
		s.store.Delete(health.MasterKey(name))
		s.log.Info("L2 slot removed", "instance", name)
	}
	for _, r := range moved {
		if err := r.reg.Register(uint8(r.cfg.VRID), r.in); err != nil {
			s.log.Error("slot VRID not changed", "instance", r.cfg.Name, "err", err)
			continue
		}
		if err := r.in.SetVRID(uint8(r.cfg.VRID)); err != nil {
			s.log.Error("slot VRID not changed", "instance", r.cfg.Name, "err", err)
		}
	}
	for _, ic := range c.add {
		if err := s.add(ic, now); err != nil {
			s.log.Error("L2 slot not added", "instance", ic.Name, "err", err)
			continue
		}
		s.log.Info("L2 slot added", "instance", ic.Name, "vrid", ic.VRID, "priority", ic.Priority, "addresses", len(ic.Slot.Extra))
	}
	s.hand(now)
}

// init adds the slots of the config at start; they are not young: there
// is no older slot to keep their addresses meanwhile.
func (s *slotSet) init(ics []config.Instance) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ic := range ics {
		if err := s.add(ic, time.Time{}); err != nil {
			return err
		}
	}
	s.hand(s.clock.Now())
	return nil
}

// add builds, registers and, if the set runs, starts a slot. Under mu.
func (s *slotSet) add(ic config.Instance, now time.Time) error {
	r, err := s.build(ic)
	if err != nil {
		return err
	}
	if err := r.reg.Register(uint8(ic.VRID), r.in); err != nil {
		return err
	}
	r.cfg, r.added = ic, now
	s.runs[ic.Name] = r
	s.start(r)
	return nil
}

// start runs r if the set runs; Run starts it otherwise. Under mu.
func (s *slotSet) start(r *slotRun) {
	if s.ctx == nil || r.stop != nil {
		return
	}
	ctx, stop := context.WithCancel(s.ctx)
	r.stop, r.done = stop, make(chan struct{})
	s.wg.Go(func() {
		defer close(r.done)
		if err := r.in.Run(ctx); err != nil {
			s.log.Error("L2 slot stopped", "instance", r.cfg.Name, "err", err)
		}
	})
}

// hand gives every slot its addresses: its own, and those it holds now
// that go to a slot added less than settle ago, which may not have won
// yet, or to a slot this node masters, until handover has passed (the two
// slots' workers run apart: if the old one released first, the address
// would leave the interface and be announced again). It arms the timer
// for the next of those to end. Under mu.
func (s *slotSet) hand(now time.Time) {
	young := map[netip.Prefix]bool{}
	finalOf := map[netip.Prefix]*slotRun{}
	for _, r := range s.runs {
		for _, p := range r.cfg.Slot.Extra {
			finalOf[p] = r
			if now.Before(r.added.Add(s.settle)) {
				young[p] = true
			}
		}
	}
	for _, r := range s.runs {
		for _, p := range r.given {
			dest := finalOf[p]
			if _, ok := s.handing[p]; !ok && dest != nil && dest != r && dest.in.Status().State == vrrp.Master {
				s.handing[p] = now.Add(slotHandover)
			}
		}
	}
	wake := len(young) > 0
	for _, r := range s.runs {
		want := append([]netip.Prefix{}, r.cfg.Slot.Extra...)
		if !now.Before(r.added.Add(s.settle)) {
			for _, p := range r.given {
				if (young[p] || now.Before(s.handing[p])) && finalOf[p] != r {
					want = append(want, p)
					wake = true
				}
			}
		}
		slices.SortFunc(want, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		if r.handed && slices.Equal(want, r.given) {
			continue
		}
		if err := r.in.SetExtra(want); err != nil {
			s.log.Error("service addresses not applied", "instance", r.cfg.Name, "err", err)
		}
		r.given, r.handed = want, true
	}
	for p, until := range s.handing {
		if !now.Before(until) {
			delete(s.handing, p)
		}
	}
	if wake {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// slotHandover is how long an address that moves between two slots this
// node masters stays in the old one too: ample for the new one's worker to
// configure it.
const slotHandover = time.Second

// Run runs the slots until ctx ends, then stops them all (priority-0
// adverts, addresses removed) and waits for them.
func (s *slotSet) Run(ctx context.Context) {
	s.mu.Lock()
	s.ctx = ctx
	for _, r := range s.runs {
		s.start(r)
	}
	s.mu.Unlock()
	var timer clock.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			s.mu.Lock()
			s.ctx = nil
			s.mu.Unlock()
			s.wg.Wait()
			s.mu.Lock()
			for name := range s.runs {
				s.store.Delete(health.MasterKey(name))
			}
			s.mu.Unlock()
			return
		case <-s.wake:
		case <-fire:
			s.mu.Lock()
			s.hand(s.clock.Now())
			s.mu.Unlock()
		}
		if timer != nil {
			timer.Stop()
		}
		timer, fire = nil, nil
		if d, ok := s.nextSettle(); ok {
			timer = s.clock.NewTimer(d)
			fire = timer.C()
		}
	}
}

// nextSettle is how long until the next added slot settles.
func (s *slotSet) nextSettle() (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	var next time.Duration
	found := false
	for _, r := range s.runs {
		if d := r.added.Add(s.settle).Sub(now); d > 0 && (!found || d < next) {
			next, found = d, true
		}
	}
	for _, until := range s.handing {
		if d := until.Sub(now); !found || d < next {
			next, found = max(d, 0), true
		}
	}
	return next, found
}

// each calls f with every slot, in name order, under mu.
func (s *slotSet) each(f func(ic config.Instance, in *vrrp.Instance)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.runs))
	for n := range s.runs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		f(s.runs[n].cfg, s.runs[n].in)
	}
}
