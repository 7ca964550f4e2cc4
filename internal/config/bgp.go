package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// BGP announces VIPs to routers.
type BGP struct {
	ASN uint32 `yaml:"asn"`
	// RouterID is an IPv4 address identifying this speaker. Required.
	RouterID string `yaml:"router_id"`
	// ListenPort accepts sessions (for passive neighbors). Default: none;
	// 179 when a neighbor is passive.
	ListenPort int        `yaml:"listen_port"`
	Neighbors  []Neighbor `yaml:"neighbors"`
	Announce   []Announce `yaml:"announce"`
	// GracefulRestart (RFC 4724) with every neighbor. Default off.
	GracefulRestart GracefulRestart `yaml:"graceful_restart"`
}

// GracefulRestart lets routers keep vigil's routes, marked stale, while
// vigil restarts: a stop sends no withdrawal and closes the sessions
// without a NOTIFICATION. For prefixes whose traffic does not depend on
// vigil running (not health-tied); off by default.
type GracefulRestart struct {
	Enabled bool `yaml:"enabled"`
	// RestartTime is how long a router keeps the routes when vigil is gone:
	// whole seconds up to 4095 (the capability's 12 bits). Default 120s.
	RestartTime time.Duration `yaml:"restart_time"`
}

// DefaultRestartTime is graceful restart's default restart time.
const DefaultRestartTime = 120 * time.Second

// Neighbor is a BGP peer.
type Neighbor struct {
	Address string `yaml:"address"`
	ASN     uint32 `yaml:"asn"`
	Port    int    `yaml:"port"`
	// Password is the TCP MD5 signature password (RFC 2385).
	Password string `yaml:"password"`
	// HoldTime default 9s (keepalives every 3s): a dead node's routes go
	// within seconds; 3s is the lowest.
	HoldTime time.Duration `yaml:"hold_time"`
	Passive  bool          `yaml:"passive"`
	// BFD runs a BFD session (RFC 5880, single-hop RFC 5881) with the
	// neighbor and closes the BGP session the moment it goes down. nil:
	// no BFD.
	BFD *BFD `yaml:"bfd"`
}

// BFD is a neighbor's BFD session.
type BFD struct {
	// MinRx is the fastest rate this node accepts packets at; default
	// 300ms.
	MinRx time.Duration `yaml:"min_rx"`
	// MinTx is the rate this node would like to send at; default 300ms.
	MinTx time.Duration `yaml:"min_tx"`
	// Multiplier is how many intervals without a packet take the session
	// down; default 3.
	Multiplier int `yaml:"multiplier"`
}

// BFD defaults: failure detected within ~1 s.
const (
	DefaultBFDInterval   = 300 * time.Millisecond
	DefaultBFDMultiplier = 3
	// MinBFDInterval and MaxBFDInterval bound bfd.min_rx and min_tx.
	MinBFDInterval = 10 * time.Millisecond
	MaxBFDInterval = time.Minute
)

// Announce is a prefix advertised while its conditions hold.
type Announce struct {
	Prefix string `yaml:"prefix"`
	// WhenHealthy names a check, or a balancer (healthy while a backend is
	// up). Empty: always.
	WhenHealthy string `yaml:"when_healthy"`
	// WhenMaster names a VRRP instance: announce only while master.
	WhenMaster string `yaml:"when_master"`
	// WhenEndpoints names a Service, NAMESPACE/NAME: announce only while
	// this node has a ready endpoint of it (externalTrafficPolicy Local).
	WhenEndpoints string   `yaml:"when_endpoints"`
	Communities   []string `yaml:"communities,flow"`
	LocalPref     uint32   `yaml:"local_pref"`
	MED           uint32   `yaml:"med"`
}

// DefaultHoldTime is a neighbor's default hold time.
const DefaultHoldTime = 9 * time.Second

// ParseCommunity reads "ASN:VALUE".
func ParseCommunity(s string) (uint32, error) {
	a, b, ok := strings.Cut(s, ":")
	hi, err1 := strconv.ParseUint(a, 10, 16)
	lo, err2 := strconv.ParseUint(b, 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%q is not a community ASN:VALUE (each 0..65535)", s)
	}
	return uint32(hi)<<16 | uint32(lo), nil
}

func (v *validator) bgp(checks map[string]bool, vips map[netip.Addr]string) {
	b := &v.c.BGP
	if b.ASN == 0 && len(b.Neighbors) == 0 && len(b.Announce) == 0 {
		return
	}
	if b.ASN == 0 {
		v.add("bgp.asn", "is required")
	}
	if a, err := netip.ParseAddr(b.RouterID); err != nil || !a.Is4() {
		v.add("bgp.router_id", "%q is not an IPv4 address", b.RouterID)
	}
	if len(b.Neighbors) == 0 {
		v.add("bgp.neighbors", "needs at least one neighbor")
	}
	passive := false
	seen := map[netip.Addr]bool{}
	for i := range b.Neighbors {
		n := &b.Neighbors[i]
		p := fmt.Sprintf("bgp.neighbors[%d]", i)
		a, err := netip.ParseAddr(n.Address)
		switch {
		case err != nil:
			v.add(p+".address", "%q is not an IP address", n.Address)
		case seen[a]:
			v.add(p+".address", "%s is listed twice", a)
		case a.IsLinkLocalUnicast() && a.Zone() == "":
			v.add(p+".address", "%s is link-local: name its interface, %s%%eth0", a, a)
		}
		seen[a] = true
		if n.ASN == 0 {
			v.add(p+".asn", "is required")
		}
		setDefault(v, p+".port", &n.Port, 179)
		if n.Port < 1 || n.Port > 65535 {
			v.add(p+".port", "%d is out of range 1..65535", n.Port)
		}
		setDefault(v, p+".hold_time", &n.HoldTime, DefaultHoldTime)
		if n.HoldTime < 3*time.Second || n.HoldTime > 65535*time.Second || n.HoldTime%time.Second != 0 {
			v.add(p+".hold_time", "%v: whole seconds from 3s to 65535s", n.HoldTime)
		}
		if len(n.Password) > 80 {
			v.add(p+".password", "is longer than 80 bytes (the TCP MD5 key limit)")
		}
		passive = passive || n.Passive
		if n.BFD != nil {
			v.bfd(p+".bfd", n.BFD)
		}
	}
	if b.ListenPort == 0 && passive {
		b.ListenPort = 179
	}
	if gr := &b.GracefulRestart; gr.Enabled {
		setDefault(v, "bgp.graceful_restart.restart_time", &gr.RestartTime, DefaultRestartTime)
		if gr.RestartTime < time.Second || gr.RestartTime > 4095*time.Second || gr.RestartTime%time.Second != 0 {
			v.add("bgp.graceful_restart.restart_time", "%v: whole seconds from 1s to 4095s", gr.RestartTime)
		}
	}
	if b.ListenPort < 0 || b.ListenPort > 65535 {
		v.add("bgp.listen_port", "%d is out of range 0..65535", b.ListenPort)
	}
	instances := map[string]bool{}
	for _, in := range v.c.VRRP.All() {
		instances[in.Name] = true
	}
	balancers := map[string]bool{}
	for _, bl := range v.c.Balancers {
		balancers[bl.Name] = true
	}
	prefixes := map[netip.Prefix]bool{}
	for i := range b.Announce {
		an := &b.Announce[i]
		p := fmt.Sprintf("bgp.announce[%d]", i)
		pfx, err := ParseVIP(an.Prefix)
		switch {
		case err != nil:
			v.add(p+".prefix", "%q is not a prefix", an.Prefix)
		case prefixes[pfx]:
			v.add(p+".prefix", "%s is announced twice", pfx)
		case !isVIP(pfx.Addr(), vips, v.c):
			v.add(p+".prefix", "%s is not a VIP of this config (a VRRP VIP or a balancer's listen address)", pfx.Addr())
		}
		prefixes[pfx] = true
		if an.WhenHealthy != "" && !checks[an.WhenHealthy] && !balancers[an.WhenHealthy] {
			v.add(p+".when_healthy", "no check or balancer named %q", an.WhenHealthy)
		}
		if an.WhenMaster != "" && !instances[an.WhenMaster] {
			v.add(p+".when_master", "no VRRP instance named %q", an.WhenMaster)
		}
		if an.WhenEndpoints != "" {
			v.serviceRef(p+".when_endpoints", an.WhenEndpoints)
		}
		for j, c := range an.Communities {
			if _, err := ParseCommunity(c); err != nil {
				v.add(fmt.Sprintf("%s.communities[%d]", p, j), "%v", err)
			}
		}
	}
}

func (v *validator) bfd(p string, b *BFD) {
	setDefault(v, p+".min_rx", &b.MinRx, DefaultBFDInterval)
	setDefault(v, p+".min_tx", &b.MinTx, DefaultBFDInterval)
	setDefault(v, p+".multiplier", &b.Multiplier, DefaultBFDMultiplier)
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"min_rx", b.MinRx}, {"min_tx", b.MinTx}} {
		if d.v < MinBFDInterval || d.v > MaxBFDInterval || d.v%time.Microsecond != 0 {
			v.add(p+"."+d.key, "%v: from 10ms to 1m, in whole microseconds", d.v)
		}
	}
	if b.Multiplier < 1 || b.Multiplier > 255 {
		v.add(p+".multiplier", "%d is out of range 1..255", b.Multiplier)
	}
}

func isVIP(a netip.Addr, vips map[netip.Addr]string, c *Config) bool {
	if _, ok := vips[a]; ok {
		return true
	}
	for _, b := range c.Balancers {
		for _, l := range b.Listen {
			if ap, err := ParseListen(l); err == nil && ap.Addr() == a {
				return true
			}
		}
	}
	return false
}
