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

// Keepalived converts a keepalived.conf.
func Keepalived(file, src string) (*Result, error) {
	root, err := parseKeepalived(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	k := &kaConv{file: file, r: &Result{}, version: 2, scriptWeight: map[string]int{}}
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
		default:
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
	k.r.Config.Checks = append(k.r.Config.Checks, c)
}

func (k *kaConv) instance(v *kaNode) {
	in := config.Instance{Name: k.arg(v), Version: k.version, Priority: config.DefaultPriority, AdvertInterval: time.Second}
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
				in.Track.Checks = append(in.Track.Checks, config.TrackRef{Name: t.key, Weight: w})
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
		case "garp_master_delay", "garp_master_repeat", "garp_master_refresh", "garp_lower_prio_repeat":
			k.ignored(n, "%s: vigil sends its own GARP bursts and refresh (vrrp.instances[].garp)", n.key)
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
	return k.arg(n)
}
