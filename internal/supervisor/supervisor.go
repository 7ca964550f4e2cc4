// Package supervisor turns a validated config into running components and
// keeps their order, nothing else: start in order, stop in reverse; on a
// reload, plan every component, then commit all or abort all. What each
// component does, and how it reloads, is its own business.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/vigil-lb/vigil/internal/bfd"
	"github.com/vigil-lb/vigil/internal/bgp"
	"github.com/vigil-lb/vigil/internal/check"
	"github.com/vigil-lb/vigil/internal/clock"
	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/dsr"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/history"
	"github.com/vigil-lb/vigil/internal/kube"
	"github.com/vigil-lb/vigil/internal/linkstate"
	"github.com/vigil-lb/vigil/internal/proxy"
	"github.com/vigil-lb/vigil/internal/redirect"
)

// Supervisor owns every component of one running config.
type Supervisor struct {
	cfg    *config.Config
	log    *slog.Logger
	health *health.Store

	checks *check.Set
	dsr    *dsr.Plane
	fleet  *proxy.Fleet
	vrrp   *vrrpGroup
	bgp    *bgp.Announcements
	bfd    *bfd.Sessions
	// kube is the Kubernetes source of members; nil without one.
	kube     *members
	alloc    *allocator // nil unless vigil serves LoadBalancer Services
	redirect *redirect.Redirect
	// history records the last hour for the status page.
	history *history.Recorder
	// order is the start order; the stop order is its reverse.
	order []component.Component

	reloads chan reloadRequest
	// path is the file the daemon started from (Options.ConfigPath), the
	// one ReloadFile reads; fileMu keeps two file reloads (SIGHUP and
	// vigil reload) in order, so the last one recorded is the last applied.
	path   string
	fileMu sync.Mutex
	// last is the outcome of the last file reload, for status and metrics.
	lastMu sync.Mutex
	last   lastReload

	// Version is reported in status and metrics.
	Version       string
	started       time.Time
	node, cluster string // fixed: a reload cannot change them
}

// Options are the process's policies that components follow.
type Options struct {
	// EventLoops is how many event loops the proxy balancers share; at
	// least one.
	EventLoops int
	// ConfigPath is the file cfg was read from: ReloadFile reads it again
	// and status reports it.
	ConfigPath string
}

// New prepares every component. Before Run it only opens sockets and, for
// accept: false, installs the drop table, so interface, address and
// permission errors come before any address changes; on error it undoes
// what it opened.
//
// A config that reads the cluster first waits for the API (or its state
// file), and the components start from the effective config: the static
// one with the cluster's members added.
func New(cfg *config.Config, opts Options, log *slog.Logger) (*Supervisor, error) {
	s := &Supervisor{cfg: cfg, log: log, health: health.New(), reloads: make(chan reloadRequest),
		started: time.Now(), node: cfg.Node, cluster: cfg.Cluster, path: opts.ConfigPath}
	s.last = lastReload{ok: true, lastOK: s.started}
	if readsCluster(cfg) {
		m, err := newMembers(cfg, s.health, log)
		if err != nil {
			return nil, err
		}
		s.kube, s.cfg = m, m.last.Config
		if servesServices(cfg) {
			if s.alloc, err = newAllocator(cfg, log); err != nil {
				m.stop()
				return nil, err
			}
		}
	}
	if err := s.build(opts); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Supervisor) build(opts Options) error {
	var err error
	if s.checks, err = check.NewSet(s.cfg, s.health, s.log); err != nil {
		return err
	}
	// Listeners first: a frontend address in use fails before any VRRP socket.
	if s.fleet, err = proxy.NewFleet(s.cfg, s.health, opts.EventLoops, s.log); err != nil {
		return err
	}
	if s.dsr, err = dsr.New(s.cfg, dsr.Linux(), s.health, s.log); err != nil {
		return err
	}
	if s.vrrp, err = newVRRP(s.cfg, s.health, s.log); err != nil {
		return err
	}
	s.bgp = bgp.NewAnnouncements(s.cfg, s.health, s.log)
	s.bfd = bfd.New(s.cfg, s.health, s.log)
	links := linkstate.New(s.vrrp.trackedInterfaces(), s.health, s.log)
	s.redirect = redirect.New(redirectRules(s.cfg), s.health, s.log, redirectRules)
	// The API source reads first and stops last; checks and links report
	// before anyone reads them; balancers listen, and their port redirect
	// follows their health, before an instance can take a VIP; BGP
	// announces last and so withdraws first, before the VIPs go and the
	// balancers drain. BFD runs before BGP, whose sessions it watches,
	// and stops after, so its AdminDown never closes a BGP session.
	s.order = []component.Component{s.checks, links, s.dsr, s.fleet, s.redirect, s.vrrp, s.bfd, s.bgp}
	// The recorder first: it subscribes before the others publish (it
	// would catch up anyway) and stops last, recording the shutdown.
	s.history = history.New(s.health, clock.Real{}, s.historyPoint, s.log)
	s.order = append([]component.Component{s.history}, s.order...)
	if s.alloc != nil {
		s.order = append([]component.Component{s.alloc}, s.order...)
	}
	if s.kube != nil {
		s.order = append([]component.Component{s.kube}, s.order...)
	}
	return nil
}

// Also adds components started before the others and stopped after them,
// such as the control socket, in the order given. Call it before Run.
func (s *Supervisor) Also(cs ...component.Component) {
	s.order = append(append([]component.Component(nil), cs...), s.order...)
}

// History is the last hour of events, states and samples, for the
// status page (GET /api/v1/history).
func (s *Supervisor) History() history.View { return s.history.View() }

// Health is the daemon's health state.
func (s *Supervisor) Health() *health.Store { return s.health }

// Run runs every component until ctx ends or one of them fails, then stops
// them one by one in reverse order, each after the one started after it
// has returned.
func (s *Supervisor) Run(ctx context.Context) error {
	type running struct {
		stop context.CancelFunc
		done chan error
	}
	runs := make([]running, len(s.order))
	ended := make(chan int, len(s.order))
	for i, c := range s.order {
		cctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan error, 1)
		runs[i] = running{stop: stop, done: done}
		go func() {
			err := c.Run(cctx)
			if err != nil {
				err = fmt.Errorf("%s: %w", c.Name(), err)
			}
			done <- err
			ended <- i
		}()
	}
	var err error
loop:
	for {
		select {
		case req := <-s.reloads:
			changes, err := s.reload(req.cfg, "reload")
			req.result <- reloadResult{changes, err}
		case <-s.kubeUpdates():
			if s.kube.update() {
				if _, err := s.reload(s.kube.static, "kubernetes"); err != nil {
					s.log.Error("member change not applied; the members in force stay", "err", err)
				}
			}
		case i := <-ended:
			// Components run until told to stop: one that returns early,
			// failed or not, takes the daemon down cleanly.
			err = <-runs[i].done
			runs[i].done <- err
			if err == nil {
				s.log.Error("component ended by itself; stopping", "component", s.order[i].Name())
			}
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	for i := len(runs) - 1; i >= 0; i-- {
		runs[i].stop()
		if e := <-runs[i].done; e != nil && err == nil {
			err = e
		}
	}
	return err
}

// Close releases what New opened, for a supervisor that will not Run.
func (s *Supervisor) Close() {
	if s.kube != nil {
		s.kube.stop()
	}
	if s.vrrp != nil {
		s.vrrp.close()
	}
	if s.fleet != nil {
		s.fleet.Close()
	}
	if s.dsr != nil {
		s.dsr.Close()
	}
}

type reloadRequest struct {
	cfg    *config.Config
	result chan reloadResult
}

type reloadResult struct {
	changes []string // what the reload changed, for the log and vigil reload
	err     error
}

// ErrNotRunning is returned by Reload when Run is not running.
var ErrNotRunning = errors.New("supervisor is not running")

// Reload applies cfg to the running daemon. Every component plans its part
// first (balancers open new listeners, dsr finds its backends' links,
// checks build their probers, VRRP and BGP refuse what needs a restart);
// any error aborts every plan and leaves the running config as it was.
// Then all commit: listeners that stay are never closed and established
// connections go on.
func (s *Supervisor) Reload(ctx context.Context, cfg *config.Config) error {
	_, err := s.apply(ctx, cfg)
	return err
}

// apply is Reload that also returns what changed.
func (s *Supervisor) apply(ctx context.Context, cfg *config.Config) ([]string, error) {
	req := reloadRequest{cfg: cfg, result: make(chan reloadResult, 1)}
	select {
	case s.reloads <- req:
	case <-ctx.Done():
		return nil, ErrNotRunning
	}
	r := <-req.result
	return r.changes, r.err
}

// kubeUpdates wakes when the API source has a new snapshot; nil (never)
// without a source.
func (s *Supervisor) kubeUpdates() <-chan struct{} {
	if s.kube == nil {
		return nil
	}
	return s.kube.src.Updates()
}

// reload applies a static config (a reload's, or the running one when the
// cluster changed, why "kubernetes"): expanded with the cluster's members,
// then planned by every component and committed, or aborted by all.
func (s *Supervisor) reload(static *config.Config, why string) ([]string, error) {
	cfg, x := static, kube.Expanded{}
	if s.kube == nil && readsCluster(static) {
		return nil, errors.New("reload: kubernetes: the config reads the cluster now: starting the informers needs a restart (nothing applied)")
	}
	if s.kube != nil {
		if err := s.kube.check(static); err != nil {
			return nil, fmt.Errorf("reload: kubernetes: %w (nothing applied)", err)
		}
		x = s.kube.expand(static)
		cfg = x.Config
		if why == "kubernetes" && reflect.DeepEqual(cfg, s.cfg) {
			s.kube.committed(static, x, why) // nothing vigil uses changed
			return nil, nil
		}
	}
	changes := make([]component.Change, 0, len(s.order))
	for _, c := range s.order {
		ch, err := c.Plan(cfg)
		if err != nil {
			for i := len(changes) - 1; i >= 0; i-- {
				changes[i].Abort()
			}
			return nil, fmt.Errorf("reload: %s: %w (nothing applied)", c.Name(), err)
		}
		changes = append(changes, ch)
	}
	for _, ch := range changes {
		ch.Commit()
	}
	what := configChanges(s.cfg, cfg)
	s.cfg = cfg
	if s.kube != nil {
		s.kube.committed(static, x, why)
		if why == "kubernetes" {
			s.kube.applied.Add(1)
			return what, nil // committed logged each change
		}
	}
	changed := "nothing"
	if len(what) > 0 {
		changed = strings.Join(what, "; ")
	}
	s.log.Info("config reloaded", "changed", changed, "balancers", len(cfg.Balancers), "checks", len(cfg.Checks))
	return what, nil
}
