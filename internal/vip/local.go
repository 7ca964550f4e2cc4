package vip

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AnycastARPTable is the nftables table (family arp) vigil owns so that no
// interface answers ARP for the addresses LocalRoutes makes local.
const AnycastARPTable = "vigil_anycast"

// LocalRoutes makes addresses this host's own without putting them on an
// interface: a route of type local in the local table, as the kernel keeps
// for every interface address. A router that sends traffic for an address
// announced over BGP to this host then has it delivered here (vigil's
// proxy listens on it).
//
// With the default arp_ignore=0 the kernel answers ARP on every interface
// for every local address, local routes included, so each node of an
// anycast group would claim the address on its LAN. Rather than raise
// arp_ignore for the whole node, LocalRoutes keeps an nftables table of
// family arp that drops ARP packets asking for its IPv4 addresses before
// the kernel answers them. IPv6 needs nothing: neighbour discovery answers
// only for addresses configured on the asking interface.
type LocalRoutes struct {
	h    *netlink.Handle
	nft  *nftables.Conn
	log  *slog.Logger
	lo   int
	have []netip.Prefix
	arp  []netip.Addr // the IPv4 addresses the arp table drops now
}

// NewLocalRoutes opens netlink and nftables in this process's namespace. A
// table left by a crashed run is removed.
func NewLocalRoutes(log *slog.Logger) (*LocalRoutes, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("local routes: netlink: %w", err)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("local routes: lo: %w", err)
	}
	nft, err := nftables.New()
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("local routes: nftables: %w", err)
	}
	removeTable(nft, anycastTable)
	return &LocalRoutes{h: h, nft: nft, log: log, lo: lo.Attrs().Index}, nil
}

var anycastTable = &nftables.Table{Family: nftables.TableFamilyARP, Name: AnycastARPTable}

func (l *LocalRoutes) route(p netip.Prefix) *netlink.Route {
	return &netlink.Route{LinkIndex: l.lo, Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST, Protocol: routeProtocol}
}

// routeProtocol marks vigil's routes (RTPROT_STATIC would be taken for an
// administrator's).
const routeProtocol = 0x56 // 'V'

// Set makes exactly want local, adding and removing routes. ARP for an
// IPv4 address is silenced before its route is added and answered again
// only after its route is gone.
func (l *LocalRoutes) Set(want []netip.Prefix) error {
	var errs []error
	if err := l.silence(union(l.have, want)); err != nil {
		return err // no route added that would answer ARP
	}
	var have []netip.Prefix
	for _, p := range l.have {
		if slices.Contains(want, p) {
			have = append(have, p)
			continue
		}
		if err := l.h.RouteDel(l.route(p)); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("local route %s: remove: %w", p, permission(err)))
			have = append(have, p)
		}
	}
	for _, p := range want {
		if slices.Contains(have, p) {
			continue
		}
		if err := l.h.RouteReplace(l.route(p)); err != nil {
			errs = append(errs, fmt.Errorf("local route %s: add: %w", p, permission(err)))
			continue
		}
		have = append(have, p)
	}
	l.have = have
	errs = append(errs, l.silence(have))
	return errors.Join(errs...)
}

func union(a, b []netip.Prefix) []netip.Prefix {
	out := slices.Clone(a)
	for _, p := range b {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// silence makes the arp table drop requests for exactly the IPv4 addresses
// of ps, replacing the table in one transaction; without any it removes
// the table.
func (l *LocalRoutes) silence(ps []netip.Prefix) error {
	var addrs []netip.Addr
	for _, p := range ps {
		if p.Addr().Is4() {
			addrs = append(addrs, p.Addr())
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	if slices.Equal(addrs, l.arp) {
		return nil
	}
	l.nft.AddTable(anycastTable) // so that the delete finds it, even if someone removed it
	l.nft.DelTable(anycastTable)
	if len(addrs) > 0 {
		l.nft.AddTable(anycastTable)
		// NF_ARP_IN (linux/netfilter_arp.h): ARP packets received, before
		// the kernel answers them.
		chain := l.nft.AddChain(&nftables.Chain{Name: "input", Table: anycastTable, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookRef(0), Priority: nftables.ChainPriorityFilter})
		for _, a := range addrs {
			l.nft.AddRule(&nftables.Rule{Table: anycastTable, Chain: chain, Exprs: dropARPFor(a)})
		}
	}
	if err := l.nft.Flush(); err != nil {
		return fmt.Errorf("local routes: nftables table %s (ARP for %v not answered): %w", AnycastARPTable, addrs, permission(err))
	}
	if len(l.arp) == 0 && len(addrs) > 0 {
		l.log.Info("ARP for anycast addresses dropped on every interface", "table", AnycastARPTable, "addresses", fmt.Sprint(addrs))
	}
	l.arp = addrs
	return nil
}

// dropARPFor drops an Ethernet/IPv4 ARP packet whose target protocol
// address is a: the ARP header's 8 fixed bytes, the sender's hardware (6)
// and protocol (4) addresses and the target's hardware address (6) come
// first, so the target's IPv4 address starts at byte 24.
func dropARPFor(a netip.Addr) []expr.Any {
	return []expr.Any{
		// hardware address length 6, protocol address length 4
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 4, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{6, 4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// Close removes every route it added and its arp table, and releases
// netlink.
func (l *LocalRoutes) Close() error {
	err := l.Set(nil)
	l.h.Close()
	return err
}
