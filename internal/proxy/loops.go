package proxy

import (
	"fmt"
	"log/slog"
	"runtime"
	"sync"
)

// The event loops are shared by every balancer of the process, one per
// processor, as HAProxy's threads serve all its frontends. A busy loop waits
// in epoll holding its processor (evloop.run); with loops of their own,
// balancers busy at the same time would have more loops than processors
// and queue behind each other's waits. The runtime gets one processor more
// than there are loops, so that the rest of the daemon (checks, VRRP, the
// API, the monitors) and the netpoller always have one, however busy the
// loops are.
var shared struct {
	mu    sync.Mutex
	loops []*evloop
	users int
	procs int // GOMAXPROCS before the loops started
}

// acquireLoops returns the shared loops, starting them for the first user.
func acquireLoops(log *slog.Logger) ([]*evloop, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.users == 0 {
		n := runtime.GOMAXPROCS(0)
		shared.procs = n
		for range n {
			lp, err := newEvloop(log)
			if err != nil {
				stopAll(shared.loops)
				shared.loops = nil
				return nil, fmt.Errorf("event loop: %w", err)
			}
			shared.loops = append(shared.loops, lp)
		}
		runtime.GOMAXPROCS(n + 1)
	}
	shared.users++
	return shared.loops, nil
}

// releaseLoops stops the loops when their last user is gone; its sessions
// must be.
func releaseLoops() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.users--; shared.users > 0 {
		return
	}
	stopAll(shared.loops)
	shared.loops = nil
	runtime.GOMAXPROCS(shared.procs)
}

func stopAll(loops []*evloop) {
	for _, lp := range loops {
		lp.stop()
	}
}
