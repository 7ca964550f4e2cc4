package importer

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-lb/vigil/internal/config"
)

// kaNode is one keepalived statement: a keyword, its arguments, and the
// statements of its block if it opens one.
type kaNode struct {
	line     int
	key      string
	args     []string
	children []*kaNode
	block    bool
}

// parseKeepalived reads keepalived's brace syntax. Comments start with # or !.
func parseKeepalived(src string) (*kaNode, error) {
	root := &kaNode{block: true}
	stack := []*kaNode{root}
	for i, raw := range strings.Split(src, "\n") {
		toks, err := kaTokens(raw)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		for len(toks) > 0 {
			cur := stack[len(stack)-1]
			if toks[0] == "}" {
				if len(stack) == 1 {
					return nil, fmt.Errorf("line %d: } without an open block", i+1)
				}
				stack = stack[:len(stack)-1]
				toks = toks[1:]
				continue
			}
			n := &kaNode{line: i + 1, key: toks[0]}
			toks = toks[1:]
			for len(toks) > 0 && toks[0] != "{" && toks[0] != "}" {
				n.args = append(n.args, toks[0])
				toks = toks[1:]
			}
			cur.children = append(cur.children, n)
			if len(toks) > 0 && toks[0] == "{" {
				n.block = true
				stack = append(stack, n)
				toks = toks[1:]
			}
		}
	}
	if len(stack) != 1 {
		return nil, fmt.Errorf("block %s opened on line %d is not closed", stack[len(stack)-1].key, stack[len(stack)-1].line)
	}
	return root, nil
}

// kaTokens splits a line into words, quoted strings and braces.
func kaTokens(line string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inQuote, has := false, false
	flush := func() {
		if has {
			out = append(out, cur.String())
		}
		cur.Reset()
		has = false
	}
	for _, r := range line {
		switch {
		case inQuote && r == '"':
			inQuote = false
		case inQuote:
			cur.WriteRune(r)
		case r == '"':
			inQuote, has = true, true
		case r == '#' || r == '!':
			flush()
			return out, nil
		case r == '{' || r == '}':
			flush()
			out = append(out, string(r))
		case r == ' ' || r == '\t' || r == '\r':
			flush()
		default:
			cur.WriteRune(r)
			has = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote")
	}
	flush()
	return out, nil
}

// kaSeconds reads keepalived's seconds (fractions allowed) as a duration.
func kaSeconds(s string) (time.Duration, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%q is not a number of seconds", s)
	}
	return time.Duration(f * float64(time.Second)).Round(time.Millisecond), nil
}

// Keepalived converts a keepalived.conf. Track scripts that are curl GETs
// become http checks; for scripts given as a file, see KeepalivedWith.
func Keepalived(file, src string) (*Result, error) { return KeepalivedWith(file, src, nil) }

// KeepalivedWith converts a keepalived.conf, reading the script files its
// vrrp_scripts run with readScript (nil: none are read), so that a script
// file made of curl GETs (OpenShift's chk_ocp_script.sh) becomes http
// checks too. A file that is not a keepalived.conf (an haproxy.cfg, YAML)
// is refused with one line saying what it looks like.
func KeepalivedWith(file, src string, readScript func(path string) ([]byte, error)) (*Result, error) {
	root, err := parseKeepalived(src)
	if err != nil {
		if kind := sniff(src); kind != "" && kind != "keepalived" {
			return nil, wrongKind(file, "keepalived.conf", kind, src)
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	known := false
	for _, n := range root.children {
		known = known || kaTopLevel[n.key]
	}
	if !known {
		return nil, wrongKind(file, "keepalived.conf", sniff(src), src)
	}
	k := &kaConv{file: file, r: &Result{}, version: 2, scriptWeight: map[string]int{}, checkNames: map[string][]string{}, readScript: readScript}
	for _, n := range root.children {
		if n.key == "global_defs" {
			k.globals(n)
		}
	}
	for _, n := range root.children {
		switch n.key {
		case "global_defs":
		case "vrrp_script":
			k.script(n)
		case "vrrp_instance":
		case "vrrp_sync_group":
		default:
			k.lost(n, "%s: no vigil equivalent (vigil has no LVS virtual_server; see the balancers section)", n.key)
		}
	}
	for _, n := range root.children {
		switch n.key {
		case "vrrp_instance":
			k.instance(n)
		case "vrrp_sync_group":
			k.syncGroup(n)
		}
	}
	return k.r, nil
}

type kaConv struct {
	file         string
	r            *Result
	version      int
	scriptWeight map[string]int
	// checkNames are the checks a vrrp_script became, when not its own
	// name alone (a script of several curl GETs).
	checkNames map[string][]string
	readScript func(path string) ([]byte, error)
	// garp holds global_defs' vrrp_garp_* settings, every instance's
	// default.
	garp config.GARP
}

// kaTopLevel are keepalived.conf's top-level keywords; a file with none of
// them is not one.
var kaTopLevel = map[string]bool{"global_defs": true, "vrrp_script": true, "vrrp_instance": true, "vrrp_sync_group": true,
	"virtual_server": true, "virtual_server_group": true, "static_ipaddress": true, "static_routes": true, "static_rules": true,
	"include": true, "vrrp_track_file": true, "track_file": true, "bfd_instance": true, "net_namespace": true, "garp_group": true,
	"linkbeat_use_polling": true, "vrrp_track_process": true}

// kaNoMeaning are global_defs settings that need nothing in vigil, and why:
// listed as ignored, since no behaviour of the old config is lost.
var kaNoMeaning = map[string]string{
	"max_auto_priority":        "keepalived's own real-time scheduling; vigil is one Go process (set systemd's CPUSchedulingPolicy if wanted)",
	"vrrp_priority":            "keepalived's own process priority; vigil is one Go process",
	"checker_priority":         "keepalived's own process priority; vigil is one Go process",
	"bfd_priority":             "keepalived's own process priority; vigil is one Go process",
	"vrrp_rt_priority":         "keepalived's own real-time scheduling; vigil is one Go process",
	"checker_rt_priority":      "keepalived's own real-time scheduling; vigil is one Go process",
	"vrrp_no_swap":             "keepalived's own memory locking; vigil is one Go process",
	"checker_no_swap":          "keepalived's own memory locking; vigil is one Go process",
	"vrrp_cpu_affinity":        "keepalived's own CPU affinity; vigil is one Go process",
	"checker_cpu_affinity":     "keepalived's own CPU affinity; vigil is one Go process",
	"process_names":            "vigil is one process",
	"notification_email":       "e-mail alerts: vigil logs every state change and exports metrics; alert from Prometheus",
	"notification_email_from":  "e-mail alerts: vigil logs every state change and exports metrics; alert from Prometheus",
	"smtp_server":              "e-mail alerts: vigil logs every state change and exports metrics; alert from Prometheus",
	"smtp_connect_timeout":     "e-mail alerts: vigil logs every state change and exports metrics; alert from Prometheus",
	"smtp_alert":               "e-mail alerts: vigil logs every state change and exports metrics; alert from Prometheus",
	"enable_snmp_vrrp":         "SNMP: vigil exports Prometheus metrics on api.http",
	"enable_snmp_keepalived":   "SNMP: vigil exports Prometheus metrics on api.http",
	"enable_traps":             "SNMP: vigil exports Prometheus metrics on api.http",
	"enable_dbus":              "D-Bus: vigil's control socket is api.socket (vigil status)",
	"vrrp_skip_check_adv_addr": "vigil always compares an advert's addresses with its VIPs and treats a different set as a conflict",
	"lvs_id":                   "vigil has no LVS",
}

func (k *kaConv) lost(n *kaNode, format string, args ...any) {
	k.r.note(k.file, n.line, true, format, args...)
}

func (k *kaConv) ignored(n *kaNode, format string, args ...any) {
	k.r.note(k.file, n.line, false, format, args...)
}

func (k *kaConv) arg(n *kaNode) string {
	if len(n.args) == 0 {
		k.lost(n, "%s has no value", n.key)
		return ""
	}
	return n.args[0]
}

// number reads a statement's whole-number value. One that is not a number
// is noted as lost and the field keeps what it had: written as 0 it would
// be left out of the YAML and quietly take vigil's default.
func (k *kaConv) number(n *kaNode) (int, bool) {
	s := k.arg(n)
	if s == "" {
		return 0, false // noted by arg
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		k.lost(n, "%s %q is not a number", n.key, s)
		return 0, false
	}
	return v, true
}

func (k *kaConv) globals(g *kaNode) {
	for _, n := range g.children {
		switch n.key {
		case "vrrp_version":
			if v, err := strconv.Atoi(k.arg(n)); err == nil && (v == 2 || v == 3) {
				k.version = v
			} else {
				k.lost(n, "vrrp_version %v is not 2 or 3", n.args)
			}
		case "router_id":
			k.ignored(n, "router_id: vigil names the node with node: (default the hostname)")
		case "script_user", "enable_script_security":
			k.ignored(n, "%s: vigil runs checks and notify hooks as its own user (root)", n.key)
		case "vrrp_garp_master_refresh", "vrrp_garp_master_repeat", "vrrp_garp_interval":
			k.garpSetting(n, &k.garp, strings.TrimPrefix(n.key, "vrrp_"))
		default:
			if why, ok := kaNoMeaning[n.key]; ok {
				k.ignored(n, "%s: %s", n.key, why)
				continue
			}
			k.lost(n, "global_defs %s is not converted", n.key)
		}
	}
}

func (k *kaConv) script(s *kaNode) {
	name := k.arg(s)
	c := config.Check{Name: name}
	interval, timeout := time.Second, time.Duration(0) // keepalived's default interval
	for _, n := range s.children {
		switch n.key {
		case "script":
			c.Exec = &config.ExecCheck{Script: strings.Join(n.args, " ")}
		case "interval", "timeout":
			d, err := kaSeconds(k.arg(n))
			if err != nil {
				k.lost(n, "%s: %v", n.key, err)
				continue
			}
			if n.key == "interval" {
				interval = d
			} else {
				timeout = d
			}
		case "weight":
			w, err := strconv.Atoi(k.arg(n))
			if err != nil {
				k.lost(n, "weight %v is not a number", n.args)
				continue
			}
			k.scriptWeight[name] = w
			if len(n.args) > 1 {
				k.lost(n, "weight %s: vigil has no reverse weights", n.args[1])
			}
		case "rise", "fall":
			v, err := strconv.Atoi(k.arg(n))
			if err != nil {
				k.lost(n, "%s %v is not a number", n.key, n.args)
				continue
			}
			if n.key == "rise" {
				c.Rise = v
			} else {
				c.Fall = v
			}
		case "user":
			k.ignored(n, "user: vigil runs checks as its own user")
		default:
			k.lost(n, "vrrp_script %s: %s is not converted", name, n.key)
		}
	}
	if c.Exec == nil {
		k.lost(s, "vrrp_script %s has no script", name)
		return
	}
	// keepalived kills a script at its interval unless timeout says otherwise.
	if timeout == 0 || timeout > interval {
		timeout = interval
	}
	c.Interval, c.Timeout = interval, timeout
	if c.Rise == 0 {
		c.Rise = 1 // keepalived's defaults
	}
	if c.Fall == 0 {
		c.Fall = 1
	}
	if gets, from := k.curlScript(c.Exec.Script); len(gets) > 0 {
		k.httpChecks(s, c, gets, from)
		return
	}
	k.container(s, "vrrp_script %s runs %q: the vigil container image (distroless) has no shell or curl, so there this check always fails and its instances lose its weight or go to FAULT; run vigil from the host package, or write it as an http or tcp check", name, c.Exec.Script)
	k.r.Config.Checks = append(k.r.Config.Checks, c)
}

// curlScript returns the curl GETs a vrrp_script's command is, inline or
// in the script file it runs (read with readScript), and from where; none
// when it is anything else.
func (k *kaConv) curlScript(script string) (gets []curlGET, from string) {
	words, ok := shellWords(script)
	if !ok {
		return nil, ""
	}
	if gets, ok := curlChain(script); ok {
		return gets, ""
	}
	words, limit := stripTimeout(words)
	if len(words) != 1 || !strings.HasPrefix(words[0], "/") || k.readScript == nil {
		return nil, ""
	}
	text, err := k.readScript(words[0])
	if err != nil {
		return nil, ""
	}
	gets, ok = curlChain(string(text))
	if !ok {
		return nil, ""
	}
	for i := range gets { // the timeout(1) around the script bounds every command in it
		if limit > 0 && (gets[i].Timeout == 0 || limit < gets[i].Timeout) {
			gets[i].Timeout = limit
		}
	}
	return gets, words[0]
}

// httpChecks adds the http checks a vrrp_script of curl GETs becomes: the
// script's name for one GET, NAME-1, NAME-2... for several, all tracked
// where the script was.
func (k *kaConv) httpChecks(s *kaNode, c config.Check, gets []curlGET, from string) {
	name := c.Name
	var names, urls []string
	for i, g := range gets {
		hc := c
		hc.Exec = nil
		hc.HTTP = &config.HTTPCheck{URL: g.URL, InsecureSkipVerify: g.Insecure}
		if !g.Fail {
			hc.HTTP.ExpectStatus = []string{"100-599"} // curl without -f passes on any answer
		}
		if g.Timeout > 0 && g.Timeout < hc.Timeout {
			hc.Timeout = g.Timeout
		}
		if len(gets) > 1 {
			hc.Name = fmt.Sprintf("%s-%d", name, i+1)
		}
		names, urls = append(names, hc.Name), append(urls, g.URL)
		k.r.Config.Checks = append(k.r.Config.Checks, hc)
	}
	k.checkNames[name] = names
	what := "script"
	if from != "" {
		what = "script file " + from
	}
	text := fmt.Sprintf("vrrp_script %s: the %s is curl GET %s: the built-in http check %s (no shell or curl needed, as in the distroless image)",
		name, what, strings.Join(urls, " && "), strings.Join(names, ", "))
	if len(gets) > 1 {
		text += fmt.Sprintf("; tracked with the script's weight each: a node failing any of them still loses at least %d", k.scriptWeight[name])
	}
	for _, g := range gets {
		if !g.Fail {
			text += fmt.Sprintf("; %s without -f passes on any HTTP answer, kept as expect_status 100-599 (drop it to want 200-399)", g.URL)
		}
		if g.ZeroHost {
			text += fmt.Sprintf("; host 0 (this host) written as 127.0.0.1 in %s", g.URL)
		}
	}
	k.r.Notes = append(k.r.Notes, Note{File: k.file, Line: s.line, Text: text, Converted: true})
}

// container notes what converts but will not work in the distroless
// container image.
func (k *kaConv) container(n *kaNode, format string, args ...any) {
	k.r.Notes = append(k.r.Notes, Note{File: k.file, Line: n.line, Text: fmt.Sprintf(format, args...), Container: true})
}

// garpSetting reads a garp_master_refresh, garp_master_repeat or
// garp_interval value (keepalived's seconds or count) into g.
func (k *kaConv) garpSetting(n *kaNode, g *config.GARP, key string) {
	switch key {
	case "garp_master_repeat":
		if v, ok := k.number(n); ok {
			g.Count = &v
		}
		return
	}
	d, err := kaSeconds(k.arg(n))
	if err != nil {
		k.lost(n, "%s: %v", n.key, err)
		return
	}
	if key == "garp_master_refresh" {
		g.Refresh = &d // 0 turns it off in both
	} else {
		g.Interval = d
	}
}

func (k *kaConv) instance(v *kaNode) {
	in := config.Instance{Name: k.arg(v), Version: k.version, Priority: config.DefaultPriority, AdvertInterval: time.Second, GARP: k.garp}
	for _, n := range v.children {
		switch n.key {
		case "interface":
			in.Interface = k.arg(n)
		case "virtual_router_id":
			if v, ok := k.number(n); ok {
				in.VRID = v
			}
		case "priority":
			if v, ok := k.number(n); ok {
				in.Priority = v
			}
		case "version":
			if v, ok := k.number(n); ok {
				in.Version = v
			}
		case "advert_int":
			if d, err := kaSeconds(k.arg(n)); err == nil {
				in.AdvertInterval = d
			} else {
				k.lost(n, "advert_int: %v", err)
			}
		case "nopreempt":
			f := false
			in.Preempt = &f
		case "preempt_delay":
			if d, err := kaSeconds(k.arg(n)); err == nil {
				in.PreemptDelay = d
			} else {
				k.lost(n, "preempt_delay: %v", err)
			}
		case "state":
			k.ignored(n, "state %s: vigil starts every node as backup and elects by priority", k.arg(n))
		case "unicast_src_ip":
			k.ignored(n, "unicast_src_ip: vigil sends from the interface's primary address")
		case "unicast_peer":
			for _, p := range n.children {
				in.UnicastPeers = append(in.UnicastPeers, p.key)
			}
		case "authentication":
			k.auth(n, &in)
		case "virtual_ipaddress":
			for _, a := range n.children {
				in.VIPs = append(in.VIPs, a.key)
				k.vipOptions(a, in.Interface)
			}
		case "track_script":
			for _, t := range n.children {
				w := k.scriptWeight[t.key]
				if len(t.args) >= 2 && t.args[0] == "weight" {
					w, _ = strconv.Atoi(t.args[1])
				}
				names := k.checkNames[t.key]
				if names == nil {
					names = []string{t.key}
				}
				for _, name := range names {
					in.Track.Checks = append(in.Track.Checks, config.TrackRef{Name: name, Weight: w})
				}
			}
		case "track_interface":
			for _, t := range n.children {
				w := 0
				if len(t.args) >= 2 && t.args[0] == "weight" {
					w, _ = strconv.Atoi(t.args[1])
				}
				in.Track.Interfaces = append(in.Track.Interfaces, config.TrackRef{Name: t.key, Weight: w})
			}
		case "notify":
			in.Notify = k.notify(n)
		case "garp_master_refresh", "garp_master_repeat", "garp_interval":
			k.garpSetting(n, &in.GARP, n.key)
		case "garp_master_delay", "garp_lower_prio_repeat", "garp_master_refresh_repeat":
			k.ignored(n, "%s: vigil sends one GARP burst on becoming master and one announcement per refresh (vrrp.instances[].garp)", n.key)
		case "dont_track_primary":
			k.lost(n, "dont_track_primary: vigil always tracks the instance's interface")
		case "notify_master", "notify_backup", "notify_fault", "notify_stop":
			k.lost(n, "%s: vigil has one notify script called with the new state as its third argument; merge this one into it", n.key)
		default:
			k.lost(n, "vrrp_instance %s: %s is not converted", in.Name, n.key)
		}
	}
	k.r.Config.VRRP.Instances = append(k.r.Config.VRRP.Instances, in)
}

func (k *kaConv) auth(a *kaNode, in *config.Instance) {
	for _, n := range a.children {
		switch n.key {
		case "auth_type":
			if t := k.arg(n); t != "PASS" {
				k.lost(n, "auth_type %s: vigil supports PASS only", t)
			}
		case "auth_pass":
			p := k.arg(n)
			if len(p) > 8 {
				k.ignored(n, "auth_pass %q is cut to its first 8 bytes %q, as keepalived does", p, p[:8])
				p = p[:8]
			}
			in.AuthPass = p
		default:
			k.lost(n, "authentication %s is not converted", n.key)
		}
	}
	if in.Version == 3 && in.AuthPass != "" {
		k.lost(a, "authentication with VRRPv3: version 3 has none, so vigil drops it")
		in.AuthPass = ""
	}
}

// vipOptions notes the parts of a virtual_ipaddress line vigil does not use.
func (k *kaConv) vipOptions(a *kaNode, iface string) {
	for i := 0; i+1 < len(a.args); i += 2 {
		switch opt, val := a.args[i], a.args[i+1]; opt {
		case "dev":
			if val != iface {
				k.lost(a, "VIP %s on dev %s: vigil adds VIPs to the instance's interface %s", a.key, val, iface)
			}
		case "label":
			k.ignored(a, "VIP %s label %s: vigil labels its VIPs itself", a.key, val)
		default:
			k.lost(a, "VIP %s option %s %s is not converted", a.key, opt, val)
		}
	}
}

func (k *kaConv) syncGroup(g *kaNode) {
	sg := config.SyncGroup{Name: k.arg(g)}
	for _, n := range g.children {
		switch n.key {
		case "group": // names, one or several per line
			for _, m := range n.children {
				sg.Instances = append(append(sg.Instances, m.key), m.args...)
			}
		case "notify":
			sg.Notify = k.notify(n)
		default:
			k.lost(n, "vrrp_sync_group %s: %s is not converted", sg.Name, n.key)
		}
	}
	k.r.Config.VRRP.SyncGroups = append(k.r.Config.VRRP.SyncGroups, sg)
}

// notify converts a notify line: vigil calls the script with keepalived's
// arguments (type, name, state, priority) and no others.
func (k *kaConv) notify(n *kaNode) string {
	if len(n.args) > 1 {
		k.lost(n, "notify %q: vigil runs a script path without extra arguments; wrap them in a script", strings.Join(n.args, " "))
	}
	if len(n.args) > 0 {
		k.container(n, "notify %s: the vigil container image (distroless) has no shell: the hook does not run there (vigil logs each transition and exports vigil_vrrp_state)", n.args[0])
	}
	return k.arg(n)
}

// sniff names the kind of configuration src looks like: keepalived,
// haproxy or yaml; "" when it cannot tell.
func sniff(src string) string {
	for _, line := range strings.Split(src, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") || strings.HasPrefix(t, "!") {
			continue
		}
		f := strings.Fields(t)
		switch {
		case t == "---" || strings.HasPrefix(t, "apiVersion:") || strings.HasPrefix(t, "kind:"):
			return "yaml"
		case kaTopLevel[f[0]]:
			return "keepalived"
		case line == t && haSectionKinds[f[0]]: // a section at column 0
			return "haproxy"
		case strings.HasSuffix(f[0], ":") || strings.HasPrefix(t, "- "):
			return "yaml"
		}
	}
	return ""
}

// wrongKind is the one-line refusal of a file that is not the kind asked
// for.
func wrongKind(file, want, kind, src string) error {
	switch kind {
	case "haproxy":
		return fmt.Errorf("%s: not a %s: it reads as an haproxy.cfg (use vigil import haproxy %s)", file, want, file)
	case "keepalived":
		return fmt.Errorf("%s: not a %s: it reads as a keepalived.conf (use vigil import keepalived %s)", file, want, file)
	case "yaml":
		if strings.Contains(src, "metallb.io/") {
			return fmt.Errorf("%s: not a %s: it reads as MetalLB YAML (use vigil import metallb %s)", file, want, file)
		}
		return fmt.Errorf("%s: not a %s: it reads as YAML", file, want)
	}
	return fmt.Errorf("%s: not a %s: none of its statements is one", file, want)
}
