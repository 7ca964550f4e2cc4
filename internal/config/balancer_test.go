package config

import (
	"strings"
	"testing"
	"time"
)

const goodBalancer = `checks:
  - name: readyz
    http: {url: "https://127.0.0.1:6443/readyz", insecure_skip_verify: true, expect_status: ["200", "204-299"]}
    interval: 3s
balancers:
  - name: api
    listen: ["0.0.0.0:9445", ":9446"]
    monitor: {listen: "127.0.0.1:50936"}
    backends: [{address: "10.0.0.11:6443"}, {address: "10.0.0.12:6443", weight: 3, max_conn: 100}]
    check: {http: {path: /readyz, tls: true, insecure_skip_verify: true}, interval: 3s, fall: 2, rise: 3}
`

func TestBalancerDefaults(t *testing.T) {
	c, err := Parse([]byte(goodBalancer))
	if err != nil {
		t.Fatal(err)
	}
	b := c.Balancers[0]
	if b.Mode != "proxy" || b.Algorithm != "roundrobin" || b.MaxConn != DefaultFrontendMaxConn ||
		b.ConnectTimeout != DefaultConnectTimeout || b.IdleTimeout != DefaultIdleTimeout || *b.Retries != DefaultRetries ||
		b.DrainTimeout != DefaultDrainTimeout || b.Monitor.Path != DefaultMonitorPath {
		t.Fatalf("balancer defaults: %+v", b)
	}
	if *b.Backends[0].Weight != 1 || *b.Backends[1].Weight != 3 {
		t.Fatalf("weights %d %d", *b.Backends[0].Weight, *b.Backends[1].Weight)
	}
	ch := b.Check
	if ch.HTTP.Method != "GET" || ch.Timeout != time.Second || ch.FastInterval != 750*time.Millisecond || ch.Rise != 3 ||
		len(ch.HTTP.ExpectStatus) != 1 || ch.HTTP.ExpectStatus[0] != "200-399" {
		t.Fatalf("check defaults: %+v %+v", ch, ch.HTTP)
	}
	if c.Checks[0].HTTP.ExpectStatus[1] != "204-299" {
		t.Fatalf("expect_status %v", c.Checks[0].HTTP.ExpectStatus)
	}
}

func TestBalancerErrors(t *testing.T) {
	cases := []struct {
		name, from, to, want string
	}{
		{"listen without port", `":9446"`, `"10.0.0.1"`, `balancers[0].listen[1]: "10.0.0.1" is not ADDRESS:PORT or :PORT (line 7)`},
		{"listen twice", `":9446"`, `"0.0.0.0:9445"`, `balancers[0].listen[1]: 0.0.0.0:9445 is already used by balancers[0].listen[0] (line 7)`},
		{"monitor on a frontend", `"127.0.0.1:50936"`, `"0.0.0.0:9445"`, `balancers[0].monitor.listen: 0.0.0.0:9445 is already used by balancers[0].listen[0] (line 8)`},
		{"backend twice", `"10.0.0.12:6443"`, `"10.0.0.11:6443"`, `balancers[0].backends[1].address: 10.0.0.11:6443 is listed twice (line 9)`},
		{"backend name", `"10.0.0.12:6443"`, `"master-1:6443"`, `balancers[0].backends[1].address: "master-1:6443" is not IP:PORT (line 9)`},
		{"weight", `weight: 3`, `weight: 300`, `balancers[0].backends[1].weight: 300 is out of range 0..256 (line 9)`},
		{"algorithm", "    listen:", "    algorithm: random\n    listen:", ``},
		{"dsr without interface", `    listen:`, "    mode: dsr\n    listen:", `balancers[0].interface: "" is not an interface name (mode dsr needs the interface to run XDP on)`},
		{"dsr on every address", `    listen:`, "    mode: dsr\n    interface: eth0\n    listen:", `balancers[0].listen[1]: :9446: mode dsr needs the VIP's address (line 9)`},
		{"url in balancer check", `path: /readyz, tls: true`, `url: "https://x/readyz"`, `balancers[0].check.http.url: a balancer check asks each backend: give path (and tls), not url (line 10)`},
		{"status", `"204-299"`, `"299-204"`, `checks[0].http.expect_status[1]: "299-204" is not a status code or range of them (100..599) (line 3)`},
		{"url scheme", `https://127.0.0.1:6443/readyz`, `ftp://127.0.0.1/x`, `checks[0].http.url: "ftp://127.0.0.1/x" is not an http:// or https:// URL (line 3)`},
		{"fast interval", `interval: 3s, fall`, `interval: 3s, fast_interval: 5s, fall`, `balancers[0].check.fast_interval: 5s is out of range 10ms..interval (3s) (line 10)`},
		{"client cert alone", `insecure_skip_verify: true, expect_status`, `client_cert: /etc/c.pem, expect_status`, `checks[0].http.client_cert: client_cert and client_key go together (line 3)`},
		{"no backends", `    backends: [{address: "10.0.0.11:6443"}, {address: "10.0.0.12:6443", weight: 3, max_conn: 100}]`, `    backends: []`, `balancers[0].backends: needs at least one backend, or backends_from (line 9)`},
	}
	for _, c := range cases {
		src := strings.Replace(goodBalancer, c.from, c.to, 1)
		if src == goodBalancer {
			t.Fatalf("%s: replacement did not apply", c.name)
		}
		_, err := Parse([]byte(src))
		want := c.want
		if want == "" {
			want = `balancers[0].algorithm: "random" is not roundrobin, leastconn or maglev`
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s:\n got %v\nwant %s", c.name, err, want)
		}
	}
}
