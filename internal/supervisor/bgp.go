package supervisor

import (
	"context"
	"net/netip"

	"github.com/vigil-lb/vigil/internal/bgp"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/vrrp"
)

// announcement is one configured prefix and whether it is advertised now.
type announcement struct {
	route       bgp.Route
	whenHealthy string
	whenMaster  string
	on          bool
}

// startBGP starts the speaker; nil when the config has no bgp section. A
// speaker that cannot start is logged and the rest of the daemon runs.
func (s *Supervisor) startBGP(ctx context.Context) {
	b := s.cfg.BGP
	if b.ASN == 0 {
		return
	}
	cfg := bgp.Config{ASN: b.ASN, RouterID: netip.MustParseAddr(b.RouterID), Listen: int32(b.ListenPort)}
	if b.ListenPort == 0 {
		cfg.Listen = -1
	}
	for _, n := range b.Neighbors {
		cfg.Neighbors = append(cfg.Neighbors, bgp.Neighbor{Address: netip.MustParseAddr(n.Address), ASN: n.ASN,
			Port: uint16(n.Port), Password: n.Password, HoldTime: n.HoldTime, Passive: n.Passive})
	}
	sp, err := bgp.Start(ctx, cfg, s.log)
	if err != nil {
		s.log.Error("bgp is not running", "err", err)
		return
	}
	s.mu.Lock()
	s.bgp = sp
	s.mu.Unlock()
	for _, a := range b.Announce {
		pfx, _ := config.ParseVIP(a.Prefix) // validated
		r := bgp.Route{Prefix: pfx, LocalPref: a.LocalPref, MED: a.MED}
		for _, c := range a.Communities {
			v, _ := config.ParseCommunity(c)
			r.Communities = append(r.Communities, v)
		}
		s.announcements = append(s.announcements, &announcement{route: r, whenHealthy: a.WhenHealthy, whenMaster: a.WhenMaster})
	}
	s.updateBGP()
}

// updateBGP announces what should be and withdraws what should not: called
// on every check, backend and VRRP change, so a failure is withdrawn at once
// rather than after a hold timer.
func (s *Supervisor) updateBGP() {
	if s.bgp == nil {
		return
	}
	for _, a := range s.announcements {
		want := s.healthy(a.whenHealthy) && s.master(a.whenMaster)
		if want == a.on {
			continue
		}
		var err error
		if want {
			err = s.bgp.Announce(a.route)
		} else {
			err = s.bgp.Withdraw(a.route.Prefix)
		}
		if err != nil {
			s.log.Warn("bgp", "prefix", a.route.Prefix.String(), "err", err)
			continue
		}
		a.on = want
		s.log.Info("bgp announcement change", "prefix", a.route.Prefix.String(), "announced", want,
			"when_healthy", a.whenHealthy, "when_master", a.whenMaster)
	}
}

// healthy: a named check that is up (checks start up), or a balancer with
// a backend in rotation. "" is always healthy.
func (s *Supervisor) healthy(name string) bool {
	if name == "" {
		return true
	}
	if b := s.balancer(name); b != nil {
		for _, be := range b.Status().Backends {
			if be.Up && be.Weight > 0 {
				return true
			}
		}
		return false
	}
	// A dsr balancer's (also one not running here: never announce its VIP).
	if st, ok := s.health.Get(health.BalancerKey(name)); ok {
		return st.Up
	}
	e, known := s.bus.Last(name)
	return !known || e.Up
}

// master: the named instance is master. "" is always true.
func (s *Supervisor) master(name string) bool {
	if name == "" {
		return true
	}
	for _, in := range s.instances {
		if in.Name() == name {
			return in.Status().State == vrrp.Master
		}
	}
	return false
}
