package dsr

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/xdp"
)

func TestNativeDropsFrames(t *testing.T) {
	takes := xdp.FeatureBasic | xdp.FeatureRedirect | xdp.FeatureNdoXmit
	lonelyVeth := linkXDP{name: "eth0", veth: true, features: xdp.FeatureBasic | xdp.FeatureRedirect, known: true}
	links := map[string]linkXDP{
		"eth1": {name: "eth1", veth: true, features: xdp.FeatureBasic, known: true},
		"eth2": {name: "eth2", features: xdp.FeatureBasic, known: true},
		"eth3": {name: "eth3", features: takes, known: true},
		"eth4": {name: "eth4"}, // features unknown
	}
	describe := func(name string) linkXDP { return links[name] }
	for _, c := range []struct {
		name string
		own  linkXDP
		e    egress
		want string // "" or a part of the reason
	}{
		{"veth, peer with a program, XDP_TX", linkXDP{name: "eth0", veth: true, features: takes, known: true}, egress{tx: true}, ""},
		{"veth, peer without, XDP_TX", lonelyVeth, egress{tx: true}, "eth0 is a veth whose peer runs no XDP program"},
		{"veth, peer without, only redirects", lonelyVeth, egress{redirects: map[string]string{"eth3": "10.0.3.1:80"}}, ""},
		{"a NIC without ndo_xmit sends back out", linkXDP{name: "eth0", features: xdp.FeatureBasic, known: true}, egress{tx: true}, ""},
		{"features unknown", linkXDP{name: "eth0", veth: true}, egress{tx: true}, ""},
		{"redirect to a veth whose peer runs none", linkXDP{name: "eth0", features: takes, known: true},
			egress{redirects: map[string]string{"eth1": "10.0.1.1:80"}}, "backend 10.0.1.1:80 is reached through eth1, and it is a veth whose peer runs no XDP program"},
		{"redirect to a driver without ndo_xmit", linkXDP{name: "eth0", features: takes, known: true},
			egress{redirects: map[string]string{"eth2": "10.0.2.1:80"}}, "backend 10.0.2.1:80 is reached through eth2, and its driver takes no redirected XDP frames"},
		{"redirect to targets that take them or cannot tell", linkXDP{name: "eth0", features: takes, known: true},
			egress{redirects: map[string]string{"eth3": "10.0.3.1:80", "eth4": "10.0.4.1:80"}}, ""},
		{"two bad targets, in name order", linkXDP{name: "eth0", features: takes, known: true},
			egress{redirects: map[string]string{"eth2": "10.0.2.1:80", "eth1": "10.0.1.1:80"}}, "through eth1, and it is a veth whose peer runs no XDP program; backend 10.0.2.1:80 is reached through eth2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := nativeDropsFrames(c.own, c.e, describe)
			if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestSendsOnCollectsEveryBalancerOnTheInterface(t *testing.T) {
	bals := []config.Balancer{
		{Name: "a", Interface: "eth0", Backends: []config.Backend{{Address: "10.0.0.5:80"}, {Address: "10.0.1.5:80"}}},
		{Name: "b", Interface: "eth0", Backends: []config.Backend{{Address: "10.0.1.6:80"}, {Address: "10.0.2.5:80"}}},
		{Name: "c", Interface: "eth9", Backends: []config.Backend{{Address: "10.0.9.5:80"}}},
	}
	ip := netip.MustParseAddr
	links := map[string]map[netip.Addr]backendLink{
		"a": {ip("10.0.0.5"): {name: "eth0"}, ip("10.0.1.5"): {name: "eth1", ifindex: 3}},
		"b": {ip("10.0.1.6"): {name: "eth1", ifindex: 3}, ip("10.0.2.5"): {name: "eth2", ifindex: 4}},
		"c": {ip("10.0.9.5"): {name: "eth9"}},
	}
	e := sendsOn(bals, links, "eth0")
	if !e.tx || len(e.redirects) != 2 || e.redirects["eth1"] != "10.0.1.5:80" || e.redirects["eth2"] != "10.0.2.5:80" {
		t.Fatalf("eth0: %+v", e)
	}
	if e := sendsOn(bals[1:2], links, "eth0"); e.tx || len(e.redirects) != 2 {
		t.Fatalf("balancer b alone: %+v", e)
	}
}

func TestBackendSlotsHandOutNeverUsedOnesFirst(t *testing.T) {
	s := &backendSlots{next: xdp.MaxBackends - 2}
	s.give(7)
	c := s.clone()
	var got []uint32
	for {
		idx, ok := c.take()
		if !ok {
			break
		}
		got = append(got, idx)
		if idx == 7 {
			c.give(9)
		}
	}
	want := []uint32{xdp.MaxBackends - 2, xdp.MaxBackends - 1, 7, 9}
	if !slices.Equal(got, want) {
		t.Fatalf("taken %v, want %v", got, want)
	}
	if s.next != xdp.MaxBackends-2 || len(s.free) != 1 {
		t.Fatalf("the clone changed the original: %+v", s)
	}
}

func TestAutoAvoidsNativeWhereAVethTakesTheFrames(t *testing.T) {
	takes := xdp.FeatureBasic | xdp.FeatureNdoXmit
	veth := linkXDP{name: "eth0", veth: true, features: takes, known: true}
	nic := linkXDP{name: "eth0", features: takes, known: true}
	links := map[string]linkXDP{"veth1": {name: "veth1", veth: true, features: takes, known: true}, "eth1": {name: "eth1", features: takes, known: true}}
	describe := func(name string) linkXDP { return links[name] }
	for _, c := range []struct {
		name  string
		own   linkXDP
		e     egress
		avoid bool
	}{
		{"a veth sending frames back out", veth, egress{tx: true}, true},
		{"a veth redirecting to a NIC", veth, egress{redirects: map[string]string{"eth1": "10.0.1.1:80"}}, false},
		{"a NIC sending frames back out", nic, egress{tx: true}, false},
		{"a NIC redirecting to a veth", nic, egress{redirects: map[string]string{"eth1": "10.0.1.1:80", "veth1": "10.0.2.1:80"}}, true},
	} {
		if why := autoAvoidsNative(c.own, c.e, describe); (why != "") != c.avoid {
			t.Errorf("%s: %q, want avoid=%v", c.name, why, c.avoid)
		}
	}
}
