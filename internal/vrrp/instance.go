package vrrp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-lb/vigil/internal/clock"
	"github.com/vigil-lb/vigil/internal/statelog"
)

// Addresses configures and removes an instance's VIPs (package vip).
type Addresses interface {
	Add() error
	Remove() error
	Present() ([]netip.Prefix, error)
}

// Announcer tells the segment about addresses (package garp).
type Announcer interface {
	Announce(addrs []netip.Addr) error
	Burst(ctx context.Context, addrs []netip.Addr, count int, interval time.Duration) error
}

// Sender puts encoded adverts on the wire (Transport).
type Sender interface {
	Send(b []byte, dst netip.Addr) error
	Local() netip.Addr
}

// Config is one instance's part of the validated configuration.
type Config struct {
	Name         string
	Interface    string
	VRID         uint8
	Version      uint8
	Priority     uint8
	Interval     time.Duration
	Preempt      bool
	PreemptDelay time.Duration
	VIPs         []netip.Prefix
	// Peers are the unicast peers at start; SetPeers changes them. None
	// means multicast, for the instance's whole life unless PeersLater.
	Peers []netip.Addr
	// PeersLater: the peers come from the Kubernetes API and may be unknown
	// at start (no API, no state file). Such an instance starts multicast,
	// its best guess, and the first set of peers switches it to unicast,
	// once; it never goes back (an empty set is never applied).
	PeersLater   bool
	AuthPass     string
	GARPCount    int
	GARPInterval time.Duration
	GARPRefresh  time.Duration
	// Track lists what moves the priority or causes FAULT. The instance's
	// own interface is always tracked with weight 0.
	Track []TrackItem
}

// TrackItem is one tracked interface or check.
type TrackItem struct {
	Kind   string // "interface" or "check"
	Name   string
	Weight int
}

// Status is a snapshot for status output and tests.
type Status struct {
	Name     string
	VRID     uint8
	State    State
	Priority uint8 // effective
	// Configured is the configured priority.
	Configured uint8
	// Local is this node's address the adverts come from.
	Local  netip.Addr
	Master netip.Addr
	// MasterPriority is the priority Master last advertised (ours when
	// master); 0 when no master is known.
	MasterPriority uint8
	// Last is the last transition, with its reason; Last.At is zero
	// before the first.
	Last Transition
	// PreemptFrom: before this time the instance does not preempt (its
	// preempt delay, or a pool's move_back_delay, after start or a fault).
	PreemptFrom time.Time
	// Tracked are the tracked items that move the priority or cause a
	// fault now.
	Tracked    []Tracked
	Peers      []netip.Addr // unicast peers in effect, sorted; none in multicast mode
	Since      time.Time
	Drops      map[DropReason]uint64
	Adverts    uint64 // sent
	Received   uint64 // accepted
	Transition uint64
	Conflicts  uint64 // probes in which another host answered ARP for a VIP
	// Resigned: an operator handed over (vigil instance resign); the
	// instance stays backup until resumed. Lost at restart.
	Resigned  bool
	Extra     int // extra addresses (SetExtra)
	ExtraHeld int // of those, configured on the interface now
	// ARPConflicts are the VIPs another host answers ARP for now, as the
	// last probe of each found: cleared by a probe that finds none, and
	// when the instance leaves MASTER.
	ARPConflicts []ARPConflict
	// Foreign is the last advert for our VRID from a group that is not ours
	// (other VIPs, authentication or peer): a VRID collision. It takes no
	// part in the election.
	Foreign *Foreign
}

// ARPConflict is a VIP of ours that another host answers ARP for.
type ARPConflict struct {
	VIP      netip.Addr
	MACs     []net.HardwareAddr
	Peer     netip.Addr // the VRRP peer (unicast peer or advert source) with one of the MACs; invalid if none
	Others   []netip.Addr
	LastSeen time.Time
}

// Foreign describes a VRID collision. Source, VIPs, Reason and LastSeen are
// the last foreign advert's.
type Foreign struct {
	Source   netip.Addr
	VIPs     []netip.Addr
	Reason   DropReason
	LastSeen time.Time
	// Count is every foreign advert the instance dropped, from any source:
	// a counter, never reset.
	Count uint64
	// Sources are the sources seen, at most maxForeignSources: the least
	// recently seen goes when a new one comes.
	Sources []ForeignSource
}

// ForeignSource is one source of foreign adverts for our VRID.
type ForeignSource struct {
	Source   netip.Addr
	Count    uint64 // since it entered Sources
	LastSeen time.Time
}

// Instance runs one virtual router: a Machine fed by the wire, the clock and
// tracking, acting through netlink and gratuitous ARP. All state changes
// happen on its Run goroutine.
type Instance struct {
	cfg    Config
	log    *slog.Logger
	tx     Sender
	addrs  Addresses
	ann    Announcer
	expect Expect
	vips   []netip.Addr
	// unicast is set at NewInstance: SetPeers changes the peers, and the
	// mode only from multicast to unicast with Config.PeersLater.
	unicast atomic.Bool
	m       *Machine
	clock   clock.Clock
	// owner: configured with priority 255, the address owner, for good.
	owner bool

	recv chan Received
	// fromMaster holds the latest message from the master this instance
	// follows (masterSrc), apart from recv: a flood on our VRID fills recv
	// and drops what arrives next, but the master's adverts, which hold
	// off a false takeover, are never dropped; masterWake tells Run.
	fromMaster atomic.Pointer[Received]
	masterWake chan struct{}
	masterSrc  atomic.Pointer[netip.Addr]
	// wake tells Run that pending holds something; it holds one token, so
	// callers never block and however many calls come, none is lost.
	wake    chan struct{}
	pending pending

	// Probe, when set, asks the segment who else answers ARP for a VIP. It
	// runs on every takeover: an answer from another host means an address
	// conflict, such as a crashed master that still holds the VIP.
	Probe func(ctx context.Context, ip netip.Addr) ([]net.HardwareAddr, error)

	// Identify, when set, returns the addresses the kernel's neighbour
	// table has for a MAC, so that a conflict can name the peer it is.
	Identify func(mac net.HardwareAddr) []netip.Addr

	// OnTransition hears every state change, on the Run goroutine; it must
	// not block (notify hooks and sync groups queue their work).
	OnTransition func(*Instance, Transition)

	// OnOwnFault hears when the instance's own tracking (not its sync
	// group) starts or stops demanding FAULT, on the Run goroutine.
	OnOwnFault func(in *Instance, fault bool)

	// track holds every tracked item, the sync group's fault included, from
	// NewInstance on: its keys never change, so any goroutine may look one
	// up; the states change on the Run goroutine only.
	track    map[trackKey]*trackState
	ownFault bool
	// extra carries the SetExtra addresses (nil without
	// WithExtraAddresses); extraSet is the latest set and holding whether
	// the instance holds its addresses, both on the Run goroutine.
	extra     *extraWorker
	extraSet  []netip.Prefix
	holding   bool
	burstStop context.CancelFunc
	// probes is the context of the current mastership's ARP probes, on
	// the Run goroutine; probeStop (Release) ends it. nil while not master.
	probes    context.Context
	probeStop context.CancelFunc
	// runCtx ends when Run returns; bg holds the announce bursts and ARP
	// probes started under it, which Run waits for.
	runCtx  context.Context
	bg      sync.WaitGroup
	lastLog map[DropReason]time.Time
	// conflictLog rate-limits the VRID-conflict warning for the instance.
	conflictLog conflictLog

	mu     sync.Mutex
	status Status
	// heard are the sources of adverts accepted from the group, under mu:
	// a MAC answering ARP for our VIP that belongs to one is a peer.
	heard     map[netip.Addr]bool
	conflicts map[netip.Addr]ARPConflict // under mu; status.ARPConflicts is its sorted copy
}

type trackState struct {
	TrackItem
	up bool
}

// trackKey names a tracked item.
type trackKey struct{ kind, name string }

// groupKey is the item that holds the sync group's fault; its Name is the
// reason.
var groupKey = trackKey{kind: "group"}

// pending is what other goroutines asked of the instance and Run has yet to
// apply. Tracking is level-triggered: only the latest state of each item,
// and of the group fault, is kept, so a burst of updates costs one entry per
// item and none is dropped. Claim and Resign are actions on the state the
// machine is in when they are applied, so they are kept in order.
type pending struct {
	mu      sync.Mutex
	tracked map[trackKey]bool
	group   *groupFault     // nil: no SetGroupFault since the last batch
	peers   *[]netip.Addr   // nil: no SetPeers since the last batch; the latest wins
	extra   *[]netip.Prefix // nil: no SetExtra since the last batch; the latest wins
	resign  *bool           // nil: no SetResigned since the last batch; the latest wins
	prio    *uint8          // nil: no SetPriority since the last batch; the latest wins
	vrid    *uint8          // nil: no SetVRID since the last batch; the latest wins
	actions []action
}

type groupFault struct {
	fault  bool
	reason string
}

// action is a Claim (claim true) or a Resign.
type action struct {
	claim  bool
	reason string
}

// Option changes how NewInstance builds an instance.
type Option func(*Instance)

// WithClock makes the instance, and its Machine, tell the time and run their
// timers on c instead of the wall clock (clock.Real): tests pass a fake.
func WithClock(c clock.Clock) Option { return func(in *Instance) { in.clock = c } }

// NewInstance wires an instance. tx must be registered for cfg.VRID by the
// caller with Receive as the target channel.
func NewInstance(cfg Config, tx Sender, addrs Addresses, ann Announcer, log *slog.Logger, opts ...Option) *Instance {
	in := &Instance{
		cfg: cfg, tx: tx, addrs: addrs, ann: ann, clock: clock.Real{},
		log:  log.With("instance", cfg.Name, "vrid", cfg.VRID),
		recv: make(chan Received, recvQueue),
		wake: make(chan struct{}, 1), masterWake: make(chan struct{}, 1),
		track:   map[trackKey]*trackState{},
		lastLog: map[DropReason]time.Time{},
		heard:   map[netip.Addr]bool{}, conflicts: map[netip.Addr]ARPConflict{},
	}
	for _, o := range opts {
		o(in)
	}
	for _, p := range cfg.VIPs {
		in.vips = append(in.vips, p.Addr())
	}
	slices.SortFunc(in.vips, netip.Addr.Compare)
	in.vips = slices.Compact(in.vips)
	in.unicast.Store(len(cfg.Peers) > 0)
	in.owner = cfg.Priority == 255
	in.expect = Expect{Version: cfg.Version, VRID: cfg.VRID, Interval: cfg.Interval,
		VIPs: in.vips, Peers: normalPeers(cfg.Peers), Local: tx.Local()}
	if cfg.AuthPass != "" {
		in.expect.AuthType = AuthSimple
		copy(in.expect.AuthData[:], cfg.AuthPass)
	}
	own := TrackItem{Kind: "interface", Name: cfg.Interface, Weight: 0}
	for _, t := range append([]TrackItem{own}, cfg.Track...) {
		// Checks start up, as keepalived scripts do, until they fail.
		in.track[trackKey{t.Kind, t.Name}] = &trackState{TrackItem: t, up: true}
	}
	in.track[groupKey] = &trackState{TrackItem: TrackItem{Kind: groupKey.kind}, up: true}
	in.m = NewMachine(Params{
		Version: cfg.Version, Priority: cfg.Priority, Interval: cfg.Interval,
		Preempt: cfg.Preempt, PreemptDelay: cfg.PreemptDelay, LocalAddr: tx.Local(),
	}, in.clock, (*link)(in))
	in.m.OnTransition = in.transition
	in.status = Status{Name: cfg.Name, VRID: cfg.VRID, Drops: map[DropReason]uint64{}, Priority: cfg.Priority,
		Configured: cfg.Priority, Local: tx.Local(), Peers: in.expect.Peers}
	return in
}

// Name is the instance name.
func (in *Instance) Name() string { return in.cfg.Name }

// recvQueue is how many messages wait for Run; more are dropped as
// queue_full, except the master's (Deliver).
const recvQueue = 64

// Receive is the channel of the instance's receive queue; Deliver is how
// the transport fills it. Tests use it to hand a message to Run.
func (in *Instance) Receive() chan<- Received { return in.recv }

// Deliver hands Run a message for this VRID, without blocking (Receiver).
// A message from the master the instance follows goes to a slot of its own
// where the latest replaces an unread one; the others queue, and are
// dropped as queue_full when the queue is full. So junk on our VRID, at any
// rate, costs the backup no advert of its master, and no false takeover.
// (A flood spoofing the master's own address can still replace them: VRRP
// without authentication cannot tell those apart.)
func (in *Instance) Deliver(r Received) {
	if m := in.masterSrc.Load(); m != nil && *m == r.Src {
		in.fromMaster.Store(&r)
		select {
		case in.masterWake <- struct{}{}:
		default: // Run has a wake-up coming and reads the latest
		}
		return
	}
	select {
	case in.recv <- r:
	default:
		in.mu.Lock()
		in.status.Drops[DropQueueFull]++
		in.mu.Unlock()
	}
}

// drainer is a Sender that can read, without waiting, what its socket has
// queued (Transport).
type drainer interface{ Drain(max int) int }

// drainMax bounds what a backup reads from the socket before its
// master-down timer may fire: about the socket's receive buffer.
const drainMax = 8192

// catchUp runs when the timer fires. A backup whose master-down deadline
// has come first reads what the socket has queued and handles its
// master's advert if one came: after a pause of the whole process under a
// flood, the master's latest advert may still be in the kernel's queue, or
// in its slot, with the timer ready at the same moment; it arrived in
// time, and must hold off the takeover.
func (in *Instance) catchUp() {
	if in.m.State() != Backup || in.clock.Now().Before(in.m.NextDeadline()) {
		return
	}
	if d, ok := in.tx.(drainer); ok {
		d.Drain(drainMax)
	}
	in.handleMaster()
}

// handleMaster handles the master's message waiting in its slot, if any.
func (in *Instance) handleMaster() {
	if r := in.fromMaster.Swap(nil); r != nil {
		in.handle(*r)
	}
}

// Status returns a snapshot.
func (in *Instance) Status() Status {
	in.mu.Lock()
	defer in.mu.Unlock()
	s := in.status
	s.Drops = maps.Clone(in.status.Drops)
	s.Peers = slices.Clone(in.status.Peers)
	s.ARPConflicts = slices.Clone(in.status.ARPConflicts)
	s.Tracked = slices.Clone(in.status.Tracked)
	s.Last.Reason.Tracked = slices.Clone(in.status.Last.Reason.Tracked)
	if f := s.Foreign; f != nil {
		c := *f
		c.Sources = slices.Clone(f.Sources)
		s.Foreign = &c
	}
	return s
}

// SetTracked reports that a tracked interface or check went up or down. It
// does nothing for things this instance does not track. It never blocks:
// Run applies the latest state of each item.
func (in *Instance) SetTracked(kind, name string, up bool) {
	k := trackKey{kind, name}
	if _, ok := in.track[k]; !ok || k.kind == groupKey.kind {
		return
	}
	in.pending.mu.Lock()
	if in.pending.tracked == nil {
		in.pending.tracked = map[trackKey]bool{}
	}
	in.pending.tracked[k] = up
	in.pending.mu.Unlock()
	in.poke()
}

// SetGroupFault puts the instance in FAULT because another member of its
// sync group is, or takes it out. The latest call wins.
func (in *Instance) SetGroupFault(fault bool, reason string) {
	in.pending.mu.Lock()
	in.pending.group = &groupFault{fault: fault, reason: reason}
	in.pending.mu.Unlock()
	in.poke()
}

// ErrPeerMode is returned by SetPeers for a change between multicast (no
// peers) and unicast. The switch is not a change of membership but of who
// the group is: with no peers the accept filter takes adverts from any
// source on the segment, and the other nodes, until they switch too, are in
// the other mode. It takes a restart.
var ErrPeerMode = errors.New("switching between multicast and unicast needs a restart")

// SetPeers replaces the unicast peers of a unicast instance, without a
// state change: adverts go to the new set from the next one on, and adverts
// from an address no longer in the set are dropped as unknown_peer from the
// next one received on. A backup whose master is removed hears it no more
// and takes over after the master-down interval, as if it had gone quiet.
// The order and repeats of peers do not matter. It never blocks: Run
// applies the latest set. It fails, changing nothing, for an empty set on a
// unicast instance or any set on a multicast one (ErrPeerMode) unless
// Config.PeersLater, and for a peer that is not an address of the VIPs'
// family.
func (in *Instance) SetPeers(peers []netip.Addr) error {
	unicast := in.unicast.Load()
	switch {
	case len(peers) == 0 && unicast, len(peers) > 0 && !unicast && !in.cfg.PeersLater:
		return fmt.Errorf("vrrp %s: %w", in.cfg.Name, ErrPeerMode)
	case len(peers) == 0:
		return nil
	}
	for _, p := range peers {
		if !p.IsValid() || p.Is4() != in.vips[0].Is4() || p.Is4In6() {
			return fmt.Errorf("vrrp %s: unicast peer %v is not an address of the VIPs' family", in.cfg.Name, p)
		}
	}
	ps := normalPeers(peers)
	in.unicast.Store(true)
	in.pending.mu.Lock()
	in.pending.peers = &ps
	in.pending.mu.Unlock()
	in.poke()
	return nil
}

// normalPeers returns a sorted copy of peers without repeats.
func normalPeers(peers []netip.Addr) []netip.Addr {
	ps := slices.Clone(peers)
	slices.SortFunc(ps, netip.Addr.Compare)
	return slices.Compact(ps)
}

// Claim makes a backup take over now, for sync groups (see Machine.Claim).
func (in *Instance) Claim(reason string) { in.act(action{claim: true, reason: reason}) }

// Resign makes a master step down, for sync groups (see Machine.Resign).
func (in *Instance) Resign(reason string) { in.act(action{reason: reason}) }

// SetResigned, for an operator (vigil instance resign|resume), hands
// over with a priority-0 advert and keeps the instance backup until called
// again with false (see Machine.SetResigned). It never blocks: Run applies
// the latest call.
func (in *Instance) SetResigned(resigned bool) {
	in.pending.mu.Lock()
	in.pending.resign = &resigned
	in.pending.mu.Unlock()
	in.poke()
}

// ErrLiveChange is returned by SetPriority and SetVRID for a value the
// instance cannot take while it runs.
var ErrLiveChange = errors.New("not a change an instance takes while it runs")

// SetPriority changes the configured priority, the one tracking weights
// are added to, for instances whose place in their group's order changes
// while they run (the L2 slots of a pool whose nodes change). A master
// lowered below a backup keeps its addresses until that backup preempts it;
// a backup raised above the master preempts it, as VRRP does. It never
// blocks: Run applies the latest call. Address owners (255) and priority 0
// are refused (ErrLiveChange).
func (in *Instance) SetPriority(p uint8) error {
	if p == 0 || p == 255 || in.owner {
		return fmt.Errorf("vrrp %s: priority %d: %w", in.cfg.Name, p, ErrLiveChange)
	}
	in.pending.mu.Lock()
	in.pending.prio = &p
	in.pending.mu.Unlock()
	in.poke()
	return nil
}

// SetVRID moves the instance to another VRID without a state change: a
// master keeps its addresses and advertises on the new VRID from the next
// advert on, and adverts for the old one are dropped as vrid_mismatch. The
// caller registers the instance's Receive for the new VRID on the
// transport (and unregisters the old one). The other nodes of the group
// move at about the same time, each at its next reload; a backup that moves
// late misses adverts for as long. It never blocks: Run applies the latest
// call. VRID 0 is refused (ErrLiveChange).
func (in *Instance) SetVRID(v uint8) error {
	if v == 0 {
		return fmt.Errorf("vrrp %s: VRID 0: %w", in.cfg.Name, ErrLiveChange)
	}
	in.pending.mu.Lock()
	in.pending.vrid = &v
	in.pending.mu.Unlock()
	in.poke()
	return nil
}

func (in *Instance) act(a action) {
	in.pending.mu.Lock()
	// The same action twice in a row does nothing more than once: after a
	// Claim the machine is no longer a backup, after a Resign no longer a
	// master. Dropping the repeat keeps the queue short in a storm.
	if n := len(in.pending.actions); n == 0 || in.pending.actions[n-1].claim != a.claim {
		in.pending.actions = append(in.pending.actions, a)
	}
	in.pending.mu.Unlock()
	in.poke()
}

func (in *Instance) poke() {
	select {
	case in.wake <- struct{}{}:
	default: // Run has a wake-up coming, and will read what was just stored
	}
}

// applyPending applies, on the Run goroutine, what other goroutines asked
// for since the last batch: the latest tracked states and group fault first,
// with one applyTracking, then Claim and Resign in order, against the state
// those levels leave the machine in.
func (in *Instance) applyPending() {
	in.pending.mu.Lock()
	tracked, group, peers, actions := in.pending.tracked, in.pending.group, in.pending.peers, in.pending.actions
	extra, resign, prio, vrid := in.pending.extra, in.pending.resign, in.pending.prio, in.pending.vrid
	in.pending.tracked, in.pending.group, in.pending.peers, in.pending.actions = nil, nil, nil, nil
	in.pending.extra, in.pending.resign, in.pending.prio, in.pending.vrid = nil, nil, nil, nil
	in.pending.mu.Unlock()

	if vrid != nil && *vrid != in.cfg.VRID {
		in.log.Info("VRID changed", "from", in.cfg.VRID, "to", *vrid)
		in.cfg.VRID, in.expect.VRID = *vrid, *vrid
		in.mu.Lock()
		in.status.VRID = *vrid
		in.mu.Unlock()
	}

	if peers != nil {
		in.applyPeers(*peers)
	}
	if extra != nil {
		in.extraSet = *extra
		in.extra.set(in.extraSet, in.holding)
	}

	changed := false
	if prio != nil && *prio != in.cfg.Priority {
		in.log.Info("configured priority changed", "from", in.cfg.Priority, "to", *prio)
		in.cfg.Priority, changed = *prio, true
	}
	keys := slices.SortedFunc(maps.Keys(tracked), func(a, b trackKey) int {
		return cmp.Or(strings.Compare(a.kind, b.kind), strings.Compare(a.name, b.name))
	})
	for _, k := range keys {
		t, up := in.track[k], tracked[k]
		if t.up == up {
			continue
		}
		t.up, changed = up, true
		statelog.Log(in.log, statelog.Level(up), "tracked item changed", statelog.Change{Event: statelog.EventTracked,
			Prev: statelog.UpDown(!up), State: statelog.UpDown(up)}, "kind", k.kind, "name", k.name, "weight", t.Weight)
	}
	if group != nil {
		t := in.track[groupKey]
		if t.up == group.fault || t.Name != group.reason {
			t.up, t.Name, changed = !group.fault, group.reason, true
		}
	}
	if changed {
		in.applyTracking()
	}
	if resign != nil && *resign != in.m.Resigned() {
		c := statelog.Change{Event: statelog.EventInstanceAdmin, Prev: "resumed", State: "resigned",
			Reason: "vigil instance resign: priority-0 hand-over, backup until resumed"}
		if !*resign {
			c.Prev, c.State, c.Reason = c.State, c.Prev, "vigil instance resume: taking part in the election again"
		}
		statelog.Log(in.log, slog.LevelInfo, "instance admin state changed", c, "vrrp_state", in.m.State().String())
		in.m.SetResigned(*resign, "")
		in.mu.Lock()
		in.status.Resigned = *resign
		in.mu.Unlock()
	}
	for _, a := range actions {
		if a.claim {
			in.m.Claim(a.reason)
		} else {
			in.m.Resign(a.reason)
		}
	}
}

// applyPeers puts a new unicast peer set in force, on the Run goroutine:
// Accept and Advertise read it there, so the change falls between two
// adverts received and two sent. The machine is not told: its state, its
// timers and the master it follows stay as they are.
func (in *Instance) applyPeers(peers []netip.Addr) {
	old := in.expect.Peers
	if slices.Equal(old, peers) {
		return
	}
	in.expect.Peers = peers
	in.mu.Lock()
	in.status.Peers = peers
	in.mu.Unlock()
	var added, removed []netip.Addr
	for _, p := range peers {
		if !slices.Contains(old, p) {
			added = append(added, p)
		}
	}
	for _, p := range old {
		if !slices.Contains(peers, p) {
			removed = append(removed, p)
		}
	}
	in.log.Info("unicast peers changed", "added", statelog.Addrs(added), "removed", statelog.Addrs(removed),
		"peers", statelog.Addrs(peers))
}

// applyTracking derives fault and effective priority from tracked states with
// keepalived's weights: weight 0 down means FAULT; a positive weight is added
// while up, a negative one while down; the sum is clamped to 1..254.
func (in *Instance) applyTracking() {
	prio := int(in.cfg.Priority)
	var faults, adjust []Tracked
	own := false
	for _, t := range in.track {
		item := Tracked{Kind: t.Kind, Name: t.Name, Weight: t.Weight, Up: t.up}
		switch {
		case t.Weight == 0 && !t.up:
			faults = append(faults, item)
			own = own || t.Kind != "group"
		case t.Weight > 0 && t.up, t.Weight < 0 && !t.up:
			prio += t.Weight
			adjust = append(adjust, item)
		}
	}
	prio = min(max(prio, 1), 254)
	if in.cfg.Priority == 255 {
		prio = 255
	}
	byName := func(a, b Tracked) int {
		return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Name, b.Name))
	}
	slices.SortFunc(faults, byName)
	slices.SortFunc(adjust, byName)
	in.m.SetPriority(uint8(prio), adjust...)
	in.m.SetFault(len(faults) > 0, faults...)
	if own != in.ownFault {
		in.ownFault = own
		if in.OnOwnFault != nil {
			in.OnOwnFault(in, own)
		}
	}
	in.mu.Lock()
	in.status.Priority = in.m.Priority()
	in.status.Tracked = slices.Concat(faults, adjust)
	in.status.PreemptFrom = in.m.PreemptFrom()
	in.mu.Unlock()
}

// Run runs the instance until ctx ends, then shuts it down cleanly: a master
// sends priority 0 and removes its VIPs.
func (in *Instance) Run(ctx context.Context) error {
	// A node that crashed as master comes back with its VIPs still
	// configured; it must not answer ARP for them before it wins again.
	if in.cfg.Priority != 255 {
		if stale, err := in.addrs.Present(); err != nil {
			return fmt.Errorf("vrrp %s: %w", in.cfg.Name, err)
		} else if len(stale) > 0 {
			in.log.Warn("removing VIPs left from an earlier run", "vips", statelog.Strings(stale))
			if err := in.addrs.Remove(); err != nil {
				return fmt.Errorf("vrrp %s: remove stale VIPs: %w", in.cfg.Name, err)
			}
		}
	}
	runCtx, stopBackground := context.WithCancel(ctx)
	in.runCtx = runCtx
	defer func() { stopBackground(); in.bg.Wait() }()
	if in.extra != nil {
		in.bg.Go(func() { in.extra.run(runCtx) })
	}
	in.applyTracking()
	in.m.Start()

	var refresh <-chan time.Time
	if in.cfg.GARPRefresh > 0 {
		t := in.clock.NewTicker(in.cfg.GARPRefresh)
		defer t.Stop()
		refresh = t.C()
	}
	// The timer is armed for the machine's next deadline before the loop
	// and again after every event: a test's fake clock sees it armed only
	// once it is armed for the right time.
	timer := in.clock.NewTimer(in.wait())
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			in.m.Stop()
			in.stopBurst()
			return nil
		case <-in.masterWake:
			in.handleMaster()
		case r := <-in.recv:
			in.handle(r)
		case <-in.wake:
			in.applyPending()
		case <-timer.C():
			in.awaitDeadline()
			in.catchUp()
			in.m.Tick()
		case <-refresh:
			if in.m.State() == Master {
				// Re-announce, and audit: another host answering ARP for
				// our VIP means routers may be sending it traffic.
				in.announce("refresh")
				in.probeConflicts(0)
				if in.extra != nil {
					in.extra.announceAll()
				}
			}
		}
		timer.Reset(in.wait())
	}
}

// timerSlack is how early the master-down timer wakes. Go's timers fire up
// to a millisecond or more late on an idle process, and that timer decides
// how long a dead master's VIP stays unreachable.
const timerSlack = 2 * time.Millisecond

func (in *Instance) wait() time.Duration {
	next := in.m.NextDeadline()
	if next.IsZero() {
		return time.Hour
	}
	d := next.Sub(in.clock.Now())
	if in.m.State() == Backup {
		d -= timerSlack
	}
	return max(d, 0)
}

// awaitDeadline spends the last stretch before the master-down deadline
// yielding instead of sleeping, so the takeover happens on time. It still
// handles adverts, which may push the deadline out; then it returns early.
// It runs at most timerSlack, and only when a backup is about to take over.
func (in *Instance) awaitDeadline() {
	for in.m.State() == Backup {
		left := in.m.NextDeadline().Sub(in.clock.Now())
		if left <= 0 || left > timerSlack {
			return
		}
		select {
		case <-in.masterWake:
			in.handleMaster()
		case r := <-in.recv:
			in.handle(r)
		default:
			runtime.Gosched()
		}
	}
}

func (in *Instance) handle(r Received) {
	adv, p, reason := Accept(r, &in.expect)
	if reason != DropNone {
		in.mu.Lock()
		in.status.Drops[reason]++
		in.mu.Unlock()
		if foreignGroup(reason) && p != nil {
			in.foreign(r.Src, p, reason)
			return
		}
		if now := in.clock.Now(); reason != DropOwn && now.Sub(in.lastLog[reason]) > 10*time.Second {
			in.lastLog[reason] = now
			attrs := []any{"reason", string(reason), "src", r.Src}
			if p != nil {
				attrs = append(attrs, "their_vips", statelog.Addrs(p.Addresses), "their_version", p.Version, "their_priority", p.Priority)
			}
			in.log.Warn("advert dropped", attrs...)
		}
		return
	}
	in.mu.Lock()
	in.status.Received++
	in.heard[r.Src] = true
	in.mu.Unlock()
	in.m.Receive(adv)
	in.noteMaster()
}

// noteMaster publishes the master the machine follows, for status and for
// Deliver's master slot.
func (in *Instance) noteMaster() {
	m := in.m.MasterAddr()
	if old := in.masterSrc.Load(); old == nil || *old != m {
		in.masterSrc.Store(&m)
	}
	in.mu.Lock()
	in.status.Master, in.status.MasterPriority = m, in.m.MasterPriority()
	in.mu.Unlock()
}

// foreignGroup tells drops that mean another VRRP group uses our VRID.
func foreignGroup(r DropReason) bool {
	return r == DropAddresses || r == DropAuth || r == DropUnknownPeer
}

// conflictLogInterval is how often, at most, an instance logs that another
// group uses its VRID, after the first warning that is logged at once.
const conflictLogInterval = 10 * time.Second

// maxForeignSources bounds the sources a VRID collision keeps in status and
// names in a log line: a spoofed, rotating source must not grow memory.
const maxForeignSources = 16

// conflictLog is what the next VRID-conflict summary will say: the adverts
// and the sources since the last line. On the Run goroutine.
type conflictLog struct {
	last    time.Time // of the last line; zero before the first
	adverts uint64
	sources []netip.Addr // at most maxForeignSources, in order of arrival
	more    bool         // more sources came than sources holds
}

// foreign records a VRID collision: the instance's total, never reset (it
// is a counter), and the last advert and the sources seen, bounded. It warns
// at once the first time, then at most one summary line per
// conflictLogInterval for the instance, whatever the number of sources.
func (in *Instance) foreign(src netip.Addr, p *Packet, reason DropReason) {
	now := in.clock.Now()
	in.mu.Lock()
	f := in.status.Foreign
	if f == nil {
		f = &Foreign{}
		in.status.Foreign = f
	}
	f.Source, f.VIPs, f.Reason, f.LastSeen = src, p.Addresses, reason, now
	f.Count++
	f.Sources = seen(f.Sources, src, now)
	in.mu.Unlock()

	l := &in.conflictLog
	l.adverts++
	if !slices.Contains(l.sources, src) {
		if len(l.sources) < maxForeignSources {
			l.sources = append(l.sources, src)
		} else {
			l.more = true
		}
	}
	if !l.last.IsZero() && now.Sub(l.last) < conflictLogInterval {
		return
	}
	attrs := []any{"their_src", src, "their_vips", statelog.Addrs(p.Addresses), "their_priority", p.Priority,
		"reason", string(reason), "our_vips", statelog.Addrs(in.vips)}
	if l.last.IsZero() {
		in.log.Warn("VRID conflict: another VRRP group uses this VRID; its adverts take no part in the election", attrs...)
	} else {
		attrs = append(attrs, "adverts", l.adverts, "sources", statelog.Addrs(l.sources), "more_sources", l.more,
			"since", now.Sub(l.last).Round(time.Second).String())
		in.log.Warn("VRID conflict continues: adverts from another VRRP group since the last warning", attrs...)
	}
	*l = conflictLog{last: now}
}

// seen counts an advert from src in the sources list, keeping at most
// maxForeignSources: when full, the source seen least recently goes.
func seen(list []ForeignSource, src netip.Addr, now time.Time) []ForeignSource {
	if i := slices.IndexFunc(list, func(s ForeignSource) bool { return s.Source == src }); i >= 0 {
		list[i].Count++
		list[i].LastSeen = now
		return list
	}
	if len(list) >= maxForeignSources {
		oldest := 0
		for i := range list {
			if list[i].LastSeen.Before(list[oldest].LastSeen) {
				oldest = i
			}
		}
		list = slices.Delete(list, oldest, oldest+1)
	}
	return append(list, ForeignSource{Source: src, Count: 1, LastSeen: now})
}

func (in *Instance) transition(t Transition) {
	level := slog.LevelInfo
	if t.To == Fault {
		level = slog.LevelWarn
	}
	attrs := []any{"cause", t.Reason.Cause.String(), "priority", t.Priority}
	if r := t.Reason; r.Peer.IsValid() {
		attrs = append(attrs, "peer", r.Peer, "peer_priority", r.PeerPriority)
	}
	if len(t.Reason.Tracked) > 0 {
		attrs = append(attrs, "tracked", statelog.List(t.Reason.TrackedStrings()))
	}
	statelog.Log(in.log, level, "vrrp state change", statelog.Change{Event: statelog.EventVRRP,
		Prev: t.From.String(), State: t.To.String(), Reason: t.Reason.String()}, attrs...)
	in.mu.Lock()
	in.status.State = t.To
	in.status.Since = t.At
	in.status.Last = t
	in.status.PreemptFrom = in.m.PreemptFrom()
	in.status.Transition++
	in.mu.Unlock()
	in.noteMaster()
	if in.OnTransition != nil {
		in.OnTransition(in, t)
	}
}

func (in *Instance) announce(why string) {
	if err := in.ann.Announce(in.vips); err != nil {
		in.log.Warn("announce failed", "why", why, "err", err)
	}
}

func (in *Instance) stopBurst() {
	if in.burstStop != nil {
		in.burstStop()
		in.burstStop = nil
	}
}

// link is the Instance seen as the machine's Link.
type link Instance

func (l *link) Advertise(prio uint8) {
	in := (*Instance)(l)
	p := Packet{Version: in.cfg.Version, Type: TypeAdvertisement, VRID: in.cfg.VRID, Priority: prio,
		MaxAdvertInt: EncodeInterval(in.cfg.Version, in.cfg.Interval), Addresses: in.vips,
		AuthType: in.expect.AuthType, AuthData: in.expect.AuthData}
	dsts := in.expect.Peers
	if len(dsts) == 0 {
		g := Group4
		if in.vips[0].Is6() {
			g = Group6
		}
		dsts = []netip.Addr{g}
	}
	for _, dst := range dsts {
		b, err := p.Marshal(in.tx.Local(), dst)
		if err == nil {
			err = in.tx.Send(b, dst)
		}
		if err != nil {
			in.log.Warn("advert not sent", "dst", dst, "err", err)
			continue
		}
		in.mu.Lock()
		in.status.Adverts++
		in.mu.Unlock()
	}
}

func (l *link) TakeOver() {
	in := (*Instance)(l)
	if err := in.addrs.Add(); err != nil {
		in.log.Error("VIPs not configured", "err", err)
	}
	in.stopBurst()
	// The first round goes out now, on this goroutine: clients must reach
	// the new master without waiting for a scheduler. The conflict probe
	// waits for the release window: a master handing over (preemption, a
	// pool's move back) still answers ARP until our advert reaches it.
	if in.cfg.GARPCount > 0 {
		in.announce("takeover")
	}
	in.stopProbes()
	in.probes, in.probeStop = context.WithCancel(in.runCtx)
	in.probeConflicts(in.releaseWindow())
	in.holding = true
	if in.extra != nil {
		in.extra.set(in.extraSet, true)
	}
	if in.cfg.GARPCount > 1 {
		ctx, cancel := context.WithCancel(in.runCtx)
		in.burstStop = cancel
		in.bg.Go(func() {
			if clock.Sleep(ctx, in.clock, in.cfg.GARPInterval) != nil {
				return
			}
			if err := in.ann.Burst(ctx, in.vips, in.cfg.GARPCount-1, in.cfg.GARPInterval); err != nil {
				in.log.Warn("announce burst failed", "err", err)
			}
		})
	}
}

// releaseMargin is what the takeover probe waits past one advert interval:
// time for the old master to hear our advert, release the VIP (netlink) and
// stop answering ARP for it.
const releaseMargin = 500 * time.Millisecond

// releaseWindow is how long after a takeover the conflict probe waits.
func (in *Instance) releaseWindow() time.Duration { return in.cfg.Interval + releaseMargin }

func (in *Instance) stopProbes() {
	if in.probeStop != nil {
		in.probeStop()
		in.probes, in.probeStop = nil, nil
	}
}

// probeConflicts asks, in the background after delay, whether another host
// answers ARP for our IPv4 VIPs, and warns: both would now answer, and the
// segment would split its traffic between them. Each probe's answer sets
// or clears that VIP's conflict. Release cancels the probes in flight.
func (in *Instance) probeConflicts(delay time.Duration) {
	if in.Probe == nil || in.probes == nil {
		return
	}
	ctx := in.probes
	for _, ip := range in.vips {
		if !ip.Is4() {
			continue
		}
		in.bg.Go(func() {
			if delay > 0 && clock.Sleep(ctx, in.clock, delay) != nil {
				return
			}
			macs, err := in.Probe(ctx, ip)
			if err != nil {
				in.log.Debug("arp probe failed", "vip", ip, "err", err)
				return
			}
			in.probed(ctx, ip, macs)
		})
	}
}

// probed records what a probe heard, unless the mastership it was for has
// ended (ctx).
func (in *Instance) probed(ctx context.Context, ip netip.Addr, macs []net.HardwareAddr) {
	var ids map[string][]netip.Addr
	if len(macs) > 0 && in.Identify != nil {
		ids = map[string][]netip.Addr{}
		for _, m := range macs {
			ids[m.String()] = in.Identify(m)
		}
	}
	in.mu.Lock()
	if ctx.Err() != nil {
		in.mu.Unlock()
		return
	}
	_, had := in.conflicts[ip]
	var c ARPConflict
	if len(macs) > 0 {
		c = ARPConflict{VIP: ip, MACs: macs, LastSeen: in.clock.Now()}
		for _, m := range macs {
			for _, a := range ids[m.String()] {
				if !c.Peer.IsValid() && (in.heard[a] || slices.Contains(in.status.Peers, a)) {
					c.Peer = a
				} else if !slices.Contains(c.Others, a) {
					c.Others = append(c.Others, a)
				}
			}
		}
		in.conflicts[ip] = c
		in.status.Conflicts++
	} else {
		delete(in.conflicts, ip)
	}
	in.syncConflictsLocked()
	in.mu.Unlock()
	switch {
	case len(macs) > 0:
		attrs := []any{"vip", ip, "their_mac", statelog.Strings(macs)}
		if c.Peer.IsValid() {
			attrs = append(attrs, "peer", c.Peer)
		}
		if len(c.Others) > 0 {
			attrs = append(attrs, "their_ip", statelog.Addrs(c.Others))
		}
		in.log.Warn("address conflict: another host answers ARP for a VIP this node now owns", attrs...)
	case had:
		in.log.Info("address conflict cleared: no other host answers ARP for the VIP", "vip", ip)
	}
}

// syncConflictsLocked copies the conflicts into the status, by VIP. The
// caller holds mu.
func (in *Instance) syncConflictsLocked() {
	in.status.ARPConflicts = slices.SortedFunc(maps.Values(in.conflicts), func(a, b ARPConflict) int { return a.VIP.Compare(b.VIP) })
}

func (l *link) Release() {
	in := (*Instance)(l)
	in.stopBurst()
	// Not ours any more: another host answering ARP for it is no conflict.
	in.stopProbes()
	in.mu.Lock()
	clear(in.conflicts)
	in.syncConflictsLocked()
	in.mu.Unlock()
	if err := in.addrs.Remove(); err != nil {
		in.log.Error("VIPs not removed", "err", err)
	}
	in.holding = false
	if in.extra != nil {
		in.extra.set(in.extraSet, false)
	}
}

func (l *link) Reannounce() {
	in := (*Instance)(l)
	in.announce("split brain healed")
	if in.extra != nil {
		in.extra.announceAll()
	}
}
