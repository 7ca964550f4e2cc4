package vrrp

import (
	"net/netip"
	"time"
)

// State is a VRRP router state (RFC 5798 section 6.4) plus Fault, which
// keepalived users know: a tracked interface or check says this node must not
// be master, so it neither advertises nor takes over.
type State int

// States in the order a router normally passes through them.
const (
	Initialize State = iota
	Backup
	Master
	Fault
	Stopped
)

var stateNames = [...]string{"INIT", "BACKUP", "MASTER", "FAULT", "STOP"}

func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return "UNKNOWN"
	}
	return stateNames[s]
}

// Clock tells the time. The machine never sleeps or starts timers itself: its
// owner asks NextDeadline and calls Tick then, so a fake clock drives it
// deterministically in tests.
type Clock interface {
	Now() time.Time
}

// Link is what the machine does to the world. Each call is a decision; the
// implementation (sockets, netlink, gratuitous ARP) lives elsewhere.
type Link interface {
	// Advertise sends one advertisement with the given priority.
	Advertise(priority uint8)
	// TakeOver configures the virtual addresses and announces them (GARP/NA).
	TakeOver()
	// Release removes the virtual addresses.
	Release()
	// Reannounce repeats the announcement of addresses already held, after
	// a split brain heals, so switches and routers learn the master again.
	Reannounce()
}

// Params are the fixed settings of one VRRP instance.
type Params struct {
	Version      uint8         // 2 or 3
	Priority     uint8         // configured priority, 1..255
	Interval     time.Duration // advertisement interval
	Preempt      bool          // take over from a lower-priority master
	PreemptDelay time.Duration // after start, wait this long before preempting
	LocalAddr    netip.Addr    // primary address, breaks priority ties
}

// Advert is what the machine needs from a received, validated advertisement.
type Advert struct {
	Source   netip.Addr
	Priority uint8
	Interval time.Duration
}

// Transition describes one state change, for logs, notify hooks, status and
// metrics.
type Transition struct {
	From, To State
	// Reason is why, as the machine knew it when it moved.
	Reason   Reason
	Priority uint8 // ours after the change
	At       time.Time
}

// Machine is the VRRP election for one virtual router. It is not safe for
// concurrent use: its owner serialises calls (see Instance).
type Machine struct {
	p     Params
	clock Clock
	link  Link
	// OnTransition, when set, hears about every state change.
	OnTransition func(Transition)

	state       State
	priority    uint8 // effective priority: configured plus tracking
	fault       bool
	resigned    bool          // an operator's resign: stay backup until resumed
	masterAdv   time.Duration // Master_Adver_Interval learned from the master (v3)
	masterDown  time.Time     // Master_Down_Timer expiry; zero when not running
	advertAt    time.Time     // Adver_Timer expiry; zero when not running
	preemptFrom time.Time     // no preemption before this time
	lastReclaim time.Time     // last re-announcement after a lower-priority advert
	master      netip.Addr    // who we believe is master (ourselves when Master)
	masterPrio  uint8         // the priority master last advertised (ours when Master)
	lastHeard   time.Time     // when master's last advert came
	// down is the reason a backup becomes master when masterDown expires,
	// kept up to date by what it hears: the master leaving (priority 0), a
	// lower master it is waiting to preempt, or a master it follows.
	down Reason
	// faults are the tracked items holding the machine in Fault; adjust
	// those that move its priority from the configured one.
	faults, adjust []Tracked
	// resumed: SetResigned(false) came, and no transition since.
	resumed bool
}

// NewMachine returns a machine in Initialize; call Start to run the election.
func NewMachine(p Params, clock Clock, link Link) *Machine {
	return &Machine{p: p, clock: clock, link: link, priority: p.Priority, masterAdv: p.Interval}
}

// State returns the current state.
func (m *Machine) State() State { return m.state }

// Priority returns the effective priority advertised now.
func (m *Machine) Priority() uint8 { return m.priority }

// MasterAddr returns the address of the current master, if known.
func (m *Machine) MasterAddr() netip.Addr { return m.master }

// MasterPriority returns the priority the current master last advertised
// (ours when master), 0 when no master is known.
func (m *Machine) MasterPriority() uint8 {
	if !m.master.IsValid() {
		return 0
	}
	return m.masterPrio
}

// PreemptFrom returns the time before which the machine does not preempt
// (start, or the end of a fault, plus the preempt delay).
func (m *Machine) PreemptFrom() time.Time { return m.preemptFrom }

// Start leaves Initialize (RFC 5798 section 6.4.1).
func (m *Machine) Start() {
	if m.fault {
		m.enter(Fault, Reason{Cause: CauseFault, Tracked: m.faults, Detail: "at start"})
		return
	}
	m.initialize(CauseStartup)
}

// initialize runs at start and when FAULT ends: either way the node is
// (re)joining, and the preempt delay starts again, so a flapping node does
// not pull its VIPs back at every return.
func (m *Machine) initialize(cause Cause) {
	m.preemptFrom = m.clock.Now().Add(m.p.PreemptDelay)
	if m.priority == 255 && !m.resigned {
		m.becomeMaster(Reason{Cause: cause, Detail: "address owner"})
		return
	}
	m.becomeBackup(Reason{Cause: cause})
	// Nobody heard yet: if the timer runs out, that is why.
	m.down = Reason{Cause: cause, Detail: "no master heard"}
}

// Stop shuts the instance down: a master sends priority 0 so a backup takes
// over after its skew time instead of three intervals, then drops the VIPs.
func (m *Machine) Stop() {
	if m.state == Master {
		m.link.Advertise(0)
		m.link.Release()
	}
	m.masterDown, m.advertAt = time.Time{}, time.Time{}
	m.master = netip.Addr{}
	m.enter(Stopped, Reason{Cause: CauseShutdown})
}

// SetFault moves into or out of Fault, for a tracked interface or check that
// has weight 0 (or the instance's own interface); why are the items down
// (the reason of the transition into Fault).
func (m *Machine) SetFault(fault bool, why ...Tracked) {
	m.faults = why
	if fault == m.fault || m.state == Stopped {
		m.fault = fault
		return
	}
	m.fault = fault
	if fault {
		if m.state == Master {
			m.link.Advertise(0)
			m.link.Release()
		}
		m.masterDown, m.advertAt = time.Time{}, time.Time{}
		m.master = netip.Addr{} // not us any more; the adverts we hear say who
		m.enter(Fault, Reason{Cause: CauseFault, Tracked: why})
		return
	}
	if m.state == Fault {
		m.initialize(CauseFaultCleared)
	}
}

// SetPriority changes the effective priority (tracking weights); by are
// the tracked items that move it from the configured one, named by the
// reason of a transition it causes. The address owner (255) is never
// adjusted, as in keepalived.
func (m *Machine) SetPriority(p uint8, by ...Tracked) {
	if m.p.Priority == 255 {
		return
	}
	m.adjust = by
	if p == m.priority {
		return
	}
	m.priority = p
	if m.state == Master {
		m.masterPrio = p
		// Tell backups at once: a higher one may now preempt.
		m.link.Advertise(m.priority)
		m.advertAt = m.clock.Now().Add(m.p.Interval)
	}
}

// Resign makes a master step down and hold Backup as if a better master had
// spoken, so a sync group can keep its members together.
func (m *Machine) Resign(reason string) {
	if m.state != Master {
		return
	}
	m.link.Release()
	m.master = netip.Addr{} // the next advert heard names the new one
	m.becomeBackupAt(Reason{Cause: CauseSyncGroup, Detail: reason})
}

// SetResigned hands over or takes part again, for an operator (vigil
// instance resign|resume). Resigned, a master sends a priority-0 advert so
// the best backup takes over after its skew time, releases the VIPs and
// stays Backup: its master-down timer does not run, so it neither preempts
// nor takes over from a master that goes quiet, and Claim does nothing.
// Resumed, the timer runs again: a master that keeps advertising a
// priority at least ours holds it off, a lower one is preempted (with
// Preempt), a silent one is taken over from.
func (m *Machine) SetResigned(resigned bool, reason string) {
	if resigned == m.resigned {
		return
	}
	m.resigned = resigned
	switch {
	case resigned && m.state == Master:
		m.link.Advertise(0)
		m.link.Release()
		m.master = netip.Addr{} // the next advert heard names the new one
		m.becomeBackupAt(Reason{Cause: CauseResign, Detail: reason})
	case resigned && m.state == Backup:
		m.masterDown = time.Time{}
	case !resigned && m.state == Backup:
		m.masterDown = m.clock.Now().Add(m.masterDownInterval())
	}
	m.resumed = !resigned
}

// Resigned reports whether SetResigned holds the machine out of the
// election.
func (m *Machine) Resigned() bool { return m.resigned }

// Claim makes a backup take over now, for sync groups.
func (m *Machine) Claim(reason string) {
	if m.state == Backup && !m.resigned {
		m.becomeMaster(Reason{Cause: CauseSyncGroup, Detail: reason})
	}
}

// skew is Skew_Time: lower priorities wait longer, so the best backup wins.
func (m *Machine) skew() time.Duration {
	if m.p.Version == 2 {
		return time.Duration(256-int(m.priority)) * time.Second / 256
	}
	return time.Duration(256-int(m.priority)) * m.masterAdv / 256
}

func (m *Machine) masterDownInterval() time.Duration { return 3*m.masterAdv + m.skew() }

// NextDeadline is the time at which Tick must next be called; zero when no
// timer runs.
func (m *Machine) NextDeadline() time.Time {
	switch m.state {
	case Backup:
		return m.masterDown
	case Master:
		return m.advertAt
	}
	return time.Time{}
}

// Tick fires the timers that have expired by now.
func (m *Machine) Tick() {
	now := m.clock.Now()
	switch m.state {
	case Backup:
		if !m.masterDown.IsZero() && !now.Before(m.masterDown) {
			r := m.down
			if r.Cause == CauseMasterDown {
				r.Silent = m.masterDownInterval()
				if !m.lastHeard.IsZero() {
					r.Silent = now.Sub(m.lastHeard)
				}
			}
			if r.Cause == CausePreempt {
				r.Tracked = m.adjust
			}
			m.becomeMaster(r)
		}
	case Master:
		if !m.advertAt.IsZero() && !now.Before(m.advertAt) {
			m.link.Advertise(m.priority)
			m.advertAt = now.Add(m.p.Interval)
		}
	}
}

// Receive handles an advertisement that passed validation (TTL, checksum,
// version, VRID, authentication, addresses).
func (m *Machine) Receive(a Advert) {
	now := m.clock.Now()
	switch m.state {
	case Backup:
		if a.Priority == 0 {
			// The master is leaving: take over after our skew time only.
			if !m.resigned {
				m.masterDown = now.Add(m.skew())
			}
			m.master = netip.Addr{}
			m.down = Reason{Cause: CauseHandover, Peer: a.Source}
			return
		}
		// Whether or not we are about to preempt it, the sender holds the
		// VIPs now.
		m.heard(a, now)
		preempt := m.p.Preempt && !now.Before(m.preemptFrom)
		if preempt && a.Priority < m.priority {
			m.down = Reason{Cause: CausePreempt, Peer: a.Source, PeerPriority: a.Priority}
		} else {
			m.down = Reason{Cause: CauseMasterDown, Peer: a.Source, PeerPriority: a.Priority}
		}
		if m.resigned {
			if m.p.Version == 3 && a.Interval > 0 {
				m.masterAdv = a.Interval
			}
			return // no timer: resume arms it
		}
		if !preempt || a.Priority >= m.priority {
			if m.p.Version == 3 && a.Interval > 0 {
				m.masterAdv = a.Interval
			}
			m.masterDown = now.Add(m.masterDownInterval())
		}
		// Otherwise a lower-priority master: let the timer run out and preempt.
	case Fault:
		// No part in the election, but status should name who took over
		// rather than the master this node was before its fault.
		m.heard(a, now)
		if a.Priority == 0 {
			m.master = netip.Addr{}
		}
	case Master:
		switch {
		case a.Priority == 0:
			m.link.Advertise(m.priority)
			m.advertAt = now.Add(m.p.Interval)
		case a.Priority > m.priority || a.Priority == m.priority && a.Source.Compare(m.p.LocalAddr) > 0:
			if m.p.Version == 3 && a.Interval > 0 {
				m.masterAdv = a.Interval
			}
			m.heard(a, now)
			m.link.Release()
			r := Reason{Cause: CausePreempted, Peer: a.Source, PeerPriority: a.Priority}
			if m.priority != m.p.Priority {
				r.Tracked = m.adjust
			}
			// Would the configured priority have kept us master? Then
			// tracking lost it.
			if m.priority < m.p.Priority && (a.Priority < m.p.Priority || a.Priority == m.p.Priority && a.Source.Compare(m.p.LocalAddr) < 0) {
				r.Cause = CauseTracked
			}
			m.becomeBackupAt(r)
			m.down = Reason{Cause: CauseMasterDown, Peer: a.Source, PeerPriority: a.Priority}
		default:
			// A lower-priority router also believes it is master: a split
			// brain is healing. Assert ourselves at once and re-announce the
			// addresses, at most once per interval, so the segment learns
			// the right owner without waiting.
			if now.Sub(m.lastReclaim) >= m.p.Interval {
				m.lastReclaim = now
				m.link.Advertise(m.priority)
				m.link.Reannounce()
				m.advertAt = now.Add(m.p.Interval)
			}
		}
	}
}

// heard records the sender of an advert as the master.
func (m *Machine) heard(a Advert, now time.Time) {
	m.master, m.masterPrio, m.lastHeard = a.Source, a.Priority, now
}

func (m *Machine) becomeMaster(reason Reason) {
	m.link.Advertise(m.priority)
	m.link.TakeOver()
	m.masterDown = time.Time{}
	m.advertAt = m.clock.Now().Add(m.p.Interval)
	m.master, m.masterPrio = m.p.LocalAddr, m.priority
	m.enter(Master, reason)
}

func (m *Machine) becomeBackup(reason Reason) {
	m.masterAdv = m.p.Interval
	m.master = netip.Addr{}
	m.becomeBackupAt(reason)
}

func (m *Machine) becomeBackupAt(reason Reason) {
	m.advertAt = time.Time{}
	m.masterDown = m.clock.Now().Add(m.masterDownInterval())
	if m.resigned {
		m.masterDown = time.Time{}
	}
	m.enter(Backup, reason)
}

func (m *Machine) enter(s State, reason Reason) {
	from := m.state
	m.state = s
	if from == s {
		return
	}
	reason.Priority, reason.Configured = m.priority, m.p.Priority
	if m.resumed && reason.Detail == "" {
		reason.Detail = "after resume"
	}
	m.resumed = false
	if m.OnTransition != nil {
		m.OnTransition(Transition{From: from, To: s, Reason: reason, Priority: m.priority, At: m.clock.Now()})
	}
}
