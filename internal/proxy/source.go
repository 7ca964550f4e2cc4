package proxy

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vigil-lb/vigil/internal/maglev"
)

// sourceRing serves algorithm maglev: a client's address hashes to an entry
// of a Maglev table over the config's backends, and that entry's backend
// takes the connection. A client keeps its backend for as long as the
// backend set stays (HAProxy's balance source with hash-type consistent,
// IPVS's sh), every node with the same backends makes the same choice, so a
// VIP moving to another node keeps its clients on their backends, and a
// change of the set moves few clients.
type sourceRing struct {
	table   *maglev.Table
	members []*Backend // by table index
}

// newSourceRing builds the table with the weights the config gives; a
// backend of weight 0 takes no entries.
func newSourceRing(backends []*Backend, weights []int32) (*sourceRing, error) {
	byName := map[string]*Backend{}
	var mb []maglev.Backend
	for i, be := range backends {
		if weights[i] > 0 {
			name := be.Addr.String()
			byName[name] = be
			mb = append(mb, maglev.Backend{Name: name, Weight: uint32(weights[i])})
		}
	}
	t, err := maglev.New(mb, maglev.DefaultSize)
	if err != nil {
		return nil, fmt.Errorf("algorithm maglev: %w", err)
	}
	r := &sourceRing{table: t}
	for _, m := range t.Backends() {
		r.members = append(r.members, byName[m.Name])
	}
	return r, nil
}

// pick returns the backend for a client: its entry's, or when that one may
// not take it (down, full, tried already) the next entry's that may. Entries
// of one backend lie spread over the table, so a backend's clients spread
// over the others while it is out, and come back to it when it returns,
// without moving anyone else.
func (r *sourceRing) pick(src netip.Addr, eligible func(*Backend) bool) *Backend {
	entries := r.table.Entries()
	m := uint64(len(entries))
	if len(r.members) == 0 {
		return nil
	}
	start := sourceHash(src) * m >> 32
	if be := r.members[entries[start]]; eligible(be) {
		return be
	}
	if !slices.ContainsFunc(r.members, eligible) {
		return nil // nobody may: no walk over the whole table
	}
	for step := uint64(1); step < m; step++ {
		if be := r.members[entries[(start+step)%m]]; eligible(be) {
			return be
		}
	}
	return nil // the eligible ones own no entry (weights far apart)
}

// sourceHash hashes a client address (FNV-1a over its 16-byte form, so an
// IPv4 address and its IPv4-mapped IPv6 form are the same client, then
// MurmurHash3's finaliser, so neighbouring addresses land far apart): the
// same on every node and every run.
func sourceHash(a netip.Addr) uint64 {
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for _, b := range a.Unmap().As16() {
		h = (h ^ uint32(b)) * prime
	}
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return uint64(h)
}
