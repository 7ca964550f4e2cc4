package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Services makes vigil the cluster's LoadBalancer implementation: it gives
// Services of type LoadBalancer addresses from its pools (package lbipam)
// and announces them.
type Services struct {
	// DefaultClass: also serve Services without spec.loadBalancerClass, not
	// only those of class ServiceClass. Default true.
	DefaultClass *bool `yaml:"default_class"`
	// Dataplane carries the traffic: none (kube-proxy or Cilium does),
	// proxy (vigil's L4 proxy, TCP) or dsr (vigil's XDP program, TCP and
	// UDP, to endpoints one hop away that hold the address themselves).
	// Default none.
	Dataplane string `yaml:"dataplane"`
	// Pools are the addresses to hand out, in order of preference.
	Pools []ServicePool `yaml:"pools"`
	// LeaseNamespace holds the Lease that elects the one node writing
	// allocations (vigil's own namespace; it must exist). Default
	// DefaultLeaseNamespace.
	LeaseNamespace string `yaml:"lease_namespace"`
	// Hold is how long a freed address is not given to another Service (a
	// node may still announce it); a newly elected allocator also waits
	// this long after its start before giving out addresses nobody held
	// (it cannot know what was freed just before). Default DefaultHold.
	Hold time.Duration `yaml:"hold"`
}

// DefaultHold is the default of kubernetes.services.hold.
const DefaultHold = 30 * time.Second

// DefaultLeaseNamespace is where the allocator's Lease lives by default,
// the namespace `vigil manifest daemonset` deploys to.
const DefaultLeaseNamespace = "vigil-system"

// ServiceClass is the spec.loadBalancerClass vigil serves.
const ServiceClass = "vigil.io/lb"

// ServicePool is one pool of addresses for LoadBalancer Services.
type ServicePool struct {
	// Name is a DNS label, unique among the pools; Services pick a pool by
	// it (annotation vigil.io/pool).
	Name string `yaml:"name"`
	// Addresses are CIDRs (192.0.2.0/28) and inclusive ranges
	// (192.0.2.10-192.0.2.20), IPv4 and IPv6; no two overlap.
	Addresses []string `yaml:"addresses,flow"`
	// Announce is how the addresses are made reachable: l2 (ARP/NDP) or bgp.
	// Default l2.
	Announce string `yaml:"announce"`
	// Interface to answer ARP/NDP on; required for l2. With dataplane dsr
	// it is also where the XDP program runs, and then a bgp pool needs it
	// too (the interface the routed traffic comes in on); otherwise bgp
	// does not use it.
	Interface string `yaml:"interface"`
	// Nodes is a label selector of the Nodes that may announce; "" (the
	// default) is every Node.
	Nodes string `yaml:"nodes"`
	// AutoAssign: Services that name no pool may get addresses from it.
	// Default true. Either way a Service that names the pool or asks for one
	// of its addresses gets it.
	AutoAssign *bool `yaml:"auto_assign"`
	// AvoidBuggyIPs leaves out the network and broadcast addresses of every
	// IPv4 CIDR shorter than /31 (clients and routers that treat .0 and
	// .255 as broadcast drop them). Default true.
	AvoidBuggyIPs *bool `yaml:"avoid_buggy_ips"`
	// BGP attributes of the announcements; only with announce bgp.
	BGP *ServicePoolBGP `yaml:"bgp,flow"`
}

// ServicePoolBGP are the attributes a pool's addresses are announced with.
type ServicePoolBGP struct {
	// Communities as ASN:VALUE, each 0..65535.
	Communities []string `yaml:"communities,flow"`
	// LocalPref, 0: not sent.
	LocalPref uint32 `yaml:"local_pref"`
}

// AddressRange is one entry of a pool's addresses: First..Last inclusive,
// of one family.
type AddressRange struct {
	First, Last netip.Addr
	// Bits is the prefix length when the entry is a CIDR, -1 for a
	// FIRST-LAST range.
	Bits int
}

// ParseAddressRange reads a CIDR ("192.0.2.0/28", "2001:db8::/120"; the
// address must be the network's first) or an inclusive range of one
// family ("192.0.2.10-192.0.2.20"; blanks around the dash are allowed).
// Zones and IPv4-mapped IPv6 addresses are refused.
func ParseAddressRange(s string) (AddressRange, error) {
	if first, last, ok := strings.Cut(s, "-"); ok {
		a, err1 := plainAddr(strings.TrimSpace(first))
		b, err2 := plainAddr(strings.TrimSpace(last))
		switch {
		case err1 != nil:
			return AddressRange{}, err1
		case err2 != nil:
			return AddressRange{}, err2
		case a.Is4() != b.Is4():
			return AddressRange{}, fmt.Errorf("%q mixes IPv4 and IPv6", s)
		case b.Less(a):
			return AddressRange{}, fmt.Errorf("%q: %s is after %s", s, a, b)
		}
		return AddressRange{First: a, Last: b, Bits: -1}, nil
	}
	if !strings.Contains(s, "/") {
		return AddressRange{}, fmt.Errorf("%q is not a CIDR or a FIRST-LAST range (one address is ADDRESS/32 or ADDRESS/128)", s)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return AddressRange{}, fmt.Errorf("%q is not a CIDR or a FIRST-LAST range", s)
	}
	if p.Addr().Is4In6() {
		return AddressRange{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix: write the IPv4 one", s)
	}
	if p.Masked() != p {
		return AddressRange{}, fmt.Errorf("%q has host bits set: the network is %s", s, p.Masked())
	}
	return AddressRange{First: p.Addr(), Last: lastOf(p), Bits: p.Bits()}, nil
}

// plainAddr parses an address without zone that is not IPv4-mapped.
func plainAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("%q has a zone", s)
	case a.Is4In6():
		return netip.Addr{}, fmt.Errorf("%q is an IPv4-mapped IPv6 address: write the IPv4 one", s)
	}
	return a, nil
}

// lastOf returns the last address of the masked prefix p.
func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// String writes r back in the form ParseAddressRange reads.
func (r AddressRange) String() string {
	if r.Bits >= 0 {
		return netip.PrefixFrom(r.First, r.Bits).String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// Overlaps reports whether r and o share an address.
func (r AddressRange) Overlaps(o AddressRange) bool {
	return r.First.Is4() == o.First.Is4() && !r.Last.Less(o.First) && !o.Last.Less(r.First)
}

// services validates kubernetes.services.
func (v *validator) services(s *Services) {
	const p = "kubernetes.services"
	if s.DefaultClass == nil {
		t := true
		s.DefaultClass = &t
	}
	v.oneOf(p+".dataplane", &s.Dataplane, "none", "proxy", "dsr")
	if s.LeaseNamespace == "" {
		s.LeaseNamespace = DefaultLeaseNamespace
	}
	setDefault(v, p+".hold", &s.Hold, DefaultHold)
	if s.Hold < 0 || s.Hold > time.Hour {
		v.add(p+".hold", "%v is out of range 0..1h", s.Hold)
	}
	if errs := validation.IsDNS1123Label(s.LeaseNamespace); len(errs) > 0 {
		v.add(p+".lease_namespace", "%q is not a namespace name: %s", s.LeaseNamespace, strings.Join(errs, "; "))
	}
	if len(s.Pools) == 0 {
		v.add(p+".pools", "needs at least one pool")
	}
	type seenRange struct {
		r    AddressRange
		path string
	}
	var ranges []seenRange
	names := map[string]bool{}
	for i := range s.Pools {
		pl := &s.Pools[i]
		pp := fmt.Sprintf("%s.pools[%d]", p, i)
		switch {
		case len(validation.IsDNS1123Label(pl.Name)) > 0:
			v.add(pp+".name", "%q is not a DNS label (lower-case letters, digits and -, at most 63)", pl.Name)
		case names[pl.Name]:
			v.add(pp+".name", "%q is used twice", pl.Name)
		}
		names[pl.Name] = true
		if len(pl.Addresses) == 0 {
			v.add(pp+".addresses", "needs at least one CIDR or range")
		}
		for j, a := range pl.Addresses {
			ap := fmt.Sprintf("%s.addresses[%d]", pp, j)
			r, err := ParseAddressRange(a)
			if err != nil {
				v.add(ap, "%v", err)
				continue
			}
			for _, o := range ranges {
				if r.Overlaps(o.r) {
					v.add(ap, "%s overlaps %s of %s (line %d)", r, o.r, o.path, v.c.lines.byPath[o.path])
					break
				}
			}
			ranges = append(ranges, seenRange{r, ap})
		}
		v.oneOf(pp+".announce", &pl.Announce, "l2", "bgp")
		switch {
		case pl.Announce == "l2" && !interfaceName(pl.Interface):
			if pl.Interface == "" {
				v.add(pp+".interface", "is required for announce l2 (where to answer ARP and NDP)")
			} else {
				v.add(pp+".interface", "%q is not an interface name", pl.Interface)
			}
		case pl.Announce == "bgp" && s.Dataplane == "dsr" && pl.Interface == "":
			v.add(pp+".interface", "is required with dataplane dsr (the interface the pool's traffic comes in on: XDP runs there)")
		case pl.Announce == "bgp" && s.Dataplane == "dsr" && !interfaceName(pl.Interface):
			v.add(pp+".interface", "%q is not an interface name", pl.Interface)
		case pl.Announce == "bgp" && s.Dataplane != "dsr" && pl.Interface != "":
			v.add(pp+".interface", "applies to announce l2, or to bgp with dataplane dsr, only (announce is bgp)")
		case pl.Announce == "bgp" && v.c.BGP.ASN == 0:
			v.add(pp+".announce", "bgp needs the bgp section (asn, router_id, neighbors)")
		}
		v.selector(pp+".nodes", pl.Nodes)
		if pl.AutoAssign == nil {
			t := true
			pl.AutoAssign = &t
		}
		if pl.AvoidBuggyIPs == nil {
			t := true
			pl.AvoidBuggyIPs = &t
		}
		if b := pl.BGP; b != nil {
			if pl.Announce != "bgp" {
				v.add(pp+".bgp", "applies to announce bgp only (announce is %s)", pl.Announce)
			}
			for j, c := range b.Communities {
				if _, err := ParseCommunity(c); err != nil {
					v.add(fmt.Sprintf("%s.bgp.communities[%d]", pp, j), "%v", err)
				}
			}
		}
	}
}
