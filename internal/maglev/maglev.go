// Package maglev builds the lookup table of Maglev consistent hashing
// (Eisenbud et al., NSDI 2016): every balancer with the same backend set
// builds the same table, each backend owns a near-equal (or weighted) share
// of it, and removing one backend moves few entries of the others.
//
// Memory is O(M + N): each backend's permutation is walked, never stored.
package maglev

import (
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
)

// DefaultSize is the table size M: a prime, about 650 entries per backend
// at 100 backends.
const DefaultSize = 65537

// Backend is one table member. Name identifies it on every node (use the
// address); Weight 0 takes no entries.
type Backend struct {
	Name   string
	Weight uint32
}

// Table maps a flow hash to a backend index (into Backends()).
type Table struct {
	entries  []int32
	backends []Backend
}

// New builds a table of size m (a prime) for backends. Their order does not
// matter: they are sorted by name first, so every node builds the same table.
func New(backends []Backend, m int) (*Table, error) {
	if !isPrime(m) {
		return nil, fmt.Errorf("maglev: table size %d is not a prime", m)
	}
	bs := slices.Clone(backends)
	slices.SortFunc(bs, func(a, b Backend) int { return strings.Compare(a.Name, b.Name) })
	var maxW uint64
	for i, b := range bs {
		if i > 0 && bs[i-1].Name == b.Name {
			return nil, fmt.Errorf("maglev: backend %q listed twice", b.Name)
		}
		maxW = max(maxW, uint64(b.Weight))
	}
	t := &Table{entries: make([]int32, m), backends: bs}
	if maxW == 0 {
		if len(bs) == 0 {
			return t, nil
		}
		return nil, errors.New("maglev: every backend has weight 0")
	}
	if len(bs) > m {
		return nil, fmt.Errorf("maglev: %d backends do not fit a table of %d", len(bs), m)
	}
	// pos is where each backend's permutation stands (offset + j*skip mod m,
	// kept incrementally); credit accumulates weight so a backend of weight w
	// takes w/maxW of a turn per round.
	mm := uint32(m)
	pos := make([]uint32, len(bs))
	skip := make([]uint32, len(bs))
	credit := make([]uint64, len(bs))
	for i, b := range bs {
		h1, h2 := hashes(b.Name)
		pos[i] = uint32(h1 % uint64(m))
		skip[i] = uint32(h2%uint64(m-1)) + 1
	}
	// Probing tests a bitset of taken entries: it stays in cache (8 KiB at
	// M=65537) where the entries would not.
	taken := make([]uint64, (m+63)/64)
	filled := 0
	for filled < m {
		for i := range bs {
			credit[i] += uint64(bs[i].Weight)
			for credit[i] >= maxW && filled < m {
				credit[i] -= maxW
				c, sk := pos[i], skip[i]
				for taken[c>>6]&(1<<(c&63)) != 0 {
					if c += sk; c >= mm {
						c -= mm
					}
				}
				taken[c>>6] |= 1 << (c & 63)
				t.entries[c] = int32(i)
				if c += sk; c >= mm {
					c -= mm
				}
				pos[i] = c
				filled++
			}
		}
	}
	return t, nil
}

// hashes are the offset and skip hashes of a name: FNV-1a 64 of the name
// with two different prefixes, finished with a SplitMix64 mix so nearby
// names (10.0.0.1:80, 10.0.0.2:80) land far apart.
func hashes(name string) (uint64, uint64) {
	h := func(salt byte) uint64 {
		f := fnv.New64a()
		f.Write([]byte{salt})
		f.Write([]byte(name))
		return mix(f.Sum64())
	}
	return h('o'), h('s')
}

func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// Lookup returns the backend index for a 32-bit flow hash, or -1 for an
// empty table. It maps the hash onto the table by multiplication (Lemire's
// reduction) instead of a division; the XDP program does the same.
func (t *Table) Lookup(hash uint32) int {
	if len(t.backends) == 0 {
		return -1
	}
	return int(t.entries[uint64(hash)*uint64(len(t.entries))>>32])
}

// Backends are the members in table order (sorted by name).
func (t *Table) Backends() []Backend { return t.backends }

// Size is M.
func (t *Table) Size() int { return len(t.entries) }

// Entries returns the table: entry i holds a backend index.
func (t *Table) Entries() []int32 { return t.entries }

// Counts returns how many entries each backend owns.
func (t *Table) Counts() []int {
	out := make([]int, len(t.backends))
	for _, e := range t.entries {
		if e >= 0 {
			out[e]++
		}
	}
	return out
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}
