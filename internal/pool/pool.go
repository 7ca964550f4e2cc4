// Package pool spreads several VIPs over several nodes: it ranks the nodes
// for every VIP so that each node is the first choice for an equal share, and
// the VIPs of any one node fall back to different survivors rather than all
// to one. It is pure: the same VIPs and nodes give the same ranking on every
// node, whatever order the config lists them in.
package pool

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// TopPriority is the VRRP priority of a VIP's first choice; the n-th choice
// gets TopPriority - n. It stays below 255, which means address owner.
const TopPriority = 250

// Assignment is the ranking of nodes for one VIP.
type Assignment struct {
	VIP   netip.Prefix
	Nodes []string // first choice first
}

// Priority is the VRRP priority of node for this VIP, 0 if it is not listed.
func (a Assignment) Priority(node string) int {
	if i := slices.Index(a.Nodes, node); i >= 0 {
		return TopPriority - i
	}
	return 0
}

// Assign ranks nodes for each VIP. VIPs and nodes are sorted first, so the
// config's order does not matter. VIP i (in sorted order) has node i mod N
// first; the k-th VIP a node holds first falls back to the k-th of the other
// nodes (cyclically), so a failed node's VIPs spread over the survivors.
func Assign(vips []netip.Prefix, nodes []string) ([]Assignment, error) {
	if len(nodes) == 0 {
		return nil, fmt.Errorf("pool: no nodes")
	}
	if len(nodes) > TopPriority {
		return nil, fmt.Errorf("pool: %d nodes, at most %d", len(nodes), TopPriority)
	}
	if len(nodes) > len(vips) {
		return nil, fmt.Errorf("pool: %d nodes but only %d VIPs: some node would own none", len(nodes), len(vips))
	}
	vs := slices.Clone(vips)
	slices.SortFunc(vs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	ns := slices.Clone(nodes)
	slices.Sort(ns)
	for i := 1; i < len(vs); i++ {
		if vs[i].Addr() == vs[i-1].Addr() {
			return nil, fmt.Errorf("pool: VIP %s listed twice", vs[i].Addr())
		}
	}
	for i := 1; i < len(ns); i++ {
		if ns[i] == ns[i-1] {
			return nil, fmt.Errorf("pool: node %q listed twice", ns[i])
		}
	}
	n := len(ns)
	out := make([]Assignment, len(vs))
	for i, v := range vs {
		out[i] = Assignment{VIP: v, Nodes: Rank(ns, i%n, i/n)}
	}
	return out, nil
}

// Rank is the ranking Assign gives the k-th VIP (from 0) that sorted node
// first holds first: first, then the other nodes in ring order after it,
// rotated by k. Giving a node's k-th VIP the k-th rotation is what spreads
// its VIPs over the survivors when it fails. nodes must be sorted and
// distinct.
func Rank(nodes []string, first, k int) []string {
	n := len(nodes)
	rank := []string{nodes[first]}
	for j := range n - 1 {
		rank = append(rank, nodes[(first+1+(k+j)%(n-1))%n])
	}
	return rank
}

// String renders the ranking, one VIP a line, for `vigil check`.
func String(as []Assignment) string {
	var b strings.Builder
	for _, a := range as {
		fmt.Fprintf(&b, "%s: %s\n", a.VIP, strings.Join(a.Nodes, " > "))
	}
	return b.String()
}
