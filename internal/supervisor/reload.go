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

// errDSRNotRunning refuses a reload that changes dsr balancers which could
// not start: there is nothing to change them in.
var errDSRNotRunning = errors.New("dsr balancers changed; they are not running (see status), and need a restart")

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
	var applyDSR func()
	switch {
	case s.dsr != nil:
		var err error
		if applyDSR, err = s.dsr.planBackends(cfg); err != nil {
			return fmt.Errorf("reload: %w (nothing applied)", err)
		}
	case !reflect.DeepEqual(dsrBalancers(cfg), dsrBalancers(s.cfg)):
		return fmt.Errorf("reload: %w (nothing applied)", errDSRNotRunning)
	}
	specs, err := checkSpecs(cfg)
	if err != nil {
		return fmt.Errorf("reload: %w (nothing applied)", err)
	}
	// Every balancer plans; any failure undoes all of them.
	fleetChange, err := s.fleet.Plan(cfg)
	if err != nil {
		return fmt.Errorf("reload: %w (nothing applied)", err)
	}
	s.mu.Lock()
	gone, down := s.syncChecks(ctx, specs)
	s.mu.Unlock()
	// A backend whose check is gone is no longer held down by it; one whose
	// check restarts down (changed check, or a backend back in the config)
	// stays out of rotation until the check passes. The store first: the
	// fleet's commit reads it, so that a backend the reload adds comes in
	// as its check says.
	for _, name := range gone {
		if bn, addr, ok := parseBalancerCheckName(name); ok {
			s.store.Delete(health.BackendKey(bn, addr))
		}
	}
	for _, name := range down {
		if bn, addr, ok := parseBalancerCheckName(name); ok {
			s.store.Set(health.BackendKey(bn, addr), health.State{Up: false})
		}
	}
	fleetChange.Commit()
	if applyDSR != nil {
		applyDSR()
	}
	s.setDSRHealth(gone, true)
	s.setDSRHealth(down, false)
	if cfg.API != s.cfg.API || cfg.Log != s.cfg.Log {
		s.log.Warn("reload: api and log settings need a restart; the running ones stay")
		cfg.API, cfg.Log = s.cfg.API, s.cfg.Log
	}
	s.specs, s.cfg = specs, cfg
	s.log.Info("config reloaded", "balancers", len(cfg.Balancers), "checks", len(specs))
	return nil
}

// setDSRHealth sets the dsr backends behind the named backend checks.
func (s *Supervisor) setDSRHealth(checks []string, up bool) {
	if s.dsr == nil {
		return
	}
	for _, name := range checks {
		if bn, addr, ok := parseBalancerCheckName(name); ok {
			s.dsr.setHealth(bn, addr, up)
		}
	}
}

// balancer finds a running proxy balancer by name.
func (s *Supervisor) balancer(name string) *proxy.Balancer {
	for _, b := range s.fleet.Balancers() {
		if b.Name() == name {
			return b
		}
	}
	return nil
}

// Balancers returns the running proxy balancers, for status.
func (s *Supervisor) Balancers() []*proxy.Balancer { return s.fleet.Balancers() }

func dsrBalancers(cfg *config.Config) []config.Balancer {
	bals, _ := dsrBalancersAt(cfg)
	return bals
}
