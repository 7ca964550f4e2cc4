package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const good = `cluster: prod-east
node: lb1
vrrp:
  instances:
    - name: api
      interface: eth0
      priority: 150
      advert_interval: 100ms
      vips: [192.0.2.10/32, 192.0.2.11]
      track:
        interfaces: [{name: eth1, weight: 0}]
        checks: [{name: api-up, weight: 50}]
    - name: api6
      interface: eth0
      vrid: 52
      vips: ["2001:db8::10"]
  sync_groups:
    - name: g
      instances: [api, api6]
checks:
  - name: api-up
    tcp: {address: "127.0.0.1:6443"}
`

func TestParseGoodAppliesDefaults(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	in := c.VRRP.Instances[0]
	if in.Version != 3 || in.Priority != 150 || in.AdvertInterval != 100*time.Millisecond || !*in.Preempt {
		t.Fatalf("instance %+v", in)
	}
	if in.VRID != DeriveVRID("prod-east", "api") {
		t.Fatalf("derived vrid %d", in.VRID)
	}
	if *in.GARP.Count != DefaultGARPCount || in.GARP.Interval != DefaultGARPInterval || *in.GARP.Refresh != DefaultGARPRefresh {
		t.Fatalf("garp defaults %+v", in.GARP)
	}
	if c.VRRP.Instances[1].AdvertInterval != 200*time.Millisecond {
		t.Fatalf("v3 default interval %v", c.VRRP.Instances[1].AdvertInterval)
	}
	v2, err := Parse([]byte("vrrp: {instances: [{name: a, interface: e, vrid: 1, version: 2, vips: [192.0.2.1]}]}"))
	if err != nil || v2.VRRP.Instances[0].AdvertInterval != time.Second {
		t.Fatalf("v2 default interval: %v %v", v2, err)
	}
	if c.VRRP.Instances[1].VRID != 52 || c.VRRP.Instances[1].Priority != DefaultPriority {
		t.Fatalf("second instance %+v", c.VRRP.Instances[1])
	}
	ch := c.Checks[0]
	if ch.Interval != DefaultCheckInterval || ch.Rise != DefaultRise || ch.Fall != DefaultFall {
		t.Fatalf("check defaults %+v", ch)
	}
	if c.Line("vrrp.instances[0].priority") != 7 {
		t.Fatalf("line of priority = %d", c.Line("vrrp.instances[0].priority"))
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name    string
		replace [2]string
		want    string
	}{
		{"priority out of range", [2]string{"priority: 150", "priority: 300"}, "vrrp.instances[0].priority: 300 is out of range 1..255 (line 7)"},
		{"unknown key", [2]string{"priority: 150", "prioritty: 150"}, `vrrp.instances[0].prioritty: unknown key "prioritty" (line 7)`},
		{"duration without unit", [2]string{"advert_interval: 100ms", "advert_interval: 1"}, `vrrp.instances[0].advert_interval: "1" is not a duration with a unit, like 1s or 100ms (line 8)`},
		{"v3 interval not centiseconds", [2]string{"advert_interval: 100ms", "advert_interval: 105ms"}, "needs a multiple of 10ms from 10ms to 40.95s (line 8)"},
		{"bad vip", [2]string{"192.0.2.11]", "192.0.2.300]"}, `vrrp.instances[0].vips[1]: "192.0.2.300" is not an IP address or prefix (line 9)`},
		{"mixed families", [2]string{"192.0.2.11]", "2001:db8::1]"}, "use one instance or pool per family (line 9)"},
		{"duplicate vip", [2]string{`"2001:db8::10"`, `"192.0.2.10"`}, "vrrp.instances[1].vips[0]: 192.0.2.10 is already a VIP of vrrp.instances[0] (line 16)"},
		{"unknown check", [2]string{"name: api-up, weight", "name: nope, weight"}, `vrrp.instances[0].track.checks[0].name: no check named "nope" in checks (line 12)`},
		{"vrid twice", [2]string{"vrid: 52", "vrid: 52\n      version: 3"}, ""},
		{"auth on v3", [2]string{"vrid: 52", "vrid: 52\n      auth_pass: x"}, "authentication exists only in VRRP version 2"},
		{"v2 with IPv6", [2]string{"vrid: 52", "vrid: 52\n      version: 2"}, "needs version 3"},
		{"sync group unknown member", [2]string{"[api, api6]", "[api, nope]"}, `vrrp.sync_groups[0].instances[1]: no instance named "nope" (line 19)`},
		{"no cluster for derived vrid", [2]string{"cluster: prod-east", "cluster: \"\""}, "vrrp.instances[0].vrid: is omitted, so it derives from the cluster name"},
		{"syntax error", [2]string{"vrrp:", "vrrp: ["}, "line"},
		{"type error", [2]string{"priority: 150", "priority: high"}, `vrrp.instances[0].priority: "high" is not a whole number (line 7)`},
		{"unknown key in a flow mapping", [2]string{"checks: [{name: api-up, weight: 50}]", "checks: [{name: api-up, weigth: 50}]"}, `vrrp.instances[0].track.checks[0].weigth: unknown key "weigth" (line 12)`},
		{"relative notify", [2]string{"vrid: 52", "vrid: 52\n      notify: notify.sh"}, `"notify.sh" is not an absolute path`},
		{"peer name of a bad address", [2]string{"  sync_groups:", "  peer_names: {10.0.0.2: lb2, 10.0.0.x: lb3}\n  sync_groups:"},
			`vrrp.peer_names.10.0.0.x: "10.0.0.x" is not an IP address (line 17)`},
		{"bad peer name", [2]string{"  sync_groups:", "  peer_names:\n    10.0.0.2: \"lb 2\"\n  sync_groups:"},
			`vrrp.peer_names.10.0.0.2: "lb 2" is not a valid node name (line 18)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(good, tc.replace[0], tc.replace[1], 1)
			if src == good {
				t.Fatalf("replacement %q not found", tc.replace[0])
			}
			_, err := Parse([]byte(src))
			if err == nil {
				if tc.want == "" {
					return
				}
				t.Fatalf("no error, want %q", tc.want)
			}
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %T %v is not Errors", err, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error\n%v\ndoes not contain\n%s", err, tc.want)
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	src := strings.Replace(good, "priority: 150", "priority: 0\n      version: 4", 1)
	_, err := Parse([]byte(src))
	var es Errors
	if !errors.As(err, &es) || len(es) < 2 {
		t.Fatalf("want two errors, got %v", err)
	}
}

// api.socket naming the config file passed vigil check (and vigil run
// deleted the file): a path that exists and is not a socket is an error.
func TestAPISocketThatIsNotASocket(t *testing.T) {
	file := filepath.Join(t.TempDir(), "vigil.yaml")
	src := good + "api:\n  socket: " + file + "\n"
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(file)
	if want := "api.socket: " + file + " exists and is not a socket (line 24)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want %q", err, want)
	}
}

func TestEmptyConfig(t *testing.T) {
	_, err := Parse(nil)
	if err == nil || !strings.Contains(err.Error(), "nothing to do") {
		t.Fatalf("empty config: %v", err)
	}
}

func TestDeriveVRIDIsStableAndInRange(t *testing.T) {
	// The mapping is part of the user contract (docs/config.md): pin it.
	if got := DeriveVRID("prod-east", "api"); got != DeriveVRID("prod-east", "api") || got < 1 || got > 255 {
		t.Fatalf("DeriveVRID = %d", got)
	}
	seen := map[int]int{}
	for i := range 1000 {
		seen[DeriveVRID("c", strings.Repeat("x", i))]++
	}
	if len(seen) < 200 {
		t.Fatalf("only %d distinct VRIDs over 1000 names", len(seen))
	}
	if DeriveVRID("a", "api") == DeriveVRID("b", "api") {
		t.Fatal("two clusters derive the same VRID for api")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("vrrp: {instances: [{name: a, interface: e, vrid: 1, vips: [1.2.3.4]}]}"))
	f.Add([]byte("checks: [{name: x, exec: {script: true}}]"))
	f.Add([]byte(goodKube))
	f.Add([]byte(goodServices))
	f.Add([]byte("kubernetes: {}\nbalancers: [{name: b, listen: [\"192.0.2.1:9445\"], redirect_from: 6443, backends_from: {endpoints: {service: a/b, port: 443}}}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 || es.Error() == "" {
				t.Fatalf("error without detail: %v", err)
			}
			return
		}
		for _, in := range c.VRRP.Instances {
			if in.VRID < 1 || in.VRID > 255 || in.Priority < 1 || in.Priority > 255 {
				t.Fatalf("validated instance out of range: %+v", in)
			}
		}
		roundTrip(t, c) // what validates, Marshal writes back as the same model
	})
}

// The example in docs/config.md must stay a valid config.
func TestDocsExampleIsValid(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "## Example\n\n```yaml\n")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("docs/config.md has no example block")
	}
	if _, err := Parse([]byte(example)); err != nil {
		t.Fatalf("docs example does not validate:\n%v", err)
	}
}

const poolConfig = `cluster: c1
node: infra2
vrrp:
  pools:
    - name: ingress
      interface: eth0
      vips: [192.0.2.103, 192.0.2.101, 192.0.2.102]
      nodes: [infra1, infra2, infra3]
      vrid_base: 100
`

func TestPoolGeneratesThisNodesInstances(t *testing.T) {
	c, err := Parse([]byte(poolConfig))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]int{}
	for _, in := range c.VRRP.PoolInstances {
		got[in.VIPs[0]] = [2]int{in.VRID, in.Priority}
		if in.PreemptDelay != DefaultMoveBackDelay || !*in.Preempt || in.Path != "vrrp.pools[0]" {
			t.Fatalf("generated instance %+v", in)
		}
	}
	// Sorted VIPs 101,102,103 take VRIDs 100,101,102; infra2 is first for
	// .102, second for .101 (infra1 > infra2 > infra3), third for .103.
	want := map[string][2]int{"192.0.2.101/32": {100, 249}, "192.0.2.102/32": {101, 250}, "192.0.2.103/32": {102, 248}}
	if len(got) != 3 || got["192.0.2.101/32"] != want["192.0.2.101/32"] || got["192.0.2.102/32"] != want["192.0.2.102/32"] || got["192.0.2.103/32"] != want["192.0.2.103/32"] {
		t.Fatalf("generated %v, want %v", got, want)
	}
	if len(c.VRRP.All()) != 3 {
		t.Fatalf("All() = %d instances", len(c.VRRP.All()))
	}
}

func TestPoolErrors(t *testing.T) {
	cases := []struct {
		name    string
		replace [2]string
		want    string
	}{
		{"more nodes than VIPs", [2]string{"vips: [192.0.2.103, 192.0.2.101, 192.0.2.102]", "vips: [192.0.2.101, 192.0.2.102]"}, "vrrp.pools[0]: 3 nodes but only 2 VIPs"},
		{"node not in pool", [2]string{"node: infra2", "node: other"}, `vrrp.pools[0].nodes: this node "other" is not in the pool`},
		{"duplicate VIP", [2]string{"192.0.2.101, 192.0.2.102]", "192.0.2.101, 192.0.2.101]"}, "vrrp.pools[0].vips[2]: 192.0.2.101 is already a VIP of vrrp.pools[0] (line 7)"},
		{"VIP shared with an instance", [2]string{"  pools:", "  instances:\n    - {name: a, interface: eth0, vrid: 7, vips: [192.0.2.101]}\n  pools:"}, "192.0.2.101 is already a VIP of vrrp.instances[0]"},
		{"VRID collision", [2]string{"  pools:", "  instances:\n    - {name: a, interface: eth0, vrid: 101, vips: [192.0.2.9]}\n  pools:"}, "gets VRID 101 (vrid_base 100 + 1), already used by vrrp.instances[0]: set vrid_base"},
		{"vrid_base range", [2]string{"vrid_base: 100", "vrid_base: 300"}, "vrrp.pools[0].vrid_base: 300 is out of range 1..255 (line 9)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(poolConfig, tc.replace[0], tc.replace[1], 1)
			if src == poolConfig {
				t.Fatalf("replacement %q not found", tc.replace[0])
			}
			_, err := Parse([]byte(src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error\n%v\nwant it to contain\n%s", err, tc.want)
			}
		})
	}
}

// Unknown keys, values of the wrong type and validation problems all come
// out of one run, in file order, each with its own key path and line; on a
// line of flow mappings the path is the key the message is about, not the
// last key of the line. Validation problems beside a value that did not
// decode wait for the next run (they would be about a zero).
func TestParseReportsEveryDecodeAndValidationProblem(t *testing.T) {
	src := `vrrp:
  instances:
    - name: a
      interface: eth0
      vrid: 300
      vips: [10.0.0.1]
      colour: red
    - {name: b, interface: eth0, vrid: 2, vips: [10.0.0.2], priority: high}
balancers:
  - name: api
    listen: ["10.0.0.1:9445"]
    backends: [{address: "10.0.0.11:6443", wieght: 2}, {address: "10.0.0.12:6443", weight: x}]
    check: {http: {path: /}, interval: 1}
  - name: web
    listen: ["10.0.0.1:80"]
    backends: [{address: "10.0.0.21:80"}]
    check: {interval: 1s, timeout: 1, fall: 1, rise: 1}
`
	_, err := Parse([]byte(src))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %T %v is not Errors", err, err)
	}
	want := []string{
		`vrrp.instances[0].vrid: 300 is out of range 1..255 (line 5)`,
		`vrrp.instances[0].colour: unknown key "colour" (line 7)`,
		`vrrp.instances[1].priority: "high" is not a whole number (line 8)`,
		`balancers[0].backends[0].wieght: unknown key "wieght" (line 12)`,
		`balancers[0].backends[1].weight: "x" is not a whole number (line 12)`,
		`balancers[0].check.interval: "1" is not a duration with a unit, like 1s or 100ms (line 13)`,
		`balancers[1].check.timeout: "1" is not a duration with a unit, like 1s or 100ms (line 17)`,
	}
	if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("errors\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
