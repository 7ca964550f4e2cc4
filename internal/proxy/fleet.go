package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/statelog"
)

// Fleet runs every proxy balancer of a config (mode other than dsr) as one
// component. Its balancers share one set of event loops. It takes each
// backend's health from a health.Store (the health.BackendKey its check
// publishes) and publishes each balancer's own, health.BalancerKey: up while
// the balancer has a backend in rotation.
//
// How many loops it runs is the caller's policy (NewFleet's loops): the
// command runs one per processor the process may use and sets GOMAXPROCS
// one higher, so the rest of the daemon always has a processor (see Loops).
type Fleet struct {
	store  *health.Store
	log    *slog.Logger
	nloops int

	mu        sync.Mutex // guards everything below
	state     fleetState
	loops     *Loops      // nil until a balancer needs them
	balancers []*Balancer // in config order
	draining  sync.WaitGroup
}

type fleetState uint8

const (
	fleetNew fleetState = iota
	fleetRunning
	fleetStopped
)

var _ component.Component = (*Fleet)(nil)

// errFleetStopped refuses a reload of a fleet whose Run ended.
var errFleetStopped = errors.New("balancers: not running")

// noBackendReason is the Reason of a BalancerKey that is down.
const noBackendReason = "no backend in rotation"

// NewFleet creates every proxy balancer of cfg, listeners and monitors
// open, nothing served until Run; an address in use fails here, naming the
// balancer and the address. On error it closes what it opened. loops is
// the number of event loops the balancers share (at least one).
func NewFleet(cfg *config.Config, store *health.Store, loops int, log *slog.Logger) (*Fleet, error) {
	f := &Fleet{store: store, log: log, nloops: max(loops, 1)}
	for _, bc := range proxyBalancers(cfg) {
		if f.loops == nil {
			var err error
			if f.loops, err = NewLoops(f.nloops, log); err != nil {
				return nil, err
			}
		}
		b, err := New(bc, f.loops, log)
		if err != nil {
			f.Close()
			return nil, err
		}
		f.balancers = append(f.balancers, b)
	}
	return f, nil
}

func proxyBalancers(cfg *config.Config) []config.Balancer {
	var out []config.Balancer
	for _, bc := range cfg.Balancers {
		if bc.Mode != "dsr" {
			out = append(out, bc)
		}
	}
	return out
}

// Name names the component.
func (f *Fleet) Name() string { return "balancers" }

// Balancers returns the running balancers in config order, for status.
// Safe from any goroutine.
func (f *Fleet) Balancers() []*Balancer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.balancers)
}

// Run serves every balancer, keeps their backends' health as the store
// says, and when ctx ends drains them all at once, each for its own
// drain_timeout, waits for those a reload removed, and returns.
func (f *Fleet) Run(ctx context.Context) error {
	f.mu.Lock()
	if f.state != fleetNew {
		f.mu.Unlock()
		return errors.New("balancers: run twice or after Close")
	}
	f.state = fleetRunning
	sub := f.store.Subscribe()
	defer sub.Close()
	// The store's health first, so that no connection goes to a backend
	// already known down.
	for _, b := range f.balancers {
		f.applyStoreLocked(b)
		b.Start()
	}
	f.mu.Unlock()

	for running := true; running; {
		select {
		case <-sub.Wake():
			f.apply(sub.Changes())
		case <-ctx.Done():
			running = false
		}
	}

	f.mu.Lock()
	f.state = fleetStopped // Commit no longer adds a drain, nor a balancer
	bs := f.balancers
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, b := range bs {
		wg.Go(func() { drain(b) })
	}
	wg.Wait()
	f.draining.Wait()
	for _, b := range bs {
		f.store.Delete(health.BalancerKey(b.Name()))
	}
	if f.loops != nil { // every balancer that used them is shut down
		f.loops.Close()
	}
	return nil
}

// Close releases what NewFleet opened, for a fleet that never ran; after
// Run it does nothing.
func (f *Fleet) Close() {
	f.mu.Lock()
	if f.state != fleetNew {
		f.mu.Unlock()
		return
	}
	f.state = fleetStopped
	bs := f.balancers
	f.mu.Unlock()
	for _, b := range bs {
		b.Shutdown(closedContext()) // closes listeners and monitor
	}
	if f.loops != nil {
		f.loops.Close()
	}
}

// drain shuts a balancer down, giving its connections its drain timeout.
func drain(b *Balancer) {
	ctx, cancel := context.WithTimeout(context.Background(), b.DrainTimeout())
	defer cancel()
	b.Shutdown(ctx)
}

func closedContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// apply sets the health of the backends whose keys changed and publishes
// the balancers that had one.
func (f *Fleet) apply(changes []health.Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var touched []*Balancer
	for _, c := range changes {
		if c.Key.Kind != health.Backend {
			continue
		}
		b := f.balancerLocked(c.Key.Name)
		if b == nil {
			continue // a dsr balancer's, or one a reload will add
		}
		// A key no longer known is a check removed: nothing holds the
		// backend down any more.
		b.SetHealth(c.Key.Addr, !c.Known || c.State.Up, c.State.Reason)
		if !slices.Contains(touched, b) {
			touched = append(touched, b)
		}
	}
	for _, b := range touched {
		f.publishLocked(b)
	}
}

// ErrUnknownBalancer is SetAdmin's error for a name that is not one of
// the fleet's balancers (mode dsr ones included: they are not the fleet's).
var ErrUnknownBalancer = errors.New("unknown balancer")

// SetAdmin sets the admin state of a backend (see Balancer.SetAdmin) and
// publishes the balancer's health, which a drained last backend takes down.
func (f *Fleet) SetAdmin(balancer string, addr netip.AddrPort, st AdminState) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.balancerLocked(balancer)
	if b == nil {
		return fmt.Errorf("%w %s", ErrUnknownBalancer, balancer)
	}
	if err := b.SetAdmin(addr, st); err != nil {
		return err
	}
	if f.state == fleetRunning {
		f.publishLocked(b)
	}
	return nil
}

func (f *Fleet) balancerLocked(name string) *Balancer {
	for _, b := range f.balancers {
		if b.name == name {
			return b
		}
	}
	return nil
}

// backendUp reads a backend's health from the store: a backend nobody
// said anything about is up.
func (f *Fleet) backendUp(balancer string, addr netip.AddrPort) bool {
	st, ok := f.store.Get(health.BackendKey(balancer, addr))
	return !ok || st.Up
}

// applyStoreLocked sets every backend of b as the store says and publishes b.
func (f *Fleet) applyStoreLocked(b *Balancer) {
	for _, be := range b.cur.Load().backends {
		st, _ := f.store.Get(health.BackendKey(b.name, be.Addr))
		b.SetHealth(be.Addr, f.backendUp(b.name, be.Addr), st.Reason)
	}
	f.publishLocked(b)
}

// publishLocked sets b's BalancerKey; the store wakes subscribers only
// when it changed.
func (f *Fleet) publishLocked(b *Balancer) {
	k := health.BalancerKey(b.name)
	st := health.State{Up: true}
	if b.healthy() == 0 {
		st.Reason = noBackendReason
		st.Up = false
	}
	if old, ok := f.store.Get(k); ok && old.Up != st.Up {
		statelog.Log(b.log, statelog.Level(st.Up), "balancer "+statelog.UpDown(st.Up), statelog.Change{Event: statelog.EventBalancer,
			Prev: statelog.UpDown(old.Up), State: statelog.UpDown(st.Up), Reason: st.Reason})
	}
	f.store.Set(k, st)
}

// fleetChange is a planned reload of a fleet.
type fleetChange struct {
	f       *Fleet
	changes []*Change   // of kept balancers
	added   []*Balancer // created, not started
	removed []*Balancer
	next    []*Balancer // the balancers after Commit, in config order
	loops   *Loops      // started for this change: the fleet had none
}

// Plan prepares cfg's proxy balancers: each kept one plans its own change,
// new ones are created (listeners open, not serving). Any failure undoes
// all of it and names the balancer and the address or key.
func (f *Fleet) Plan(cfg *config.Config) (component.Change, error) {
	f.mu.Lock()
	state, cur, loops := f.state, slices.Clone(f.balancers), f.loops
	f.mu.Unlock()
	if state == fleetStopped {
		return nil, errFleetStopped
	}
	ch := &fleetChange{f: f}
	keep := map[string]bool{}
	for _, bc := range proxyBalancers(cfg) {
		keep[bc.Name] = true
		if i := slices.IndexFunc(cur, func(b *Balancer) bool { return b.name == bc.Name }); i >= 0 {
			c, err := cur[i].Plan(bc)
			if err != nil {
				ch.Abort()
				return nil, err
			}
			// A backend the reload adds comes in as its check says.
			c.upAtStart = func(addr netip.AddrPort) bool { return f.backendUp(bc.Name, addr) }
			ch.changes = append(ch.changes, c)
			ch.next = append(ch.next, cur[i])
			continue
		}
		if loops == nil {
			var err error
			if loops, err = NewLoops(f.nloops, f.log); err != nil {
				ch.Abort()
				return nil, err
			}
			ch.loops = loops
		}
		b, err := New(bc, loops, f.log)
		if err != nil {
			ch.Abort()
			return nil, err
		}
		ch.added = append(ch.added, b)
		ch.next = append(ch.next, b)
	}
	for _, b := range cur {
		if !keep[b.name] {
			ch.removed = append(ch.removed, b)
		}
	}
	return ch, nil
}

// Commit switches to the planned balancers: kept ones take their new
// settings, added ones start, removed ones drain in the background (Run
// waits for them). Then every backend takes the health the store has for
// it, and every balancer's key is published.
func (ch *fleetChange) Commit() {
	f := ch.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == fleetStopped { // Run ended since Plan
		ch.Abort()
		return
	}
	running := f.state == fleetRunning
	for _, c := range ch.changes {
		c.commit(running)
	}
	if ch.loops != nil {
		f.loops = ch.loops
	}
	f.balancers = ch.next
	for _, b := range ch.removed {
		f.store.Delete(health.BalancerKey(b.name))
		if running {
			f.draining.Go(func() { drain(b) })
		} else {
			b.Shutdown(closedContext())
		}
	}
	for _, b := range f.balancers {
		f.applyStoreLocked(b)
	}
	if running {
		for _, b := range ch.added {
			b.Start()
		}
	}
}

// Abort closes what Plan opened; the running balancers are as they were.
func (ch *fleetChange) Abort() {
	for _, c := range ch.changes {
		c.Abort()
	}
	for _, b := range ch.added {
		b.Shutdown(closedContext())
	}
	if ch.loops != nil {
		ch.loops.Close()
	}
}
