package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Balancer is one L4 load balancer: TCP frontends spread over backends.
type Balancer struct {
	Name string `yaml:"name"`
	// Listen addresses, ADDRESS:PORT or :PORT. An address this node does not
	// hold yet (a VIP while backup) is fine: listeners bind it in advance.
	Listen []string `yaml:"listen,flow"`
	// Mode proxy (userspace TCP proxy) or dsr (XDP direct server return:
	// packets to a listen address go to a backend by Maglev hashing, and the
	// backend, holding the VIP on its loopback, answers the client itself).
	// Default proxy.
	Mode string `yaml:"mode"`
	// Algorithm roundrobin, leastconn (proxy, both weighted) or maglev
	// (proxy: by client address; dsr: by flow). Default roundrobin for
	// proxy, maglev for dsr.
	Algorithm string `yaml:"algorithm"`
	// Interface (dsr) is where the XDP program runs: where packets for the
	// VIP come in and leave again for the backends.
	Interface string `yaml:"interface"`
	// Protocol (dsr) tcp or udp. Default tcp.
	Protocol string `yaml:"protocol"`
	// XDPMode (dsr) auto (native, else generic), native or generic.
	XDPMode string `yaml:"xdp_mode"`
	// ProxyProtocol sends a PROXY header to backends: "", v1 or v2.
	ProxyProtocol string `yaml:"proxy_protocol"`
	// AcceptProxy expects a PROXY header (v1 or v2) from every client.
	AcceptProxy bool      `yaml:"accept_proxy"`
	Monitor     *Monitor  `yaml:"monitor,flow"`
	Backends    []Backend `yaml:"backends"`
	// BackendsFrom adds backends from the cluster's Nodes or a Service's
	// endpoints to Backends (package kube expands it).
	BackendsFrom *BackendsFrom `yaml:"backends_from"`
	// RedirectFrom is the port clients use on the listen addresses; while
	// the balancer is healthy a DNAT rule sends them to the listen port, and
	// otherwise they reach whatever serves that port on the node itself
	// (OpenShift: clients use VIP:6443, the balancer listens on VIP:9445).
	// Proxy balancers on concrete addresses only. Default 0: none.
	RedirectFrom int `yaml:"redirect_from"`
	// Check probes every backend; absent means backends are always up.
	Check *BackendCheck `yaml:"check"`
	// MaxConn bounds the frontend's connections; beyond it new ones are
	// refused at once. Default 10000.
	MaxConn int `yaml:"max_conn"`
	// ConnectTimeout bounds one connect to a backend. Default 5s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// IdleTimeout closes a connection with no data either way for this long.
	// Default 10m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// Retries: other backends tried after a failed connect. Default 3.
	Retries *int `yaml:"retries"`
	// DrainTimeout is how long shutdown, or a reload that removes the
	// balancer, waits for its connections to finish before closing them.
	// Default 5s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// Splice moves data with splice(2) instead of pooled buffers. It costs
	// two more descriptors per direction while a connection waits, and was
	// slower on loopback here (docs/benchmarks.md). Default false.
	Splice bool `yaml:"splice"`
	// CloseOnDown closes established connections of a backend that goes
	// down (HAProxy's on-marked-down shutdown-sessions). Default false.
	CloseOnDown bool `yaml:"close_on_down"`
	// Service is the LoadBalancer Service (NAMESPACE/NAME) a balancer was
	// generated for (package kube); "" for the config's own. The dsr plane
	// adds and removes such balancers live, and leaves out their backends
	// that are not one hop away, with a note, instead of refusing them.
	Service string `yaml:"-"`
}

// Monitor is an HTTP endpoint answering 200 while the balancer has a
// healthy backend and 503 otherwise (HAProxy's monitor-uri).
type Monitor struct {
	Listen string `yaml:"listen"`
	// Path default /readyz; other paths answer 404.
	Path string `yaml:"path"`
}

// Backend is one server behind a balancer.
type Backend struct {
	Address string `yaml:"address"`
	// Weight 0..256; 0 takes no new connections. Default 1.
	Weight *int `yaml:"weight"`
	// MaxConn bounds connections to this backend; 0 is no limit.
	MaxConn int `yaml:"max_conn"`
}

// BackendCheck probes each backend at its own address: TCP connect unless
// HTTP is given.
type BackendCheck struct {
	HTTP *HTTPCheck `yaml:"http,flow"`
	// Port probes this port instead of the backend's.
	Port   int `yaml:"port"`
	Timing `yaml:",inline"`
}

// timing defaults and checks interval, timeout, rise and fall under p.
func (v *validator) timing(p string, t *Timing) {
	setDefault(v, p+".interval", &t.Interval, DefaultCheckInterval)
	setDefault(v, p+".timeout", &t.Timeout, DefaultCheckTimeout)
	if t.Timeout > t.Interval && v.c.lines.byPath[p+".timeout"] == 0 {
		t.Timeout = t.Interval
	}
	setDefault(v, p+".fast_interval", &t.FastInterval, max(t.Interval/4, 10*time.Millisecond))
	if t.FastInterval < 10*time.Millisecond || t.FastInterval > t.Interval {
		v.add(p+".fast_interval", "%v is out of range 10ms..interval (%v)", t.FastInterval, t.Interval)
	}
	setDefault(v, p+".rise", &t.Rise, DefaultRise)
	setDefault(v, p+".fall", &t.Fall, DefaultFall)
	if t.Interval < 10*time.Millisecond {
		v.add(p+".interval", "%v is below 10ms", t.Interval)
	}
	if t.Timeout <= 0 || t.Timeout > t.Interval {
		v.add(p+".timeout", "%v must be above 0 and at most the interval %v", t.Timeout, t.Interval)
	}
	if t.Rise < 1 || t.Rise > 100 {
		v.add(p+".rise", "%d is out of range 1..100", t.Rise)
	}
	if t.Fall < 1 || t.Fall > 100 {
		v.add(p+".fall", "%d is out of range 1..100", t.Fall)
	}
}

// httpCheck validates an HTTP check; named checks need a URL, balancer
// checks a path.
func (v *validator) httpCheck(p string, h *HTTPCheck, named bool) {
	if named {
		u, err := url.Parse(h.URL)
		switch {
		case h.URL == "":
			v.add(p+".url", "is required")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			v.add(p+".url", "%q is not an http:// or https:// URL", h.URL)
		}
		if h.Path != "" || h.TLS {
			v.add(p, "path and tls belong to balancer checks; give the whole url")
		}
	} else {
		if h.URL != "" {
			v.add(p+".url", "a balancer check asks each backend: give path (and tls), not url")
		}
		if h.Path == "" {
			h.Path = "/"
		}
		if !strings.HasPrefix(h.Path, "/") {
			v.add(p+".path", "%q does not start with /", h.Path)
		}
	}
	if h.Method == "" {
		h.Method = "GET"
	}
	if !httpMethodRE.MatchString(h.Method) {
		v.add(p+".method", "%q is not an HTTP method", h.Method)
	}
	if len(h.ExpectStatus) == 0 {
		h.ExpectStatus = []string{"200-399"}
	}
	for i, s := range h.ExpectStatus {
		if _, _, err := ParseStatusRange(s); err != nil {
			v.add(fmt.Sprintf("%s.expect_status[%d]", p, i), "%v", err)
		}
	}
	if (h.ClientCert == "") != (h.ClientKey == "") {
		v.add(p+".client_cert", "client_cert and client_key go together")
	}
	for k, f := range map[string]string{"ca_file": h.CAFile, "client_cert": h.ClientCert, "client_key": h.ClientKey} {
		if f != "" && !filepath.IsAbs(f) {
			v.add(p+"."+k, "%q is not an absolute path", f)
		}
	}
}

var httpMethodRE = regexp.MustCompile(`^[A-Z]{3,10}$`)

// ParseStatusRange reads "200" or "200-399".
func ParseStatusRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if !isRange {
		b = a
	}
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("%q is not a status code or range of them (100..599)", s)
	}
	return lo, hi, nil
}

// ParseListen reads ADDRESS:PORT or :PORT (every address).
func ParseListen(s string) (netip.AddrPort, error) {
	if rest, ok := strings.CutPrefix(s, ":"); ok {
		port, err := strconv.ParseUint(rest, 10, 16)
		if err != nil || port == 0 {
			return netip.AddrPort{}, fmt.Errorf("%q is not ADDRESS:PORT or :PORT", s)
		}
		return netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(port)), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q is not ADDRESS:PORT or :PORT", s)
	}
	return ap, nil
}

func (v *validator) balancers() {
	names := map[string]bool{}
	listens := map[netip.AddrPort]string{}
	if ap, err := ParseListen(v.c.API.HTTP); err == nil {
		listens[ap] = "api.http"
	}
	listen := func(p, s string) {
		ap, err := ParseListen(s)
		if err != nil {
			v.add(p, "%v", err)
			return
		}
		if other, ok := listens[ap]; ok {
			v.add(p, "%s is already used by %s", s, other)
		}
		listens[ap] = p
	}
	for i := range v.c.Balancers {
		b := &v.c.Balancers[i]
		p := fmt.Sprintf("balancers[%d]", i)
		v.uniqueName(p+".name", b.Name, names)
		if len(b.Listen) == 0 {
			v.add(p+".listen", "needs at least one ADDRESS:PORT")
		}
		for j, s := range b.Listen {
			listen(fmt.Sprintf("%s.listen[%d]", p, j), s)
		}
		v.oneOf(p+".mode", &b.Mode, "proxy", "dsr")
		if b.Mode == "dsr" {
			v.dsr(p, b)
		} else {
			v.oneOf(p+".algorithm", &b.Algorithm, "roundrobin", "leastconn", "maglev")
		}
		switch b.ProxyProtocol {
		case "", "v1", "v2":
		default:
			v.add(p+".proxy_protocol", "%q is not empty, v1 or v2", b.ProxyProtocol)
		}
		if b.Monitor != nil {
			listen(p+".monitor.listen", b.Monitor.Listen)
			if b.Monitor.Path == "" {
				b.Monitor.Path = DefaultMonitorPath
			}
			if !strings.HasPrefix(b.Monitor.Path, "/") {
				v.add(p+".monitor.path", "%q does not start with /", b.Monitor.Path)
			}
		}
		if len(b.Backends) == 0 && b.BackendsFrom == nil {
			v.add(p+".backends", "needs at least one backend, or backends_from")
		}
		if b.BackendsFrom != nil {
			v.backendsFrom(p+".backends_from", b.BackendsFrom, dsrPort(b))
		}
		seen := map[netip.AddrPort]bool{}
		for j := range b.Backends {
			be := &b.Backends[j]
			bp := fmt.Sprintf("%s.backends[%d]", p, j)
			ap, err := netip.ParseAddrPort(be.Address)
			switch {
			case err != nil || ap.Port() == 0:
				v.add(bp+".address", "%q is not IP:PORT", be.Address)
			case seen[ap]:
				v.add(bp+".address", "%s is listed twice", be.Address)
			}
			seen[ap] = true
			be.SetDefaults()
			if *be.Weight < 0 || *be.Weight > 256 {
				v.add(bp+".weight", "%d is out of range 0..256", *be.Weight)
			}
			if be.MaxConn < 0 {
				v.add(bp+".max_conn", "%d is negative", be.MaxConn)
			}
		}
		if c := b.Check; c != nil {
			if c.HTTP != nil {
				v.httpCheck(p+".check.http", c.HTTP, false)
			}
			if c.Port < 0 || c.Port > 65535 {
				v.add(p+".check.port", "%d is out of range 1..65535", c.Port)
			}
			v.timing(p+".check", &c.Timing)
		}
		setDefault(v, p+".max_conn", &b.MaxConn, DefaultFrontendMaxConn)
		if b.MaxConn < 1 || b.MaxConn > 1<<22 {
			v.add(p+".max_conn", "%d is out of range 1..4194304", b.MaxConn)
		}
		setDefault(v, p+".connect_timeout", &b.ConnectTimeout, DefaultConnectTimeout)
		if b.ConnectTimeout <= 0 || b.ConnectTimeout > time.Minute {
			v.add(p+".connect_timeout", "%v is out of range (0..1m]", b.ConnectTimeout)
		}
		setDefault(v, p+".idle_timeout", &b.IdleTimeout, DefaultIdleTimeout)
		if b.IdleTimeout < 100*time.Millisecond {
			v.add(p+".idle_timeout", "%v is below 100ms", b.IdleTimeout)
		}
		setDefault(v, p+".drain_timeout", &b.DrainTimeout, DefaultDrainTimeout)
		if b.DrainTimeout < 0 || b.DrainTimeout > time.Hour {
			v.add(p+".drain_timeout", "%v is out of range 0..1h", b.DrainTimeout)
		}
		if b.Retries == nil {
			r := DefaultRetries
			b.Retries = &r
		}
		if *b.Retries < 0 || *b.Retries > 100 {
			v.add(p+".retries", "%d is out of range 0..100", *b.Retries)
		}
	}
	// After the loop: a redirected port must not be another listen address.
	for i := range v.c.Balancers {
		v.redirect(fmt.Sprintf("balancers[%d]", i), &v.c.Balancers[i], listens)
	}
}

// SetDefaults fills what validation defaults in a backend (weight 1), for
// backends made after validation, such as those package kube generates.
func (b *Backend) SetDefaults() {
	if b.Weight == nil {
		w := DefaultBackendWeight
		b.Weight = &w
	}
}

// DefaultBackendWeight is a backend's weight when it gives none.
const DefaultBackendWeight = 1

// dsrPort is the one listen port of a dsr balancer, -1 for a proxy
// balancer or when no listen address parses.
func dsrPort(b *Balancer) int {
	if b.Mode != "dsr" {
		return -1
	}
	for _, l := range b.Listen {
		if ap, err := ParseListen(l); err == nil {
			return int(ap.Port())
		}
	}
	return -1
}

// redirect validates redirect_from: a proxy balancer whose every listen
// address is concrete (the DNAT rule matches VIP:redirect_from), on another
// port than it listens on, and not an address something of vigil listens on.
func (v *validator) redirect(p string, b *Balancer, listens map[netip.AddrPort]string) {
	if b.RedirectFrom == 0 && v.c.lines.byPath[p+".redirect_from"] == 0 {
		return
	}
	rp := p + ".redirect_from"
	if b.RedirectFrom < 1 || b.RedirectFrom > 65535 {
		v.add(rp, "%d is out of range 1..65535", b.RedirectFrom)
		return
	}
	if b.Mode != "proxy" {
		v.add(rp, "applies to mode proxy only (mode is %s)", b.Mode)
	}
	for j, l := range b.Listen {
		ap, err := ParseListen(l)
		if err != nil {
			continue // reported with listen
		}
		lp := fmt.Sprintf("%s.listen[%d]", p, j)
		if ap.Addr().IsUnspecified() {
			v.add(lp, "%s: redirect_from needs the VIP's address, not every address", l)
			continue
		}
		from := netip.AddrPortFrom(ap.Addr(), uint16(b.RedirectFrom))
		if int(ap.Port()) == b.RedirectFrom {
			v.add(rp, "%d is the port of listen address %s: redirect from another port", b.RedirectFrom, l)
		} else if other, ok := listens[from]; ok {
			v.add(rp, "%s is already used by %s", from, other)
		}
	}
}

// MaxDSRServices and MaxDSRBackends are the XDP program's limits.
const (
	MaxDSRServices = 16
	MaxDSRBackends = 4096
)

// dsr checks what direct server return needs: addresses the program can
// match, backends on the same port (packets are not rewritten above
// Ethernet), and nothing that needs a proxy.
func (v *validator) dsr(p string, b *Balancer) {
	switch b.Algorithm {
	case "":
		b.Algorithm = "maglev"
	case "maglev":
	default:
		v.add(p+".algorithm", "%q: mode dsr uses maglev", b.Algorithm)
	}
	if !interfaceName(b.Interface) {
		v.add(p+".interface", "%q is not an interface name (mode dsr needs the interface to run XDP on)", b.Interface)
	}
	v.oneOf(p+".protocol", &b.Protocol, "tcp", "udp")
	v.oneOf(p+".xdp_mode", &b.XDPMode, "auto", "native", "generic")
	if b.ProxyProtocol != "" || b.AcceptProxy || b.Splice || b.CloseOnDown {
		v.add(p+".mode", "dsr does not proxy: proxy_protocol, accept_proxy, splice and close_on_down do not apply")
	}
	port := -1
	for j, l := range b.Listen {
		ap, err := ParseListen(l)
		if err != nil {
			continue // reported with listen
		}
		if ap.Addr().IsUnspecified() {
			v.add(fmt.Sprintf("%s.listen[%d]", p, j), "%s: mode dsr needs the VIP's address", l)
		}
		if port >= 0 && int(ap.Port()) != port {
			v.add(fmt.Sprintf("%s.listen[%d]", p, j), "%s: mode dsr needs one port for every listen address", l)
		}
		port = int(ap.Port())
	}
	for j, be := range b.Backends {
		if ap, err := netip.ParseAddrPort(be.Address); err == nil && port >= 0 && int(ap.Port()) != port {
			v.add(fmt.Sprintf("%s.backends[%d].address", p, j), "%s: mode dsr does not change ports; the backend must serve on %d", be.Address, port)
		}
	}
	if len(b.Backends) > MaxDSRBackends {
		v.add(p+".backends", "%d backends, at most %d with mode dsr", len(b.Backends), MaxDSRBackends)
	}
	v.dsrServices += len(b.Listen)
	if v.dsrServices > MaxDSRServices {
		v.add(p+".listen", "more than %d dsr listen addresses in all", MaxDSRServices)
	}
}

// GeneratedDSR is a dsr balancer with validation's defaults for a
// LoadBalancer Service's address and port (package kube makes one per
// address and port with dataplane dsr): maglev, xdp_mode auto, no check.
// protocol is tcp or udp.
func GeneratedDSR(name, service, iface, protocol, listen string) Balancer {
	b := GeneratedProxy(name, []string{listen})
	b.Mode, b.Algorithm, b.Interface, b.Protocol, b.XDPMode, b.Service = "dsr", "maglev", iface, protocol, "auto", service
	return b
}

// GeneratedProxy is a proxy balancer with validation's defaults, for
// balancers made after validation (package kube makes one per port of a
// LoadBalancer Service): round robin, no check, the default limits.
func GeneratedProxy(name string, listen []string) Balancer {
	retries := DefaultRetries
	return Balancer{Name: name, Listen: listen, Mode: "proxy", Algorithm: "roundrobin",
		MaxConn: DefaultFrontendMaxConn, ConnectTimeout: DefaultConnectTimeout, IdleTimeout: DefaultIdleTimeout,
		DrainTimeout: DefaultDrainTimeout, Retries: &retries}
}
