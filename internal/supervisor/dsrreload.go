package supervisor

import (
	"fmt"
	"net/netip"
	"reflect"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/xdp"
)

// planBackends checks the dsr balancers of a reloaded config against the
// running ones: their backends (and backend checks) may change, as with
// ipvsadm -a and -d; anything else needs a restart. It returns how to
// apply the change; nothing changes before. Tracked flows keep their
// backend through the new Maglev tables, also one that was removed (IPVS
// too lets connections to a deleted real server finish): its index goes
// back into use only when no never-used one is left.
func (p *dsrPlane) planBackends(cfg *config.Config) (apply func(), err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	next, at := dsrBalancersAt(cfg)
	if len(next) != len(p.bals) {
		return nil, fmt.Errorf("dsr balancers added or removed (%d running, %d in the new config): that needs a restart", len(p.bals), len(next))
	}
	for _, bc := range next {
		if b := p.balancer(bc.Name); b == nil || !sameBesidesBackends(b.cfg, bc) {
			return nil, fmt.Errorf("balancers[%d] (%s): a dsr balancer's settings other than its backends and their check changed: that needs a restart", at[bc.Name], bc.Name)
		}
	}
	links, err := dsrLinks(next, at)
	if err != nil {
		return nil, err
	}
	for iface, mode := range p.modes {
		if mode == "native" {
			if why := nativeDropsFrames(describeLink(iface), sendsOn(next, links, iface), describeLink); why != "" {
				return nil, fmt.Errorf("the program runs in native mode on %s, where it would drop frames: %s", iface, why)
			}
		}
	}
	slots := p.slots.clone()
	type planned struct {
		b        *dsrBalancer
		cfg      config.Balancer
		backends []*dsrBackend
		weights  map[*dsrBackend]int // kept backends' new weights
	}
	var plans []planned
	kept := map[*dsrBackend]bool{}
	added := false
	for _, bc := range next {
		pl := planned{b: p.balancer(bc.Name), cfg: bc, weights: map[*dsrBackend]int{}}
		for _, be := range bc.Backends {
			addr := netip.MustParseAddrPort(be.Address) // validated
			link := links[bc.Name][addr.Addr()]
			var old *dsrBackend
			for _, o := range pl.b.backends {
				if o.addr == addr && o.link.name == link.name && o.link.ifindex == link.ifindex {
					old = o
				}
			}
			if old != nil {
				kept[old], pl.weights[old] = true, *be.Weight
				pl.backends = append(pl.backends, old)
				continue
			}
			idx, ok := slots.take()
			if !ok {
				return nil, fmt.Errorf("balancer %s: backend %s: all %d dsr backend slots are in use", bc.Name, be.Address, xdp.MaxBackends)
			}
			pl.backends = append(pl.backends, &dsrBackend{addr: addr, idx: idx, weight: *be.Weight, up: true, link: link})
			added = true
		}
		plans = append(plans, pl)
	}
	for _, b := range p.bals {
		for _, be := range b.backends {
			if !kept[be] {
				slots.give(be.idx)
			}
		}
	}
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed {
			return
		}
		for _, pl := range plans {
			for be, w := range pl.weights {
				be.weight = w
			}
			pl.b.cfg, pl.b.backends = pl.cfg, pl.backends
			if err := p.write(pl.b); err != nil {
				p.log.Warn("dsr table", "err", err)
			}
		}
		p.slots = slots
		if added {
			select {
			case p.resolve <- struct{}{}:
			default:
			}
		}
	}, nil
}

// balancer finds a dsr balancer by name; the caller holds p.mu.
func (p *dsrPlane) balancer(name string) *dsrBalancer {
	for _, b := range p.bals {
		if b.cfg.Name == name {
			return b
		}
	}
	return nil
}

// sameBesidesBackends reports whether two balancer configs differ at most
// in their backends and backend check.
func sameBesidesBackends(a, b config.Balancer) bool {
	a.Backends, b.Backends = nil, nil
	a.Check, b.Check = nil, nil
	return reflect.DeepEqual(a, b)
}

// backendSlots hands out the program's backend indexes: never-used ones
// first, so that flows tracked to a removed backend reach it for as long
// as can be, then those given back, oldest first.
type backendSlots struct {
	next uint32   // the first never used
	free []uint32 // given back
}

func (s *backendSlots) take() (uint32, bool) {
	switch {
	case s.next < xdp.MaxBackends:
		s.next++
		return s.next - 1, true
	case len(s.free) > 0:
		idx := s.free[0]
		s.free = s.free[1:]
		return idx, true
	}
	return 0, false
}

func (s *backendSlots) give(idx uint32) { s.free = append(s.free, idx) }

func (s *backendSlots) clone() *backendSlots {
	return &backendSlots{next: s.next, free: append([]uint32(nil), s.free...)}
}
