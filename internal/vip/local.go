package vip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LocalRoutes makes addresses this host's own without putting them on an
// interface: a route of type local in the local table, as the kernel keeps
// for every interface address. A router that sends traffic for an address
// announced over BGP to this host then has it delivered here (vigil's
// proxy listens on it), and no interface answers ARP for it as a VIP on
// lo would make every node do.
type LocalRoutes struct {
	h    *netlink.Handle
	lo   int
	have []netip.Prefix
}

// NewLocalRoutes opens netlink in this process's namespace.
func NewLocalRoutes() (*LocalRoutes, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("local routes: netlink: %w", err)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("local routes: lo: %w", err)
	}
	return &LocalRoutes{h: h, lo: lo.Attrs().Index}, nil
}

func (l *LocalRoutes) route(p netip.Prefix) *netlink.Route {
	return &netlink.Route{LinkIndex: l.lo, Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST, Protocol: routeProtocol}
}

// routeProtocol marks vigil's routes (RTPROT_STATIC would be taken for an
// administrator's).
const routeProtocol = 0x56 // 'V'

// Set makes exactly want local, adding and removing routes.
func (l *LocalRoutes) Set(want []netip.Prefix) error {
	var errs []error
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
	return errors.Join(errs...)
}

// Close removes every route it added and releases netlink.
func (l *LocalRoutes) Close() error {
	err := l.Set(nil)
	l.h.Close()
	return err
}
