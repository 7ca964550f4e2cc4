package vrrp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vigil-lb/vigil/internal/clock"
)

// ExtraAddresses configures an instance's extra addresses (package vip,
// Shared.Holder). Acquiring a present address and releasing an absent one
// are not errors; releasing one the instance never acquired deletes it
// unless another instance holds it, which is how addresses left by a
// crashed run go.
type ExtraAddresses interface {
	Acquire(ps []netip.Prefix) error
	Release(ps []netip.Prefix) error
}

// newAcquirer is an ExtraAddresses that tells which addresses it acquired
// were held by no other instance of this node (vip.Holder): only those
// changed hands on the segment, and only those are announced. Without it
// every address acquired is announced.
type newAcquirer interface {
	AcquireNew(ps []netip.Prefix) ([]netip.Prefix, error)
}

// WithExtraAddresses lets the instance carry extra addresses (SetExtra),
// configured through a.
func WithExtraAddresses(a ExtraAddresses) Option {
	return func(in *Instance) { in.extra = newExtraWorker(in, a) }
}

// ErrNoExtra is returned by SetExtra on an instance built without
// WithExtraAddresses.
var ErrNoExtra = errors.New("instance carries no extra addresses")

// extraChunk is how many extra addresses the worker configures and
// announces before it looks for a newer set: a step down is never held up
// by more than one chunk of an addition.
const extraChunk = 64

// SetExtra replaces the instance's extra addresses: they follow its
// mastership as its VIPs do (configured and announced on taking over, on
// every change while master and on the GARP refresh; removed on leaving),
// but adverts do not list them, so an instance can carry thousands without
// changing its adverts, which keep the configured VIPs. The order and
// repeats of ps do not matter. It never blocks: Run applies the latest set,
// and the kernel calls and announcements run beside Run, never between two
// adverts. It fails, changing nothing, without WithExtraAddresses
// (ErrNoExtra) and for an address of the other family than the VIPs, or one
// of the VIPs.
func (in *Instance) SetExtra(ps []netip.Prefix) error {
	if in.extra == nil {
		return fmt.Errorf("vrrp %s: %w", in.cfg.Name, ErrNoExtra)
	}
	set := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if !p.IsValid() || p.Addr().Is4() != in.vips[0].Is4() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return fmt.Errorf("vrrp %s: extra address %v is not an address of the VIPs' family", in.cfg.Name, p)
		}
		if _, found := slices.BinarySearchFunc(in.vips, p.Addr(), netip.Addr.Compare); found {
			return fmt.Errorf("vrrp %s: extra address %v is one of the instance's VIPs", in.cfg.Name, p)
		}
		set = append(set, p.Masked())
	}
	slices.SortFunc(set, comparePrefix)
	set = slices.Compact(set)
	in.pending.mu.Lock()
	in.pending.extra = &set
	in.pending.mu.Unlock()
	in.poke()
	return nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// extraWorker configures and announces an instance's extra addresses on its
// own goroutine. Run tells it, without waiting, what should be held (set);
// it does the netlink calls and GARP, a chunk at a time, and always works
// towards the latest set. Its bursts are its own, so an address it has
// released is never announced again.
type extraWorker struct {
	in    *Instance
	addrs ExtraAddresses
	wake  chan struct{}

	mu      sync.Mutex
	all     []netip.Prefix // every extra address, sorted
	want    []netip.Prefix // what should be held now: all while master, else none
	gen     uint64         // counts sets, so a long addition notices a newer one
	refresh bool           // announce everything held, once

	// The worker goroutine's own: held is true for an address acquired,
	// false for one that may be left on the interface by an earlier run.
	held   map[netip.Prefix]bool
	bursts []burstRound
}

// burstRound is the rest of one announcement burst: addrs once more at due,
// then left-1 times more, GARPInterval apart.
type burstRound struct {
	due   time.Time
	addrs []netip.Prefix
	left  int
}

func newExtraWorker(in *Instance, a ExtraAddresses) *extraWorker {
	return &extraWorker{in: in, addrs: a, wake: make(chan struct{}, 1), held: map[netip.Prefix]bool{}}
}

// set, on the Run goroutine, records the extra addresses and whether the
// instance holds its addresses now.
func (w *extraWorker) set(all []netip.Prefix, holding bool) {
	w.mu.Lock()
	w.all = all
	w.want = nil
	if holding {
		w.want = all
	}
	w.gen++
	w.mu.Unlock()
	w.in.mu.Lock()
	w.in.status.Extra = len(all)
	w.in.mu.Unlock()
	w.poke()
}

// announceAll asks for one announcement of every extra address held.
func (w *extraWorker) announceAll() {
	w.mu.Lock()
	w.refresh = true
	w.mu.Unlock()
	w.poke()
}

func (w *extraWorker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *extraWorker) changed(gen uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gen != gen
}

// run works until ctx ends, then releases everything it may hold.
func (w *extraWorker) run(ctx context.Context) {
	var timer clock.Timer
	var fire <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			w.release(nil)
			return
		case <-w.wake:
			w.reconcile()
		case <-fire:
			w.burst()
		}
		fire = nil
		if timer != nil {
			timer.Stop()
			timer = nil
		}
		if len(w.bursts) > 0 {
			next := w.bursts[0].due
			for _, b := range w.bursts[1:] {
				if b.due.Before(next) {
					next = b.due
				}
			}
			timer = w.in.clock.NewTimer(max(next.Sub(w.in.clock.Now()), 0))
			fire = timer.C()
		}
	}
}

// reconcile brings the interface to the latest set: releases first, so a
// step down is quick, then acquires and announces chunk by chunk, starting
// over whenever a newer set arrives.
func (w *extraWorker) reconcile() {
	for {
		w.mu.Lock()
		all, want, gen, refresh := w.all, w.want, w.gen, w.refresh
		w.refresh = false
		w.mu.Unlock()

		wanted := make(map[netip.Prefix]bool, len(want))
		for _, p := range want {
			wanted[p] = true
		}
		for _, p := range all {
			if _, ok := w.held[p]; !ok {
				w.held[p] = false
			}
		}
		w.release(wanted)

		var add []netip.Prefix
		for _, p := range want {
			if !w.held[p] {
				add = append(add, p)
			}
		}
		var added []netip.Prefix
		for c := range slices.Chunk(add, extraChunk) {
			if w.changed(gen) {
				break
			}
			fresh, err := w.acquire(c)
			if err != nil {
				w.in.log.Error("extra addresses not configured", "err", err)
			}
			for _, p := range c {
				w.held[p] = true
			}
			w.updateStatus()
			if w.in.cfg.GARPCount > 0 && len(fresh) > 0 {
				w.announce(fresh, "takeover")
			}
			added = append(added, fresh...)
		}
		if n := w.in.cfg.GARPCount; n > 1 && len(added) > 0 {
			w.bursts = append(w.bursts, burstRound{due: w.in.clock.Now().Add(w.in.cfg.GARPInterval), addrs: added, left: n - 1})
		}
		if refresh {
			var held []netip.Prefix
			for _, p := range want {
				if w.held[p] {
					held = append(held, p)
				}
			}
			for c := range slices.Chunk(held, extraChunk) {
				w.announce(c, "refresh")
			}
		}
		if !w.changed(gen) {
			return
		}
	}
}

// acquire configures c and returns what the segment sees move: every
// address, or with a newAcquirer those no other instance held.
func (w *extraWorker) acquire(c []netip.Prefix) ([]netip.Prefix, error) {
	if na, ok := w.addrs.(newAcquirer); ok {
		return na.AcquireNew(c)
	}
	return c, w.addrs.Acquire(c)
}

// release gives up every address that may be held and is not wanted.
func (w *extraWorker) release(wanted map[netip.Prefix]bool) {
	var rel []netip.Prefix
	for p := range w.held {
		if !wanted[p] {
			rel = append(rel, p)
		}
	}
	if len(rel) == 0 {
		return
	}
	slices.SortFunc(rel, comparePrefix)
	if err := w.addrs.Release(rel); err != nil {
		w.in.log.Error("extra addresses not removed", "err", err)
	}
	for _, p := range rel {
		delete(w.held, p)
	}
	// Bursts keep only what is still held: a released address announced
	// again would pull its traffic back from the node that holds it now.
	keep := w.bursts[:0]
	for _, b := range w.bursts {
		b.addrs = slices.DeleteFunc(slices.Clone(b.addrs), func(p netip.Prefix) bool { return !w.held[p] })
		if len(b.addrs) > 0 {
			keep = append(keep, b)
		}
	}
	w.bursts = keep
	w.updateStatus()
}

// burst sends the rounds that are due.
func (w *extraWorker) burst() {
	now := w.in.clock.Now()
	keep := w.bursts[:0]
	for _, b := range w.bursts {
		if !b.due.After(now) {
			for c := range slices.Chunk(b.addrs, extraChunk) {
				w.announce(c, "burst")
			}
			b.left--
			b.due = b.due.Add(w.in.cfg.GARPInterval)
		}
		if b.left > 0 {
			keep = append(keep, b)
		}
	}
	w.bursts = keep
}

func (w *extraWorker) announce(ps []netip.Prefix, why string) {
	addrs := make([]netip.Addr, len(ps))
	for i, p := range ps {
		addrs[i] = p.Addr()
	}
	if err := w.in.ann.Announce(addrs); err != nil {
		w.in.log.Warn("announce of extra addresses failed", "why", why, "count", len(addrs), "err", err)
	}
}

func (w *extraWorker) updateStatus() {
	n := 0
	for _, h := range w.held {
		if h {
			n++
		}
	}
	w.in.mu.Lock()
	w.in.status.ExtraHeld = n
	w.in.mu.Unlock()
}
