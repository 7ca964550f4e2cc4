package supervisor

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/proxy"
)

type reloadRequest struct {
	cfg    *config.Config
	result chan error
}

// ErrNotRunning is returned by Reload when Run is not running.
var ErrNotRunning = errors.New("supervisor is not running")

// Reload applies cfg to the running daemon: balancers, their backends and
// listeners, and checks (of dsr balancers only the backends). Listeners
// that stay are never closed and established connections go on. Any error
// leaves the running config as it was. VRRP settings cannot change without
// a restart; a config that changes them is refused.
func (s *Supervisor) Reload(ctx context.Context, cfg *config.Config) error {
	req := reloadRequest{cfg: cfg, result: make(chan error, 1)}
	select {
	case s.reloads <- req:
	case <-ctx.Done():
		return ErrNotRunning
	}
	return <-req.result
}

func (s *Supervisor) reload(ctx context.Context, cfg *config.Config) error {
	if !reflect.DeepEqual(cfg.VRRP, s.cfg.VRRP) || cfg.Cluster != s.cfg.Cluster || cfg.Node != s.cfg.Node {
		return errors.New("reload: the vrrp section, cluster or node changed; VRRP changes need a restart (nothing applied)")
	}
	if !reflect.DeepEqual(cfg.BGP, s.cfg.BGP) {
		return errors.New("reload: the bgp section changed; it needs a restart (nothing applied)")
	}
	dsrChange, err := s.dsr.Plan(cfg)
	if err != nil {
		return fmt.Errorf("reload: %w (nothing applied)", err)
	}
	specs, err := checkSpecs(cfg)
	if err != nil {
		dsrChange.Abort()
		return fmt.Errorf("reload: %w (nothing applied)", err)
	}
	// Prepare every balancer; any failure undoes all of them.
	var (
		changes []*proxy.Change
		added   []*proxy.Balancer
	)
	undo := func() {
		dsrChange.Abort()
		for _, c := range changes {
			c.Abort()
		}
		for _, b := range added {
			b.Shutdown(closedContext())
		}
	}
	keep := map[string]bool{}
	for _, bc := range cfg.Balancers {
		if bc.Mode == "dsr" {
			continue
		}
		keep[bc.Name] = true
		if b := s.balancer(bc.Name); b != nil {
			ch, err := b.Plan(bc)
			if err != nil {
				undo()
				return fmt.Errorf("reload: %w (nothing applied)", err)
			}
			changes = append(changes, ch)
			continue
		}
		b, err := proxy.New(bc, s.log)
		if err != nil {
			undo()
			return fmt.Errorf("reload: %w (nothing applied)", err)
		}
		added = append(added, b)
	}
	for _, c := range changes {
		c.Commit()
	}
	dsrChange.Commit()
	var kept []*proxy.Balancer
	for _, b := range s.balancers {
		if keep[b.Name()] {
			kept = append(kept, b)
		} else {
			s.draining.Go(func() { s.drain(b) })
		}
	}
	for _, b := range added {
		b.Start()
	}
	s.mu.Lock()
	s.balancers = append(kept, added...)
	gone, down := s.syncChecks(ctx, specs)
	s.mu.Unlock()
	// A backend whose check is gone is no longer held down by it; one whose
	// check restarts down (changed check, or a backend back in the config)
	// stays out of rotation until the check passes.
	s.setBackendHealth(gone, true)
	s.setBackendHealth(down, false)
	if cfg.API != s.cfg.API || cfg.Log != s.cfg.Log {
		s.log.Warn("reload: api and log settings need a restart; the running ones stay")
		cfg.API, cfg.Log = s.cfg.API, s.cfg.Log
	}
	s.specs, s.cfg = specs, cfg
	s.log.Info("config reloaded", "balancers", len(cfg.Balancers), "checks", len(specs))
	return nil
}

// setBackendHealth sets the backends behind the named backend checks.
func (s *Supervisor) setBackendHealth(checks []string, up bool) {
	for _, name := range checks {
		if bn, addr, ok := parseBalancerCheckName(name); ok {
			if b := s.balancer(bn); b != nil {
				b.SetHealth(addr, up)
			} else {
				s.health.Set(health.BackendKey(bn, addr), health.State{Up: up})
			}
		}
	}
}

// balancer finds a running balancer by name.
func (s *Supervisor) balancer(name string) *proxy.Balancer {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.balancers {
		if b.Name() == name {
			return b
		}
	}
	return nil
}

// Balancers returns the running balancers, for status.
func (s *Supervisor) Balancers() []*proxy.Balancer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*proxy.Balancer(nil), s.balancers...)
}

// drain shuts a balancer down, giving its connections its drain timeout.
func (s *Supervisor) drain(b *proxy.Balancer) {
	ctx, cancel := context.WithTimeout(context.Background(), b.DrainTimeout())
	defer cancel()
	b.Shutdown(ctx)
}

func closedContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
