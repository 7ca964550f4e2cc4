package bgp

import (
	"net/netip"
	"slices"

	"github.com/vigil-lb/vigil/internal/config"
)

// Acceptor makes host addresses this node's own without putting them on an
// interface, so that the kernel delivers traffic routed to them (package
// vip's LocalRoutes: local routes, ARP for them dropped).
type Acceptor interface {
	// Set makes exactly want accepted.
	Set(want []netip.Prefix) error
	// Close stops accepting all of them.
	Close() error
}

// acceptedAddrs are the announced host prefixes the node must accept
// itself while it announces them: those a proxy balancer of this node
// listens on. The proxy binds them with IP_FREEBIND, but the kernel drops
// traffic routed to an address that is not local. Static bgp.announce
// prefixes and the Service addresses of bgp pools (package kube generates
// their proxy balancers and announcements) are found the same way.
//
// Left out: a dsr balancer's address (XDP takes its packets before the
// kernel routes them), and a VRRP VIP of this node (the instance puts it
// on its interface while master, and a local route of ours would replace
// the kernel's for it, and go with it).
func acceptedAddrs(cfg *config.Config) map[netip.Prefix]bool {
	vrrp := map[netip.Addr]bool{}
	for _, in := range cfg.VRRP.All() {
		for _, s := range in.VIPs {
			if p, err := config.ParseVIP(s); err == nil {
				vrrp[p.Addr()] = true
			}
		}
		if in.Slot != nil {
			for _, p := range in.Slot.Extra {
				vrrp[p.Addr()] = true
			}
		}
	}
	proxied := map[netip.Addr]bool{}
	for _, b := range cfg.Balancers {
		if b.Mode == "dsr" {
			continue
		}
		for _, l := range b.Listen {
			if ap, err := config.ParseListen(l); err == nil && ap.Addr().IsValid() && !ap.Addr().IsUnspecified() {
				proxied[ap.Addr().Unmap()] = true
			}
		}
	}
	out := map[netip.Prefix]bool{}
	for _, a := range cfg.BGP.Announce {
		p, err := config.ParseVIP(a.Prefix)
		if err != nil || !p.IsSingleIP() || vrrp[p.Addr()] || !proxied[p.Addr()] {
			continue
		}
		out[p] = true
	}
	return out
}

// accept makes the kernel accept exactly the prefixes of the announcements
// for which in(i) holds and that are to be accepted, opening the acceptor
// the first time it has any. A failure is logged and tried again at the
// next update.
func (an *announcer) accept(in func(i int) bool) {
	var want []netip.Prefix
	for i, a := range an.list {
		if a.accept && in(i) && !slices.Contains(want, a.route.Prefix) {
			want = append(want, a.route.Prefix)
		}
	}
	slices.SortFunc(want, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if slices.Equal(want, an.accepted) {
		return
	}
	if an.local == nil {
		if an.openLocal == nil {
			an.log.Error("bgp: announced addresses cannot be accepted: no acceptor", "prefixes", want)
			return
		}
		l, err := an.openLocal()
		if err != nil {
			an.log.Warn("bgp: announced addresses not accepted", "prefixes", want, "err", err)
			return
		}
		an.local = l
	}
	if err := an.local.Set(want); err != nil {
		an.log.Warn("bgp: announced addresses not accepted", "prefixes", want, "err", err)
		return
	}
	an.accepted = want
	an.log.Info("bgp: addresses accepted while announced", "prefixes", want)
}

// close stops accepting every address.
func (an *announcer) close() {
	if an.local == nil {
		return
	}
	if err := an.local.Close(); err != nil {
		an.log.Warn("bgp: accepted addresses not removed", "err", err)
	}
	an.local, an.accepted = nil, nil
}
