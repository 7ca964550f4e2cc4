package dsr

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/vigil-lb/vigil/internal/garp"
	"github.com/vigil-lb/vigil/internal/xdp"
	"github.com/vishvananda/netlink"
)

// Linux returns the host's Kernel: netlink for links, addresses and
// neighbours, garp for ARP probes, internal/xdp for the program.
func Linux() Kernel { return linuxKernel{} }

type linuxKernel struct{}

func linkOf(lk netlink.Link) Link {
	a := lk.Attrs()
	return Link{Name: a.Name, Index: a.Index, MAC: a.HardwareAddr, Kind: lk.Type()}
}

func (linuxKernel) LinkByName(name string) (Link, error) {
	lk, err := netlink.LinkByName(name)
	if err != nil {
		return Link{}, err
	}
	return linkOf(lk), nil
}

func (linuxKernel) LinkByIndex(index int) (Link, error) {
	lk, err := netlink.LinkByIndex(index)
	if err != nil {
		return Link{}, err
	}
	return linkOf(lk), nil
}

func (linuxKernel) XDPFeatures(ifindex int) (xdp.Features, error) { return xdp.DeviceFeatures(ifindex) }

func (linuxKernel) Addrs() ([]Addr, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL) // every interface's
	if err != nil {
		return nil, err
	}
	out := make([]Addr, 0, len(addrs))
	for _, a := range addrs {
		if pfx, ok := netipPrefix(a.IPNet); ok {
			out = append(out, Addr{Prefix: pfx, LinkIndex: a.LinkIndex})
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

// usable are the neighbour states whose address can be sent to.
const usable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT

func (linuxKernel) Neighbour(ifindex int, ip netip.Addr) (net.HardwareAddr, error) {
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := netlink.NeighList(ifindex, family)
	if err != nil {
		return nil, err
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip && len(n.HardwareAddr) == 6 && n.State&usable != 0 {
			return n.HardwareAddr, nil
		}
	}
	return nil, nil
}

func (linuxKernel) ProbeARP(ctx context.Context, iface string, ip netip.Addr, wait time.Duration) ([]net.HardwareAddr, error) {
	r, err := garp.ProbeFirst(ctx, iface, ip, wait)
	if err != nil {
		return nil, err
	}
	return r.MACs, nil
}

func (linuxKernel) LoadXDP() (Dataplane, error) {
	d, err := xdp.Load()
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return d, nil
}
