// Package clocktest is a fake clock.Clock for unit tests: time stands still
// until the test advances it, and timers and tickers fire then, on the
// test's goroutine, so a test drives a control loop's waits without sleeping.
//
// Timers take durations, so code under test reads Now and then arms a timer
// relative to the time at arming. A test advances the clock once that code
// has armed what it waits on (BlockUntil): an Advance in between would move
// that timer's due time by as much.
package clocktest

import (
	"slices"
	"sync"
	"time"

	"github.com/vigil-lb/vigil/internal/clock"
)

// Clock is a fake clock. Its methods are safe for concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	armed   []*waiter // timers and tickers that will fire, in no order
	changed chan struct{}
}

var _ clock.Clock = (*Clock)(nil)

// New returns a clock that reads start until advanced.
func New(start time.Time) *Clock {
	return &Clock{now: start, changed: make(chan struct{})}
}

// waiter is one timer or ticker. Its channel holds one value, as a
// time.Ticker's does: a receiver that falls behind misses ticks.
type waiter struct {
	c      *Clock
	ch     chan time.Time
	when   time.Time
	period time.Duration // 0 for a timer
}

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires once the clock reaches now+d.
func (c *Clock) NewTimer(d time.Duration) clock.Timer {
	w := &waiter{c: c, ch: make(chan time.Time, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.arm(w, d)
	return (*timer)(w)
}

// NewTicker returns a ticker with period d.
func (c *Clock) NewTicker(d time.Duration) clock.Ticker {
	if d <= 0 {
		panic("clocktest: non-positive interval for NewTicker")
	}
	w := &waiter{c: c, ch: make(chan time.Time, 1), period: d}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.arm(w, d)
	return (*ticker)(w)
}

// Advance moves the clock forward by d and fires, in order of their due
// times, the timers and tickers due by then. A ticker fires once however
// many periods d spans, as for a receiver that fell behind.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(c.now.Add(d))
}

// AdvanceTo moves the clock forward to t, as Advance does; a t before the
// clock's time leaves it unchanged.
func (c *Clock) AdvanceTo(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.setLocked(t)
	}
}

func (c *Clock) setLocked(t time.Time) {
	c.now = t
	due := slices.DeleteFunc(slices.Clone(c.armed), func(w *waiter) bool { return w.when.After(t) })
	slices.SortStableFunc(due, func(a, b *waiter) int { return a.when.Compare(b.when) })
	for _, w := range due {
		c.fire(w)
		if w.period > 0 {
			for !w.when.After(t) {
				w.when = w.when.Add(w.period)
			}
		}
	}
	c.armed = slices.DeleteFunc(c.armed, func(w *waiter) bool { return w.period == 0 && !w.when.After(t) })
	c.signal()
}

// Armed counts the timers and tickers that have yet to fire.
func (c *Clock) Armed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.armed)
}

// BlockUntil waits until at least n timers and tickers are armed: the code
// under test has come round to waiting on the clock. It waits at most 10 s
// of real time and reports whether n were armed.
func (c *Clock) BlockUntil(n int) bool {
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		armed, changed := len(c.armed), c.changed
		c.mu.Unlock()
		if armed >= n {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		}
	}
}

// arm schedules w at now+d, firing it at once when d <= 0.
func (c *Clock) arm(w *waiter, d time.Duration) {
	w.when = c.now.Add(d)
	if d <= 0 && w.period == 0 {
		c.fire(w)
		return
	}
	if !slices.Contains(c.armed, w) {
		c.armed = append(c.armed, w)
	}
	c.signal()
}

// disarm stops w and empties its channel, so that nothing it sent before
// is received after (time.Timer's guarantee since Go 1.23).
func (c *Clock) disarm(w *waiter) bool {
	i := slices.Index(c.armed, w)
	if i >= 0 {
		c.armed = slices.Delete(c.armed, i, i+1)
		c.signal()
	}
	select {
	case <-w.ch:
	default:
	}
	return i >= 0
}

func (c *Clock) fire(w *waiter) {
	select {
	case w.ch <- c.now:
	default: // the receiver has not taken the last value yet
	}
}

func (c *Clock) signal() {
	close(c.changed)
	c.changed = make(chan struct{})
}

type timer waiter

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.c.disarm((*waiter)(t))
	t.c.arm((*waiter)(t), d)
	return was
}

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.c.disarm((*waiter)(t))
}

type ticker waiter

func (t *ticker) C() <-chan time.Time { return t.ch }

func (t *ticker) Stop() {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.c.disarm((*waiter)(t))
}
