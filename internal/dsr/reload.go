package dsr

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/xdp"
)

// errNotRunning refuses a reload that changes dsr balancers which could
// not start: there is nothing to change them in.
var errNotRunning = errors.New("dsr balancers changed; they are not running (see status), and need a restart")

// Plan checks the dsr balancers of a reloaded config against the running
// ones: their backends (and backend checks) may change, as with ipvsadm -a
// and -d; anything else of the config's own balancers needs a restart.
// Balancers generated for LoadBalancer Services (config.Balancer.Service)
// may also come, go and change otherwise: a changed one is replaced.
// Nothing changes before Commit (but that the program is attached to an
// interface a new balancer needs), which then reads the health store for
// every backend, so that one added whose key says down comes in down.
// Tracked flows keep their backend through the new Maglev tables, also
// one that was removed (IPVS too lets connections to a deleted real server
// finish): its index goes back into use only when no never-used one is
// left.
func (p *Plane) Plan(cfg *config.Config) (component.Change, error) {
	next, at := balancersAt(cfg)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.loadErr != nil {
		if !reflect.DeepEqual(own(next), own(p.cfgs)) {
			return nil, errNotRunning
		}
		return component.Func{OnCommit: func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if !p.closed {
				p.setDownLocked(next)
			}
		}}, nil
	}
	if n, m := len(own(p.cfgs)), len(own(next)); n != m {
		return nil, fmt.Errorf("dsr balancers added or removed (%d running, %d in the new config): that needs a restart", n, m)
	}
	if p.dp == nil && len(next) > 0 {
		return nil, errors.New("dsr balancers for Services, but the program was not loaded at start (kubernetes.services.dataplane is not dsr)")
	}
	// Which running balancer each one of next updates; nil: a new one.
	updates := map[string]*balancer{}
	for _, bc := range next {
		b := p.find(bc.Name)
		switch {
		case b != nil && sameBesidesBackends(b.cfg, bc):
			updates[bc.Name] = b
		case bc.Service == "":
			return nil, fmt.Errorf("balancers[%d] (%s): a dsr balancer's settings other than its backends and their check changed: that needs a restart", at[bc.Name], bc.Name)
		}
	}
	links, notes, err := p.links(next, at)
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
	slots, ids := p.slots.clone(), p.ids.clone()
	var gone []*balancer // running balancers that leave, or are replaced
	for _, b := range p.bals {
		if updates[b.cfg.Name] != b {
			gone = append(gone, b)
			for _, s := range b.services {
				ids.give(s.ID)
			}
		}
	}
	type planned struct {
		b        *balancer // running, or new
		cfg      config.Balancer
		backends []*backend
		weights  map[*backend]int // kept backends' new weights
	}
	var plans []planned
	kept := map[*backend]bool{}
	added := false
	for _, bc := range next {
		b := updates[bc.Name]
		if b == nil {
			if err := p.attachLocked(bc, next, links); err != nil {
				return nil, fmt.Errorf("%s: %w", where(cfg, bc, at), err)
			}
			nb, err := p.newBalancer(bc, links[bc.Name], nil, ids, slots) // notes at commit
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where(cfg, bc, at), err)
			}
			plans = append(plans, planned{b: nb, cfg: bc, backends: nb.backends})
			added = added || len(nb.backends) > 0
			continue
		}
		pl := planned{b: b, cfg: bc, weights: map[*backend]int{}}
		for _, be := range bc.Backends {
			addr := netip.MustParseAddrPort(be.Address) // validated
			link, ok := links[bc.Name][addr.Addr()]
			if !ok {
				continue // a Service's endpoint left out, with a note
			}
			var old *backend
			for _, o := range b.backends {
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
		// The services that go first: a replacement may steer the same
		// address and port under another id.
		for _, b := range gone {
			p.removeLocked(b)
		}
		changed := map[*balancer]bool{}
		var bals []*balancer
		for _, pl := range plans {
			for be, w := range pl.weights {
				be.weight = w
			}
			if n := notes[pl.cfg.Name]; len(n) > 0 && !slices.Equal(n, pl.b.notes) {
				p.logNotes(pl.cfg, n) // once while the cause lasts
			}
			pl.b.cfg, pl.b.backends, pl.b.notes = pl.cfg, pl.backends, notes[pl.cfg.Name]
			changed[pl.b] = true
			bals = append(bals, pl.b)
		}
		p.bals, p.cfgs, p.slots, p.ids = bals, next, slots, ids
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

// removeLocked stops steering b's services and takes its key out of the
// store; its tracked flows' packets pass to the kernel from now on.
func (p *Plane) removeLocked(b *balancer) {
	for _, s := range b.services {
		if err := p.dp.RemoveService(s.VIP, s.Port, s.Proto); err != nil {
			p.log.Warn("dsr service not removed", "balancer", b.cfg.Name, "listen", netip.AddrPortFrom(s.VIP, s.Port).String(), "err", err)
		}
	}
	p.store.Delete(health.BalancerKey(b.cfg.Name))
	p.log.Info("dsr balancer removed", "balancer", b.cfg.Name, "service", b.cfg.Service)
}

// logNotes logs why backends of a Service's balancer were left out.
func (p *Plane) logNotes(bc config.Balancer, notes []string) {
	p.log.Warn("dsr balancer: endpoints left out", "balancer", bc.Name, "service", bc.Service, "notes", strings.Join(notes, "; "))
}

// own are the config's own dsr balancers, those not generated for a
// Service.
func own(bals []config.Balancer) []config.Balancer {
	var out []config.Balancer
	for _, b := range bals {
		if b.Service == "" {
			out = append(out, b)
		}
	}
	return out
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

// serviceIDs hands out the program's service ids (each its Maglev table
// and counters), lowest free first.
type serviceIDs struct{ used [xdp.MaxServices]bool }

func (s *serviceIDs) take() (uint32, bool) {
	for i, u := range s.used {
		if !u {
			s.used[i] = true
			return uint32(i), true
		}
	}
	return 0, false
}

func (s *serviceIDs) give(id uint32) { s.used[id] = false }

func (s *serviceIDs) clone() *serviceIDs { c := *s; return &c }
