package dsr

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"

	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/xdp"
)

// errNotRunning refuses a reload that changes dsr balancers which could
// not start: there is nothing to change them in.
var errNotRunning = errors.New("dsr balancers changed; they are not running (see status), and need a restart")

// Plan checks the dsr balancers of a reloaded config against the running
// ones: their backends (and backend checks) may change, as with ipvsadm -a
// and -d; anything else needs a restart. Nothing changes before Commit,
// which then reads the health store for every backend, so that one added
// whose key says down comes in down. Tracked flows keep their backend
// through the new Maglev tables, also one that was removed (IPVS too lets
// connections to a deleted real server finish): its index goes back into
// use only when no never-used one is left.
func (p *Plane) Plan(cfg *config.Config) (component.Change, error) {
	next, at := balancersAt(cfg)
	if p.down != nil {
		if !reflect.DeepEqual(next, p.cfgs) {
			return nil, errNotRunning
		}
		return component.None{}, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(next) != len(p.bals) {
		return nil, fmt.Errorf("dsr balancers added or removed (%d running, %d in the new config): that needs a restart", len(p.bals), len(next))
	}
	for _, bc := range next {
		if b := p.find(bc.Name); b == nil || !sameBesidesBackends(b.cfg, bc) {
			return nil, fmt.Errorf("balancers[%d] (%s): a dsr balancer's settings other than its backends and their check changed: that needs a restart", at[bc.Name], bc.Name)
		}
	}
	links, err := p.links(next, at)
	if err != nil {
		return nil, err
	}
	for iface, mode := range p.modes {
		if mode == "native" {
			if why := nativeDropsFrames(p.describeLink(iface), sendsOn(next, links, iface), p.describeLink); why != "" {
				return nil, fmt.Errorf("the program runs in native mode on %s, where it would drop frames: %s", iface, why)
			}
		}
	}
	slots := p.slots.clone()
	type planned struct {
		b        *balancer
		cfg      config.Balancer
		backends []*backend
		weights  map[*backend]int // kept backends' new weights
	}
	var plans []planned
	kept := map[*backend]bool{}
	added := false
	for _, bc := range next {
		pl := planned{b: p.find(bc.Name), cfg: bc, weights: map[*backend]int{}}
		for _, be := range bc.Backends {
			addr := netip.MustParseAddrPort(be.Address) // validated
			link := links[bc.Name][addr.Addr()]
			var old *backend
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
			pl.backends = append(pl.backends, &backend{addr: addr, idx: idx, weight: *be.Weight, up: true, link: link})
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
	return component.Func{OnCommit: func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed {
			return
		}
		changed := map[*balancer]bool{}
		for _, pl := range plans {
			for be, w := range pl.weights {
				be.weight = w
			}
			pl.b.cfg, pl.b.backends = pl.cfg, pl.backends
			changed[pl.b] = true
		}
		p.slots = slots
		p.readHealthLocked()
		p.rewriteLocked(changed)
		if added {
			select {
			case p.resolve <- struct{}{}:
			default:
			}
		}
	}}, nil
}

// find finds a dsr balancer by name; the caller holds p.mu.
func (p *Plane) find(name string) *balancer {
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
