package check

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
)

// Spec is one check to run: a named check of the checks section, or one
// backend's check of a balancer.
type Spec struct {
	Key    health.Key
	Name   string // in logs and status: the check's name, or balancer/NAME/ADDR
	config string // changes when anything about the check changes
	Prober Prober
	Timing config.Timing
}

// Specs lists every check cfg asks for; prober construction errors (a
// missing CA file) name the check's key.
func Specs(cfg *config.Config) ([]Spec, error) {
	var out []Spec
	for i, c := range cfg.Checks {
		var p Prober
		switch {
		case c.Exec != nil:
			p = Exec{Script: c.Exec.Script}
		case c.TCP != nil:
			p = TCP{Address: c.TCP.Address}
		default:
			h, err := httpProber(c.HTTP, c.HTTP.URL)
			if err != nil {
				return nil, fmt.Errorf("checks[%d] (%s): %w", i, c.Name, err)
			}
			p = h
		}
		out = append(out, Spec{Key: health.CheckKey(c.Name), Name: c.Name, config: settingsKey(c), Prober: p, Timing: c.Timing})
	}
	for i, b := range cfg.Balancers {
		bc := b.Check
		if bc == nil {
			continue
		}
		for _, be := range b.Backends {
			ap := netip.MustParseAddrPort(be.Address) // validated
			target := ap.String()
			if bc.Port != 0 {
				target = net.JoinHostPort(ap.Addr().String(), strconv.Itoa(bc.Port))
			}
			var p Prober = TCP{Address: target}
			if bc.HTTP != nil {
				scheme := "http"
				if bc.HTTP.TLS {
					scheme = "https"
				}
				h, err := httpProber(bc.HTTP, scheme+"://"+target+bc.HTTP.Path)
				if err != nil {
					return nil, fmt.Errorf("balancers[%d].check (%s): %w", i, b.Name, err)
				}
				p = h
			}
			out = append(out, Spec{Key: health.BackendKey(b.Name, ap), Name: "balancer/" + b.Name + "/" + ap.String(),
				config: settingsKey(bc), Prober: p, Timing: bc.Timing})
		}
	}
	return out, nil
}

// settingsKey identifies a check's settings. JSON follows pointers, so the
// key depends on the values, not on where a parsed config sits in memory
// (%+v would print nested pointers as addresses and restart every check on
// every reload).
func settingsKey(v any) string {
	b, _ := json.Marshal(v) // plain config structs: cannot fail
	return string(b)
}

func httpProber(h *config.HTTPCheck, url string) (*HTTP, error) {
	var expect []StatusRange
	for _, s := range h.ExpectStatus {
		lo, hi, _ := config.ParseStatusRange(s) // validated
		expect = append(expect, StatusRange{Lo: lo, Hi: hi})
	}
	return NewHTTP(url, h.Method, h.Host, expect, h.BodyContains, TLSOptions{
		InsecureSkipVerify: h.InsecureSkipVerify, CAFile: h.CAFile, ClientCert: h.ClientCert, ClientKey: h.ClientKey})
}

// Set runs the checks of a config, publishing each one's state in the
// health store under its key. A reload restarts only the checks whose
// settings changed, from their current state; a removed check's key is
// deleted, so nothing stays held down by a check that no longer exists.
type Set struct {
	store *health.Store
	log   *slog.Logger

	mu      sync.Mutex
	ctx     context.Context // Run's; nil before Run and after it ends
	specs   []Spec
	running map[health.Key]*running
	// wasDown holds the removed checks that were down when they went: one
	// that comes back (a backend returned to the config) starts down.
	wasDown map[health.Key]bool
}

type running struct {
	config string
	runner *Runner
	stop   context.CancelFunc
	done   chan struct{}
}

// NewSet prepares the checks of cfg; they start with Run.
func NewSet(cfg *config.Config, store *health.Store, log *slog.Logger) (*Set, error) {
	specs, err := Specs(cfg)
	if err != nil {
		return nil, err
	}
	return &Set{store: store, log: log, specs: specs, running: map[health.Key]*running{}, wasDown: map[health.Key]bool{}}, nil
}

// Name names the component.
func (s *Set) Name() string { return "checks" }

// Run runs the checks until ctx ends.
func (s *Set) Run(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.sync(s.specs)
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctx = nil
	for k, rc := range s.running {
		rc.stop()
		<-rc.done
		delete(s.running, k)
	}
	return nil
}

// Plan builds the checks of cfg; Commit makes the running ones match.
func (s *Set) Plan(cfg *config.Config) (component.Change, error) {
	specs, err := Specs(cfg)
	if err != nil {
		return nil, err
	}
	return component.Func{OnCommit: func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.specs = specs
		if s.ctx != nil {
			s.sync(specs)
		}
	}}, nil
}

// sync makes the running checks match specs: new ones start, changed ones
// restart from their current state, removed ones stop and their keys go.
// The caller holds s.mu.
func (s *Set) sync(specs []Spec) {
	want := map[health.Key]Spec{}
	for _, sp := range specs {
		want[sp.Key] = sp
	}
	for k, rc := range s.running {
		if sp, ok := want[k]; ok && sp.config == rc.config {
			continue
		}
		rc.stop()
		<-rc.done
		delete(s.running, k)
		if _, ok := want[k]; !ok {
			if st, known := s.store.Get(k); known && !st.Up {
				s.wasDown[k] = true
			}
			s.store.Delete(k)
		}
	}
	for _, sp := range specs {
		if s.running[sp.Key] != nil {
			continue
		}
		// A check restarted while its target was down (its settings
		// changed, or a backend came back into the config) stays down
		// until it passes.
		last, known := s.store.Get(sp.Key)
		down := known && !last.Up || s.wasDown[sp.Key]
		delete(s.wasDown, sp.Key)
		r := &Runner{Name: sp.Name, Key: sp.Key, Health: s.store, Prober: sp.Prober, Interval: sp.Timing.Interval,
			FastInterval: sp.Timing.FastInterval, Timeout: sp.Timing.Timeout,
			Rise: sp.Timing.Rise, Fall: sp.Timing.Fall, Log: s.log, StartDown: down}
		if !known || last.Up == down {
			s.store.Set(sp.Key, health.State{Up: !down}) // before Commit returns: its readers see it
		}
		cctx, stop := context.WithCancel(s.ctx)
		rc := &running{config: sp.config, runner: r, stop: stop, done: make(chan struct{})}
		go func() { defer close(rc.done); r.Run(cctx) }()
		s.running[sp.Key] = rc
	}
}

// Statuses returns the state of every running check, by name.
func (s *Set) Statuses() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.running))
	for _, rc := range s.running {
		out = append(out, rc.runner.Status())
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}
