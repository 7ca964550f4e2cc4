package kube

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/vigil-lb/vigil/internal/config"
)

// Peers maps a VRRP instance's name to the unicast peers applied to it.
type Peers map[string][]string

// Expanded is the effective config: the static config with the members
// the cluster adds, and why each is there.
type Expanded struct {
	// Config is a copy of the static config with generated backends and
	// peers filled in; it shares nothing with the static one.
	Config *config.Config
	// Origins maps balancer name → backend address → where the backend came
	// from: "static", "node NAME" or "endpoints NS/NAME (node X)".
	Origins map[string]map[string]string
	// Peers holds the peers applied to each instance with
	// unicast_peers_from; pass it as prev to the next Expand.
	Peers Peers
	// Notes say what was left out or kept and why, one line each, for the log.
	Notes []string
	// ServiceAddrs are the addresses of the LoadBalancer Services vigil
	// serves, and who announces each.
	ServiceAddrs []ServiceAddr
}

// Expand computes the effective config from the static one and a snapshot
// of the cluster; prev is the Peers of the last Expand (nil at first). The
// static config is not changed.
//
// A balancer's backends_from adds backends after the static ones, sorted,
// each address once (a static backend wins), with a static backend's
// defaults. An instance's unicast_peers_from adds the other matching Nodes;
// when the instance would be left with no peer at all, the peers of prev
// stay, because an empty unicast list means multicast, and a node that
// hears no peer becomes master beside the real one.
func Expand(static *config.Config, snap *Snapshot, prev Peers) Expanded {
	return ExpandFrom(static, snap, Expanded{Peers: prev})
}

// ExpandFrom is Expand after last: its peers stay when an instance would
// have none.
func ExpandFrom(static *config.Config, snap *Snapshot, last Expanded) Expanded {
	prev := last.Peers
	if snap == nil {
		snap = &Snapshot{}
	}
	x := Expanded{Config: static.Clone(), Origins: map[string]map[string]string{}, Peers: Peers{}}
	vips := configVIPs(x.Config)
	for i := range x.Config.Balancers {
		x.balancer(i, &x.Config.Balancers[i], snap, vips)
	}
	for i := range x.Config.VRRP.Instances {
		x.peers(i, &x.Config.VRRP.Instances[i], snap, vips, prev)
	}
	if dsr := x.services(x.Config, snap); len(dsr) > 0 {
		x.serviceDSR(x.Config, snap, dsr, last)
	}
	return x
}

// EndpointTracks reports, for every Service named in a track.endpoints of
// cfg's instances and pools, whether it has a ready endpoint on cfg.Node.
func EndpointTracks(cfg *config.Config, snap *Snapshot) map[ServiceRef]bool {
	if snap == nil {
		snap = &Snapshot{}
	}
	out := map[ServiceRef]bool{}
	add := func(tr config.Track) {
		for _, e := range tr.Endpoints {
			if ref, ok := ParseServiceRef(e.Service); ok {
				out[ref] = snap.ReadyOn(ref, cfg.Node)
			}
		}
	}
	for _, in := range cfg.VRRP.Instances {
		add(in.Track)
	}
	for _, pl := range cfg.VRRP.Pools {
		add(pl.Track)
	}
	return out
}

// vipSet is every VRRP VIP of a config: the addresses, never taken as a
// Node's address (kubelet can report a VIP its node holds), each with its
// subnet if it was given with a prefix length.
type vipSet struct {
	addrs   map[netip.Addr]netip.Prefix // the zero Prefix: no subnet
	subnets []netip.Prefix              // unmasked: Addr() is the VIP
}

func configVIPs(c *config.Config) vipSet {
	vs := vipSet{addrs: map[netip.Addr]netip.Prefix{}}
	add := func(list []string) {
		for _, s := range list {
			p, err := config.ParseVIP(s)
			if err != nil {
				continue
			}
			sub, ok := vipSubnet(s)
			vs.addrs[p.Addr().Unmap()] = sub
			if ok {
				vs.subnets = append(vs.subnets, sub)
			}
		}
	}
	for _, in := range c.VRRP.Instances {
		add(in.VIPs)
	}
	for _, pl := range c.VRRP.Pools {
		add(pl.VIPs)
	}
	return vs
}

// vipSubnet returns the subnet of a VIP given with a prefix length; a bare
// address, a host prefix or an IPv4-mapped one names none.
func vipSubnet(s string) (netip.Prefix, bool) {
	p, err := config.ParseVIP(s)
	if err != nil || !strings.Contains(s, "/") || p.Bits() == p.Addr().BitLen() || p.Addr().Is4In6() {
		return netip.Prefix{}, false
	}
	return p, true
}

// subnetOf returns the VIP subnet of a: when a is a VIP, its own (none if
// it was given without a prefix length), else the longest VIP subnet that
// contains a.
func (vs vipSet) subnetOf(a netip.Addr) (netip.Prefix, bool) {
	if p, ok := vs.addrs[a]; ok {
		return p, p.IsValid()
	}
	var best netip.Prefix
	for _, p := range vs.subnets {
		if p.Contains(a) && (!best.IsValid() || p.Bits() > best.Bits()) {
			best = p
		}
	}
	return best, best.IsValid()
}

// where says which address of a Node to take: the first in one of the
// subnets (an InternalIP before other types), else the first InternalIP of
// the first family that has one.
type where struct {
	subnets  []netip.Prefix
	families []string // "IPv4", "IPv6"
}

func (w where) String() string {
	var s []string
	for _, p := range w.subnets {
		s = append(s, p.Masked().String())
	}
	in := ""
	if len(s) > 0 {
		in = "in " + strings.Join(s, ", ") + " nor "
	}
	return in + "InternalIP of " + strings.Join(w.families, " or ")
}

func (w where) addr(n Node, vips vipSet) (netip.Addr, bool) {
	usable := func(na NodeAddress) (netip.Addr, bool) {
		a := na.Address.Unmap()
		_, vip := vips.addrs[a]
		return a, a.IsValid() && !vip
	}
	for _, internalOnly := range []bool{true, false} {
		for _, na := range n.Addresses {
			a, ok := usable(na)
			if !ok || internalOnly && na.Type != "InternalIP" {
				continue
			}
			for _, p := range w.subnets {
				if p.Contains(a) {
					return a, true
				}
			}
		}
	}
	for _, f := range w.families {
		for _, na := range n.Addresses {
			if a, ok := usable(na); ok && na.Type == "InternalIP" && family(a) == f {
				return a, true
			}
		}
	}
	return netip.Addr{}, false
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// balancerWhere picks the Node address for a balancer's backends from its
// listen addresses: the first in a VIP's subnet gives that subnet and its
// family; else the first concrete one gives its family; else (:PORT)
// IPv4, then IPv6 (0.0.0.0:PORT: IPv4 only).
func balancerWhere(b *config.Balancer, vips vipSet) where {
	var concrete, anyAddr netip.Addr // the first concrete and the first listen address
	for _, l := range b.Listen {
		ap, err := config.ParseListen(l)
		if err != nil {
			continue
		}
		a := ap.Addr().Unmap()
		if !anyAddr.IsValid() {
			anyAddr = a
		}
		if a.IsUnspecified() {
			continue
		}
		if !concrete.IsValid() {
			concrete = a
		}
		if p, ok := vips.subnetOf(a); ok {
			return where{subnets: []netip.Prefix{p}, families: []string{family(a)}}
		}
	}
	switch {
	case concrete.IsValid():
		return where{families: []string{family(concrete)}}
	case anyAddr == netip.IPv4Unspecified():
		return where{families: []string{"IPv4"}}
	default:
		return where{families: []string{"IPv4", "IPv6"}}
	}
}

type generated struct {
	addr   netip.AddrPort
	origin string
}

func (x *Expanded) note(format string, args ...any) {
	x.Notes = append(x.Notes, fmt.Sprintf(format, args...))
}

// balancer adds the backends of b's backends_from.
func (x *Expanded) balancer(i int, b *config.Balancer, snap *Snapshot, vips vipSet) {
	origins := map[string]string{}
	x.Origins[b.Name] = origins
	seen := map[netip.AddrPort]bool{}
	for _, be := range b.Backends {
		origins[be.Address] = "static"
		if ap, err := netip.ParseAddrPort(be.Address); err == nil {
			seen[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = true
		}
	}
	bf := b.BackendsFrom
	if bf == nil {
		return
	}
	name := fmt.Sprintf("balancers[%d] %s", i, b.Name)
	var gen []generated
	if ns := bf.Nodes; ns != nil {
		sel, err := labels.Parse(ns.Selector)
		if err != nil {
			x.note("%s: backends_from.nodes.selector %q: %v; no Node taken", name, ns.Selector, err)
		} else {
			w := balancerWhere(b, vips)
			for _, n := range snap.Nodes {
				if !sel.Matches(labels.Set(n.Labels)) {
					continue
				}
				a, ok := w.addr(n, vips)
				if !ok {
					x.note("%s: Node %s has no address %s; left out", name, n.Name, w)
					continue
				}
				gen = append(gen, generated{netip.AddrPortFrom(a, uint16(ns.Port)), "node " + n.Name})
			}
		}
	}
	if es := bf.Endpoints; es != nil {
		if ref, ok := ParseServiceRef(es.Service); ok {
			for _, ep := range snap.ReadyEndpoints(ref, es.Port) {
				o := "endpoints " + ref.String()
				if ep.NodeName != "" {
					o += " (node " + ep.NodeName + ")"
				}
				ap := netip.AddrPortFrom(ep.Address.Addr().Unmap(), ep.Address.Port())
				gen = append(gen, generated{ap, o})
			}
		}
	}
	gen = x.dsrOnly(name, b, gen)
	var add []generated
	for _, g := range gen {
		if !seen[g.addr] {
			seen[g.addr] = true
			add = append(add, g)
		}
	}
	slices.SortFunc(add, func(a, b generated) int { return a.addr.Compare(b.addr) })
	if b.Mode == "dsr" && len(b.Backends)+len(add) > config.MaxDSRBackends {
		keep := max(config.MaxDSRBackends-len(b.Backends), 0)
		x.note("%s: %d backends, at most %d with mode dsr; the last %d generated ones left out",
			name, len(b.Backends)+len(add), config.MaxDSRBackends, len(add)-keep)
		add = add[:keep]
	}
	for _, g := range add {
		be := config.Backend{Address: g.addr.String()}
		be.SetDefaults()
		b.Backends = append(b.Backends, be)
		origins[be.Address] = g.origin
	}
}

// dsrOnly drops, for a dsr balancer, generated backends the XDP program
// cannot reach: another port (it rewrites nothing above Ethernet; a named
// endpoint port can resolve to any) or another family than the listen
// address.
func (x *Expanded) dsrOnly(name string, b *config.Balancer, gen []generated) []generated {
	if b.Mode != "dsr" || len(b.Listen) == 0 {
		return gen
	}
	l, err := config.ParseListen(b.Listen[0])
	if err != nil {
		return gen
	}
	out := gen[:0:0]
	for _, g := range gen {
		switch {
		case g.addr.Port() != l.Port():
			x.note("%s: %s (%s) is not on the listen port %d, and mode dsr does not change ports; left out", name, g.addr, g.origin, l.Port())
		case family(g.addr.Addr()) != family(l.Addr().Unmap()):
			x.note("%s: %s (%s) is not %s like the listen address; left out", name, g.addr, g.origin, family(l.Addr().Unmap()))
		default:
			out = append(out, g)
		}
	}
	return out
}

// peers adds the unicast peers of in's unicast_peers_from.
func (x *Expanded) peers(i int, in *config.Instance, snap *Snapshot, vips vipSet, prev Peers) {
	pf := in.UnicastPeersFrom
	if pf == nil || pf.Nodes == nil {
		return
	}
	name := fmt.Sprintf("vrrp.instances[%d] %s", i, in.Name)
	sel, err := labels.Parse(pf.Nodes.Selector)
	if err != nil {
		x.note("%s: unicast_peers_from.nodes.selector %q: %v; no Node taken", name, pf.Nodes.Selector, err)
		sel = labels.Nothing()
	}
	var w where
	for _, s := range in.VIPs {
		p, err := config.ParseVIP(s)
		if err != nil {
			continue
		}
		if len(w.families) == 0 {
			w.families = []string{family(p.Addr().Unmap())}
		}
		if q, ok := vipSubnet(s); ok {
			w.subnets = append(w.subnets, q)
		}
	}
	seen := map[netip.Addr]bool{}
	for _, s := range in.UnicastPeers {
		if a, err := netip.ParseAddr(s); err == nil {
			seen[a.Unmap()] = true
		}
	}
	var add []netip.Addr
	for _, n := range snap.Nodes {
		if n.Name == x.Config.Node || !sel.Matches(labels.Set(n.Labels)) {
			continue
		}
		a, ok := w.addr(n, vips)
		if !ok {
			x.note("%s: Node %s has no address %s; left out of the peers", name, n.Name, w)
			continue
		}
		if !seen[a] {
			seen[a] = true
			add = append(add, a)
		}
	}
	slices.SortFunc(add, netip.Addr.Compare)
	for _, a := range add {
		in.UnicastPeers = append(in.UnicastPeers, a.String())
	}
	if len(in.UnicastPeers) == 0 {
		if last := prev[in.Name]; len(last) > 0 {
			in.UnicastPeers = slices.Clone(last)
			x.note("%s: no peer Node matches %q; keeping the last %d peers", name, pf.Nodes.Selector, len(last))
		} else {
			x.note("%s: no peer Node matches %q and no peers were applied before; unicast_peers stays empty (multicast)", name, pf.Nodes.Selector)
			return
		}
	}
	x.Peers[in.Name] = slices.Clone(in.UnicastPeers)
}
