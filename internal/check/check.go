// Package check runs health checks and publishes their up/down state in the
// daemon's health store. Each kind of probe is a Prober with one method;
// Runner owns interval, timeout, rise and fall, and publishes only on a
// change; Set runs the checks a config asks for and plans their reload.
package check

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/statelog"
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
		if ctx.Err() != nil {
			return fmt.Errorf("tcp %s: timed out", t.Address)
		}
		return fmt.Errorf("tcp %s: %w", t.Address, cause(err))
	}
	return c.Close()
}

// Runner probes on an interval and applies rise/fall hysteresis.
type Runner struct {
	// Name names the check in logs and status.
	Name string
	// Key is where the check's state goes in Health.
	Key      health.Key
	Health   *health.Store
	Prober   Prober
	Interval time.Duration
	// FastInterval replaces Interval while the state is changing; 0 means Interval.
	FastInterval time.Duration
	Timeout      time.Duration
	Rise         int
	Fall         int
	Log          *slog.Logger
	// StartDown starts the check down, needing Rise passes to come up; for a
	// check restarted by a reload while its target was down.
	StartDown bool

	mu          sync.Mutex
	up          bool
	okRun, fail int
	status      Status
	changedAt   time.Time // when up last changed; zero: not since the start
}

// cause is what a client error says beyond the address the probe's own
// message names: net/http's "Get \"URL\": dial tcp ADDR: connect:
// connection refused" becomes "connect: connection refused", so a check
// error names its target once. The error chain is kept (errors.Is still
// finds syscall.ECONNREFUSED).
func cause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	return err
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
	r.publish(!r.StartDown, "")
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
		up, changed := r.record(err)
		reason := ""
		if err != nil {
			reason = err.Error()
		}
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
			r.logChange(up, reason, start)
			r.publish(up, reason)
		}
		t.Reset(next)
	}
}

// logChange writes the one line of a state change: down at WARN with the
// probe's error, up at INFO with how long it was down. A balancer backend's
// check logs at DEBUG only: its balancer writes the line, with this reason.
func (r *Runner) logChange(up bool, reason string, now time.Time) {
	r.mu.Lock()
	since := r.changedAt
	r.changedAt = now
	r.mu.Unlock()
	c := statelog.Change{Event: statelog.EventCheck, Prev: statelog.UpDown(!up), State: statelog.UpDown(up), Reason: reason}
	level := statelog.Level(up)
	if up {
		c.Reason = fmt.Sprintf("%d probes passed", r.Rise)
		if !since.IsZero() {
			c.DownFor = now.Sub(since)
		}
	}
	if r.Key.Kind == health.Backend {
		level = slog.LevelDebug
	}
	statelog.Log(r.Log, level, "check "+c.State, c, "check", r.Name)
}

func (r *Runner) publish(up bool, reason string) {
	if r.Health != nil {
		r.Health.Set(r.Key, health.State{Up: up, Reason: reason})
	}
}

// record applies one probe result and reports the state and whether it
// changed. The caller holds r.mu.
func (r *Runner) record(err error) (up, changed bool) {
	if err == nil {
		r.okRun, r.fail = r.okRun+1, 0
		if !r.up && r.okRun >= r.Rise {
			r.up = true
			return true, true
		}
		return r.up, false
	}
	r.okRun, r.fail = 0, r.fail+1
	if r.up && r.fail >= r.Fall {
		r.up = false
		return false, true
	}
	return r.up, false
}
