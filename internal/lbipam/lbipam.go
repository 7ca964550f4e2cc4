// Package lbipam assigns addresses from vigil's pools to LoadBalancer
// Services. It is pure: Assign computes every Service's addresses from the
// pools and all Services as they are (their status holds the truth, so a
// restart keeps every address), and the one elected allocator writes the
// result. Deterministic, so that two computations on the same input agree.
package lbipam

import (
	"errors"
	"net/netip"
	"time"
)

// Pool is one address pool.
type Pool struct {
	Name string
	// Ranges are the pool's addresses, inclusive, one family each.
	Ranges []Range
	// AutoAssign: Services that name no pool may get addresses from it
	// unasked. Any Service may get one it requests (Request.Requested).
	AutoAssign bool
}

// Range is First..Last inclusive, of one family.
type Range struct{ First, Last netip.Addr }

// Port is one port of a Service, for the sharing-key clash check.
type Port struct {
	Protocol string // TCP, UDP, SCTP
	Port     int
}

// Family is an IP family a Service asks for.
type Family string

const (
	IPv4 Family = "IPv4"
	IPv6 Family = "IPv6"
)

// Request is what a Service asks for.
type Request struct {
	// Service is NAMESPACE/NAME.
	Service string
	// Created orders Services: an older one wins an address two ask for.
	Created time.Time
	// Pool is the vigil.io/pool annotation; "" takes auto-assign pools.
	Pool string
	// Requested are the addresses of the vigil.io/address annotation or
	// spec.loadBalancerIP, at most one per family.
	Requested []netip.Addr
	// SharingKey lets Services with the same key share an address when
	// their ports do not clash.
	SharingKey string
	Ports      []Port
	// Families from spec.ipFamilies, in order; one address each.
	Families []Family
	// Current are the addresses in status.loadBalancer.ingress now: kept
	// while they are still valid (in a pool the Service may use, the
	// Requested one if any, not taken by an older Service), reserved or
	// not.
	Current []netip.Addr
}

// Result is what a Service gets.
type Result struct {
	// Addrs, one per family asked for, in Families' order; a family that
	// failed (see Err) has none, so a partial dual-stack Result has one.
	Addrs []netip.Addr
	// Pool the first address comes from.
	Pool string
	// Err says why the Service got no (or not every) address: one of the
	// errors below, wrapped with detail.
	Err error
}

// Why an allocation failed; the controller turns them into Events.
var (
	ErrExhausted   = errors.New("pool exhausted")
	ErrTaken       = errors.New("address taken")
	ErrUnknownPool = errors.New("unknown pool")
	ErrNotInPool   = errors.New("address in no pool")
	ErrNoPool      = errors.New("no pool for the family")
)

// Size is how many addresses the pool holds, as a float: an IPv6 range can
// hold more than any integer type.
func (p Pool) Size() float64 {
	n := 0.0
	for _, r := range p.Ranges {
		n += rangeSize(r)
	}
	return n
}

// rangeSize is Last-First+1 of one family, as a float.
func rangeSize(r Range) float64 {
	a, b := r.First.As16(), r.Last.As16()
	d, borrow := 0.0, 0
	for i := 15; i >= 0; i-- {
		v := int(b[i]) - int(a[i]) - borrow
		borrow = 0
		if v < 0 {
			v += 256
			borrow = 1
		}
		d += float64(v) * pow256(15-i)
	}
	return d + 1
}

func pow256(n int) float64 {
	f := 1.0
	for range n {
		f *= 256
	}
	return f
}

// PoolOf returns the name of the first pool holding a, "" if none does.
func PoolOf(pools []Pool, a netip.Addr) string {
	for _, p := range pools {
		for _, r := range p.Ranges {
			if a.BitLen() == r.First.BitLen() && r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0 {
				return p.Name
			}
		}
	}
	return ""
}
