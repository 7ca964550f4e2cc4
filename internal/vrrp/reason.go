package vrrp

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Cause is why a transition happened, as the machine knows it when it
// moves: a closed set that status, logs and metrics tell apart without
// parsing text.
type Cause uint8

// Causes of a transition.
const (
	// CauseStartup: the instance started (Backup, or Master as address
	// owner), or became master at start because no master was heard in
	// the master-down interval.
	CauseStartup Cause = iota + 1
	// CauseMasterDown: the master went silent for the master-down
	// interval (a crash, a cut link, a partition).
	CauseMasterDown
	// CauseHandover: the master sent priority 0 (it shut down, resigned or
	// faulted), and this backup took over after its skew time.
	CauseHandover
	// CausePreempt: this node took over from a master of lower priority.
	CausePreempt
	// CausePreempted: a master of higher priority took over from us.
	CausePreempted
	// CauseTracked: a master of higher priority took over from us because
	// tracking lowered our priority below it (Reason.Tracked says what).
	CauseTracked
	// CauseFault: a tracked item with weight 0 (or the instance's own
	// interface, or the sync group) put the instance in FAULT.
	CauseFault
	// CauseFaultCleared: every fault ended; the instance rejoins.
	CauseFaultCleared
	// CauseResign: an operator resigned the instance (vigil instance
	// resign): priority-0 hand-over, backup until resumed.
	CauseResign
	// CauseSyncGroup: another member of the sync group moved (Claim or
	// Resign).
	CauseSyncGroup
	// CauseShutdown: the daemon stops.
	CauseShutdown
)

var causeNames = [...]string{"", "startup", "master_down", "handover", "preempt", "preempted", "tracked",
	"fault", "fault_cleared", "resign", "sync_group", "shutdown"}

// String is the cause's stable name (logs, JSON, metrics).
func (c Cause) String() string {
	if int(c) >= len(causeNames) || c == 0 {
		return "unknown"
	}
	return causeNames[c]
}

// Tracked is a tracked item that moves the priority or causes a fault now.
type Tracked struct {
	Kind   string // interface, check, endpoints, or group (the sync group's fault)
	Name   string // for group: what the group says
	Weight int    // as configured; 0 means FAULT while down
	Up     bool
}

// String reads "check api-readyz down (weight -50)", "interface eth1 down
// (weight 0)" (weight 0: a fault); a group fault is its own text.
func (t Tracked) String() string {
	if t.Kind == groupKey.kind {
		return t.Name
	}
	state := "down"
	if t.Up {
		state = "up"
	}
	w := fmt.Sprintf("%+d", t.Weight)
	if t.Weight == 0 {
		w = "0"
	}
	return fmt.Sprintf("%s %s %s (weight %s)", t.Kind, t.Name, state, w)
}

// Reason is why a transition happened: its cause and who and what took
// part, filled in by the machine at the moment it moves.
type Reason struct {
	Cause Cause
	// Peer is the other router involved: the master that went silent or
	// handed over, the master we preempted, the one that preempted us.
	Peer netip.Addr
	// PeerPriority is the priority Peer last advertised.
	PeerPriority uint8
	// Priority is ours at the transition; Configured our configured one.
	Priority, Configured uint8
	// Silent is how long the master had been silent (CauseMasterDown).
	Silent time.Duration
	// Tracked are the items that caused the fault (CauseFault) or that
	// moved our priority from the configured one (CauseTracked,
	// CausePreempt, CausePreempted).
	Tracked []Tracked
	// Detail is what the caller said: a sync group's reason, an
	// operator's, "address owner".
	Detail string
}

// String is the reason in words, peers by address.
func (r Reason) String() string { return r.Format(nil) }

// Format is the reason in words, naming each peer as name says (a node
// name); name nil or returning "" leaves the address.
func (r Reason) Format(name func(netip.Addr) string) string {
	peer := "unknown master"
	if r.Peer.IsValid() {
		peer = r.Peer.String()
		if name != nil {
			if n := name(r.Peer); n != "" {
				peer = n + " (" + peer + ")"
			}
		}
	}
	var s string
	switch r.Cause {
	case CauseStartup:
		s = "startup"
		if r.Detail != "" {
			s += ": " + r.Detail
		}
	case CauseMasterDown:
		s = fmt.Sprintf("master down timer expired: %s (priority %d) silent for %s", peer, r.PeerPriority, r.Silent.Round(time.Millisecond))
	case CauseHandover:
		s = fmt.Sprintf("priority-0 hand-over from %s", peer)
	case CausePreempt:
		s = fmt.Sprintf("preempted %s (priority %d < ours %d)", peer, r.PeerPriority, r.Priority)
	case CausePreempted:
		s = fmt.Sprintf("preempted by %s (priority %d > ours %d)", peer, r.PeerPriority, r.Priority)
	case CauseTracked:
		s = fmt.Sprintf("tracking lowered our priority %d to %d: %s (priority %d) took over", r.Configured, r.Priority, peer, r.PeerPriority)
	case CauseFault:
		s = "fault"
	case CauseFaultCleared:
		s = "fault cleared"
	case CauseResign:
		s = "resigned by operator (priority-0 hand-over)"
	case CauseSyncGroup, CauseShutdown:
		s = r.Cause.String()
		if r.Detail != "" {
			s = r.Detail
		}
	default:
		s = r.Cause.String()
	}
	if len(r.Tracked) > 0 {
		s += ": " + strings.Join(r.TrackedStrings(), ", ")
	}
	if r.Detail != "" && r.Cause != CauseStartup && r.Cause != CauseSyncGroup && r.Cause != CauseShutdown {
		s += " (" + r.Detail + ")"
	}
	return s
}

// TrackedStrings are the tracked items in words, for logs and JSON.
func (r Reason) TrackedStrings() []string {
	out := make([]string, len(r.Tracked))
	for i, t := range r.Tracked {
		out[i] = t.String()
	}
	return out
}
