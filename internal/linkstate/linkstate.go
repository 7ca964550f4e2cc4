// Package linkstate publishes whether network interfaces are up and
// running into the health store, from the kernel's link notifications. It
// watches only the interfaces it is given: a node may have hundreds of
// links (pod veths), and only the tracked ones matter.
package linkstate

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
)

// Watcher is the component that keeps health.InterfaceKey(name) true for
// each watched interface.
type Watcher struct {
	names map[string]bool
	store *health.Store
	log   *slog.Logger
}

// New watches names (duplicates are fine).
func New(names []string, store *health.Store, log *slog.Logger) *Watcher {
	w := &Watcher{names: map[string]bool{}, store: store, log: log}
	for _, n := range names {
		w.names[n] = true
	}
	return w
}

// Name names the component.
func (w *Watcher) Name() string { return "links" }

// Plan changes nothing: the watched interfaces are the VRRP instances',
// which a reload cannot change.
func (w *Watcher) Plan(*config.Config) (component.Change, error) { return component.None{}, nil }

// Run publishes link states until ctx ends. A watched interface that does
// not exist is down until it appears. The netlink library ends a
// subscription on any receive error; a new one lists every link again, so
// no change is lost for good.
func (w *Watcher) Run(ctx context.Context) error {
	for name := range w.names {
		if _, err := net.InterfaceByName(name); err != nil {
			w.log.Warn("tracked interface does not exist: counted as down", "interface", name)
			w.store.Set(health.InterfaceKey(name), health.State{Up: false, Reason: "no such interface"})
		}
	}
	for ctx.Err() == nil {
		raw := make(chan netlink.LinkUpdate, 64)
		done := make(chan struct{})
		err := netlink.LinkSubscribeWithOptions(raw, done, netlink.LinkSubscribeOptions{ListExisting: true,
			ErrorCallback: func(err error) { w.log.Debug("link monitor resubscribes", "err", err) }})
		if err != nil {
			w.log.Warn("link monitor", "err", err)
		} else {
			w.forward(ctx, raw)
		}
		close(done)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

func (w *Watcher) forward(ctx context.Context, raw <-chan netlink.LinkUpdate) {
	for {
		select {
		case u, ok := <-raw:
			if !ok {
				return
			}
			name := u.Attrs().Name
			if !w.names[name] {
				continue
			}
			st := state(u.Header.Type == unix.RTM_DELLINK, u.Attrs().Flags, u.Attrs().RawFlags)
			w.store.Set(health.InterfaceKey(name), st)
		case <-ctx.Done():
			return
		}
	}
}

// state is a link's health from its notification.
func state(deleted bool, flags net.Flags, raw uint32) health.State {
	switch {
	case deleted:
		return health.State{Up: false, Reason: "interface removed"}
	case flags&net.FlagUp == 0:
		return health.State{Up: false, Reason: "administratively down"}
	case raw&unix.IFF_RUNNING == 0:
		return health.State{Up: false, Reason: "no carrier"}
	}
	return health.State{Up: true}
}
