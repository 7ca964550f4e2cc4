package supervisor

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/pool"
	"github.com/vigil-lb/vigil/internal/vrrp"
)

// This file explains elections for status: who the master is by node name,
// what the last transition was and why, and for pools where each VIP is
// against where it should be. It reads what the instances know; nothing
// here decides anything.

// poolRank is a pool instance's place in its pool.
type poolRank struct {
	pool    string
	ranking []string // node names, the VIP's preferred node first
	// exact: the pool tracks nothing with a weight, so an advertised
	// priority names the node of that rank (pool.TopPriority - rank).
	exact bool
}

// poolRanks returns the ranking of every pool instance of cfg, by
// instance name.
func poolRanks(cfg *config.Config) map[string]poolRank {
	out := map[string]poolRank{}
	for _, pl := range cfg.VRRP.Pools {
		var vips []netip.Prefix
		for _, v := range pl.VIPs {
			if p, err := config.ParseVIP(v); err == nil {
				vips = append(vips, p)
			}
		}
		as, err := pool.Assign(vips, pl.Nodes)
		if err != nil {
			continue // validated: cannot happen
		}
		exact := true
		for _, t := range pl.Track.Interfaces {
			exact = exact && t.Weight == 0
		}
		for _, t := range pl.Track.Checks {
			exact = exact && t.Weight == 0
		}
		for _, t := range pl.Track.Endpoints {
			exact = exact && t.Weight == 0
		}
		for _, a := range as {
			out[pl.Name+"-"+a.VIP.Addr().String()] = poolRank{pool: pl.Name, ranking: a.Nodes, exact: exact}
		}
	}
	return out
}

// nodeAt is the node a pool's ranking puts at an advertised priority, ""
// when the priority is no rank's.
func (r poolRank) nodeAt(prio uint8) string {
	i := pool.TopPriority - int(prio)
	if !r.exact || i < 0 || i >= len(r.ranking) {
		return ""
	}
	return r.ranking[i]
}

// namer names VRRP routers by node.
type namer struct {
	self   string
	local  map[netip.Addr]bool            // this node's advert sources
	static map[netip.Addr]string          // vrrp.peer_names
	kube   func(netip.Addr) string        // Kubernetes Nodes' addresses; nil without
	pools  map[netip.Addr]string          // learned from pool masters' priorities
	ranks  map[string]poolRank            // by instance name
	seen   map[netip.Addr]map[string]bool // names learned for an address (more than one: not used)
}

// newNamer learns names from what the instances know: their own
// addresses, vrrp.peer_names (static), the Kubernetes Nodes, and the
// masters of pool instances whose advertised priority is the rank of one
// node.
func newNamer(self string, static map[netip.Addr]string, kube func(netip.Addr) string, ranks map[string]poolRank, sts []vrrp.Status) *namer {
	n := &namer{self: self, local: map[netip.Addr]bool{}, static: static, kube: kube, pools: map[netip.Addr]string{}, ranks: ranks,
		seen: map[netip.Addr]map[string]bool{}}
	for _, st := range sts {
		if st.Local.IsValid() {
			n.local[st.Local] = true
		}
	}
	for _, st := range sts {
		r, ok := ranks[st.Name]
		if !ok || !st.Master.IsValid() || n.local[st.Master] {
			continue
		}
		if name := r.nodeAt(st.MasterPriority); name != "" {
			if n.seen[st.Master] == nil {
				n.seen[st.Master] = map[string]bool{}
			}
			n.seen[st.Master][name] = true
		}
	}
	for a, names := range n.seen {
		if len(names) == 1 {
			for name := range names {
				n.pools[a] = name
			}
		}
	}
	return n
}

// name is the node name of address a, or "" when unknown.
func (n *namer) name(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return ""
	case n.local[a]:
		return n.self
	case n.static[a] != "":
		return n.static[a]
	}
	if n.kube != nil {
		if name := n.kube(a); name != "" {
			return name
		}
	}
	return n.pools[a]
}

// explain fills the election fields of out from the instance's status.
func (n *namer) explain(out *api.Instance, st vrrp.Status, now time.Time) {
	if st.Master.IsValid() {
		out.MasterNode = n.name(st.Master)
		out.MasterPriority = int(st.MasterPriority)
	}
	for _, t := range st.Tracked {
		out.Tracked = append(out.Tracked, t.String())
	}
	if !st.Last.At.IsZero() {
		r := st.Last.Reason
		tr := &api.Transition{PrevState: st.Last.From.String(), State: st.Last.To.String(), At: st.Last.At,
			Cause: r.Cause.String(), Reason: r.Format(n.name), Priority: int(st.Last.Priority)}
		if r.Peer.IsValid() {
			tr.Peer, tr.PeerNode, tr.PeerPriority = r.Peer.String(), n.name(r.Peer), int(r.PeerPriority)
		}
		if len(r.Tracked) > 0 {
			tr.Tracked = r.TrackedStrings()
		}
		out.LastTransition = tr
	}
	if r, ok := n.ranks[st.Name]; ok {
		out.Pool = n.poolWhy(r, st, out.MasterNode, now)
	}
}

// poolWhy says whether a pool VIP is on its preferred node, and why or
// why not, from this node's point of view: its own state says why it does
// or does not hold the VIP; of another master it knows the name (when it
// could learn it) and the priority.
func (n *namer) poolWhy(r poolRank, st vrrp.Status, master string, now time.Time) *api.PoolVIP {
	p := &api.PoolVIP{Pool: r.pool, Ranking: r.ranking, Preferred: r.ranking[0]}
	choice := func(node string) string {
		for i, x := range r.ranking {
			if x == node {
				return fmt.Sprintf("choice %d of %d", i+1, len(r.ranking))
			}
		}
		return "not in the pool"
	}
	holder := master
	if holder == "" && st.Master.IsValid() {
		holder = fmt.Sprintf("%s (priority %d)", st.Master, st.MasterPriority)
	}
	preferredHere := r.ranking[0] == n.self
	switch {
	case st.State == vrrp.Master && preferredHere:
		p.OnPreferred, p.Why = true, "here, its preferred node"
	case st.State == vrrp.Master:
		p.Why = fmt.Sprintf("here (%s): %s is not advertising (down, in fault, resigned, or waiting out move_back_delay)",
			choice(n.self), r.ranking[0])
	case preferredHere:
		p.Why = "not here: " + n.notHere(st, now)
		if holder != "" {
			p.Why += "; held by " + holder
		}
	case master == r.ranking[0]:
		p.OnPreferred, p.Why = true, "on its preferred node"
	case master != "":
		p.Why = fmt.Sprintf("on %s (%s): %s is not advertising", master, choice(master), r.ranking[0])
	case holder != "":
		p.Why = "held by " + holder + " (node unknown)"
	default:
		p.Why = "no master heard"
	}
	return p
}

// notHere is why this node, the preferred one, does not hold the VIP.
func (n *namer) notHere(st vrrp.Status, now time.Time) string {
	var faults, lowered []string
	for _, t := range st.Tracked {
		if t.Weight == 0 {
			faults = append(faults, t.String())
		} else {
			lowered = append(lowered, t.String())
		}
	}
	switch {
	case st.State == vrrp.Fault:
		return "in fault: " + strings.Join(faults, ", ")
	case st.Resigned:
		return "resigned by an operator (vigil instance resume takes it back)"
	case st.State != vrrp.Backup:
		return strings.ToLower(st.State.String())
	case now.Before(st.PreemptFrom):
		return fmt.Sprintf("moves back in %s (move_back_delay)", st.PreemptFrom.Sub(now).Round(100*time.Millisecond))
	case st.Priority < st.Configured:
		return fmt.Sprintf("tracking lowered its priority to %d: %s", st.Priority, strings.Join(lowered, ", "))
	}
	return "backup, taking it back at the next master-down interval"
}
