// Package notify runs the user's hook on every VRRP state change with
// keepalived's arguments, so existing notify scripts keep working.
package notify

import (
	"context"
	"log/slog"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// Hook runs one executable per event, in order, on its own goroutine: a slow
// or hung script delays later notifications, never the state machine.
type Hook struct {
	path    string
	timeout time.Duration
	log     *slog.Logger
	queue   chan []string
}

// New returns a hook for path; an empty path gives a hook that does nothing.
func New(path string, timeout time.Duration, log *slog.Logger) *Hook {
	return &Hook{path: path, timeout: timeout, log: log, queue: make(chan []string, 64)}
}

// Notify queues a run with keepalived's arguments: type (INSTANCE or GROUP),
// name, state (MASTER, BACKUP, FAULT, STOP) and priority.
func (h *Hook) Notify(kind, name, state string, priority int) {
	if h == nil || h.path == "" {
		return
	}
	args := []string{kind, name, state, strconv.Itoa(priority)}
	select {
	case h.queue <- args:
	default:
		h.log.Warn("notify queue full: event dropped", "hook", h.path, "args", args)
	}
}

// Run executes queued notifications until ctx ends, then runs what is
// still queued (the STOP of a shutdown) before returning.
func (h *Hook) Run(ctx context.Context) {
	for {
		select {
		case args := <-h.queue:
			h.run(args)
		case <-ctx.Done():
			for {
				select {
				case args := <-h.queue:
					h.run(args)
				default:
					return
				}
			}
		}
	}
}

func (h *Hook) run(args []string) {
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		h.log.Warn("notify hook failed", "hook", h.path, "args", args, "err", err, "output", string(out), "took", time.Since(start))
		return
	}
	h.log.Debug("notify hook ran", "hook", h.path, "args", args, "took", time.Since(start))
}
