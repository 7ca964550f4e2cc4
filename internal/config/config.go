// Package config is vigil's one configuration model: the YAML schema, its
// defaults, and validation that names the key path and line of every problem.
// Components receive their own typed part of a validated Config; nothing here
// touches the network or the kernel.
package config

import (
	"time"
)

// Config is the whole vigil.yaml.
type Config struct {
	// Cluster names this group of nodes; VRIDs derive from it when omitted.
	Cluster string `yaml:"cluster"`
	// Node is this node's name. Default: the hostname.
	Node   string  `yaml:"node"`
	VRRP   VRRP    `yaml:"vrrp"`
	Checks []Check `yaml:"checks"`
	// Balancers are the L4 load balancers (TCP frontends over backends).
	Balancers []Balancer `yaml:"balancers"`
	// BGP announces VIPs to routers.
	BGP BGP `yaml:"bgp"`
	// Kubernetes is how to reach the cluster's API; nil when the file has no
	// kubernetes section (the *_from keys then use the defaults).
	Kubernetes *Kubernetes `yaml:"kubernetes"`
	API        API         `yaml:"api"`
	Log        Log         `yaml:"log"`
	lines      lineInfo    `yaml:"-"`
}

// VRRP holds the virtual routers.
type VRRP struct {
	Instances  []Instance  `yaml:"instances"`
	Pools      []Pool      `yaml:"pools"`
	SyncGroups []SyncGroup `yaml:"sync_groups"`
	// PoolInstances are the instances generated from Pools for this node,
	// one per VIP, filled in by validation.
	PoolInstances []Instance `yaml:"-"`
}

// All returns the configured and the generated instances.
func (v *VRRP) All() []Instance {
	return append(append([]Instance(nil), v.Instances...), v.PoolInstances...)
}

// Pool spreads VIPs over nodes, active-active: one VRRP instance per VIP,
// each node the first choice for an equal share (see package pool).
type Pool struct {
	Name      string   `yaml:"name"`
	Interface string   `yaml:"interface"`
	VIPs      []string `yaml:"vips,flow"`
	// Nodes taking part, by their node name; this node must be one of them.
	Nodes []string `yaml:"nodes,flow"`
	// VRIDBase is the VRID of the first VIP (in address order); the others
	// follow consecutively, wrapping after 255. Default: derived from
	// cluster and pool name like an instance's VRID.
	VRIDBase       int           `yaml:"vrid_base"`
	Version        int           `yaml:"version"`
	AdvertInterval time.Duration `yaml:"advert_interval"`
	// MoveBackDelay is how long a returning node waits before taking its
	// VIPs back, so a flapping node does not churn the router. Default 5s.
	MoveBackDelay *time.Duration `yaml:"move_back_delay"`
	Track         Track          `yaml:"track"`
	GARP          GARP           `yaml:"garp"`
	Notify        string         `yaml:"notify"`
	NotifyTimeout time.Duration  `yaml:"notify_timeout"`
}

// Instance is one virtual router: a VRID on one interface owning some VIPs.
type Instance struct {
	Name      string `yaml:"name"`
	Interface string `yaml:"interface"`
	// VRID 1..255. Default: derived from cluster and instance name (DeriveVRID).
	VRID int `yaml:"vrid"`
	// Version 2 (RFC 3768, IPv4 only) or 3 (RFC 5798). Default 3.
	Version int `yaml:"version"`
	// Priority 1..255; 255 means this node owns the addresses. Default 100.
	Priority int `yaml:"priority"`
	// AdvertInterval between adverts. Default 200ms for v3 (failover in about
	// 0.7s), 1s for v2. v3: multiples of 10ms; v2: whole seconds.
	AdvertInterval time.Duration `yaml:"advert_interval"`
	// Preempt a lower-priority master. Default true.
	Preempt *bool `yaml:"preempt"`
	// PreemptDelay after start before preempting. Default 0.
	PreemptDelay time.Duration `yaml:"preempt_delay"`
	// Accept packets addressed to the VIPs while master. Default true, as
	// keepalived without vrrp_strict: vigil serves on its VIPs. false is
	// RFC 5798 Accept_Mode False: traffic to the VIPs is dropped (nftables).
	Accept *bool `yaml:"accept"`
	// UnicastPeers: send adverts to these addresses instead of multicast,
	// and accept adverts only from them.
	UnicastPeers []string `yaml:"unicast_peers,flow"`
	// UnicastPeersFrom adds the addresses of other matching Nodes to
	// UnicastPeers (package kube expands it).
	UnicastPeersFrom *PeersFrom `yaml:"unicast_peers_from"`
	// AuthPass is VRRPv2 simple-text authentication, at most 8 bytes.
	AuthPass string `yaml:"auth_pass"`
	// VIPs are the virtual addresses, with or without a prefix length.
	VIPs   []string `yaml:"vips,flow"`
	Track  Track    `yaml:"track"`
	GARP   GARP     `yaml:"garp"`
	Notify string   `yaml:"notify"`
	// NotifyTimeout bounds one run of the notify hook. Default 10s.
	NotifyTimeout time.Duration `yaml:"notify_timeout"`
	// Path is the key path of the instance, or of the pool it was generated
	// from, for error messages.
	Path string `yaml:"-"`
}

// Track lists what changes an instance's priority or puts it in FAULT.
type Track struct {
	Interfaces []TrackRef `yaml:"interfaces,flow"`
	Checks     []TrackRef `yaml:"checks,flow"`
	// Endpoints: Services that should have a ready endpoint on this node.
	Endpoints []EndpointTrack `yaml:"endpoints,flow"`
}

// TrackRef names a tracked interface or check. Weight 0: down means FAULT.
// Weight > 0: added to the priority while up. Weight < 0: added while down.
type TrackRef struct {
	Name   string `yaml:"name"`
	Weight int    `yaml:"weight"`
}

// GARP controls gratuitous ARP / unsolicited neighbour advertisements.
type GARP struct {
	// Count of announcements on becoming master. Default 5.
	Count *int `yaml:"count"`
	// Interval between them. Default 250ms, so a burst spans Linux's 1s ARP locktime.
	Interval time.Duration `yaml:"interval"`
	// Refresh repeats one announcement this often while master; 0 turns it off. Default 60s.
	Refresh *time.Duration `yaml:"refresh"`
}

// SyncGroup makes instances change state together, as keepalived's vrrp_sync_group.
type SyncGroup struct {
	Name      string   `yaml:"name"`
	Instances []string `yaml:"instances,flow"`
	Notify    string   `yaml:"notify"`
}

// Check is a named health check that instances can track.
type Check struct {
	Name   string     `yaml:"name"`
	Exec   *ExecCheck `yaml:"exec"`
	TCP    *TCPCheck  `yaml:"tcp"`
	HTTP   *HTTPCheck `yaml:"http"`
	Timing `yaml:",inline"`
}

// Timing is when a check runs and how many results in a row change its state.
type Timing struct {
	// Interval between runs. Default 2s.
	Interval time.Duration `yaml:"interval"`
	// FastInterval is the interval while a check is changing state (after a
	// first failure while up, or a first pass while down), as HAProxy's
	// fastinter: a suspected failure is confirmed quickly. Default a quarter
	// of the interval (at least 10ms); set it to the interval for
	// HAProxy's default behaviour.
	FastInterval time.Duration `yaml:"fast_interval"`
	// Timeout of one run. Default 1s.
	Timeout time.Duration `yaml:"timeout"`
	// Rise successes in a row make the check up. Default 2.
	Rise int `yaml:"rise"`
	// Fall failures in a row make the check down. Default 2.
	Fall int `yaml:"fall"`
}

// ExecCheck runs a command through /bin/sh -c; exit status 0 means up.
type ExecCheck struct {
	Script string `yaml:"script"`
}

// TCPCheck is up when a TCP connection to Address opens.
type TCPCheck struct {
	Address string `yaml:"address"`
}

// HTTPCheck is up when an HTTP(S) request answers with an expected status
// (and body). A named check gives URL; a balancer's check gives Path and TLS
// and asks each backend.
type HTTPCheck struct {
	URL  string `yaml:"url"`
	Path string `yaml:"path"`
	// TLS asks backends over HTTPS (balancer checks; a URL says it itself).
	TLS bool `yaml:"tls"`
	// Method default GET.
	Method string `yaml:"method"`
	// Host header; default the URL's host.
	Host string `yaml:"host"`
	// ExpectStatus lists codes and ranges ("200", "200-399"). Default 200-399.
	ExpectStatus []string `yaml:"expect_status,flow"`
	// BodyContains, when set, must occur in the first 64 KiB of the body.
	BodyContains string `yaml:"body_contains"`
	// InsecureSkipVerify skips certificate verification (HAProxy's verify none).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// CAFile verifies the server against these CAs instead of the system's.
	CAFile string `yaml:"ca_file"`
	// ClientCert and ClientKey: a client certificate to present (PEM files).
	ClientCert string `yaml:"client_cert"`
	ClientKey  string `yaml:"client_key"`
}

// API configures the control socket and the HTTP endpoint.
type API struct {
	// Socket is the control socket (vigil status); root only, mode 0600.
	// Default /run/vigil/vigil.sock.
	Socket string `yaml:"socket"`
	// HTTP serves /metrics and the status page. Default 127.0.0.1:9110;
	// "" turns it off.
	HTTP string `yaml:"http"`
}

// Log configures log/slog output.
type Log struct {
	// Format text or json. Default text.
	Format string `yaml:"format"`
	// Level debug, info, warn or error. Default info.
	Level string `yaml:"level"`
}

// Defaults shared by validation and documentation.
const (
	DefaultVersion  = 3
	DefaultPriority = 100
	// DefaultAdvertInterval (v3) gives sub-second failover by default while
	// leaving a backup 600ms+ of silence before it acts, so a briefly starved
	// master does not flap. v2 cannot go below a second.
	DefaultAdvertInterval   = 200 * time.Millisecond
	DefaultAdvertIntervalV2 = time.Second
	DefaultGARPCount        = 5
	DefaultGARPInterval     = 250 * time.Millisecond
	DefaultGARPRefresh      = 60 * time.Second
	DefaultNotifyTimeout    = 10 * time.Second
	DefaultCheckInterval    = 2 * time.Second
	DefaultCheckTimeout     = time.Second
	DefaultRise             = 2
	DefaultFall             = 2
	DefaultMoveBackDelay    = 5 * time.Second
	DefaultConnectTimeout   = 5 * time.Second
	DefaultIdleTimeout      = 10 * time.Minute
	DefaultRetries          = 3
	DefaultDrainTimeout     = 5 * time.Second
	DefaultFrontendMaxConn  = 10000
	DefaultMonitorPath      = "/readyz"
	DefaultSocket           = "/run/vigil/vigil.sock"
	DefaultHTTP             = "127.0.0.1:9110"
)
