package importer

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-lb/vigil/internal/config"
)

// haSection is one haproxy.cfg section and its lines.
type haSection struct {
	kind, name string
	line       int
	lines      []haLine
}

type haLine struct {
	n    int
	args []string
}

// haSectionKinds are the keywords that open a haproxy.cfg section.
var haSectionKinds = map[string]bool{"global": true, "defaults": true, "frontend": true, "backend": true, "listen": true,
	"resolvers": true, "userlist": true, "peers": true, "mailers": true, "program": true, "http-errors": true, "ring": true, "cache": true}

func parseHAProxy(src string) []*haSection {
	var out []*haSection
	var cur *haSection
	for i, raw := range strings.Split(src, "\n") {
		if j := strings.IndexByte(raw, '#'); j >= 0 {
			raw = raw[:j]
		}
		f := strings.Fields(raw)
		if len(f) == 0 {
			continue
		}
		switch {
		case haSectionKinds[f[0]]:
			cur = &haSection{kind: f[0], line: i + 1}
			if len(f) > 1 {
				cur.name = f[1]
			}
			out = append(out, cur)
			continue
		}
		if cur == nil {
			cur = &haSection{kind: "global", line: i + 1}
			out = append(out, cur)
		}
		cur.lines = append(cur.lines, haLine{n: i + 1, args: f})
	}
	return out
}

// haDuration reads HAProxy's time format: a number with us, ms, s, m, h or
// d; a bare number is milliseconds.
func haDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		d      time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}, {"d", 24 * time.Hour}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil || v < 0 {
				return 0, fmt.Errorf("%q is not an HAProxy time", s)
			}
			return time.Duration(v * float64(u.d)), nil
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not an HAProxy time", s)
	}
	return time.Duration(v * float64(time.Millisecond)), nil
}

// haDefaults are the settings a defaults section gives later sections.
type haDefaults struct {
	mode, balance           string
	connect, client, server time.Duration
	retries                 *int
	maxconn                 int
	// check is what default-server sets for server checks.
	check config.Timing
}

// HAProxy converts a haproxy.cfg: TCP frontends with their default_backend
// become balancers, listen sections too, and a monitor-uri section becomes
// the monitor of the (single) balancer.
func HAProxy(file, src string) (*Result, error) {
	h := &haConv{file: file, r: &Result{}, backends: map[string]*haSection{}}
	secs := parseHAProxy(src)
	if kind := sniff(src); kind != "haproxy" && !hasHAProxySection(secs) {
		return nil, wrongKind(file, "haproxy.cfg", kind, src)
	}
	for _, s := range secs {
		if s.kind == "backend" {
			h.backends[s.name] = s
		}
	}
	var monitors []*config.Monitor
	for _, s := range secs {
		switch s.kind {
		case "global":
			h.global(s)
		case "defaults":
			h.defaults(s)
		case "frontend", "listen":
			if m := h.frontend(s); m != nil {
				monitors = append(monitors, m)
			}
		case "backend": // converted with the frontend that uses it
		default:
			h.r.note(file, s.line, true, "%s section is not converted", s.kind)
		}
	}
	for _, s := range secs {
		if s.kind == "backend" && !h.used[s.name] {
			h.r.note(file, s.line, true, "backend %s is used by no frontend", s.name)
		}
	}
	bs := h.r.Config.Balancers
	for _, m := range monitors {
		if len(bs) == 1 {
			bs[0].Monitor = m
		}
	}
	if len(monitors) > 0 && len(bs) != 1 {
		h.r.note(file, 0, true, "monitor-uri: vigil's monitor belongs to one balancer; %d balancers, set monitor on the right one", len(bs))
	}
	return h.r, nil
}

type haConv struct {
	file     string
	r        *Result
	def      haDefaults
	backends map[string]*haSection
	used     map[string]bool
}

func (h *haConv) lost(l haLine, format string, args ...any) {
	h.r.note(h.file, l.n, true, format, args...)
}

func (h *haConv) ignored(l haLine, format string, args ...any) {
	h.r.note(h.file, l.n, false, format, args...)
}

func (h *haConv) global(s *haSection) {
	for _, l := range s.lines {
		switch l.args[0] {
		case "stats":
			h.ignored(l, "stats socket: vigil's control socket is api.socket (vigil status)")
		case "log", "daemon", "user", "group", "chroot", "pidfile", "nbthread", "ulimit-n", "maxconn":
			h.ignored(l, "global %s: not needed by vigil", l.args[0])
		default:
			h.lost(l, "global %s is not converted", l.args[0])
		}
	}
}

func (h *haConv) defaults(s *haSection) {
	for _, l := range s.lines {
		a := l.args
		switch {
		case a[0] == "mode" && len(a) > 1:
			h.def.mode = a[1]
		case a[0] == "balance" && len(a) > 1:
			h.def.balance = a[1]
		case a[0] == "maxconn" && len(a) > 1:
			h.def.maxconn, _ = strconv.Atoi(a[1])
		case a[0] == "retries" && len(a) > 1:
			r, _ := strconv.Atoi(a[1])
			h.def.retries = &r
		case a[0] == "timeout" && len(a) > 2:
			d, err := haDuration(a[2])
			if err != nil {
				h.lost(l, "timeout %s: %v", a[1], err)
				continue
			}
			switch a[1] {
			case "connect":
				h.def.connect = d
			case "client":
				h.def.client = d
			case "server":
				h.def.server = d
			case "tunnel", "http-request", "queue", "check", "http-keep-alive":
				h.ignored(l, "timeout %s: no equivalent in vigil's TCP balancer", a[1])
			default:
				h.lost(l, "timeout %s is not converted", a[1])
			}
		case a[0] == "log" || a[0] == "option" && len(a) > 1 && (a[1] == "dontlognull" || a[1] == "tcplog" || a[1] == "log-health-checks"):
			h.ignored(l, "%s: vigil logs with log/slog", strings.Join(a, " "))
		case a[0] == "option" && len(a) > 1 && a[1] == "redispatch":
			h.ignored(l, "option redispatch: vigil always retries another backend")
		case a[0] == "default-server":
			h.defaultServer(l)
		default:
			h.lost(l, "defaults %s is not converted", a[0])
		}
	}
}

func (h *haConv) defaultServer(l haLine) {
	for i := 1; i < len(l.args); i++ {
		switch l.args[i] {
		case "inter", "fall", "rise":
			if i+1 < len(l.args) {
				switch l.args[i] {
				case "inter":
					if d, err := haDuration(l.args[i+1]); err == nil {
						h.def.check.Interval = d
					} else {
						h.lost(l, "inter: %v", err)
					}
				case "fall":
					h.def.check.Fall = atoi(l.args[i+1])
				case "rise":
					h.def.check.Rise = atoi(l.args[i+1])
				}
				i++
			}
		default:
			h.lost(l, "default-server %s is not converted", l.args[i])
		}
	}
}

// frontend converts a frontend or listen section; a monitor-uri section
// returns its monitor instead of a balancer.
func (h *haConv) frontend(s *haSection) *config.Monitor {
	if h.used == nil {
		h.used = map[string]bool{}
	}
	mode := h.def.mode
	var listen []string
	var monitorURI, backend string
	var acceptProxy bool
	var rest []haLine
	for _, l := range s.lines {
		a := l.args
		if h.missingValue(l) {
			continue
		}
		switch a[0] {
		case "bind":
			addr, ok := haBind(a[1])
			if !ok {
				h.lost(l, "bind %s: not ADDRESS:PORT", a[1])
				continue
			}
			listen = append(listen, addr)
			for _, opt := range a[2:] {
				switch opt {
				case "v4v6":
				case "accept-proxy":
					acceptProxy = true
				default:
					h.lost(l, "bind option %s is not converted", opt)
				}
			}
		case "mode":
			mode = a[1]
		case "monitor-uri":
			monitorURI = a[1]
		case "default_backend":
			backend = a[1]
		case "stats":
			h.ignored(l, "stats: vigil's status page and /metrics are on api.http")
		case "option":
			if len(a) > 1 && (a[1] == "dontlognull" || a[1] == "tcplog") {
				h.ignored(l, "option %s: vigil logs with log/slog", a[1])
				continue
			}
			rest = append(rest, l)
		default:
			rest = append(rest, l)
		}
	}
	if monitorURI != "" {
		for _, l := range rest {
			h.lost(l, "%s in the monitor section %s is not converted", l.args[0], s.name)
		}
		if len(listen) == 0 {
			return nil
		}
		h.ignored(haLine{n: s.line}, "listen %s (monitor-uri %s) becomes the balancer's monitor: 200 while a backend is up, 503 otherwise (HAProxy answers 200 whatever the backends)", s.name, monitorURI)
		return &config.Monitor{Listen: listen[0], Path: monitorURI}
	}
	if mode == "http" && s.kind == "listen" && len(rest) == 0 && backend == "" {
		h.r.note(h.file, s.line, false, "listen %s is HAProxy's stats page; vigil's status page and /metrics are on api.http", s.name)
		return nil
	}
	if mode != "tcp" {
		h.r.note(h.file, s.line, true, "%s %s is mode %s: vigil balances TCP only", s.kind, s.name, mode)
		return nil
	}
	b := config.Balancer{
		Name: s.name, Listen: listen, AcceptProxy: acceptProxy, MaxConn: h.def.maxconn, Retries: h.def.retries,
		ConnectTimeout: h.def.connect, IdleTimeout: max(h.def.client, h.def.server),
	}
	lines := rest
	if s.kind == "frontend" {
		be := h.backends[backend]
		if be == nil {
			h.r.note(h.file, s.line, true, "frontend %s has no default_backend vigil can find", s.name)
			return nil
		}
		h.used[backend] = true
		b.Name = backend
		for _, l := range rest {
			h.lost(l, "frontend %s: %s is not converted", s.name, l.args[0])
		}
		lines = be.lines
	}
	h.backend(&b, lines)
	h.r.Config.Balancers = append(h.r.Config.Balancers, b)
	return nil
}

// haBind turns HAProxy's bind address (":::9445", "*:80", ":80", "[::]:80",
// "10.0.0.1:80") into vigil's listen form.
func haBind(s string) (string, bool) {
	if strings.HasPrefix(s, ":::") || strings.HasPrefix(s, "*:") || strings.HasPrefix(s, "[::]:") {
		return ":" + s[strings.LastIndexByte(s, ':')+1:], true
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", false
	}
	switch host {
	case "", "*", "::", "0.0.0.0":
		if host == "0.0.0.0" {
			return s, true
		}
		return ":" + port, true
	case "localhost":
		return "127.0.0.1:" + port, true
	}
	return s, true
}

// backend fills a balancer from backend (or listen) lines.
func (h *haConv) backend(b *config.Balancer, lines []haLine) {
	balance := h.def.balance
	var httpchk *config.HTTPCheck
	sslChecks := false
	check := config.BackendCheck{Timing: h.def.check}
	anyCheck := false
	for _, l := range lines {
		a := l.args
		if h.missingValue(l) {
			continue
		}
		switch a[0] {
		case "balance":
			balance = a[1]
		case "hash-type":
			// Only balance source hashes here, and vigil's maglev is
			// consistent whatever this says.
		case "mode":
			if a[1] != "tcp" {
				h.lost(l, "mode %s: vigil balances TCP only", a[1])
			}
		case "option":
			switch {
			case len(a) > 1 && a[1] == "httpchk":
				httpchk = &config.HTTPCheck{Path: "/"}
				switch len(a) {
				case 3:
					httpchk.Path = a[2]
				case 4, 5:
					httpchk.Method, httpchk.Path = a[2], a[3]
				}
				if httpchk.Method == "GET" {
					httpchk.Method = ""
				}
			case len(a) > 1 && (a[1] == "log-health-checks" || a[1] == "tcplog" || a[1] == "dontlognull"):
				h.ignored(l, "option %s: vigil logs check state changes with log/slog", a[1])
			case len(a) > 1 && a[1] == "redispatch":
				h.ignored(l, "option redispatch: vigil always retries another backend")
			default:
				h.lost(l, "%s is not converted", strings.Join(a, " "))
			}
		case "http-check":
			if len(a) >= 4 && a[1] == "expect" && a[2] == "status" && httpchk != nil {
				httpchk.ExpectStatus = []string{a[3]}
			} else {
				h.lost(l, "%s is not converted", strings.Join(a, " "))
			}
		case "server":
			be, c, ssl := h.server(l)
			if be != nil {
				b.Backends = append(b.Backends, *be)
			}
			if c != nil {
				anyCheck = true
				check.Interval, check.Fall, check.Rise, check.Port = c.Interval, c.Fall, c.Rise, c.Port
			}
			sslChecks = sslChecks || ssl
		case "default-server":
			h.defaultServer(l)
			check.Timing = h.def.check
		default:
			h.lost(l, "%s is not converted", a[0])
		}
	}
	switch balance {
	case "", "roundrobin", "static-rr":
	case "leastconn":
		b.Algorithm = "leastconn"
	case "source":
		// vigil's hash is consistent (Maglev) whatever hash-type says,
		// and not HAProxy's: clients keep a backend, maybe another one.
		b.Algorithm = "maglev"
	default:
		h.r.note(h.file, 0, true, "balancer %s: balance %s is not converted (roundrobin used)", b.Name, balance)
	}
	if anyCheck {
		if httpchk != nil {
			httpchk.TLS = sslChecks
			httpchk.InsecureSkipVerify = sslChecks
			check.HTTP = httpchk
		}
		b.Check = &check
	}
}

// server converts a server line; it returns its check settings when it has
// the check keyword.
func (h *haConv) server(l haLine) (*config.Backend, *config.BackendCheck, bool) {
	a := l.args
	if len(a) < 3 {
		h.lost(l, "server line without an address")
		return nil, nil, false
	}
	be := &config.Backend{Address: a[2]}
	if _, _, err := net.SplitHostPort(a[2]); err != nil {
		h.lost(l, "server %s %s: vigil needs IP:PORT", a[1], a[2])
		return nil, nil, false
	}
	c := &config.BackendCheck{Timing: h.def.check}
	checked, ssl, verifyNone := false, false, false
	for i := 3; i < len(a); i++ {
		val := ""
		if i+1 < len(a) {
			val = a[i+1]
		}
		switch a[i] {
		case "check":
			checked = true
		case "check-ssl":
			ssl = true
		case "verify":
			verifyNone = val == "none"
			i++
		case "inter":
			if d, err := haDuration(val); err == nil {
				c.Interval = d
			} else {
				h.lost(l, "inter: %v", err)
			}
			i++
		case "fall":
			c.Fall = atoi(val)
			i++
		case "rise":
			c.Rise = atoi(val)
			i++
		case "port":
			c.Port = atoi(val)
			i++
		case "weight":
			w := atoi(val)
			if w != 1 {
				be.Weight = &w
			}
			i++
		case "maxconn":
			be.MaxConn = atoi(val)
			i++
		case "send-proxy", "send-proxy-v2":
			h.lost(l, "%s per server: vigil sets proxy_protocol per balancer; set it there", a[i])
		case "backup":
			h.lost(l, "backup server %s: vigil has no backup servers; it is converted as a normal backend", a[1])
		default:
			h.lost(l, "server option %s is not converted", a[i])
		}
	}
	if ssl && !verifyNone {
		h.lost(l, "check-ssl without verify none: set the check's ca_file in vigil")
	}
	if !checked {
		return be, nil, false
	}
	return be, c, ssl
}

// missingValue notes and reports a keyword that needs a value but has none.
func (h *haConv) missingValue(l haLine) bool {
	switch l.args[0] {
	case "bind", "mode", "monitor-uri", "default_backend", "balance", "http-check":
		if len(l.args) < 2 {
			h.lost(l, "%s has no value", l.args[0])
			return true
		}
	}
	return false
}

func atoi(s string) int {
	v, _ := strconv.Atoi(s)
	return v
}

// hasHAProxySection reports whether a section header opened any of secs
// (parseHAProxy files lines before the first one under an implicit
// global).
func hasHAProxySection(secs []*haSection) bool {
	for _, s := range secs {
		if len(s.lines) == 0 || s.line != s.lines[0].n {
			return true
		}
	}
	return false
}
