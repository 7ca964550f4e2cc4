package config

import (
	"strings"
	"testing"
	"time"
)

const goodBGP = `checks:
  - {name: svc, tcp: {address: "127.0.0.1:6443"}}
balancers:
  - {name: api, listen: ["192.0.2.10:9445"], backends: [{address: "10.0.0.11:6443"}]}
bgp:
  asn: 64512
  router_id: 10.0.0.1
  neighbors: [{address: 10.0.0.254, asn: 64500}]
  announce: [{prefix: 192.0.2.10/32, when_healthy: api, communities: ["64512:100"]}]
`

func TestBGPDefaultsAndErrors(t *testing.T) {
	c, err := Parse([]byte(goodBGP))
	if err != nil {
		t.Fatal(err)
	}
	if n := c.BGP.Neighbors[0]; n.Port != 179 || n.HoldTime != DefaultHoldTime || c.BGP.ListenPort != 0 {
		t.Fatalf("defaults %+v listen %d", n, c.BGP.ListenPort)
	}
	cases := []struct{ name, from, to, want string }{
		{"not a VIP", "prefix: 192.0.2.10/32", "prefix: 198.51.100.1/32", "bgp.announce[0].prefix: 198.51.100.1 is not a VIP of this config"},
		{"unknown condition", "when_healthy: api", "when_healthy: nope", `bgp.announce[0].when_healthy: no check or balancer named "nope"`},
		{"unknown instance", "when_healthy: api", "when_master: vip", `bgp.announce[0].when_master: no VRRP instance named "vip"`},
		{"hold time", "asn: 64500}", "asn: 64500, hold_time: 2s}", "bgp.neighbors[0].hold_time: 2s: whole seconds from 3s to 65535s"},
		{"community", `"64512:100"`, `"64512:70000"`, `bgp.announce[0].communities[0]: "64512:70000" is not a community`},
		{"router id", "router_id: 10.0.0.1", "router_id: 2001:db8::1", `bgp.router_id: "2001:db8::1" is not an IPv4 address`},
		{"no asn", "  asn: 64512\n", "", "bgp.asn: is required"},
		{"restart time", "  announce:", "  graceful_restart: {enabled: true, restart_time: 5000s}\n  announce:", "bgp.graceful_restart.restart_time: 1h23m20s: whole seconds from 1s to 4095s"},
		{"restart time fraction", "  announce:", "  graceful_restart: {enabled: true, restart_time: 1500ms}\n  announce:", "bgp.graceful_restart.restart_time: 1.5s: whole seconds"},
		{"graceful restart key", "  announce:", "  graceful_restart: {enable: true}\n  announce:", "bgp.graceful_restart.enable"},
		{"link-local without interface", "[{address: 10.0.0.254,", "[{address: \"fe80::1\",", "bgp.neighbors[0].address: fe80::1 is link-local: name its interface, fe80::1%eth0"},
		{"peer twice", "[{address: 10.0.0.254, asn: 64500}]", "[{address: 10.0.0.254, asn: 64500}, {address: 10.0.0.254, asn: 64501}]", "bgp.neighbors[1].address: 10.0.0.254 is listed twice"},
	}
	for _, c := range cases {
		src := strings.Replace(goodBGP, c.from, c.to, 1)
		if src == goodBGP {
			t.Fatalf("%s: replacement did not apply", c.name)
		}
		if _, err := Parse([]byte(src)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got %v\nwant %s", c.name, err, c.want)
		}
	}
	gr := strings.Replace(goodBGP, "  announce:", "  graceful_restart: {enabled: true}\n  announce:", 1)
	if c, err := Parse([]byte(gr)); err != nil || c.BGP.GracefulRestart.RestartTime != DefaultRestartTime {
		t.Fatalf("graceful restart's default restart time: %v %+v", err, c.BGP.GracefulRestart)
	}
	passive := strings.Replace(goodBGP, "asn: 64500}", "asn: 64500, passive: true}", 1)
	if c, err := Parse([]byte(passive)); err != nil || c.BGP.ListenPort != 179 {
		t.Fatalf("a passive neighbor listens on 179: %v %d", err, c.BGP.ListenPort)
	}
}

func TestBGPNeighborBFD(t *testing.T) {
	src := strings.Replace(goodBGP, "asn: 64500}", "asn: 64500, bfd: {}}", 1)
	c, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if b := c.BGP.Neighbors[0].BFD; b == nil || b.MinRx != DefaultBFDInterval || b.MinTx != DefaultBFDInterval || b.Multiplier != DefaultBFDMultiplier {
		t.Fatalf("bfd defaults %+v", b)
	}
	if c, _ := Parse([]byte(goodBGP)); c.BGP.Neighbors[0].BFD != nil {
		t.Fatal("bfd without the key")
	}
	src = strings.Replace(goodBGP, "asn: 64500}", "asn: 64500, bfd: {min_rx: 100ms, min_tx: 150ms, multiplier: 5}}", 1)
	if c, err := Parse([]byte(src)); err != nil || *c.BGP.Neighbors[0].BFD != (BFD{MinRx: 100 * time.Millisecond, MinTx: 150 * time.Millisecond, Multiplier: 5}) {
		t.Fatalf("bfd %v %+v", err, c.BGP.Neighbors[0].BFD)
	}
	for _, tc := range []struct{ bfd, want string }{
		{"{min_rx: 1ms}", "bgp.neighbors[0].bfd.min_rx: 1ms: from 10ms to 1m, in whole microseconds (line 8)"},
		{"{min_tx: 2m}", "bgp.neighbors[0].bfd.min_tx: 2m0s: from 10ms to 1m"},
		{"{multiplier: 0}", "bgp.neighbors[0].bfd.multiplier: 0 is out of range 1..255"},
		{"{multiplier: 256}", "bgp.neighbors[0].bfd.multiplier: 256 is out of range 1..255"},
		{"{echo: true}", "bgp.neighbors[0].bfd.echo"},
	} {
		src := strings.Replace(goodBGP, "asn: 64500}", "asn: 64500, bfd: "+tc.bfd+"}", 1)
		if _, err := Parse([]byte(src)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bfd %s:\n got %v\nwant %s", tc.bfd, err, tc.want)
		}
	}
}
