package proxy

import (
	"fmt"
	"log/slog"
	"sync"
)

// Loops is a set of event loops that balancers share, as HAProxy's threads
// serve all its frontends: whoever creates it passes it to every balancer
// it makes (a Fleet makes one for all of its balancers) and closes it after
// the last of them shut down.
//
// The set should have one loop per processor the process may use. A busy
// loop waits in epoll holding its processor (evloop.run); with loops of
// their own, balancers busy at the same time would have more loops than
// processors and queue behind each other's waits. The runtime should have
// one processor more than there are loops (GOMAXPROCS = loops + 1), so that
// the rest of the daemon (checks, VRRP, the API, the monitors) and the
// netpoller always have one, however busy the loops are. That is the
// process's policy, not this package's: cmd/vigil sets GOMAXPROCS.
type Loops struct {
	loops []*evloop
	once  sync.Once
}

// NewLoops starts n event loops (at least one). On error it stops the ones
// it started.
func NewLoops(n int, log *slog.Logger) (*Loops, error) {
	l := &Loops{}
	for range max(n, 1) {
		lp, err := newEvloop(log)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("event loop: %w", err)
		}
		l.loops = append(l.loops, lp)
	}
	return l, nil
}

// Len is the number of loops.
func (l *Loops) Len() int { return len(l.loops) }

// Close stops the loops and waits for them. The balancers that use them
// must be shut down first: a session still open when its loop stops is
// never closed. A second Close does nothing.
func (l *Loops) Close() {
	l.once.Do(func() {
		for _, lp := range l.loops {
			lp.stop()
		}
	})
}
