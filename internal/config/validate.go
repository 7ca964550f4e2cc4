package config

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// validator collects errors with the line of their key path.
type validator struct {
	c           *Config
	es          Errors
	dsrServices int // listen addresses of dsr balancers so far
}

func (v *validator) add(path, format string, args ...any) {
	line := v.c.lines.byPath[path]
	// A defaulted key has no line: point at its closest parent that has one.
	for p := path; line == 0 && p != ""; {
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
		line = v.c.lines.byPath[p]
	}
	v.es = append(v.es, Error{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// DeriveVRID maps cluster and instance name to a VRID in 1..255 with FNV-1a,
// so clusters sharing a segment pick different VRIDs without coordination
// and every node of one cluster computes the same one.
func DeriveVRID(cluster, instance string) int {
	h := fnv.New32a()
	h.Write([]byte(cluster + "/" + instance))
	return int(h.Sum32()%255) + 1
}

// ParseVIP accepts an address with or without a prefix length; a bare address
// is a host route (/32 or /128).
func ParseVIP(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (c *Config) validate() Errors {
	v := &validator{c: c}
	if c.Node == "" {
		c.Node, _ = os.Hostname()
	}
	v.oneOf("log.format", &c.Log.Format, "text", "json")
	v.oneOf("log.level", &c.Log.Level, "info", "debug", "warn", "error")
	setDefault(v, "api.socket", &c.API.Socket, DefaultSocket)
	setDefault(v, "api.http", &c.API.HTTP, DefaultHTTP)
	if !filepath.IsAbs(c.API.Socket) {
		v.add("api.socket", "%q is not an absolute path", c.API.Socket)
	} else if fi, err := os.Lstat(c.API.Socket); err == nil && fi.Mode().Type() != os.ModeSocket {
		// vigil run would refuse it (and once deleted it): say so at check.
		v.add("api.socket", "%s exists and is not a socket", c.API.Socket)
	}
	if c.API.HTTP != "" {
		if _, err := ParseListen(c.API.HTTP); err != nil {
			v.add("api.http", "%v", err)
		}
	}
	checks := v.checks()
	vrids, vips := v.instances(checks)
	v.pools(checks, vrids, vips)
	v.syncGroups()
	v.peerNames()
	v.balancers()
	v.bgp(checks, vips)
	v.kubernetes()
	services := c.Kubernetes != nil && c.Kubernetes.Services != nil
	if len(c.VRRP.Instances) == 0 && len(c.VRRP.Pools) == 0 && len(c.Checks) == 0 && len(c.Balancers) == 0 && !services {
		v.add("vrrp.instances", "nothing to do: no instances configured")
	}
	return v.es
}

// uniqueName checks a name's form and that seen does not hold it yet.
func (v *validator) uniqueName(path, name string, seen map[string]bool) {
	switch {
	case !nameRE.MatchString(name):
		v.add(path, "%q is not a valid name (letters, digits, _ . -)", name)
	case seen[name]:
		v.add(path, "%q is used twice", name)
	}
	seen[name] = true
}

func (v *validator) checks() map[string]bool {
	names := map[string]bool{}
	for i := range v.c.Checks {
		ch := &v.c.Checks[i]
		p := fmt.Sprintf("checks[%d]", i)
		v.uniqueName(p+".name", ch.Name, names)
		kinds := 0
		if ch.Exec != nil {
			kinds++
			if strings.TrimSpace(ch.Exec.Script) == "" {
				v.add(p+".exec.script", "is empty")
			}
		}
		if ch.TCP != nil {
			kinds++
			if _, err := netip.ParseAddrPort(ch.TCP.Address); err != nil {
				v.add(p+".tcp.address", "%q is not ADDRESS:PORT", ch.TCP.Address)
			}
		}
		if ch.HTTP != nil {
			kinds++
			v.httpCheck(p+".http", ch.HTTP, true)
		}
		if kinds != 1 {
			v.add(p, "needs exactly one of exec, tcp or http")
		}
		v.timing(p, &ch.Timing)
	}
	return names
}

// instances validates vrrp.instances and returns the VRIDs and VIPs they use.
func (v *validator) instances(checks map[string]bool) (vrids map[string]string, vips map[netip.Addr]string) {
	names := map[string]bool{}
	vrids = map[string]string{} // interface/family/vrid -> path
	vips = map[netip.Addr]string{}
	for i := range v.c.VRRP.Instances {
		in := &v.c.VRRP.Instances[i]
		p := fmt.Sprintf("vrrp.instances[%d]", i)
		in.Path = p
		v.uniqueName(p+".name", in.Name, names)
		v.vrrpCommon(p, in.Interface, &in.Version, &in.AdvertInterval, &in.NotifyTimeout)
		setDefault(v, p+".priority", &in.Priority, DefaultPriority)
		if in.Preempt == nil {
			t := true
			in.Preempt = &t
		}
		if in.Accept == nil {
			t := true
			in.Accept = &t
		}
		if in.Priority < 1 || in.Priority > 255 {
			v.add(p+".priority", "%d is out of range 1..255", in.Priority)
		}
		if in.PreemptDelay < 0 || in.PreemptDelay > time.Hour {
			v.add(p+".preempt_delay", "%v is out of range 0..1h", in.PreemptDelay)
		}
		family := v.vips(p, in, vips)
		derived := in.VRID == 0 && v.c.lines.byPath[p+".vrid"] == 0
		if derived {
			if v.c.Cluster == "" {
				v.add(p+".vrid", "is omitted, so it derives from the cluster name: set cluster or vrid")
			}
			in.VRID = DeriveVRID(v.c.Cluster, in.Name)
		}
		if in.VRID < 1 || in.VRID > 255 {
			v.add(p+".vrid", "%d is out of range 1..255", in.VRID)
		}
		key := fmt.Sprintf("%s/%s/%d", in.Interface, family, in.VRID)
		if other, ok := vrids[key]; ok {
			hint := ""
			if derived {
				hint = " (derived from the cluster name: set vrid explicitly)"
			}
			v.add(p+".vrid", "%d on %s is already used by %s%s", in.VRID, in.Interface, other, hint)
		}
		vrids[key] = p
		for j, peer := range in.UnicastPeers {
			a, err := netip.ParseAddr(peer)
			pp := fmt.Sprintf("%s.unicast_peers[%d]", p, j)
			switch {
			case err != nil:
				v.add(pp, "%q is not an IP address", peer)
			case family != "" && familyOf(a) != family:
				v.add(pp, "%s is not %s like the instance's VIPs", a, family)
			}
		}
		if in.UnicastPeersFrom != nil {
			v.peersFrom(p+".unicast_peers_from", in.UnicastPeersFrom)
		}
		if in.AuthPass != "" {
			if in.Version != 2 {
				v.add(p+".auth_pass", "authentication exists only in VRRP version 2 (RFC 5798 removed it)")
			}
			if len(in.AuthPass) > 8 {
				v.add(p+".auth_pass", "is %d bytes, at most 8 fit", len(in.AuthPass))
			}
		}
		v.track(p, in.Track, checks)
		v.garp(p+".garp", &in.GARP)
		v.executable(p+".notify", in.Notify)
	}
	return vrids, vips
}

// vrrpCommon checks and defaults the keys instances and pools share.
func (v *validator) vrrpCommon(p, iface string, version *int, interval, notifyTimeout *time.Duration) {
	if !interfaceName(iface) {
		v.add(p+".interface", "%q is not an interface name", iface)
	}
	setDefault(v, p+".version", version, DefaultVersion)
	if *version == 2 {
		setDefault(v, p+".advert_interval", interval, DefaultAdvertIntervalV2)
	}
	setDefault(v, p+".advert_interval", interval, DefaultAdvertInterval)
	setDefault(v, p+".notify_timeout", notifyTimeout, DefaultNotifyTimeout)
	if *version != 2 && *version != 3 {
		v.add(p+".version", "%d is not 2 or 3", *version)
	}
	v.interval(p+".advert_interval", *version, *interval)
	if *notifyTimeout <= 0 || *notifyTimeout > time.Hour {
		v.add(p+".notify_timeout", "%v is out of range (0..1h]", *notifyTimeout)
	}
}

func (v *validator) track(p string, tr Track, checks map[string]bool) {
	for j, t := range tr.Interfaces {
		tp := fmt.Sprintf("%s.track.interfaces[%d]", p, j)
		if !interfaceName(t.Name) {
			v.add(tp+".name", "%q is not an interface name", t.Name)
		}
		v.weight(tp+".weight", t.Weight)
	}
	for j, t := range tr.Checks {
		tp := fmt.Sprintf("%s.track.checks[%d]", p, j)
		if !checks[t.Name] {
			v.add(tp+".name", "no check named %q in checks", t.Name)
		}
		v.weight(tp+".weight", t.Weight)
	}
	for j, t := range tr.Endpoints {
		tp := fmt.Sprintf("%s.track.endpoints[%d]", p, j)
		v.serviceRef(tp+".service", t.Service)
		v.weight(tp+".weight", t.Weight)
	}
}

// vips validates the instance's VIPs and returns their family.
func (v *validator) vips(p string, in *Instance, seen map[netip.Addr]string) string {
	if len(in.VIPs) == 0 {
		v.add(p+".vips", "needs at least one address")
	}
	if len(in.VIPs) > 255 {
		v.add(p+".vips", "%d addresses, at most 255 fit in an advert", len(in.VIPs))
	}
	family := ""
	for j, s := range in.VIPs {
		vp := fmt.Sprintf("%s.vips[%d]", p, j)
		pfx, err := ParseVIP(s)
		if err != nil {
			v.add(vp, "%q is not an IP address or prefix", s)
			continue
		}
		a := pfx.Addr()
		f := familyOf(a)
		switch {
		case family == "":
			family = f
		case f != family:
			v.add(vp, "%s is %s but the first VIP is %s: use one instance or pool per family", a, f, family)
		}
		if f == "IPv6" && in.Version == 2 {
			v.add(vp, "%s is IPv6, which needs version 3", a)
		}
		if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
			v.add(vp, "%s cannot be a virtual address", a)
		}
		if other, ok := seen[a]; ok {
			v.add(vp, "%s is already a VIP of %s", a, other)
		}
		seen[a] = p
	}
	return family
}

func familyOf(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func (v *validator) interval(p string, version int, d time.Duration) {
	switch {
	case version == 2 && (d%time.Second != 0 || d < time.Second || d > 255*time.Second):
		v.add(p, "%v: version 2 needs whole seconds from 1s to 255s", d)
	case version == 3 && (d%(10*time.Millisecond) != 0 || d < 10*time.Millisecond || d > 40950*time.Millisecond):
		v.add(p, "%v: version 3 needs a multiple of 10ms from 10ms to 40.95s", d)
	}
}

func (v *validator) weight(p string, w int) {
	if w < -254 || w > 254 {
		v.add(p, "%d is out of range -254..254", w)
	}
}

func (v *validator) garp(p string, g *GARP) {
	if g.Count == nil {
		n := DefaultGARPCount
		g.Count = &n
	}
	setDefault(v, p+".interval", &g.Interval, DefaultGARPInterval)
	if g.Refresh == nil {
		r := DefaultGARPRefresh
		g.Refresh = &r
	}
	if *g.Count < 0 || *g.Count > 100 {
		v.add(p+".count", "%d is out of range 0..100", *g.Count)
	}
	if g.Interval < time.Millisecond || g.Interval > 10*time.Second {
		v.add(p+".interval", "%v is out of range 1ms..10s", g.Interval)
	}
	if *g.Refresh != 0 && *g.Refresh < time.Second {
		v.add(p+".refresh", "%v is below 1s (0 turns the refresh off)", *g.Refresh)
	}
}

func (v *validator) executable(p, path string) {
	if path == "" {
		return
	}
	if !filepath.IsAbs(path) {
		v.add(p, "%q is not an absolute path", path)
	}
}

func (v *validator) syncGroups() {
	inst := map[string]bool{}
	for _, in := range v.c.VRRP.Instances {
		inst[in.Name] = true
	}
	member := map[string]string{}
	names := map[string]bool{}
	for i, g := range v.c.VRRP.SyncGroups {
		p := fmt.Sprintf("vrrp.sync_groups[%d]", i)
		v.uniqueName(p+".name", g.Name, names)
		if len(g.Instances) < 2 {
			v.add(p+".instances", "a sync group needs at least two instances")
		}
		for j, n := range g.Instances {
			ip := fmt.Sprintf("%s.instances[%d]", p, j)
			switch {
			case !inst[n]:
				v.add(ip, "no instance named %q", n)
			case member[n] != "":
				v.add(ip, "%q is already in sync group %s", n, member[n])
			}
			member[n] = g.Name
		}
		v.executable(p+".notify", g.Notify)
	}
}

// peerNames checks vrrp.peer_names: an address to a node name each.
func (v *validator) peerNames() {
	for a, name := range v.c.VRRP.PeerNames {
		p := "vrrp.peer_names." + a
		if _, err := netip.ParseAddr(a); err != nil {
			v.add(p, "%q is not an IP address", a)
		}
		if !nameRE.MatchString(name) {
			v.add(p, "%q is not a valid node name", name)
		}
	}
}

// interfaceName reports whether s can name a Linux interface (IFNAMSIZ).
func interfaceName(s string) bool {
	return s != "" && len(s) <= 15 && !strings.ContainsAny(s, "/ ")
}

// oneOf checks a string key against its allowed values; an empty key takes
// def, the first allowed value. Errors read `"x" is not a, b or c`.
func (v *validator) oneOf(path string, val *string, def string, others ...string) {
	allowed := append([]string{def}, others...)
	if *val == "" {
		*val = def
	}
	for _, a := range allowed {
		if *val == a {
			return
		}
	}
	list := strings.Join(allowed[:len(allowed)-1], ", ") + " or " + allowed[len(allowed)-1]
	v.add(path, "%q is not %s", *val, list)
}

// setDefault fills a key the file does not set; an explicit zero stays, so
// validation can reject it instead of hiding it behind the default.
func setDefault[T comparable](v *validator, path string, p *T, d T) {
	var zero T
	if *p == zero && v.c.lines.byPath[path] == 0 {
		*p = d
	}
}
