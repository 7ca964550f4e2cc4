// Package api shows what the daemon does: a JSON snapshot on a root-only
// unix socket (vigil status), Prometheus metrics and a status page over HTTP.
// It reads state through a Source function and holds none of its own.
package api

import "time"

// Snapshot is the daemon's state at one moment.
type Snapshot struct {
	Node    string    `json:"node"`
	Cluster string    `json:"cluster"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	Taken   time.Time `json:"taken"`
	// Config is the file the daemon reads at start and on every reload.
	Config string `json:"config,omitempty"`
	// LastReload is the outcome of the last reload of that file.
	LastReload *ReloadStatus `json:"last_reload,omitempty"`
	Instances  []Instance    `json:"instances"`
	Interfaces []Interface   `json:"interfaces"`
	Checks     []Check       `json:"checks"`
	Balancers  []Balancer    `json:"balancers"`
	// XDP holds the DSR program's verdict counters, when it runs.
	XDP map[string]uint64 `json:"xdp,omitempty"`
	BGP *BGP              `json:"bgp,omitempty"`
	// BFD is the BFD sessions with BGP neighbors, when any has bfd set.
	BFD *BFD `json:"bfd,omitempty"`
	// Kubernetes is the API source of members, when configured.
	Kubernetes *Kubernetes `json:"kubernetes,omitempty"`
	// Redirects are the API port redirects (balancers' redirect_from).
	Redirects []Redirect `json:"redirects,omitempty"`
	// Services are the LoadBalancer Services' addresses vigil serves.
	Services []ServiceAddress `json:"services,omitempty"`
	// Allocator is the LoadBalancer address allocator, when vigil serves
	// Services.
	Allocator *Allocator `json:"allocator,omitempty"`
	// Pools are kubernetes.services' address pools and their use.
	Pools []PoolUsage `json:"pools,omitempty"`
}

// PoolUsage is one address pool's size and the addresses Services hold.
type PoolUsage struct {
	Name     string  `json:"name"`
	Announce string  `json:"announce"`
	Size     float64 `json:"size"` // a float: an IPv6 pool can be larger than any integer
	InUse    int     `json:"in_use"`
}

// Allocator is the state of the LoadBalancer allocator on this node.
type Allocator struct {
	Identity   string              `json:"identity"`
	Leader     string              `json:"leader"` // who writes allocations now
	Leading    bool                `json:"leading"`
	Synced     bool                `json:"synced"`
	WatchError string              `json:"watch_error,omitempty"`
	Services   int                 `json:"services"`
	Held       int                 `json:"held"` // freed addresses not reused yet
	Failures   []AllocationFailure `json:"failures,omitempty"`
}

// AllocationFailure is a Service that got no address, and why.
type AllocationFailure struct {
	Service string `json:"service"`
	Reason  string `json:"reason"`
}

// ServiceAddress is one address of a LoadBalancer Service.
type ServiceAddress struct {
	Service  string `json:"service"` // NAMESPACE/NAME
	Address  string `json:"address"`
	Pool     string `json:"pool"`
	Announce string `json:"announce"` // l2 or bgp
	// Owner is the node whose L2 slot carries the address ("" for bgp).
	Owner string `json:"owner,omitempty"`
	// Slot is the VRRP instance of that slot: the owner first, its heir
	// (who takes the address if the owner dies) next.
	Slot string `json:"slot,omitempty"`
	// Here: this node announces it now (holds it, or advertises it).
	Here      bool `json:"here"`
	Local     bool `json:"local,omitempty"` // externalTrafficPolicy Local
	Endpoints int  `json:"endpoints"`       // ready endpoints
}

// ReloadStatus is the outcome of the last reload (vigil reload or SIGHUP).
type ReloadStatus struct {
	At         time.Time `json:"at,omitzero"` // zero: none since the start
	Successful bool      `json:"successful"`  // true until one is refused
	Error      string    `json:"error,omitempty"`
	// LastSuccess is when a reload last applied, or the start.
	LastSuccess time.Time `json:"last_success"`
}

// ReloadResult is the daemon's answer to a reload request.
type ReloadResult struct {
	Config  string   `json:"config"` // the file it read
	Applied bool     `json:"applied"`
	Changed []string `json:"changed,omitempty"`
	Error   string   `json:"error,omitempty"` // why it was refused
}

// Kubernetes is the state of the API source: where it reads, whether its
// watches are up, and what it last applied.
type Kubernetes struct {
	Server  string `json:"server"` // the address that answered last
	WatchUp bool   `json:"watch_up"`
	Synced  bool   `json:"synced"`
	// Origin of the members in force: api, state-file or none.
	Origin         string    `json:"origin"`
	Nodes          int       `json:"nodes"`
	Slices         int       `json:"endpoint_slices"`
	LastSync       time.Time `json:"last_sync,omitzero"`
	LastError      string    `json:"last_error,omitempty"`
	StateFileError string    `json:"state_file_error,omitempty"`
	// ChangesApplied counts membership changes applied (reloads of the
	// components they touched).
	ChangesApplied uint64 `json:"changes_applied"`
	// Notes from the last expansion: Nodes skipped, peers kept.
	Notes []string `json:"notes,omitempty"`
}

// Redirect is one DNAT of a balancer's redirect_from.
type Redirect struct {
	Balancer  string `json:"balancer"`
	From      string `json:"from"` // VIP:PORT clients use
	To        string `json:"to"`   // VIP:PORT the balancer listens on
	Installed bool   `json:"installed"`
	Reason    string `json:"reason,omitempty"`
}

// BGP is the speaker's sessions and what it announces.
type BGP struct {
	Sessions  []BGPSession `json:"sessions"`
	Announced []string     `json:"announced"`
}

// BGPSession is one neighbor.
type BGPSession struct {
	Neighbor  string    `json:"neighbor"`
	ASN       uint32    `json:"asn"`
	State     string    `json:"state"`
	Since     time.Time `json:"since,omitzero"`
	LastError string    `json:"last_error,omitempty"` // why the last attempt failed, while not established
	Failures  int       `json:"failures,omitempty"`   // failed attempts in a row
	RetryAt   time.Time `json:"retry_at,omitzero"`    // next attempt, while backing off
	// RoutesReceived: routes the neighbor sent, all rejected on import.
	RoutesReceived uint64 `json:"routes_received,omitempty"`
}

// BFD is the BFD sessions and the packets that reached none.
type BFD struct {
	Sessions []BFDSession `json:"sessions"`
	// Dropped counts packets dropped before a session took them, by
	// reason (TTL not 255, invalid, unknown peer or discriminator).
	Dropped map[string]uint64 `json:"dropped,omitempty"`
}

// BFDSession is the BFD session with one BGP neighbor.
type BFDSession struct {
	Neighbor    string `json:"neighbor"`
	State       string `json:"state"` // AdminDown, Down, Init, Up
	RemoteState string `json:"remote_state"`
	// Diag is why this end last went down ("control detection time
	// expired", "neighbor signaled session down", ...).
	Diag        string `json:"diag"`
	LocalDiscr  uint32 `json:"local_discriminator"`
	RemoteDiscr uint32 `json:"remote_discriminator"`
	// TxInterval and RxInterval are the negotiated intervals; a packet
	// missing for DetectionTime takes the session down.
	TxInterval    time.Duration `json:"tx_interval"`
	RxInterval    time.Duration `json:"rx_interval"`
	DetectionTime time.Duration `json:"detection_time"`
	Since         time.Time     `json:"since"`
	Flaps         uint64        `json:"flaps"` // transitions to Down
	Sent          uint64        `json:"packets_sent"`
	Received      uint64        `json:"packets_received"`
}

// Instance is one VRRP instance.
type Instance struct {
	Name              string    `json:"name"`
	Interface         string    `json:"interface"`
	VRID              int       `json:"vrid"`
	Version           int       `json:"version"`
	State             string    `json:"state"`
	Priority          int       `json:"priority"`
	EffectivePriority int       `json:"effective_priority"`
	Master            string    `json:"master,omitempty"`
	VIPs              []string  `json:"vips"`
	UnicastPeers      []string  `json:"unicast_peers,omitempty"` // in force now; a reload may change them
	Since             time.Time `json:"since"`
	AdvertsSent       uint64    `json:"adverts_sent"`
	AdvertsReceived   uint64    `json:"adverts_received"`
	Transitions       uint64    `json:"transitions"`
	ARPConflicts      uint64    `json:"arp_conflicts"` // probes that heard another host, ever
	// ARPConflictsNow are the VIPs another host answers ARP for now (the
	// last probe of each); empty once a probe hears no one, or not master.
	ARPConflictsNow []ARPConflict     `json:"arp_conflicts_now,omitempty"`
	Drops           map[string]uint64 `json:"drops,omitempty"`
	Foreign         *Foreign          `json:"vrid_conflict,omitempty"`
	// Resigned: an operator handed over (vigil instance resign); the
	// instance stays backup until vigil instance resume. Lost at restart.
	Resigned bool `json:"resigned,omitempty"`
	// MasterNode is the master's node name when known: this node, a
	// Kubernetes Node with that address, or a pool's ranking read from
	// the priority the master advertises. Master stays its address.
	MasterNode string `json:"master_node,omitempty"`
	// MasterPriority is the priority the master advertises (ours when
	// this node is master); 0 when no master is known.
	MasterPriority int `json:"master_priority,omitempty"`
	// LastTransition is the last state change and why, as the state
	// machine knew it; nil before the first.
	LastTransition *Transition `json:"last_transition,omitempty"`
	// Tracked are the tracked items that move the priority or cause a
	// fault now ("check api-readyz down (weight -50)").
	Tracked []string `json:"tracked,omitempty"`
	// Pool, for an instance of vrrp.pools, is its VIP's preferred node
	// and why the VIP is or is not there.
	Pool *PoolVIP `json:"pool,omitempty"`
}

// Transition is one VRRP state change and its reason.
type Transition struct {
	PrevState string    `json:"prev_state"`
	State     string    `json:"state"`
	At        time.Time `json:"at"`
	// Cause is the reason's kind: startup, master_down, handover,
	// preempt, preempted, tracked, fault, fault_cleared, resign,
	// sync_group, shutdown.
	Cause string `json:"cause"`
	// Reason in words, peers named by node where known.
	Reason string `json:"reason"`
	// Peer is the other router involved (the master that went silent or
	// handed over, the one preempted or preempting), with its node name
	// when known and the priority it advertised.
	Peer         string `json:"peer,omitempty"`
	PeerNode     string `json:"peer_node,omitempty"`
	PeerPriority int    `json:"peer_priority,omitempty"`
	// Priority is ours after the change.
	Priority int `json:"priority"`
	// Tracked are the items that caused a fault or moved our priority.
	Tracked []string `json:"tracked,omitempty"`
}

// PoolVIP is where a pool's VIP is against where it should be.
type PoolVIP struct {
	Pool string `json:"pool"`
	// Ranking is the nodes in order of preference for this VIP; the
	// first is its preferred node.
	Ranking   []string `json:"ranking"`
	Preferred string   `json:"preferred"`
	// OnPreferred: the master is the preferred node (as far as this node
	// can tell: its own state, or the master's name).
	OnPreferred bool `json:"on_preferred"`
	// Why the VIP is or is not on its preferred node, in words.
	Why string `json:"why"`
}

// ARPConflict is a VIP another host answers ARP for.
type ARPConflict struct {
	VIP  string   `json:"vip"`
	MACs []string `json:"macs"`
	// Peer is the VRRP peer (unicast peer or advert source) one of the
	// MACs belongs to, by the neighbour table. Others are other addresses
	// the table has for those MACs.
	Peer     string    `json:"peer,omitempty"`
	Others   []string  `json:"their_ips,omitempty"`
	LastSeen time.Time `json:"last_seen"`
}

// Foreign is another group using this VRID: its last advert (source, VIPs,
// reason, when), the adverts from all such sources ever (count), and the
// sources seen, the most recent few.
type Foreign struct {
	Source   string          `json:"source"`
	VIPs     []string        `json:"vips"`
	Reason   string          `json:"reason"`
	LastSeen time.Time       `json:"last_seen"`
	Count    uint64          `json:"count"`
	Sources  []ForeignSource `json:"sources,omitempty"`
}

// ForeignSource is one source of another group's adverts for this VRID.
type ForeignSource struct {
	Source   string    `json:"source"`
	Count    uint64    `json:"count"`
	LastSeen time.Time `json:"last_seen"`
}

// Interface holds the gratuitous ARP / NA counters of one interface, and
// its VRRP sockets' kernel drops.
type Interface struct {
	Name           string `json:"name"`
	GARPSent       uint64 `json:"garp_sent"`
	GARPSuppressed uint64 `json:"garp_suppressed"`
	// VRRPSocketDrops: VRRP messages the kernel dropped on the interface's
	// raw sockets (IPv4 and IPv6) because a receive queue was full.
	VRRPSocketDrops uint64 `json:"vrrp_socket_drops"`
}

// Check is one health check (named, or a balancer backend's).
type Check struct {
	Name      string        `json:"name"`
	Up        bool          `json:"up"`
	LastProbe time.Time     `json:"last_probe"`
	LastError string        `json:"last_error,omitempty"`
	Latency   time.Duration `json:"latency_ns"`
	Probes    uint64        `json:"probes"`
	Failures  uint64        `json:"failures"`
}

// Balancer is one L4 balancer.
type Balancer struct {
	Name           string    `json:"name"`
	Mode           string    `json:"mode,omitempty"`     // dsr; "" is proxy
	XDPMode        string    `json:"xdp_mode,omitempty"` // native or generic
	Listen         []string  `json:"listen"`
	Algorithm      string    `json:"algorithm"`
	Packets        uint64    `json:"packets,omitempty"` // dsr
	Bytes          uint64    `json:"bytes,omitempty"`   // dsr
	Active         int64     `json:"active"`
	MaxActive      int64     `json:"max_active"` // the most at once since the balancer started
	Accepted       uint64    `json:"accepted"`
	Refused        uint64    `json:"refused"`
	NoBackend      uint64    `json:"no_backend"`
	BadProxyHeader uint64    `json:"bad_proxy_header"`
	Backends       []Backend `json:"backends"`
	Error          string    `json:"error,omitempty"` // why it is not running (mode dsr without BPF rights)

	// FDExhaustedAccept and FDExhaustedConnect: accept() or the backend
	// socket() failed for want of descriptors or socket memory (the node's
	// limit, not counted against any backend).
	FDExhaustedAccept  uint64 `json:"fd_exhausted_accept,omitempty"`
	FDExhaustedConnect uint64 `json:"fd_exhausted_connect,omitempty"`

	// Notes say which backends a LoadBalancer Service's dsr balancer left
	// out, and why (not one hop away, an address of this host).
	Notes []string `json:"notes,omitempty"`
}

// Backend is one server of a balancer.
type Backend struct {
	Address string `json:"address"`
	// Up says its checks pass (with no check, always).
	Up bool `json:"up"`
	// State is what it does for new connections: up, down, drain (weight
	// 0 or an operator's drain: it takes none, its established ones go
	// on) or disabled (an operator's disable: no traffic at all).
	// BackendState derives it from Up, Weight and Admin.
	State string `json:"state"`
	// Admin is what an operator set with vigil backend: drain or
	// disabled; empty when none (enable). Kept across reloads, lost at
	// restart.
	Admin         string `json:"admin,omitempty"`
	Weight        int    `json:"weight"`
	Active        int64  `json:"active"`
	Connections   uint64 `json:"connections"`
	ConnectErrors uint64 `json:"connect_errors"`
	BytesIn       uint64 `json:"bytes_in"` // mode dsr: IP bytes steered to the backend
	BytesOut      uint64 `json:"bytes_out"`
	Packets       uint64 `json:"packets,omitempty"` // mode dsr: packets steered to the backend
	// Source says where the backend came from: static, node NAME or
	// endpoints NS/NAME (node X).
	Source string `json:"source,omitempty"`
	// ConnectTimeouts are the connect errors that were connect_timeout
	// running out; the rest were refused, unreachable or reset.
	ConnectTimeouts uint64 `json:"connect_timeouts"`
	// MaxActive is the most connections at once since the backend was
	// added (HAProxy's max sessions).
	MaxActive int64 `json:"max_active"`
}

// Backend states.
const (
	BackendUp       = "up"
	BackendDown     = "down"
	BackendDrain    = "drain"
	BackendDisabled = "disabled"
)

// BackendStates are the values of Backend.State, for the one-hot gauge.
var BackendStates = []string{BackendUp, BackendDown, BackendDrain, BackendDisabled}

// BackendState is a backend's state from its health, weight and admin
// state. An operator's disable wins: nothing reaches the backend, whatever
// its checks say. Otherwise a backend that is down is down whatever its
// weight or drain: that is what needs attention.
func BackendState(up bool, weight int, admin string) string {
	switch {
	case admin == BackendDisabled:
		return BackendDisabled
	case !up:
		return BackendDown
	case weight == 0, admin == BackendDrain:
		return BackendDrain
	}
	return BackendUp
}

// Source returns a fresh snapshot.
type Source func() Snapshot
