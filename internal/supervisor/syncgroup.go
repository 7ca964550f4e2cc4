package supervisor

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/vigil-lb/vigil/internal/notify"
	"github.com/vigil-lb/vigil/internal/vrrp"
)

// syncGroup keeps its instances in the same state, as keepalived's
// vrrp_sync_group: one member in FAULT puts all in FAULT; one member becoming
// master pulls the others up; one member pushed back to backup by a better
// master takes the others down with it. Members should carry the same
// priorities on each node, or the group can chase itself as in keepalived.
type syncGroup struct {
	name    string
	members []*vrrp.Instance
	hook    *notify.Hook
	log     *slog.Logger

	mu      sync.Mutex
	faulted map[string]bool
	state   vrrp.State
}

// ownFault records a member's own fault (its tracking, not the group) and
// gives every member a group fault while any other member has one.
func (g *syncGroup) ownFault(from *vrrp.Instance, fault bool) {
	g.mu.Lock()
	if fault {
		g.faulted[from.Name()] = true
	} else {
		delete(g.faulted, from.Name())
	}
	// Hand out the updates under the lock: a member keeps only the latest
	// group fault it was given, so of two members reporting at once the one
	// with the newer view must be the last to hand out. SetGroupFault only
	// records the state for the member's Run goroutine, so this does not block.
	defer g.mu.Unlock()
	for _, m := range g.members {
		var others []string
		for name := range g.faulted {
			if name != m.Name() {
				others = append(others, name)
			}
		}
		slices.Sort(others)
		m.SetGroupFault(len(others) > 0, fmt.Sprintf("sync group %s: %v in fault", g.name, others))
	}
}

// transition runs on the member's goroutine; the calls it makes on other
// members are queued to theirs, so nothing here blocks or recurses.
func (g *syncGroup) transition(from *vrrp.Instance, t vrrp.Transition) {
	g.mu.Lock()
	changed := g.state != t.To
	g.state = t.To
	g.mu.Unlock()
	reason := "sync group " + g.name + ": member " + from.Name() + " became " + t.To.String()
	switch {
	case t.To == vrrp.Master:
		for _, m := range g.members {
			if m != from {
				m.Claim(reason)
			}
		}
	case t.From == vrrp.Master && t.To == vrrp.Backup:
		for _, m := range g.members {
			if m != from {
				m.Resign(reason)
			}
		}
	}
	if changed {
		g.log.Info("sync group state", "to", t.To.String(), "member", from.Name())
		g.hook.Notify("GROUP", g.name, t.To.String(), int(t.Priority))
	}
}
