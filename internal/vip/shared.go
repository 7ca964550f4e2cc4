package vip

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
)

// Shared is the extra addresses of every instance on one interface, counted
// by holder: an address stays configured while any holder holds it. Extra
// addresses move between instances (a slot planner reassigns them), and two
// instances of one node can both be master: if one released an address the
// other had just acquired, a plain add and delete racing would leave it off.
// Safe for concurrent use; the kernel calls are made under Shared's lock,
// one address at a time, so the count and the interface always agree.
type Shared struct {
	ifname string
	h      *netlink.Handle

	mu      sync.Mutex
	holders map[netip.Prefix]map[string]bool
}

// NewShared returns the shared extra addresses of ifname. Like New it does
// not touch the interface; the netlink handle is opened in the caller's
// network namespace.
func NewShared(ifname string) (*Shared, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("vip %s: netlink: %w", ifname, err)
	}
	return &Shared{ifname: ifname, h: h, holders: map[netip.Prefix]map[string]bool{}}, nil
}

// Close releases the netlink handle.
func (s *Shared) Close() { s.h.Close() }

// Holder is one instance's view of the shared addresses (vrrp.ExtraAddresses).
func (s *Shared) Holder(name string) *Holder { return &Holder{s: s, name: name} }

// Holder acquires and releases addresses for one instance.
type Holder struct {
	s    *Shared
	name string
}

// Acquire configures every address that no holder held before, and holds
// them all for h. An address already present is not an error.
func (h *Holder) Acquire(ps []netip.Prefix) error {
	_, err := h.AcquireNew(ps)
	return err
}

// AcquireNew is Acquire, and returns the addresses no other holder held:
// the others only move between two instances of this node, which the
// segment does not see (vrrp does not announce them again).
func (h *Holder) AcquireNew(ps []netip.Prefix) ([]netip.Prefix, error) {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.link()
	if err != nil {
		return nil, err
	}
	var errs []error
	var fresh []netip.Prefix
	for _, p := range ps {
		hs := s.holders[p]
		if len(hs) == 0 || len(hs) == 1 && hs[h.name] {
			fresh = append(fresh, p)
		}
		if len(hs) == 0 {
			a := (&Set{h: s.h}).addr(l, p, true)
			if err := s.h.AddrAdd(l, a); err != nil && !errors.Is(err, os.ErrExist) && !errors.Is(err, syscall.EEXIST) {
				errs = append(errs, fmt.Errorf("vip: add %s to %s: %w", p, s.ifname, permission(err)))
				continue
			}
			hs = map[string]bool{}
			s.holders[p] = hs
		}
		hs[h.name] = true
	}
	return fresh, errors.Join(errs...)
}

// Release drops h's hold on every address and deletes those nobody holds
// now, including ones h never held and nobody does: what a crashed run left
// behind goes the same way. An absent address is not an error.
func (h *Holder) Release(ps []netip.Prefix) error {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.link()
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range ps {
		hs := s.holders[p]
		delete(hs, h.name)
		if len(hs) > 0 {
			continue
		}
		delete(s.holders, p)
		a := (&Set{h: s.h}).addr(l, p, false)
		if err := s.h.AddrDel(l, a); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("vip: remove %s from %s: %w", p, s.ifname, permission(err)))
		}
	}
	return errors.Join(errs...)
}

func (s *Shared) link() (netlink.Link, error) {
	l, err := s.h.LinkByName(s.ifname)
	if err != nil {
		return nil, fmt.Errorf("vip: interface %s: %w", s.ifname, err)
	}
	return l, nil
}
