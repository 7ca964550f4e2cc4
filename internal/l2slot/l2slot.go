// Package l2slot plans the layer-2 announcement of many addresses over a
// pool's nodes with one VRRP group per node, a slot, instead of one per
// address: VRRP's 255 router ids per segment then bound the nodes, not the
// addresses. Each slot is named after its first-choice node, has a VRID
// derived from cluster, pool and node, and a priority order of every node;
// each address goes to one slot, and the slot's master configures and
// announces it (vrrp.Instance.SetExtra). Liveness stays on the wire: a dead
// node's slot moves to the next node of its order at VRRP speed, whatever the
// API does.
//
// It is pure and deterministic: every node computes the same plan from the
// same nodes and addresses, in whatever order it got them, so no
// coordination is needed. The assignment is balanced (per slot at most one
// address more than the least) and stable: rendezvous hashing under a load
// bound, so a node joining or leaving moves little more than the share that
// must move. It decides; vrrp and vip act.
package l2slot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"

	"github.com/vigil-lb/vigil/internal/pool"
)

// Input is what a plan is made from.
type Input struct {
	Cluster string
	Pool    string
	// Nodes are the pool's eligible nodes; order and repeats do not matter.
	Nodes []string
	// Addrs are the addresses to announce; order and repeats do not matter.
	Addrs []netip.Addr
	// Allowed, when not nil, restricts addresses to the slots of some
	// first-choice nodes (externalTrafficPolicy: Local: the nodes with a
	// ready endpoint of the address's Service). An address missing from the
	// map may go to any slot; one whose nodes are none of Nodes goes to no
	// slot (Plan.Unassigned).
	Allowed map[netip.Addr][]string
	// Taken are VRIDs that other instances on the segment use; slots avoid
	// them.
	Taken []uint8
}

// Slot is one VRRP group of the plan.
type Slot struct {
	Node  string       // first choice, and the slot's name
	VRID  uint8        // derived from cluster, pool and node
	Nodes []string     // priority order, first choice first
	Addrs []netip.Addr // assigned to the slot, sorted
}

// Priority is node's VRRP priority in the slot, 0 if it is not one of its
// nodes: pool.TopPriority for the first choice, PriorityStep less for each
// next.
//
// The steps are wide: a backup's skew time is (256 - priority) x interval /
// 256, so priorities one apart let two backups of a dead master take over
// within a millisecond of each other, and both announce its addresses
// before one yields (measured in bench/lbsvc). A step of (TopPriority-10)/N
// puts them tens of milliseconds apart.
func (s Slot) Priority(node string) int {
	if i := slices.Index(s.Nodes, node); i >= 0 {
		return pool.TopPriority - i*PriorityStep(len(s.Nodes))
	}
	return 0
}

// PriorityStep is how far apart the priorities of a slot's nodes are.
func PriorityStep(nodes int) int { return max(1, (pool.TopPriority-10)/max(nodes, 1)) }

// Plan is the slots and the assignment of addresses to them.
type Plan struct {
	Slots      []Slot       // sorted by Node
	Unassigned []netip.Addr // addresses no allowed slot exists for, sorted
}

// Slot returns the slot whose first choice is node.
func (p Plan) Slot(node string) (Slot, bool) {
	i, ok := slices.BinarySearchFunc(p.Slots, node, func(s Slot, n string) int { return strings.Compare(s.Node, n) })
	if !ok {
		return Slot{}, false
	}
	return p.Slots[i], true
}

// Owner returns the first-choice node of the slot that carries a.
func (p Plan) Owner(a netip.Addr) (string, bool) {
	for _, s := range p.Slots {
		if _, ok := slices.BinarySearchFunc(s.Addrs, a, netip.Addr.Compare); ok {
			return s.Node, true
		}
	}
	return "", false
}

// Errors of New.
var (
	ErrNoNodes    = errors.New("l2slot: no eligible nodes")
	ErrTooMany    = fmt.Errorf("l2slot: more nodes than VRRP priorities (%d)", pool.TopPriority)
	ErrNoFreeVRID = errors.New("l2slot: no free VRID left on the segment")
)

// New makes the plan.
func New(in Input) (Plan, error) {
	nodes := slices.Clone(in.Nodes)
	slices.Sort(nodes)
	nodes = slices.Compact(nodes)
	if len(nodes) == 0 {
		return Plan{}, ErrNoNodes
	}
	if len(nodes) > pool.TopPriority {
		return Plan{}, fmt.Errorf("%w: %d nodes", ErrTooMany, len(nodes))
	}
	taken := [256]bool{0: true}
	for _, v := range in.Taken {
		taken[v] = true
	}
	plan := Plan{Slots: make([]Slot, len(nodes))}
	for i, n := range nodes {
		v, err := freeVRID(DeriveVRID(in.Cluster, in.Pool, n), &taken)
		if err != nil {
			return Plan{}, fmt.Errorf("pool %s, node %s: %w", in.Pool, n, err)
		}
		// One slot per node: every slot is its node's first, so the ring
		// order (pool.Rank's rotation 0) sends a failed node's slot to the
		// next node, a different survivor for every failed node.
		plan.Slots[i] = Slot{Node: n, VRID: v, Nodes: pool.Rank(nodes, i, 0)}
	}
	assign(&plan, in)
	return plan, nil
}

// DeriveVRID is a slot's VRID before collisions are resolved: the same as
// config.DeriveVRID gives an instance named "pool/node".
func DeriveVRID(cluster, pool, node string) uint8 {
	h := fnv.New32a()
	h.Write([]byte(cluster + "/" + pool + "/" + node))
	return uint8(h.Sum32()%255) + 1
}

// freeVRID takes v, or the next free one after it, cyclically over 1..255.
// Slots resolve in node order, so every node resolves the same way.
func freeVRID(v uint8, taken *[256]bool) (uint8, error) {
	for range 255 {
		if !taken[v] {
			taken[v] = true
			return v, nil
		}
		v = v%255 + 1
	}
	return 0, ErrNoFreeVRID
}

// score is address a's rendezvous weight for node n: the same on every
// host, independent of the other nodes.
func score(a netip.Addr, n string) uint64 {
	h := fnv.New64a()
	b := a.As16()
	h.Write(b[:])
	h.Write([]byte(n))
	return mix(h.Sum64())
}

// mix is a 64-bit finaliser (splitmix64's): FNV alone leaves the order of
// nodes for neighbouring addresses correlated.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// assign spreads the addresses over the slots: each address, in an order
// fixed by its own hash (the most restricted first), takes the slot of its
// highest-scoring allowed node that has room, where room is the exact
// balance: with n addresses over k slots, n mod k slots may hold n/k + 1,
// the others n/k. An address whose allowed slots are all full goes to the
// least loaded of them, so restrictions bend the balance only as far as
// they must.
func assign(plan *Plan, in Input) {
	idx := map[string]int{}
	for i, s := range plan.Slots {
		idx[s.Node] = i
	}
	type item struct {
		a       netip.Addr
		allowed []int // slot indices, sorted; nil: all
		group   string
		key     uint64
	}
	addrs := slices.Clone(in.Addrs)
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	var items []item
	for _, a := range addrs {
		it := item{a: a, key: order(a)}
		if names, ok := in.Allowed[a]; ok && in.Allowed != nil {
			it.allowed = []int{}
			for _, n := range names {
				if i, ok := idx[n]; ok && !slices.Contains(it.allowed, i) {
					it.allowed = append(it.allowed, i)
				}
			}
			if len(it.allowed) == 0 {
				plan.Unassigned = append(plan.Unassigned, a)
				continue
			}
			slices.Sort(it.allowed)
			it.group = fmt.Sprint(it.allowed)
		}
		items = append(items, it)
	}
	k := len(plan.Slots)
	width := func(it item) int {
		if it.allowed == nil {
			return k
		}
		return len(it.allowed)
	}
	slices.SortFunc(items, func(x, y item) int {
		if d := width(x) - width(y); d != 0 {
			return d
		}
		if x.key != y.key {
			if x.key < y.key {
				return -1
			}
			return 1
		}
		return x.a.Compare(y.a)
	})
	all := make([]int, k)
	for i := range all {
		all[i] = i
	}
	// The whole plan is one balance; the addresses with one same set of
	// allowed slots are another, among those slots.
	total := newBalance(len(items), k)
	groups := map[string]*balance{}
	size := map[string]int{}
	for _, it := range items {
		size[it.group]++
	}
	for _, it := range items {
		cands, g := it.allowed, groups[it.group]
		if cands == nil {
			cands = all
		} else if g == nil {
			g = newBalance(size[it.group], len(cands))
			groups[it.group] = g
		}
		// The best-scoring slot with room in both balances, else with room
		// in the group's, else the least loaded.
		best, bestRank, bestScore := -1, 3, uint64(0)
		for _, s := range cands {
			rank := 2
			switch {
			case (g == nil || g.room(s)) && total.room(s):
				rank = 0
			case g != nil && g.room(s):
				rank = 1
			}
			sc := score(it.a, plan.Slots[s].Node)
			if rank == 2 {
				// Among the full ones the least loaded wins.
				sc = ^uint64(total.load[s])
			}
			if rank < bestRank || rank == bestRank && sc > bestScore {
				best, bestRank, bestScore = s, rank, sc
			}
		}
		total.take(best)
		if g != nil {
			g.take(best)
		}
		plan.Slots[best].Addrs = append(plan.Slots[best].Addrs, it.a)
	}
	for i := range plan.Slots {
		slices.SortFunc(plan.Slots[i].Addrs, netip.Addr.Compare)
	}
}

// balance is the exact balance of n addresses over k slots: n mod k slots
// may hold n/k + 1, the others n/k.
type balance struct {
	q, r, over int
	load       map[int]int
}

func newBalance(n, k int) *balance { return &balance{q: n / k, r: n % k, load: map[int]int{}} }

func (b *balance) room(s int) bool { return b.load[s] < b.q || b.load[s] == b.q && b.over < b.r }

func (b *balance) take(s int) {
	if b.load[s] == b.q {
		b.over++
	}
	b.load[s]++
}

// order is an address's place in the assignment, fixed by the address alone
// so that the same addresses come last, and yield, in every plan.
func order(a netip.Addr) uint64 {
	b := a.As16()
	return mix(binary.BigEndian.Uint64(b[:8]) ^ mix(binary.BigEndian.Uint64(b[8:])))
}
