// Package l2slot plans the layer-2 announcement of many addresses over a
// pool's nodes with a few VRRP groups, slots, instead of one per address:
// VRRP's 255 router ids per segment then bound the nodes, not the
// addresses. There is a slot per ordered pair of nodes (first choice,
// heir), named "node/heir", with a VRID derived from cluster, pool and
// name, and a priority order of every node: the first choice, its heir,
// then the ring. Each address goes to one node, then to one of that node's
// slots, and the slot's master configures and announces it
// (vrrp.Instance.SetExtra). Liveness stays on the wire: a dead node's
// slots move to their heirs at VRRP speed, whatever the API does, and as
// each node's addresses are spread over all its heirs, the survivors stay
// balanced. With too few free VRIDs for every pair, each node gets as many
// heirs as they allow (Plan.Heirs, Plan.Limited).
//
// It is pure and deterministic: every node computes the same plan from the
// same nodes and addresses, in whatever order it got them, so no
// coordination is needed. The assignment is balanced (per node at most one
// address more than the least, also after any one node dies) and stable:
// rendezvous hashing under a load bound, so a node joining or leaving moves
// little more than the share that must move. It decides; vrrp and vip act.
package l2slot

import (
	"cmp"
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
	// Budget, when above 0, is the most VRIDs the plan may use (several
	// pools share a segment's 255).
	Budget int
}

// Slot is one VRRP group of the plan: addresses that one node carries
// first and one survivor, its heir, takes over when that node dies. A node
// has a slot for each of its heirs, so its addresses spread over them all
// when it dies, not onto one survivor.
type Slot struct {
	Node  string       // first choice
	Heir  string       // first backup; "" when the pool has one node
	VRID  uint8        // derived from cluster, pool and Name
	Nodes []string     // priority order: Node, Heir, then the ring from Node
	Addrs []netip.Addr // assigned to the slot, sorted
}

// Name names the slot among its pool's: "NODE/HEIR", or "NODE" alone.
func (s Slot) Name() string {
	if s.Heir == "" {
		return s.Node
	}
	return s.Node + "/" + s.Heir
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
	Slots      []Slot       // sorted by Node, then Heir
	Unassigned []netip.Addr // addresses no allowed slot exists for, sorted
	// Heirs is how many survivors share a dead node's addresses: every
	// other node, unless the VRIDs left on the segment (Input.Budget,
	// Taken) do not suffice for a slot per pair of nodes; then each node
	// has this many heirs, the next ones on the ring.
	Heirs int
}

// Limited reports whether a dead node's addresses spread over fewer than
// all the survivors, for want of VRIDs.
func (p Plan) Limited() bool {
	nodes := map[string]bool{}
	for _, s := range p.Slots {
		nodes[s.Node] = true
	}
	return p.Heirs < len(nodes)-1
}

// Slot returns the slot named name (Slot.Name).
func (p Plan) Slot(name string) (Slot, bool) {
	for _, s := range p.Slots {
		if s.Name() == name {
			return s, true
		}
	}
	return Slot{}, false
}

// SlotOf returns the slot that carries a.
func (p Plan) SlotOf(a netip.Addr) (Slot, bool) {
	for _, s := range p.Slots {
		if _, ok := slices.BinarySearchFunc(s.Addrs, a, netip.Addr.Compare); ok {
			return s, true
		}
	}
	return Slot{}, false
}

// Owner returns the first-choice node of the slot that carries a.
func (p Plan) Owner(a netip.Addr) (string, bool) {
	s, ok := p.SlotOf(a)
	return s.Node, ok
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
	n := len(nodes)
	if n == 0 {
		return Plan{}, ErrNoNodes
	}
	if n > pool.TopPriority {
		return Plan{}, fmt.Errorf("%w: %d nodes", ErrTooMany, n)
	}
	taken := [256]bool{0: true}
	for _, v := range in.Taken {
		taken[v] = true
	}
	free := 0
	for _, t := range taken {
		if !t {
			free++
		}
	}
	if in.Budget > 0 {
		free = min(free, in.Budget)
	}
	if free < n {
		return Plan{}, fmt.Errorf("pool %s: %d nodes, %d VRIDs free: %w", in.Pool, n, free, ErrNoFreeVRID)
	}
	// A slot per ordered pair of nodes when the VRIDs allow, else as many
	// heirs per node as they do: the next nodes on the ring, so that every
	// node is the heir of as many others as it has heirs.
	heirs := min(n-1, free/n)
	plan := Plan{Heirs: heirs}
	for i, node := range nodes {
		ring := pool.Rank(nodes, i, 0) // node, then the next ones round the ring
		if heirs == 0 {
			plan.Slots = append(plan.Slots, Slot{Node: node, Nodes: ring})
		}
		for j := 1; j <= heirs; j++ {
			order := append([]string{node, ring[j]}, slices.Delete(slices.Clone(ring[1:]), j-1, j)...)
			plan.Slots = append(plan.Slots, Slot{Node: node, Heir: ring[j], Nodes: order})
		}
	}
	slices.SortFunc(plan.Slots, func(a, b Slot) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), strings.Compare(a.Heir, b.Heir))
	})
	// Collisions are resolved in an order fixed by each slot's own name,
	// not by the nodes around it: a node joining or leaving changes the
	// VRID of a slot that stays only if a new slot lands on it.
	byRank := make([]int, len(plan.Slots))
	for i := range byRank {
		byRank[i] = i
	}
	rank := func(i int) uint64 {
		return mix(uint64(DeriveVRID(in.Cluster, in.Pool, plan.Slots[i].Name())) ^ nameHash(plan.Slots[i].Name()))
	}
	slices.SortFunc(byRank, func(a, b int) int {
		return cmp.Or(cmp.Compare(rank(a), rank(b)), strings.Compare(plan.Slots[a].Name(), plan.Slots[b].Name()))
	})
	for _, i := range byRank {
		v, err := freeVRID(DeriveVRID(in.Cluster, in.Pool, plan.Slots[i].Name()), &taken)
		if err != nil {
			return Plan{}, fmt.Errorf("pool %s, slot %s: %w", in.Pool, plan.Slots[i].Name(), err)
		}
		plan.Slots[i].VRID = v
	}
	assign(&plan, nodes, in)
	return plan, nil
}

func nameHash(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// DeriveVRID is the VRID of the slot named name before collisions are
// resolved: the same as config.DeriveVRID gives an instance named
// "pool/name".
func DeriveVRID(cluster, pool, name string) uint8 {
	h := fnv.New32a()
	h.Write([]byte(cluster + "/" + pool + "/" + name))
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

// assign spreads the addresses over the nodes first (spread), then each
// node's over its slots (heirs).
func assign(plan *Plan, nodes []string, in Input) {
	idx := map[string]int{}
	for i, n := range nodes {
		idx[n] = i
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
	byNode := spread(items, nodes)
	load := make([]int, len(nodes))
	for i, its := range byNode {
		load[i] = len(its)
	}
	for i, its := range byNode {
		var mine []int // this node's slots
		for j, s := range plan.Slots {
			if s.Node == nodes[i] {
				mine = append(mine, j)
			}
		}
		for k, it := range heirs(plan, mine, its, idx, load) {
			plan.Slots[k].Addrs = append(plan.Slots[k].Addrs, it...)
		}
	}
	for i := range plan.Slots {
		slices.SortFunc(plan.Slots[i].Addrs, netip.Addr.Compare)
	}
}

// item is an address to place, with the nodes allowed for it.
type item struct {
	a       netip.Addr
	allowed []int // node indices, sorted; nil: all
	group   string
	key     uint64
}

// width is how many of k nodes the item may go to.
func (it item) width(k int) int {
	if it.allowed == nil {
		return k
	}
	return len(it.allowed)
}

// byPlace sorts items the most restricted first, then in an order fixed by
// each address alone, so that the same addresses come last, and yield, in
// every plan.
func byPlace(items []item, k int) {
	slices.SortFunc(items, func(x, y item) int {
		return cmp.Or(x.width(k)-y.width(k), cmp.Compare(x.key, y.key), x.a.Compare(y.a))
	})
}

// spread puts each address on a node: in byPlace order, each takes its
// highest-scoring allowed node that has room, where room is the exact
// balance: with n addresses over k nodes, n mod k nodes may hold n/k + 1,
// the others n/k. An address whose allowed nodes are all full goes to the
// least loaded of them, so restrictions bend the balance only as far as
// they must.
func spread(items []item, nodes []string) [][]item {
	k := len(nodes)
	byPlace(items, k)
	all := make([]int, k)
	for i := range all {
		all[i] = i
	}
	// The whole plan is one balance; the addresses with one same set of
	// allowed nodes are another, among those nodes.
	total := newBalance(len(items), k)
	groups := map[string]*balance{}
	size := map[string]int{}
	for _, it := range items {
		size[it.group]++
	}
	out := make([][]item, k)
	for _, it := range items {
		cands, g := it.allowed, groups[it.group]
		if cands == nil {
			cands = all
		} else if g == nil {
			g = newBalance(size[it.group], len(cands))
			groups[it.group] = g
		}
		// The best-scoring node with room in both balances, else with room
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
			sc := score(it.a, nodes[s])
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
		out[best] = append(out[best], it)
	}
	return out
}

// heirs splits one node's addresses over its slots (mine, indices into
// plan.Slots), and returns them by slot. The shares are water-filled: each
// next address's share goes to the heir whose own load plus share so far is
// the least, so that when the node dies its survivors end up within one
// address of each other, as the balance of spread had them. Within the
// shares, an address goes to its highest-scoring heir with room, and an
// externalTrafficPolicy Local address to an heir that has an endpoint when
// one does, so that its failover lands on an endpoint too.
func heirs(plan *Plan, mine []int, its []item, idx map[string]int, load []int) map[int][]netip.Addr {
	out := map[int][]netip.Addr{}
	if len(its) == 0 {
		return out
	}
	if len(mine) == 1 {
		for _, it := range its {
			out[mine[0]] = append(out[mine[0]], it.a)
		}
		return out
	}
	room := map[int]int{}
	for range its {
		best := -1
		for _, s := range mine {
			h := idx[plan.Slots[s].Heir]
			if best < 0 || load[h]+room[s] < load[idx[plan.Slots[best].Heir]]+room[best] {
				best = s
			}
		}
		room[best]++
	}
	byPlace(its, len(load))
	for _, it := range its {
		cands := mine
		if it.allowed != nil {
			var ok []int
			for _, s := range mine {
				if slices.Contains(it.allowed, idx[plan.Slots[s].Heir]) {
					ok = append(ok, s)
				}
			}
			if len(ok) > 0 {
				cands = ok
			}
		}
		// The best-scoring heir with room, else the one with the most.
		best, bestRoom, bestScore := -1, 0, uint64(0)
		for _, s := range cands {
			r, sc := min(room[s], 1), score(it.a, plan.Slots[s].Heir)
			if r <= 0 {
				r, sc = 0, ^uint64(-room[s])
			}
			if best < 0 || r > bestRoom || r == bestRoom && sc > bestScore {
				best, bestRoom, bestScore = s, r, sc
			}
		}
		room[best]--
		out[best] = append(out[best], it.a)
	}
	return out
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
