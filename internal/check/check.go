// Package check runs health checks and publishes their up/down changes on a
// Bus. Each kind of probe is a Prober with one method; Runner owns interval,
// timeout, rise and fall, and publishes only on a change.
package check

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Prober performs one probe; nil means healthy. It must return when ctx ends.
type Prober interface {
	Probe(ctx context.Context) error
}

// Exec runs a shell command; exit status 0 is up. The whole process group is
// killed on timeout, so a hung script leaves nothing behind.
type Exec struct{ Script string }

// Probe runs the script.
func (e Exec) Probe(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", e.Script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return fmt.Errorf("exec %q: timed out", e.Script)
	}
	if err != nil {
		if len(out) > 200 {
			out = out[:200]
		}
		return fmt.Errorf("exec %q: %w: %s", e.Script, err, out)
	}
	return nil
}

// TCP is up when a connection to Address opens.
type TCP struct{ Address string }

// Probe dials and closes.
func (t TCP) Probe(ctx context.Context) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", t.Address)
	if err != nil {
		return fmt.Errorf("tcp %s: %w", t.Address, err)
	}
	return c.Close()
}

// Event is a check changing state.
type Event struct {
	Name string
	Up   bool
	Err  error // the last probe error when down
}

// Bus fans check events out to subscribers: VRRP tracking now, balancers and
// BGP later. Nobody polls a check.
type Bus struct {
	mu   sync.Mutex
	subs []chan Event
	last map[string]Event
}

// NewBus returns an empty bus.
func NewBus() *Bus { return &Bus{last: map[string]Event{}} }

// Subscribe returns a channel of events; it first receives the latest state
// of every check already known.
func (b *Bus) Subscribe() <-chan Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan Event, 256+len(b.last))
	for _, e := range b.last {
		ch <- e
	}
	b.subs = append(b.subs, ch)
	return ch
}

// Last returns the latest event of a check, if any.
func (b *Bus) Last(name string) (Event, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.last[name]
	return e, ok
}

// Publish sends e to every subscriber. A subscriber that does not keep up
// loses events rather than blocking the checks.
func (b *Bus) Publish(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last[e.Name] = e
	for _, ch := range b.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// Runner probes on an interval and applies rise/fall hysteresis.
type Runner struct {
	Name     string
	Prober   Prober
	Interval time.Duration
	// FastInterval replaces Interval while the state is changing; 0 means Interval.
	FastInterval time.Duration
	Timeout      time.Duration
	Rise         int
	Fall         int
	Bus          *Bus
	Log          *slog.Logger
	// StartDown starts the check down, needing Rise passes to come up; for a
	// check restarted by a reload while its target was down.
	StartDown bool

	mu          sync.Mutex
	up          bool
	okRun, fail int
	status      Status
}

// Status is what a check last did, for status and metrics.
type Status struct {
	Name      string
	Up        bool
	LastProbe time.Time // zero before the first probe
	LastErr   string    // of the last probe, "" when it passed
	Latency   time.Duration
	Probes    uint64
	Failures  uint64
}

// Status returns the check's current state.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status
	st.Name, st.Up = r.Name, r.up
	return st
}

// Run probes until ctx ends. The check starts up, as keepalived's scripts do,
// and the first probe waits a random part of the interval so many checks do
// not fire in the same millisecond.
func (r *Runner) Run(ctx context.Context) {
	r.mu.Lock()
	r.up = !r.StartDown
	r.mu.Unlock()
	t := time.NewTimer(rand.N(r.Interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, r.Timeout)
		start := time.Now()
		err := r.Prober.Probe(pctx)
		took := time.Since(start)
		cancel()
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		e, changed := r.record(err)
		next := r.Interval
		if r.FastInterval > 0 && (r.up && r.fail > 0 || !r.up && r.okRun > 0) {
			next = r.FastInterval
		}
		r.status.LastProbe, r.status.Latency = start, took
		r.status.Probes++
		r.status.LastErr = ""
		if err != nil {
			r.status.Failures++
			r.status.LastErr = err.Error()
		}
		r.mu.Unlock()
		if changed {
			r.Log.Info("check state change", "check", r.Name, "up", e.Up, "err", e.Err)
			r.Bus.Publish(e)
		}
		t.Reset(next)
	}
}

// record applies one probe result and reports whether the state changed.
// The caller holds r.mu.
func (r *Runner) record(err error) (Event, bool) {
	if err == nil {
		r.okRun, r.fail = r.okRun+1, 0
		if !r.up && r.okRun >= r.Rise {
			r.up = true
			return Event{Name: r.Name, Up: true}, true
		}
		return Event{}, false
	}
	r.okRun, r.fail = 0, r.fail+1
	if r.up && r.fail >= r.Fall {
		r.up = false
		return Event{Name: r.Name, Up: false, Err: err}, true
	}
	return Event{}, false
}
