package proxy

import (
	"errors"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// outOfResources tells an error of socket() or accept() that is the node's,
// not a peer's: no descriptor left (EMFILE for the process, ENFILE for the
// system) or no kernel memory for a socket (ENOBUFS, ENOMEM). Another
// backend would fail the same way, and counting it as the backend's connect
// error blamed healthy backends for the node's limit.
func outOfResources(err error) bool {
	return errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) ||
		errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM)
}

// exhaustLogInterval is how often, at most, a balancer logs that it ran
// out of descriptors or socket memory, and that accept failed otherwise.
const exhaustLogInterval = 10 * time.Second

// exhaustion counts a balancer's failures for want of local resources,
// apart from the backends' connect errors and no_backend, and rate-limits
// their log. Every event loop of the balancer reports here.
type exhaustion struct {
	accept  atomic.Uint64 // accept() failed: the connection waits in the backlog
	connect atomic.Uint64 // socket() for the backend failed: the client was closed
	other   atomic.Uint64 // accept() failed for another reason
	lastLog atomic.Int64  // unix nanoseconds
	logged  atomic.Uint64 // accept+connect+other at the last log line
}

// Ops of noteFailure.
const (
	opAccept  = "accept"
	opConnect = "connect"
)

// noteFailure counts a failure of op and logs at most one line per
// exhaustLogInterval for the balancer, with the failures since the last.
func (b *Balancer) noteFailure(op string, err error) {
	e := &b.exhaust
	switch {
	case !outOfResources(err):
		e.other.Add(1)
	case op == opAccept:
		e.accept.Add(1)
	default:
		e.connect.Add(1)
	}
	now := time.Now().UnixNano()
	last := e.lastLog.Load()
	if last != 0 && now-last < int64(exhaustLogInterval) || !e.lastLog.CompareAndSwap(last, now) {
		return
	}
	total := e.accept.Load() + e.connect.Load() + e.other.Load()
	since := total - e.logged.Swap(total)
	if outOfResources(err) {
		b.log.Warn("out of file descriptors or socket memory: new connections wait (accept) or are closed (backend connect); backends are not blamed",
			"op", op, "err", err, "failures_since_last_log", since,
			"accept_total", e.accept.Load(), "connect_total", e.connect.Load())
		return
	}
	b.log.Warn("accept failed", "err", err, "failures_since_last_log", since)
}
