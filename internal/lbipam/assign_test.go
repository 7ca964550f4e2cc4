package lbipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, addr(s))
	}
	return out
}

// pool builds a pool from FIRST-LAST ranges (a single address for one).
func pool(name string, auto bool, ranges ...string) Pool {
	p := Pool{Name: name, AutoAssign: auto}
	for _, r := range ranges {
		first, last, ok := strings.Cut(r, "-")
		if !ok {
			last = first
		}
		p.Ranges = append(p.Ranges, Range{addr(first), addr(last)})
	}
	return p
}

// svc is a Service created age minutes after t0.
func svc(name string, age int, opts ...func(*Request)) Request {
	r := Request{Service: "ns/" + name, Created: t0.Add(time.Duration(age) * time.Minute)}
	for _, o := range opts {
		o(&r)
	}
	return r
}

func current(ss ...string) func(*Request)   { return func(r *Request) { r.Current = addrs(ss...) } }
func requested(ss ...string) func(*Request) { return func(r *Request) { r.Requested = addrs(ss...) } }
func inPool(p string) func(*Request)        { return func(r *Request) { r.Pool = p } }
func families(fs ...Family) func(*Request)  { return func(r *Request) { r.Families = fs } }
func sharing(key string, ports ...string) func(*Request) {
	return func(r *Request) {
		r.SharingKey = key
		for _, p := range ports { // "80/TCP"
			var pp Port
			fmt.Sscanf(strings.Replace(p, "/", " ", 1), "%d %s", &pp.Port, &pp.Protocol)
			r.Ports = append(r.Ports, pp)
		}
	}
}

// want is one Service's expected result: its addresses, pool, and the
// errors Err must match (errors.Is), none for a nil Err.
type want struct {
	addrs []string
	pool  string
	errs  []error
}

func check(t *testing.T, got map[string]Result, wants map[string]want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Errorf("%d results, want %d: %v", len(got), len(wants), got)
	}
	for name, w := range wants {
		r, ok := got["ns/"+name]
		if !ok {
			t.Errorf("%s: no result", name)
			continue
		}
		var gotAddrs []string
		for _, a := range r.Addrs {
			gotAddrs = append(gotAddrs, a.String())
		}
		if !slices.Equal(gotAddrs, w.addrs) || r.Pool != w.pool {
			t.Errorf("%s: got %v from %q (err %v), want %v from %q", name, gotAddrs, r.Pool, r.Err, w.addrs, w.pool)
		}
		if len(w.errs) == 0 && r.Err != nil {
			t.Errorf("%s: unexpected error %v", name, r.Err)
		}
		if len(w.errs) > 0 && r.Err == nil {
			t.Errorf("%s: no error, want %v", name, w.errs)
		}
		for _, e := range w.errs {
			if !errors.Is(r.Err, e) {
				t.Errorf("%s: error %v is not %v", name, r.Err, e)
			}
		}
	}
}

func TestAssign(t *testing.T) {
	lan := pool("lan", true, "192.0.2.1-192.0.2.3", "2001:db8::1-2001:db8::2")
	manual := pool("manual", false, "198.51.100.1-198.51.100.2")
	cases := []struct {
		name     string
		pools    []Pool
		reserved []netip.Addr
		reqs     []Request
		want     map[string]want
	}{
		{name: "older first, whatever the input order",
			pools: []Pool{pool("one", true, "192.0.2.1")},
			reqs:  []Request{svc("young", 2), svc("old", 1)},
			want:  map[string]want{"old": {[]string{"192.0.2.1"}, "one", nil}, "young": {nil, "", []error{ErrExhausted}}}},
		{name: "same age: by name",
			pools: []Pool{pool("one", true, "192.0.2.1")},
			reqs:  []Request{svc("b", 1), svc("a", 1)},
			want:  map[string]want{"a": {[]string{"192.0.2.1"}, "one", nil}, "b": {nil, "", []error{ErrExhausted}}}},
		{name: "lowest free address, empty families are IPv4",
			pools: []Pool{lan},
			reqs:  []Request{svc("a", 1), svc("b", 2)},
			want:  map[string]want{"a": {[]string{"192.0.2.1"}, "lan", nil}, "b": {[]string{"192.0.2.2"}, "lan", nil}}},
		{name: "lowest across a pool's ranges in any order",
			pools: []Pool{pool("p", true, "192.0.2.50-192.0.2.60", "192.0.2.5-192.0.2.6")},
			reqs:  []Request{svc("a", 1)},
			want:  map[string]want{"a": {[]string{"192.0.2.5"}, "p", nil}}},
		{name: "first pool with room, in config order",
			pools: []Pool{pool("first", true, "192.0.2.9"), pool("second", true, "192.0.2.1-192.0.2.2")},
			reqs:  []Request{svc("a", 1), svc("b", 2)},
			want:  map[string]want{"a": {[]string{"192.0.2.9"}, "first", nil}, "b": {[]string{"192.0.2.1"}, "second", nil}}},
		{name: "exhausted when every usable pool is full",
			pools: []Pool{pool("first", true, "192.0.2.9"), pool("second", true, "192.0.2.1"), pool("manual", false, "192.0.2.5")},
			reqs:  []Request{svc("a", 1), svc("b", 2), svc("c", 3)},
			want: map[string]want{"a": {[]string{"192.0.2.9"}, "first", nil}, "b": {[]string{"192.0.2.1"}, "second", nil},
				"c": {nil, "", []error{ErrExhausted}}}},
		{name: "current address kept although a lower one is free",
			pools: []Pool{lan},
			reqs:  []Request{svc("a", 1, current("192.0.2.3")), svc("b", 2)},
			want:  map[string]want{"a": {[]string{"192.0.2.3"}, "lan", nil}, "b": {[]string{"192.0.2.1"}, "lan", nil}}},
		{name: "an older Service choosing freely does not take a younger one's current address",
			pools: []Pool{lan},
			reqs:  []Request{svc("old", 1), svc("young", 2, current("192.0.2.1"))},
			want:  map[string]want{"old": {[]string{"192.0.2.2"}, "lan", nil}, "young": {[]string{"192.0.2.1"}, "lan", nil}}},
		{name: "nor an address a younger one requests",
			pools: []Pool{lan},
			reqs:  []Request{svc("old", 1), svc("young", 2, requested("192.0.2.1"))},
			want:  map[string]want{"old": {[]string{"192.0.2.2"}, "lan", nil}, "young": {[]string{"192.0.2.1"}, "lan", nil}}},
		{name: "an older request wins over a younger current address",
			pools: []Pool{lan},
			reqs:  []Request{svc("old", 1, requested("192.0.2.1")), svc("young", 2, current("192.0.2.1"))},
			want:  map[string]want{"old": {[]string{"192.0.2.1"}, "lan", nil}, "young": {[]string{"192.0.2.2"}, "lan", nil}}},
		{name: "current address held by an older Service: another one",
			pools: []Pool{lan},
			reqs:  []Request{svc("old", 1, current("192.0.2.2")), svc("young", 2, current("192.0.2.2"))},
			want:  map[string]want{"old": {[]string{"192.0.2.2"}, "lan", nil}, "young": {[]string{"192.0.2.1"}, "lan", nil}}},
		{name: "current address outside the named pool: one of the pool",
			pools: []Pool{lan, pool("other", true, "203.0.113.1-203.0.113.2")},
			reqs:  []Request{svc("a", 1, inPool("other"), current("192.0.2.1"))},
			want:  map[string]want{"a": {[]string{"203.0.113.1"}, "other", nil}}},
		{name: "current address in no pool any more: a new one",
			pools: []Pool{lan},
			reqs:  []Request{svc("a", 1, current("10.9.9.9"))},
			want:  map[string]want{"a": {[]string{"192.0.2.1"}, "lan", nil}}},
		{name: "current address of a manual pool, no longer requested: moves to an auto-assign pool",
			pools: []Pool{lan, manual},
			reqs:  []Request{svc("a", 1, current("198.51.100.1"))},
			want:  map[string]want{"a": {[]string{"192.0.2.1"}, "lan", nil}}},
		{name: "current address of a manual pool, requested: kept",
			pools: []Pool{lan, manual},
			reqs:  []Request{svc("a", 1, current("198.51.100.1"), requested("198.51.100.1"))},
			want:  map[string]want{"a": {[]string{"198.51.100.1"}, "manual", nil}}},
		{name: "a request changes the address: the current one is dropped",
			pools: []Pool{lan},
			reqs:  []Request{svc("a", 1, current("192.0.2.1"), requested("192.0.2.3")), svc("b", 2)},
			want:  map[string]want{"a": {[]string{"192.0.2.3"}, "lan", nil}, "b": {[]string{"192.0.2.1"}, "lan", nil}}},
		{name: "requested address of a manual pool without naming it",
			pools: []Pool{lan, manual},
			reqs:  []Request{svc("a", 1, requested("198.51.100.2"))},
			want:  map[string]want{"a": {[]string{"198.51.100.2"}, "manual", nil}}},
		{name: "named manual pool hands out unasked",
			pools: []Pool{lan, manual},
			reqs:  []Request{svc("a", 1, inPool("manual"))},
			want:  map[string]want{"a": {[]string{"198.51.100.1"}, "manual", nil}}},
		{name: "requested address in no pool: an error and no other address",
			pools: []Pool{lan},
			reqs:  []Request{svc("a", 1, requested("10.0.0.1"))},
			want:  map[string]want{"a": {nil, "", []error{ErrNotInPool}}}},
		{name: "requested address outside the named pool",
			pools: []Pool{lan, manual},
			reqs:  []Request{svc("a", 1, inPool("lan"), requested("198.51.100.1"))},
			want:  map[string]want{"a": {nil, "", []error{ErrNotInPool}}}},
		{name: "requested address held by an older Service: taken, no other address",
			pools: []Pool{lan},
			reqs:  []Request{svc("old", 1, current("192.0.2.2")), svc("young", 2, requested("192.0.2.2"))},
			want:  map[string]want{"old": {[]string{"192.0.2.2"}, "lan", nil}, "young": {nil, "", []error{ErrTaken}}}},
		{name: "requested address reserved: taken",
			pools: []Pool{lan}, reserved: addrs("192.0.2.1"),
			reqs: []Request{svc("a", 1, requested("192.0.2.1"))},
			want: map[string]want{"a": {nil, "", []error{ErrTaken}}}},
		{name: "reserved addresses are not handed out",
			pools: []Pool{lan}, reserved: addrs("192.0.2.1", "192.0.2.3"),
			reqs: []Request{svc("a", 1), svc("b", 2)},
			want: map[string]want{"a": {[]string{"192.0.2.2"}, "lan", nil}, "b": {nil, "", []error{ErrExhausted}}}},
		{name: "a reserved current address stays with its Service",
			pools: []Pool{lan}, reserved: addrs("192.0.2.1"),
			reqs: []Request{svc("a", 1, current("192.0.2.1"))},
			want: map[string]want{"a": {[]string{"192.0.2.1"}, "lan", nil}}},
		{name: "unknown pool",
			pools: []Pool{lan},
			reqs:  []Request{svc("a", 1, inPool("nope"), current("192.0.2.1"), families(IPv4, IPv6))},
			want:  map[string]want{"a": {nil, "", []error{ErrUnknownPool}}}},
		{name: "no pool of the family",
			pools: []Pool{pool("v4", true, "192.0.2.1-192.0.2.9")},
			reqs:  []Request{svc("a", 1, families(IPv6))},
			want:  map[string]want{"a": {nil, "", []error{ErrNoPool}}}},
		{name: "no auto-assign pool",
			pools: []Pool{manual},
			reqs:  []Request{svc("a", 1)},
			want:  map[string]want{"a": {nil, "", []error{ErrNoPool}}}},
		{name: "dual stack in the order asked, pool of the first address",
			pools: []Pool{pool("v4", true, "192.0.2.1"), pool("v6", true, "2001:db8::1")},
			reqs:  []Request{svc("a", 1, families(IPv6, IPv4))},
			want:  map[string]want{"a": {[]string{"2001:db8::1", "192.0.2.1"}, "v6", nil}}},
		{name: "partial dual stack: what can be given, and the error",
			pools: []Pool{pool("lan", true, "192.0.2.1-192.0.2.2", "2001:db8::1")},
			reqs:  []Request{svc("a", 1, families(IPv6)), svc("b", 2, families(IPv6, IPv4))},
			want: map[string]want{"a": {[]string{"2001:db8::1"}, "lan", nil},
				"b": {[]string{"192.0.2.1"}, "lan", []error{ErrExhausted}}}},
		{name: "both families fail: both reasons",
			pools: []Pool{pool("v4", true, "192.0.2.1")},
			reqs:  []Request{svc("a", 1, requested("10.0.0.1"), families(IPv4, IPv6))},
			want:  map[string]want{"a": {nil, "", []error{ErrNotInPool, ErrNoPool}}}},
		{name: "a request of one family leaves the other free",
			pools: []Pool{lan},
			reqs:  []Request{svc("a", 1, requested("2001:db8::2"), families(IPv4, IPv6))},
			want:  map[string]want{"a": {[]string{"192.0.2.1", "2001:db8::2"}, "lan", nil}}},
		{name: "repeated family: one address",
			pools: []Pool{lan},
			reqs:  []Request{svc("a", 1, families(IPv4, IPv4))},
			want:  map[string]want{"a": {[]string{"192.0.2.1"}, "lan", nil}}},
		{name: "IPv4-mapped and zoned addresses read as plain ones",
			pools: []Pool{lan},
			reqs:  []Request{svc("a", 1, current("::ffff:192.0.2.3")), svc("b", 2, requested("2001:db8::2%eth0"), families(IPv6))},
			want:  map[string]want{"a": {[]string{"192.0.2.3"}, "lan", nil}, "b": {[]string{"2001:db8::2"}, "lan", nil}}},
		{name: "sharing: same key, other ports: one address",
			pools: []Pool{lan},
			reqs:  []Request{svc("a", 1, sharing("k", "80/TCP")), svc("b", 2, sharing("k", "443/TCP")), svc("c", 3, sharing("k", "53/UDP", "53/TCP"))},
			want: map[string]want{"a": {[]string{"192.0.2.1"}, "lan", nil}, "b": {[]string{"192.0.2.1"}, "lan", nil},
				"c": {[]string{"192.0.2.1"}, "lan", nil}}},
		{name: "sharing: TCP and UDP of one number do not clash; no protocol is TCP",
			pools: []Pool{lan},
			reqs:  []Request{svc("a", 1, sharing("k", "53/UDP")), svc("b", 2, sharing("k", "53/tcp")), svc("c", 3, sharing("k", "53/"))},
			want: map[string]want{"a": {[]string{"192.0.2.1"}, "lan", nil}, "b": {[]string{"192.0.2.1"}, "lan", nil},
				"c": {[]string{"192.0.2.2"}, "lan", nil}}},
		{name: "sharing: a clash with any holder keeps a Service out",
			pools: []Pool{lan},
			reqs: []Request{svc("a", 1, sharing("k", "80/TCP")), svc("b", 2, sharing("k", "443/TCP")),
				svc("c", 3, sharing("k", "8080/TCP", "443/TCP"))},
			want: map[string]want{"a": {[]string{"192.0.2.1"}, "lan", nil}, "b": {[]string{"192.0.2.1"}, "lan", nil},
				"c": {[]string{"192.0.2.2"}, "lan", nil}}},
		{name: "sharing: other keys and no key never share",
			pools: []Pool{lan},
			reqs:  []Request{svc("a", 1, sharing("k", "80/TCP")), svc("b", 2, sharing("j", "443/TCP")), svc("c", 3, sharing("", "22/TCP"))},
			want: map[string]want{"a": {[]string{"192.0.2.1"}, "lan", nil}, "b": {[]string{"192.0.2.2"}, "lan", nil},
				"c": {[]string{"192.0.2.3"}, "lan", nil}}},
		{name: "sharing: a shared address is joined before a lower free one",
			pools: []Pool{lan},
			reqs:  []Request{svc("a", 1, sharing("k", "80/TCP"), current("192.0.2.3")), svc("b", 2, sharing("k", "443/TCP"))},
			want:  map[string]want{"a": {[]string{"192.0.2.3"}, "lan", nil}, "b": {[]string{"192.0.2.3"}, "lan", nil}}},
		{name: "sharing: a requested shared address",
			pools: []Pool{lan},
			reqs: []Request{svc("a", 1, sharing("k", "80/TCP"), current("192.0.2.2")), svc("b", 2, sharing("k", "443/TCP"), requested("192.0.2.2")),
				svc("c", 3, sharing("k", "80/TCP"), requested("192.0.2.2"))},
			want: map[string]want{"a": {[]string{"192.0.2.2"}, "lan", nil}, "b": {[]string{"192.0.2.2"}, "lan", nil},
				"c": {nil, "", []error{ErrTaken}}}},
		{name: "sharing: a current address shared with an older clashing Service is given up",
			pools: []Pool{lan},
			reqs:  []Request{svc("a", 1, sharing("k", "80/TCP"), current("192.0.2.1")), svc("b", 2, sharing("k", "80/TCP"), current("192.0.2.1"))},
			want:  map[string]want{"a": {[]string{"192.0.2.1"}, "lan", nil}, "b": {[]string{"192.0.2.2"}, "lan", nil}}},
		{name: "sharing: reserved shared addresses are not joined",
			pools: []Pool{lan}, reserved: addrs("192.0.2.1"),
			reqs: []Request{svc("a", 1, sharing("k", "80/TCP"), current("192.0.2.1")), svc("b", 2, sharing("k", "443/TCP"))},
			want: map[string]want{"a": {[]string{"192.0.2.1"}, "lan", nil}, "b": {[]string{"192.0.2.2"}, "lan", nil}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check(t, Assign(tc.pools, tc.reqs, tc.reserved), tc.want)
		})
	}
}
