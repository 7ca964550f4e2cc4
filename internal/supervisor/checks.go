package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vigil-lb/vigil/internal/check"
	"github.com/vigil-lb/vigil/internal/config"
)

// checkSpec is one check to run: a named check, or one backend's check.
type checkSpec struct {
	name   string // bus name: the check's, or balancerCheckName(...)
	key    string // changes when anything about the check changes
	prober check.Prober
	timing config.Timing
}

// runningCheck is a started check runner.
type runningCheck struct {
	key    string
	runner *check.Runner
	stop   context.CancelFunc
	done   chan struct{}
}

// balancerCheckPrefix starts the bus name of every backend check.
const balancerCheckPrefix = "balancer/"

func balancerCheckName(balancer string, addr netip.AddrPort) string {
	return balancerCheckPrefix + balancer + "/" + addr.String()
}

// parseBalancerCheckName splits a backend check's bus name.
func parseBalancerCheckName(name string) (balancer string, addr netip.AddrPort, ok bool) {
	rest, ok := strings.CutPrefix(name, balancerCheckPrefix)
	if !ok {
		return "", netip.AddrPort{}, false
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return "", netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(rest[i+1:])
	return rest[:i], ap, err == nil
}

// checkSpecs lists every check cfg asks for; prober construction errors
// (a missing CA file) name the check's key.
func checkSpecs(cfg *config.Config) ([]checkSpec, error) {
	var out []checkSpec
	for i, c := range cfg.Checks {
		var p check.Prober
		switch {
		case c.Exec != nil:
			p = check.Exec{Script: c.Exec.Script}
		case c.TCP != nil:
			p = check.TCP{Address: c.TCP.Address}
		default:
			h, err := httpProber(c.HTTP, c.HTTP.URL)
			if err != nil {
				return nil, fmt.Errorf("checks[%d] (%s): %w", i, c.Name, err)
			}
			p = h
		}
		out = append(out, checkSpec{name: c.Name, key: specKey(c), prober: p, timing: c.Timing})
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
			var p check.Prober = check.TCP{Address: target}
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
			out = append(out, checkSpec{name: balancerCheckName(b.Name, ap), key: specKey(bc),
				prober: p, timing: bc.Timing})
		}
	}
	return out, nil
}

// specKey identifies a check's settings. JSON follows pointers, so the key
// depends on the values, not on where a parsed config sits in memory (%+v
// would print nested pointers as addresses and restart every check on
// every reload).
func specKey(v any) string {
	b, _ := json.Marshal(v) // plain config structs: cannot fail
	return string(b)
}

func httpProber(h *config.HTTPCheck, url string) (*check.HTTP, error) {
	var expect []check.StatusRange
	for _, s := range h.ExpectStatus {
		lo, hi, _ := config.ParseStatusRange(s) // validated
		expect = append(expect, check.StatusRange{Lo: lo, Hi: hi})
	}
	return check.NewHTTP(url, h.Method, h.Host, expect, h.BodyContains, check.TLSOptions{
		InsecureSkipVerify: h.InsecureSkipVerify, CAFile: h.CAFile, ClientCert: h.ClientCert, ClientKey: h.ClientKey})
}

// syncChecks makes the running checks match specs: new ones start, changed
// ones restart from their current state, removed ones stop. It returns the
// names of the checks that stopped for good and of those that started down.
func (s *Supervisor) syncChecks(ctx context.Context, specs []checkSpec) (gone, down []string) {
	want := map[string]checkSpec{}
	for _, sp := range specs {
		want[sp.name] = sp
	}
	for name, rc := range s.checks {
		if sp, ok := want[name]; ok && sp.key == rc.key {
			continue
		}
		rc.stop()
		<-rc.done
		delete(s.checks, name)
		if _, ok := want[name]; !ok {
			gone = append(gone, name)
		}
	}
	for _, sp := range specs {
		if s.checks[sp.name] != nil {
			continue
		}
		last, known := s.bus.Last(sp.name)
		if known && !last.Up {
			down = append(down, sp.name)
		}
		r := &check.Runner{Name: sp.name, Prober: sp.prober, Interval: sp.timing.Interval,
			FastInterval: sp.timing.FastInterval, Timeout: sp.timing.Timeout,
			Rise: sp.timing.Rise, Fall: sp.timing.Fall, Bus: s.bus, Log: s.log, StartDown: known && !last.Up}
		cctx, stop := context.WithCancel(ctx)
		rc := &runningCheck{key: sp.key, runner: r, stop: stop, done: make(chan struct{})}
		go func() { defer close(rc.done); r.Run(cctx) }()
		s.checks[sp.name] = rc
	}
	return gone, down
}

// stopChecks stops every check runner.
func (s *Supervisor) stopChecks() {
	for name, rc := range s.checks {
		rc.stop()
		<-rc.done
		delete(s.checks, name)
	}
}

// Checks returns the state of every check, for status.
func (s *Supervisor) Checks() []check.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []check.Status
	for _, rc := range s.checks {
		out = append(out, rc.runner.Status())
	}
	return out
}
