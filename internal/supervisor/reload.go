package supervisor

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/config"
)

// lastReload is the outcome of the last file reload.
type lastReload struct {
	at     time.Time // zero: none since start
	ok     bool
	err    string
	lastOK time.Time // the last that applied, or the start
}

// ErrNoConfigPath is returned by ReloadFile when New was given no
// Options.ConfigPath.
var ErrNoConfigPath = errors.New("the daemon was started without a config file path")

// ReloadFile reads the file the daemon started from again and applies it
// as Reload does, for SIGHUP and vigil reload alike. It returns what
// changed (one line per section or named item), or why it was refused: the
// file is invalid (every problem), or a component refused it (the running
// config stays). The outcome shows in status and metrics.
func (s *Supervisor) ReloadFile(ctx context.Context) ([]string, error) {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	if s.path == "" {
		return nil, ErrNoConfigPath
	}
	s.log.Info("reload requested", "config", s.path)
	var changes []string
	cfg, err := config.Load(s.path)
	if err != nil {
		// One line: config FILE: PROBLEM; PROBLEM ...
		msg := strings.Replace(err.Error(), ":\n", ": ", 1)
		err = fmt.Errorf("config is invalid: %s", strings.ReplaceAll(msg, "\n", "; "))
	} else {
		changes, err = s.apply(ctx, cfg)
	}
	now := time.Now()
	s.lastMu.Lock()
	s.last.at, s.last.ok, s.last.err = now, err == nil, ""
	if err == nil {
		s.last.lastOK = now
	} else {
		s.last.err = err.Error()
	}
	s.lastMu.Unlock()
	if err != nil {
		s.log.Error("reload refused; the running config stays", "config", s.path, "err", err)
	}
	return changes, err
}

// ConfigPath is the file ReloadFile reads.
func (s *Supervisor) ConfigPath() string { return s.path }

func (s *Supervisor) reloadStatus() *api.ReloadStatus {
	s.lastMu.Lock()
	defer s.lastMu.Unlock()
	return &api.ReloadStatus{At: s.last.at, Successful: s.last.ok, Error: s.last.err, LastSuccess: s.last.lastOK}
}

// configChanges names what differs between two configs, for the reload's
// log line and vigil reload: named items (balancers, checks, instances,
// pools) added, removed or changed, other sections changed.
func configChanges(old, cfg *config.Config) []string {
	var out []string
	out = append(out, named("balancer", old.Balancers, cfg.Balancers, func(b config.Balancer) string { return b.Name })...)
	out = append(out, named("check", old.Checks, cfg.Checks, func(c config.Check) string { return c.Name })...)
	out = append(out, named("vrrp instance", old.VRRP.Instances, cfg.VRRP.Instances, func(i config.Instance) string { return i.Name })...)
	out = append(out, named("vrrp pool", old.VRRP.Pools, cfg.VRRP.Pools, func(p config.Pool) string { return p.Name })...)
	for _, sec := range []struct {
		name     string
		was, now any
	}{
		{"vrrp sync_groups", old.VRRP.SyncGroups, cfg.VRRP.SyncGroups},
		{"bgp", old.BGP, cfg.BGP},
		{"kubernetes", old.Kubernetes, cfg.Kubernetes},
		{"api", old.API, cfg.API},
		{"log", old.Log, cfg.Log},
	} {
		if !reflect.DeepEqual(sec.was, sec.now) {
			out = append(out, sec.name+" changed")
		}
	}
	return out
}

// named compares two lists of named items: "KIND NAME added", "... removed",
// "... changed", in the new list's order, then the removed ones.
func named[T any](kind string, old, cur []T, name func(T) string) []string {
	var out []string
	was := map[string]T{}
	for _, o := range old {
		was[name(o)] = o
	}
	seen := map[string]bool{}
	for _, c := range cur {
		n := name(c)
		seen[n] = true
		o, ok := was[n]
		switch {
		case !ok:
			out = append(out, kind+" "+n+" added")
		case !reflect.DeepEqual(o, c):
			out = append(out, kind+" "+n+" changed")
		}
	}
	for _, o := range old {
		if n := name(o); !seen[n] {
			out = append(out, kind+" "+n+" removed")
		}
	}
	return slices.Clip(out)
}
