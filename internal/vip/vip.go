// Package vip adds and removes virtual addresses on an interface through
// netlink. It decides nothing: the vrrp package says when, this package does it,
// and it makes sure an address it never added is never removed.
package vip

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// labelSuffix marks IPv4 addresses vigil added (the kernel has no labels for
// IPv6), so `ip addr` shows them as eth0:vg.
const labelSuffix = ":vg"

// Set is the virtual addresses of one instance on one interface.
type Set struct {
	ifname string
	vips   []netip.Prefix
	h      *netlink.Handle
}

// New returns the set for ifname. It does not touch the interface.
func New(ifname string, vips []netip.Prefix) (*Set, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("vip %s: netlink: %w", ifname, err)
	}
	return &Set{ifname: ifname, vips: vips, h: h}, nil
}

// Close releases the netlink handle.
func (s *Set) Close() { s.h.Close() }

func (s *Set) link() (netlink.Link, error) {
	l, err := s.h.LinkByName(s.ifname)
	if err != nil {
		return nil, fmt.Errorf("vip: interface %s: %w", s.ifname, err)
	}
	return l, nil
}

func (s *Set) addr(l netlink.Link, p netip.Prefix, label bool) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		// A VIP moves between nodes on purpose: duplicate address detection
		// would hold it back for a second and then mark it dadfailed.
		a.Flags = unix.IFA_F_NODAD
		// Deprecated (preferred lifetime 0, valid for ever): the node never
		// picks the VIP as the source of its own connections, which would
		// break when the VIP moves, and which a DSR real server holding the
		// same VIP would answer itself. Sockets bound to it still work.
		a.PreferedLft, a.ValidLft = 0, math.MaxUint32
	} else if name := l.Attrs().Name; label && len(name)+len(labelSuffix) <= 15 {
		a.Label = name + labelSuffix
	}
	return a
}

// Add configures every VIP. Addresses already present are left as they are.
func (s *Set) Add() error {
	l, err := s.link()
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range s.vips {
		if err := s.h.AddrAdd(l, s.addr(l, p, true)); err != nil && !errors.Is(err, os.ErrExist) && !errors.Is(err, syscall.EEXIST) {
			errs = append(errs, fmt.Errorf("vip: add %s to %s: %w", p, s.ifname, permission(err)))
		}
	}
	return errors.Join(errs...)
}

// Remove deletes every VIP that is present; absent ones are not an error.
func (s *Set) Remove() error {
	l, err := s.link()
	if err != nil {
		return err
	}
	var errs []error
	// Delete without a label: the kernel matches a given label, and an address
	// left by an earlier run may carry none.
	for _, p := range s.vips {
		if err := s.h.AddrDel(l, s.addr(l, p, false)); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("vip: remove %s from %s: %w", p, s.ifname, permission(err)))
		}
	}
	return errors.Join(errs...)
}

// Present returns the VIPs currently configured on the interface. At start a
// node that does not own them yet removes these: a crashed master must not
// come back answering ARP for addresses another node now holds.
func (s *Set) Present() ([]netip.Prefix, error) {
	l, err := s.link()
	if err != nil {
		return nil, err
	}
	addrs, err := s.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("vip: list addresses of %s: %w", s.ifname, err)
	}
	var out []netip.Prefix
	for _, p := range s.vips {
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == p.Addr() {
				out = append(out, p)
				break
			}
		}
	}
	return out, nil
}

func permission(err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w (vigil needs CAP_NET_ADMIN)", err)
	}
	return err
}

// Neighbors returns the IPv4 addresses the kernel's neighbour table has for
// mac on the set's interface, so that an ARP conflict can name the host. A
// host we have not talked to is not in the table: none, and no error.
func (s *Set) Neighbors(mac net.HardwareAddr) ([]netip.Addr, error) {
	l, err := s.link()
	if err != nil {
		return nil, err
	}
	ns, err := s.h.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("neighbours of %s: %w", s.ifname, err)
	}
	var out []netip.Addr
	for _, n := range ns {
		if bytes.Equal(n.HardwareAddr, mac) {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	return out, nil
}
