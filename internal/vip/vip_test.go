package vip

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestSetInNamespace(t *testing.T) {
	if !netlab.Root() {
		t.Skip("needs root to create a network namespace")
	}
	lab, err := netlab.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	h, err := lab.AddHost("n", netip.MustParsePrefix("10.80.0.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := netip.MustParsePrefix("10.80.0.10/32"), netip.MustParsePrefix("fd00:80::10/128")
	err = h.Do(func() error {
		s, err := New("eth0", []netip.Prefix{v4, v6})
		if err != nil {
			return err
		}
		defer s.Close()
		for range 2 { // adding twice is not an error
			if err := s.Add(); err != nil {
				t.Fatalf("add: %v", err)
			}
		}
		got, err := s.Present()
		if err != nil || len(got) != 2 {
			t.Fatalf("present after add: %v %v", got, err)
		}
		lk, _ := netlink.LinkByName("eth0")
		addrs, _ := netlink.AddrList(lk, netlink.FAMILY_ALL)
		for _, a := range addrs {
			ip, _ := netip.AddrFromSlice(a.IP)
			switch ip.Unmap() {
			case v4.Addr():
				if a.Label != "eth0:vg" {
					t.Errorf("IPv4 VIP label %q, want eth0:vg", a.Label)
				}
			case v6.Addr():
				if a.Flags&unix.IFA_F_NODAD == 0 || a.Flags&unix.IFA_F_TENTATIVE != 0 {
					t.Errorf("IPv6 VIP flags %#x: want nodad and not tentative", a.Flags)
				}
				// Deprecated, so never the source of the node's own traffic.
				if a.Flags&unix.IFA_F_DEPRECATED == 0 || a.PreferedLft != 0 {
					t.Errorf("IPv6 VIP flags %#x, preferred lifetime %d: want deprecated", a.Flags, a.PreferedLft)
				}
			}
		}
		for range 2 { // removing twice is not an error
			if err := s.Remove(); err != nil {
				t.Fatalf("remove: %v", err)
			}
		}
		if got, _ := s.Present(); len(got) != 0 {
			t.Fatalf("present after remove: %v", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New("nope0", []netip.Prefix{v4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Add(); err == nil {
		t.Fatal("adding to a missing interface succeeded")
	}
}

// Two holders of one address: it stays until both release it, and a release
// by a holder that never held an address deletes it when nobody does (what a
// crashed run left).
func TestSharedHolders(t *testing.T) {
	if !netlab.Root() {
		t.Skip("needs root to create a network namespace")
	}
	lab, err := netlab.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	h, err := lab.AddHost("n", netip.MustParsePrefix("10.80.0.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	a, b := netip.MustParsePrefix("10.80.0.20/32"), netip.MustParsePrefix("fd00:80::20/128")
	stale := netip.MustParsePrefix("10.80.0.21/32")
	has := func(p netip.Prefix) bool {
		ok, err := h.HasAddr(p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	err = h.Do(func() error {
		s, err := NewShared("eth0")
		if err != nil {
			return err
		}
		defer s.Close()
		left, err := New("eth0", []netip.Prefix{stale})
		if err != nil {
			return err
		}
		defer left.Close()
		if err := left.Add(); err != nil {
			return err
		}
		x, y := s.Holder("x"), s.Holder("y")
		if fresh, err := x.AcquireNew([]netip.Prefix{a, b}); err != nil || len(fresh) != 2 {
			return fmt.Errorf("x acquired %v as new (want both), %v", fresh, err)
		}
		// a only moves from x to y on this node: nothing new on the wire.
		if fresh, err := y.AcquireNew([]netip.Prefix{a}); err != nil || len(fresh) != 0 {
			return fmt.Errorf("y acquired %v as new (want none: x holds it), %v", fresh, err)
		}
		if err := x.Release([]netip.Prefix{a, b}); err != nil {
			return err
		}
		if !has(a) || has(b) {
			t.Errorf("after x released: %s held %v (y holds it), %s held %v", a, has(a), b, has(b))
		}
		if err := y.Release([]netip.Prefix{a, stale}); err != nil {
			return err
		}
		if has(a) || has(stale) {
			t.Errorf("after y released: %s held %v, stale %s held %v", a, has(a), stale, has(stale))
		}
		return y.Release([]netip.Prefix{a}) // twice is not an error
	})
	if err != nil {
		t.Fatal(err)
	}
}

// How long netlink takes for 1,000 extra addresses, one call each: logged,
// not asserted (vrrp keeps this off its advert path).
func TestSharedThousand(t *testing.T) {
	if !netlab.Root() {
		t.Skip("needs root to create a network namespace")
	}
	lab, err := netlab.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	h, err := lab.AddHost("n", netip.MustParsePrefix("10.81.0.1/16"))
	if err != nil {
		t.Fatal(err)
	}
	ps := make([]netip.Prefix, 1000)
	for i := range ps {
		ps[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 81, byte(1 + i/256), byte(i % 256)}), 32)
	}
	err = h.Do(func() error {
		s, err := NewShared("eth0")
		if err != nil {
			return err
		}
		defer s.Close()
		x := s.Holder("x")
		start := time.Now()
		if err := x.Acquire(ps); err != nil {
			return err
		}
		added := time.Since(start)
		start = time.Now()
		if err := x.Release(ps); err != nil {
			return err
		}
		t.Logf("1,000 addresses: added in %v, removed in %v", added.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
