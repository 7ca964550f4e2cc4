package lbipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Assign returns every Service's addresses. reserved are addresses that no
// Service may get now (freed recently and perhaps still announced by a
// node). The result depends only on the arguments, not on their order.
//
// Services are served oldest first (Created, then Service name; names are
// unique). For each family the Service asks for (Families, IPv4 when empty):
//
//  1. It keeps an address of Current that is still valid: in a pool the
//     Service may use, the one it requests if it requests one of that
//     family, and not held by an older Service it may not share with.
//     A Current address in reserved is kept: reserved only stops an
//     address from going to a Service that does not hold it yet.
//  2. Else it gets its Requested address of the family, or an error
//     (ErrNotInPool, ErrTaken for a held or reserved one) and no address of
//     that family at all.
//  3. Else, with a SharingKey, the lowest address of the usable pools (in
//     pool order) that Services with the same key hold and it may join;
//     else the lowest free address of the first usable pool that has one of
//     the family (ErrExhausted, ErrNoPool, ErrUnknownPool). Addresses that
//     a younger Service holds (Current) or asks for (Requested) are not
//     free, so an older Service never takes an address a younger one keeps.
//
// The pools a Service may use are the one it names (Pool), or, when it
// names none, the AutoAssign pools; but a Requested address may come from
// any pool, as auto-assign only governs which addresses are handed out
// unasked. Two Services hold one address only if both have the same
// non-empty SharingKey and no two of their Ports have the same protocol and
// number. A family that fails leaves the others their addresses, and the
// Result's Err says what failed (errors.Is finds each reason).
//
// Pools must not overlap (config validation ensures it); where they do, an
// address belongs to the first pool in order. A free address is found by
// walking the pool's ranges past a sorted set of the addresses in use, from
// where the last search stopped, so the cost grows with the Services, not
// with the size of the pools.
func Assign(pools []Pool, reqs []Request, reserved []netip.Addr) map[string]Result {
	st := newState(pools, reserved)
	order := make([]*Request, len(reqs))
	for i := range reqs {
		order[i] = &reqs[i]
	}
	slices.SortStableFunc(order, func(a, b *Request) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Service, b.Service)
	})
	svcs := make([]service, len(order))
	for i, r := range order {
		svcs[i] = st.prepare(r)
	}
	for i := range svcs {
		st.claim(&svcs[i])
	}
	st.used.sort()
	out := make(map[string]Result, len(svcs))
	for i := range svcs {
		out[svcs[i].req.Service] = st.assign(&svcs[i])
	}
	return out
}

// service is a Request made ready to assign: addresses without zones or
// IPv4 mapping, families without repeats, protocols in upper case.
type service struct {
	req       *Request
	families  []Family
	requested map[Family]netip.Addr
	current   []netip.Addr
	ports     []Port
	// named is the index of the pool the Service names; -1 for none, -2
	// for a name no pool has.
	named int
}

// slot is who holds one address.
type slot struct {
	key      string
	ports    map[Port]bool
	services []string
}

// rangeCursor is one range of a pool with the lowest address that may
// still be free; only ever moves up, since addresses are only taken.
type rangeCursor struct {
	Range
	next netip.Addr
	full bool
}

type poolState struct {
	Pool
	v4, v6 []*rangeCursor // sorted by First
}

func (p *poolState) ranges(f Family) []*rangeCursor {
	if f == IPv6 {
		return p.v6
	}
	return p.v4
}

// contains reports whether a is in one of p's ranges of its family.
func (p *poolState) contains(a netip.Addr) bool {
	rs := p.ranges(familyOf(a))
	i, _ := slices.BinarySearchFunc(rs, a, func(r *rangeCursor, a netip.Addr) int {
		if r.Last.Less(a) {
			return -1
		}
		if a.Less(r.First) {
			return 1
		}
		return 0
	})
	// Ranges of one pool may overlap if the caller did not validate: look
	// at the neighbours too.
	for j := max(i-1, 0); j < len(rs) && j <= i+1; j++ {
		if !a.Less(rs[j].First) && !rs[j].Last.Less(a) {
			return true
		}
	}
	return false
}

type state struct {
	pools    []*poolState
	byName   map[string]int
	reserved map[netip.Addr]bool
	slots    map[netip.Addr]*slot
	// shared lists, per sharing key, the addresses Services with it hold,
	// in the order they were first taken.
	shared map[string][]netip.Addr
	// used holds every address that is not free: reserved, claimed by a
	// Service's Current or Requested, or taken.
	used addrSet
}

func newState(pools []Pool, reserved []netip.Addr) *state {
	st := &state{
		byName:   map[string]int{},
		reserved: map[netip.Addr]bool{},
		slots:    map[netip.Addr]*slot{},
		shared:   map[string][]netip.Addr{},
	}
	for _, p := range pools {
		ps := &poolState{Pool: p}
		for _, r := range p.Ranges {
			first, last := plain(r.First), plain(r.Last)
			if !first.IsValid() || !last.IsValid() || first.Is4() != last.Is4() || last.Less(first) {
				continue // not a range; config validation refuses it
			}
			rc := &rangeCursor{Range: Range{first, last}, next: first}
			if first.Is4() {
				ps.v4 = append(ps.v4, rc)
			} else {
				ps.v6 = append(ps.v6, rc)
			}
		}
		byFirst := func(a, b *rangeCursor) int { return a.First.Compare(b.First) }
		slices.SortStableFunc(ps.v4, byFirst)
		slices.SortStableFunc(ps.v6, byFirst)
		if _, dup := st.byName[p.Name]; !dup {
			st.byName[p.Name] = len(st.pools)
		}
		st.pools = append(st.pools, ps)
	}
	for _, a := range reserved {
		a = plain(a)
		st.reserved[a] = true
		st.used.add(a)
	}
	return st
}

func (st *state) prepare(r *Request) service {
	s := service{req: r, requested: map[Family]netip.Addr{}, named: -1}
	fams := r.Families
	if len(fams) == 0 {
		fams = []Family{IPv4}
	}
	for _, f := range fams {
		if !slices.Contains(s.families, f) {
			s.families = append(s.families, f)
		}
	}
	for _, a := range r.Requested {
		a = plain(a)
		if _, ok := s.requested[familyOf(a)]; !ok && a.IsValid() {
			s.requested[familyOf(a)] = a
		}
	}
	for _, a := range r.Current {
		if a = plain(a); a.IsValid() {
			s.current = append(s.current, a)
		}
	}
	for _, p := range r.Ports {
		s.ports = append(s.ports, normPort(p))
	}
	if r.Pool != "" {
		s.named = -2
		if i, ok := st.byName[r.Pool]; ok {
			s.named = i
		}
	}
	return s
}

// claim marks the addresses s may keep or asks for as not free, so that an
// older Service choosing freely does not take them.
func (st *state) claim(s *service) {
	for _, f := range s.families {
		if a, ok := s.requested[f]; ok {
			st.used.add(a)
			continue
		}
		for _, a := range s.current {
			if familyOf(a) == f && st.poolOf(s, a, false) >= 0 {
				st.used.add(a)
			}
		}
	}
}

// poolOf returns the index of the first pool s may take a from, -1 for
// none; requested lets a Service that names no pool use every pool.
func (st *state) poolOf(s *service, a netip.Addr, requested bool) int {
	switch {
	case s.named >= 0:
		if st.pools[s.named].contains(a) {
			return s.named
		}
		return -1
	case s.named == -2:
		return -1
	}
	for i, p := range st.pools {
		if (p.AutoAssign || requested) && p.contains(a) {
			return i
		}
	}
	return -1
}

// mayHold reports whether s may hold a alongside its current holders, and
// if not, who holds it.
func (st *state) mayHold(s *service, a netip.Addr) (bool, string) {
	sl := st.slots[a]
	if sl == nil {
		return true, ""
	}
	if s.req.SharingKey == "" || sl.key != s.req.SharingKey {
		return false, sl.services[0]
	}
	for _, p := range s.ports {
		if sl.ports[p] {
			return false, fmt.Sprintf("%s (port %d/%s)", strings.Join(sl.services, ", "), p.Port, p.Protocol)
		}
	}
	return true, ""
}

func (st *state) take(s *service, a netip.Addr) {
	sl := st.slots[a]
	if sl == nil {
		sl = &slot{key: s.req.SharingKey, ports: map[Port]bool{}}
		st.slots[a] = sl
		if sl.key != "" {
			st.shared[sl.key] = append(st.shared[sl.key], a)
		}
		st.used.add(a)
	}
	sl.services = append(sl.services, s.req.Service)
	for _, p := range s.ports {
		sl.ports[p] = true
	}
}

func (st *state) assign(s *service) Result {
	var res Result
	var errs []error
	for _, f := range s.families {
		a, pool, err := st.pick(s, f)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		st.take(s, a)
		res.Addrs = append(res.Addrs, a)
		if res.Pool == "" {
			res.Pool = st.pools[pool].Name
		}
	}
	if len(errs) == 1 {
		res.Err = errs[0]
	} else if len(errs) > 1 {
		res.Err = errors.Join(errs...)
	}
	return res
}

// pick chooses s's address of family f and the index of its pool.
func (st *state) pick(s *service, f Family) (netip.Addr, int, error) {
	if f != IPv4 && f != IPv6 {
		return netip.Addr{}, -1, fmt.Errorf("%w: unknown family %q", ErrNoPool, f)
	}
	if s.named == -2 {
		return netip.Addr{}, -1, fmt.Errorf("%w %q", ErrUnknownPool, s.req.Pool)
	}
	req, hasReq := s.requested[f]
	for _, a := range s.current {
		if familyOf(a) != f || (hasReq && a != req) {
			continue
		}
		if i := st.poolOf(s, a, hasReq); i >= 0 {
			if ok, _ := st.mayHold(s, a); ok {
				return a, i, nil
			}
		}
	}
	if hasReq {
		i := st.poolOf(s, req, true)
		if i < 0 {
			where := "any pool"
			if s.named >= 0 {
				where = "pool " + s.req.Pool
			}
			return netip.Addr{}, -1, fmt.Errorf("%w: %s is not in %s", ErrNotInPool, req, where)
		}
		if ok, who := st.mayHold(s, req); !ok {
			return netip.Addr{}, -1, fmt.Errorf("%w: %s is held by %s", ErrTaken, req, who)
		}
		if st.reserved[req] {
			return netip.Addr{}, -1, fmt.Errorf("%w: %s was freed recently and is held back", ErrTaken, req)
		}
		return req, i, nil
	}
	usable := st.usable(s)
	if s.req.SharingKey != "" {
		if a, i, ok := st.join(s, f, usable); ok {
			return a, i, nil
		}
	}
	some := false
	for _, i := range usable {
		for _, rc := range st.pools[i].ranges(f) {
			some = true
			if a, ok := st.free(rc); ok {
				return a, i, nil
			}
		}
	}
	if !some {
		return netip.Addr{}, -1, fmt.Errorf("%w: %s", ErrNoPool, st.describe(s, usable))
	}
	return netip.Addr{}, -1, fmt.Errorf("%w: no free address in %s", ErrExhausted, st.describe(s, usable))
}

// usable returns the pools s may get an address from unasked, in order.
func (st *state) usable(s *service) []int {
	if s.named >= 0 {
		return []int{s.named}
	}
	var out []int
	for i, p := range st.pools {
		if p.AutoAssign {
			out = append(out, i)
		}
	}
	return out
}

func (st *state) describe(s *service, usable []int) string {
	if s.named >= 0 {
		return "pool " + s.req.Pool
	}
	if len(usable) == 0 {
		return "no auto-assign pool"
	}
	names := make([]string, len(usable))
	for k, i := range usable {
		names[k] = st.pools[i].Name
	}
	return "auto-assign pools " + strings.Join(names, ", ")
}

// join finds the lowest address of the first usable pool that Services
// with s's sharing key hold and s may join; reserved ones are not handed
// out.
func (st *state) join(s *service, f Family, usable []int) (netip.Addr, int, bool) {
	for _, i := range usable {
		var best netip.Addr
		for _, a := range st.shared[s.req.SharingKey] {
			if familyOf(a) != f || st.reserved[a] || (best.IsValid() && best.Less(a)) || !st.pools[i].contains(a) {
				continue
			}
			if ok, _ := st.mayHold(s, a); ok {
				best = a
			}
		}
		if best.IsValid() {
			return best, i, true
		}
	}
	return netip.Addr{}, -1, false
}

// free returns the lowest address of rc not in use, moving rc's cursor up
// to it; taking it is the caller's.
func (st *state) free(rc *rangeCursor) (netip.Addr, bool) {
	if rc.full {
		return netip.Addr{}, false
	}
	c := rc.next
	for i := st.used.search(c); i < len(st.used.addrs) && st.used.addrs[i] == c; i++ {
		if c == rc.Last {
			rc.full = true
			return netip.Addr{}, false
		}
		c = c.Next()
	}
	rc.next = c
	return c, true
}

// addrSet is a sorted set of addresses. Before sort it only collects.
type addrSet struct {
	addrs  []netip.Addr
	sorted bool
}

func (s *addrSet) sort() {
	slices.SortFunc(s.addrs, netip.Addr.Compare)
	s.addrs = slices.Compact(s.addrs)
	s.sorted = true
}

// search returns the index of the first address not below a.
func (s *addrSet) search(a netip.Addr) int {
	i, _ := slices.BinarySearchFunc(s.addrs, a, netip.Addr.Compare)
	return i
}

func (s *addrSet) add(a netip.Addr) {
	if !s.sorted {
		s.addrs = append(s.addrs, a)
		return
	}
	if i, found := slices.BinarySearchFunc(s.addrs, a, netip.Addr.Compare); !found {
		s.addrs = slices.Insert(s.addrs, i, a)
	}
}

// plain drops a zone and unmaps an IPv4-mapped IPv6 address.
func plain(a netip.Addr) netip.Addr { return a.WithZone("").Unmap() }

func familyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// normPort spells a protocol as the API does; "" is TCP, the API's default.
func normPort(p Port) Port {
	p.Protocol = strings.ToUpper(p.Protocol)
	if p.Protocol == "" {
		p.Protocol = "TCP"
	}
	return p
}
