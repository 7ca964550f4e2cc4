package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/garp"
	"github.com/vigil-lb/vigil/internal/maglev"
	"github.com/vigil-lb/vigil/internal/xdp"
	"github.com/vishvananda/netlink"
)

// dsrPlane keeps the XDP program's maps in step with the dsr balancers:
// backend MACs from the neighbour table (or an ARP probe), Maglev tables
// rebuilt from the backends that are up.
type dsrPlane struct {
	dp    *xdp.Dataplane
	log   *slog.Logger
	modes map[string]string // interface -> XDP mode in use

	mu      sync.Mutex // guards what follows; the maps are used under it
	bals    []*dsrBalancer
	closed  bool
	slots   *backendSlots
	resolve chan struct{} // a reload added backends: resolve their MACs now
}

type dsrBalancer struct {
	cfg      config.Balancer
	services []xdp.Service
	backends []*dsrBackend
}

type dsrBackend struct {
	addr   netip.AddrPort
	idx    uint32
	weight int
	up     bool
	mac    net.HardwareAddr // nil until resolved
	link   backendLink      // where it is reached
}

// newDSR loads the program, attaches it and writes every service (with no
// backend until MACs are known). Errors name the config key.
func newDSR(cfg *config.Config, log *slog.Logger) (*dsrPlane, error) {
	bals, at := dsrBalancersAt(cfg)
	if len(bals) == 0 {
		return nil, nil
	}
	links, err := dsrLinks(bals, at)
	if err != nil {
		return nil, err
	}
	dp, err := xdp.Load()
	if err != nil {
		return nil, err
	}
	p := &dsrPlane{dp: dp, log: log, modes: map[string]string{}, resolve: make(chan struct{}, 1)}
	var svcID uint32
	p.slots = &backendSlots{}
	for _, bc := range bals {
		if _, ok := p.modes[bc.Interface]; !ok {
			key := fmt.Sprintf("balancers[%d].interface", at[bc.Name])
			ifi, err := net.InterfaceByName(bc.Interface)
			if err != nil {
				dp.Close()
				return nil, fmt.Errorf("%s (%s, line %d): interface %s: %w", key, bc.Name, cfg.Line(key), bc.Interface, err)
			}
			want := bc.XDPMode
			if want != "generic" {
				own, e := describeLink(bc.Interface), sendsOn(bals, links, bc.Interface)
				if why := nativeDropsFrames(own, e, describeLink); why != "" {
					if want == "native" {
						dp.Close()
						return nil, fmt.Errorf("%s (%s, line %d): interface %s: xdp: native mode would drop frames: %s (xdp_mode auto or generic runs the program in generic mode)",
							key, bc.Name, cfg.Line(key), bc.Interface, why)
					}
					log.Info("xdp: generic mode, native would drop frames", "interface", bc.Interface, "why", why)
					want = "generic"
				} else if why := autoAvoidsNative(own, e, describeLink); want == "auto" && why != "" {
					log.Info("xdp: generic mode (xdp_mode native to insist)", "interface", bc.Interface, "why", why)
					want = "generic"
				}
			}
			mode, err := dp.Attach(ifi.Index, want)
			if err != nil {
				dp.Close()
				return nil, fmt.Errorf("%s (%s, line %d): interface %s: %w", key, bc.Name, cfg.Line(key), bc.Interface, err)
			}
			p.modes[bc.Interface] = mode
			log.Info("xdp attached", "interface", bc.Interface, "mode", mode)
		}
		b := &dsrBalancer{cfg: bc}
		proto := uint8(6)
		if bc.Protocol == "udp" {
			proto = 17
		}
		for _, l := range bc.Listen {
			ap, _ := config.ParseListen(l) // validated
			b.services = append(b.services, xdp.Service{ID: svcID, VIP: ap.Addr(), Port: ap.Port(), Proto: proto})
			svcID++
		}
		for _, be := range bc.Backends {
			addr := netip.MustParseAddrPort(be.Address)
			idx, ok := p.slots.take()
			if !ok {
				dp.Close()
				return nil, fmt.Errorf("balancers[%d] (%s): more than %d dsr backends", at[bc.Name], bc.Name, xdp.MaxBackends)
			}
			b.backends = append(b.backends, &dsrBackend{addr: addr, idx: idx, weight: *be.Weight, up: true, link: links[bc.Name][addr.Addr()]})
		}
		p.bals = append(p.bals, b)
		if err := p.write(b); err != nil {
			dp.Close()
			return nil, err
		}
	}
	return p, nil
}

// dsrBalancersAt returns the config's dsr balancers and each one's index
// in cfg.Balancers, for errors that name the config key.
func dsrBalancersAt(cfg *config.Config) ([]config.Balancer, map[string]int) {
	var bals []config.Balancer
	at := map[string]int{}
	for i, b := range cfg.Balancers {
		if b.Mode == "dsr" {
			bals = append(bals, b)
			at[b.Name] = i
		}
	}
	return bals, at
}

// dsrLinks finds, per balancer, where each backend is reached: they must
// be one Ethernet hop from this host.
func dsrLinks(bals []config.Balancer, at map[string]int) (map[string]map[netip.Addr]backendLink, error) {
	links := map[string]map[netip.Addr]backendLink{}
	for _, b := range bals {
		l, err := backendLinks(b)
		if err != nil {
			return nil, fmt.Errorf("balancers[%d] (%s): %w", at[b.Name], b.Name, err)
		}
		links[b.Name] = l
	}
	return links, nil
}

// backendLink is the interface a dsr backend is reached through.
type backendLink struct {
	name    string
	ifindex uint32           // 0: the balancer's own interface (XDP_TX)
	mac     net.HardwareAddr // the interface's, the frames' new source
}

// backendLinks finds, for every backend, the interface with a subnet that
// holds it: the balancer's interface first (frames go back out with
// XDP_TX), else another one (frames are redirected to it). A backend on no
// subnet of this host is an error: mode dsr sends it Ethernet frames.
func backendLinks(b config.Balancer) (map[netip.Addr]backendLink, error) {
	own, err := netlink.LinkByName(b.Interface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", b.Interface, err)
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL) // every interface's
	if err != nil {
		return nil, fmt.Errorf("addresses: %w", err)
	}
	out := map[netip.Addr]backendLink{}
	for _, be := range b.Backends {
		ip := netip.MustParseAddrPort(be.Address).Addr()
		found := -1
		for _, a := range addrs {
			if pfx, ok := netipPrefix(a.IPNet); ok && pfx.Masked().Contains(ip) && (found < 0 || a.LinkIndex == own.Attrs().Index) {
				found = a.LinkIndex
			}
		}
		switch {
		case found < 0:
			return nil, fmt.Errorf("backend %s is not on a subnet of %s or of another interface: mode dsr sends it frames directly, so it must be one Ethernet hop away", be.Address, b.Interface)
		case found == own.Attrs().Index:
			out[ip] = backendLink{name: b.Interface}
		default:
			lk, err := netlink.LinkByIndex(found)
			if err != nil {
				return nil, fmt.Errorf("backend %s: interface %d: %w", be.Address, found, err)
			}
			out[ip] = backendLink{name: lk.Attrs().Name, ifindex: uint32(found), mac: lk.Attrs().HardwareAddr}
		}
	}
	return out, nil
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// write rebuilds a balancer's Maglev table from its usable backends and
// writes it for every service. The caller holds p.mu or owns p.
func (p *dsrPlane) write(b *dsrBalancer) error {
	var members []maglev.Backend
	var index []*dsrBackend
	for _, be := range b.backends {
		if be.up && be.mac != nil && be.weight > 0 {
			members = append(members, maglev.Backend{Name: be.addr.String(), Weight: uint32(be.weight)})
			index = append(index, be)
		}
	}
	var tb *maglev.Table
	var idx []uint32
	if len(members) > 0 {
		var err error
		if tb, err = maglev.New(members, xdp.RingSize); err != nil {
			return fmt.Errorf("balancer %s: %w", b.cfg.Name, err)
		}
		byName := map[string]uint32{}
		for _, be := range index {
			byName[be.addr.String()] = be.idx
		}
		for _, m := range tb.Backends() {
			idx = append(idx, byName[m.Name])
		}
	}
	for _, s := range b.services {
		s.Table, s.Index = tb, idx
		if err := p.dp.SetService(s); err != nil {
			return fmt.Errorf("balancer %s: %w", b.cfg.Name, err)
		}
	}
	return nil
}

// run resolves backend MACs until ctx ends: unresolved ones every second
// and at once when a reload adds some, all of them every 30 s (a replaced
// NIC changes its MAC).
func (p *dsrPlane) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for n := 0; ; n++ {
		p.resolveMACs(ctx, n%30 == 0)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.resolve:
		}
	}
}

func (p *dsrPlane) resolveMACs(ctx context.Context, all bool) {
	// Probing takes time (ARP waits): ask without the lock, so status and
	// health changes never wait on it, then apply what was found.
	type query struct {
		b   *dsrBalancer
		be  *dsrBackend
		mac net.HardwareAddr
		err error
	}
	var qs []*query
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	for _, b := range p.bals {
		for _, be := range b.backends {
			if be.mac == nil || all {
				qs = append(qs, &query{b: b, be: be})
			}
		}
	}
	p.mu.Unlock()
	for _, q := range qs {
		q.mac, q.err = neighbourMAC(ctx, q.be.link.name, q.be.addr.Addr())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	changed := map[*dsrBalancer]bool{}
	for _, q := range qs {
		switch {
		case q.err != nil:
			if q.be.mac == nil {
				p.log.Warn("dsr backend MAC unknown: left out of the table until it answers ARP", "balancer", q.b.cfg.Name, "backend", q.be.addr.String(), "err", q.err)
			}
		case q.be.mac.String() == q.mac.String():
		default:
			if err := p.dp.SetBackend(q.be.idx, q.mac, q.be.link.ifindex, q.be.link.mac); err != nil {
				p.log.Warn("dsr backend", "backend", q.be.addr.String(), "err", err)
				continue
			}
			p.log.Info("dsr backend MAC", "balancer", q.b.cfg.Name, "backend", q.be.addr.String(), "mac", q.mac.String(), "interface", q.be.link.name)
			q.be.mac, changed[q.b] = q.mac, true
		}
	}
	for b := range changed {
		if err := p.write(b); err != nil {
			p.log.Warn("dsr table", "err", err)
		}
	}
}

// neighbourMAC finds ip's MAC in the neighbour table, or asks with ARP.
func neighbourMAC(ctx context.Context, iface string, ip netip.Addr) (net.HardwareAddr, error) {
	lk, err := netlink.LinkByName(iface)
	if err != nil {
		return nil, err
	}
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := netlink.NeighList(lk.Attrs().Index, family)
	if err == nil {
		for _, n := range neighs {
			if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip && len(n.HardwareAddr) == 6 &&
				n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT) != 0 {
				return n.HardwareAddr, nil
			}
		}
	}
	if ip.Is6() {
		return nil, errors.New("not in the neighbour table")
	}
	r, err := garp.Probe(ctx, iface, ip, 300*time.Millisecond)
	if err != nil {
		return nil, err
	}
	if len(r.MACs) == 0 {
		return nil, errors.New("no ARP answer")
	}
	return r.MACs[0], nil
}

// setHealth takes a backend out of (or back into) its balancer's table.
func (p *dsrPlane) setHealth(name string, addr netip.AddrPort, up bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	b := p.balancer(name)
	if b == nil {
		return false
	}
	for _, be := range b.backends {
		if be.addr == addr && be.up != up {
			be.up = up
			p.log.Info("backend state change", "balancer", name, "backend", addr.String(), "up", up)
			if err := p.write(b); err != nil {
				p.log.Warn("dsr table", "err", err)
			}
		}
	}
	return true
}

// healthy reports whether the named dsr balancer has a backend in its
// table; ok is false when there is no such balancer.
func (p *dsrPlane) healthy(name string) (up, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.balancer(name)
	if b == nil {
		return false, false
	}
	for _, be := range b.backends {
		if be.up && be.mac != nil && be.weight > 0 {
			return true, true
		}
	}
	return false, true
}

// status reports the dsr balancers and the program's verdict counters.
func (p *dsrPlane) status() ([]api.Balancer, map[string]uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil
	}
	var out []api.Balancer
	for _, b := range p.bals {
		ab := api.Balancer{Name: b.cfg.Name, Listen: b.cfg.Listen, Algorithm: b.cfg.Algorithm, Mode: "dsr",
			XDPMode: p.modes[b.cfg.Interface]}
		for _, s := range b.services {
			if pk, by, err := p.dp.ServiceCounters(s.ID); err == nil {
				ab.Packets += pk
				ab.Bytes += by
			}
		}
		for _, be := range b.backends {
			ob := api.Backend{Address: be.addr.String(), Up: be.up && be.mac != nil, Weight: be.weight}
			ob.Packets, ob.BytesIn, _ = p.dp.BackendCounters(be.idx) // zero if unreadable
			ab.Backends = append(ab.Backends, ob)
		}
		out = append(out, ab)
	}
	v, _ := p.dp.Counters()
	return out, v
}

// close detaches the program; later calls of the other methods do nothing.
func (p *dsrPlane) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return p.dp.Close()
}
