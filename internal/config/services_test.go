package config

import (
	"net/netip"
	"strings"
	"testing"
)

const goodServices = `cluster: c
node: n1
kubernetes:
  services:
    dataplane: proxy
    pools:
      - name: lan
        interface: eth0
        addresses: ["192.0.2.0/28", "192.0.2.20-192.0.2.30", "2001:db8::/120"]
        nodes: "node-role.kubernetes.io/worker"
      - name: routed
        announce: bgp
        auto_assign: false
        avoid_buggy_ips: false
        addresses: ["198.51.100.0/24"]
        bgp: {communities: ["65000:100", "65000:200"], local_pref: 200}
bgp:
  asn: 64512
  router_id: 10.0.0.1
  neighbors: [{address: 10.0.0.254, asn: 64500}]
`

func TestServicesKeys(t *testing.T) {
	c, err := Parse([]byte(goodServices))
	if err != nil {
		t.Fatal(err)
	}
	if !c.UsesKubernetes() {
		t.Fatal("UsesKubernetes = false with kubernetes.services")
	}
	s := c.Kubernetes.Services
	if s == nil || !*s.DefaultClass || s.Dataplane != "proxy" || len(s.Pools) != 2 {
		t.Fatalf("services %+v", s)
	}
	lan, routed := s.Pools[0], s.Pools[1]
	if lan.Announce != "l2" || !*lan.AutoAssign || !*lan.AvoidBuggyIPs || lan.Nodes != "node-role.kubernetes.io/worker" || len(lan.Addresses) != 3 {
		t.Fatalf("lan %+v", lan)
	}
	if routed.Announce != "bgp" || *routed.AutoAssign || *routed.AvoidBuggyIPs || routed.BGP.LocalPref != 200 || len(routed.BGP.Communities) != 2 {
		t.Fatalf("routed %+v", routed)
	}
}

func TestServicesDefaults(t *testing.T) {
	c, err := Parse([]byte("kubernetes:\n  services:\n    pools: [{name: a, interface: eth0, addresses: [192.0.2.0/24]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Kubernetes.Services
	if !*s.DefaultClass || s.Dataplane != "none" || s.Pools[0].Announce != "l2" || !*s.Pools[0].AutoAssign ||
		!*s.Pools[0].AvoidBuggyIPs || s.Pools[0].Nodes != "" {
		t.Fatalf("defaults %+v %+v", s, s.Pools[0])
	}
	if c.Kubernetes.StateFile != DefaultStateFile || !c.UsesKubernetes() {
		t.Fatalf("kubernetes %+v", c.Kubernetes)
	}
	roundTrip(t, c)
}

func TestServicesErrors(t *testing.T) {
	cases := []struct {
		name, from, to, want string
	}{
		{"dataplane", "dataplane: proxy", "dataplane: xdp",
			`kubernetes.services.dataplane: "xdp" is not none, proxy or dsr (line 5)`},
		{"no pools", "    pools:\n      - name: lan", "    other:\n      - name: lan",
			`kubernetes.services.other: unknown key "other" (line 6)`},
		{"name", "name: lan", "name: LAN_1",
			`kubernetes.services.pools[0].name: "LAN_1" is not a DNS label (lower-case letters, digits and -, at most 63) (line 7)`},
		{"name twice", "name: routed", "name: lan",
			`kubernetes.services.pools[1].name: "lan" is used twice (line 11)`},
		{"no addresses", `["198.51.100.0/24"]`, `[]`,
			`kubernetes.services.pools[1].addresses: needs at least one CIDR or range (line 15)`},
		{"bare address", `"2001:db8::/120"`, `"2001:db8::1"`,
			`kubernetes.services.pools[0].addresses[2]: "2001:db8::1" is not a CIDR or a FIRST-LAST range (one address is ADDRESS/32 or ADDRESS/128) (line 9)`},
		{"host bits", `"192.0.2.0/28"`, `"192.0.2.1/28"`,
			`kubernetes.services.pools[0].addresses[0]: "192.0.2.1/28" has host bits set: the network is 192.0.2.0/28 (line 9)`},
		{"reversed range", `"192.0.2.20-192.0.2.30"`, `"192.0.2.30-192.0.2.20"`,
			`kubernetes.services.pools[0].addresses[1]: "192.0.2.30-192.0.2.20": 192.0.2.30 is after 192.0.2.20 (line 9)`},
		{"mixed range", `"192.0.2.20-192.0.2.30"`, `"192.0.2.20-2001:db8::1"`,
			`kubernetes.services.pools[0].addresses[1]: "192.0.2.20-2001:db8::1" mixes IPv4 and IPv6 (line 9)`},
		{"bad range address", `"192.0.2.20-192.0.2.30"`, `"192.0.2.20-192.0.2.300"`,
			`kubernetes.services.pools[0].addresses[1]: "192.0.2.300" is not an IP address (line 9)`},
		{"overlap within a pool", `"192.0.2.20-192.0.2.30"`, `"192.0.2.10-192.0.2.30"`,
			`kubernetes.services.pools[0].addresses[1]: 192.0.2.10-192.0.2.30 overlaps 192.0.2.0/28 of kubernetes.services.pools[0].addresses[0] (line 9)`},
		{"overlap between pools", `["198.51.100.0/24"]`, `["2001:db8::80-2001:db8::1:0"]`,
			`kubernetes.services.pools[1].addresses[0]: 2001:db8::80-2001:db8::1:0 overlaps 2001:db8::/120 of kubernetes.services.pools[0].addresses[2] (line 9) (line 15)`},
		{"announce", "announce: bgp", "announce: arp",
			`kubernetes.services.pools[1].announce: "arp" is not l2 or bgp (line 12)`},
		{"l2 without interface", "        interface: eth0\n", "",
			`kubernetes.services.pools[0].interface: is required for announce l2 (where to answer ARP and NDP) (line 7)`},
		{"bad interface", "interface: eth0", "interface: a/b",
			`kubernetes.services.pools[0].interface: "a/b" is not an interface name (line 8)`},
		{"bgp with interface", "announce: bgp", "announce: bgp\n        interface: eth0",
			`kubernetes.services.pools[1].interface: applies to announce l2, or to bgp with dataplane dsr, only (announce is bgp) (line 13)`},
		{"dsr bgp pool without interface", "dataplane: proxy", "dataplane: dsr",
			`kubernetes.services.pools[1].interface: is required with dataplane dsr (the interface the pool's traffic comes in on: XDP runs there) (line 11)`},
		{"bgp without bgp section", "bgp:\n  asn: 64512\n  router_id: 10.0.0.1\n  neighbors: [{address: 10.0.0.254, asn: 64500}]\n", "",
			`kubernetes.services.pools[1].announce: bgp needs the bgp section (asn, router_id, neighbors) (line 12)`},
		{"bgp attributes on l2", `"2001:db8::/120"]`, `"2001:db8::/120"]` + "\n        bgp: {local_pref: 1}",
			`kubernetes.services.pools[0].bgp: applies to announce bgp only (announce is l2) (line 10)`},
		{"community", `"65000:200"`, `"65000:70000"`,
			`kubernetes.services.pools[1].bgp.communities[1]: "65000:70000" is not a community ASN:VALUE (each 0..65535) (line 16)`},
		{"nodes selector", `nodes: "node-role.kubernetes.io/worker"`, `nodes: "a in (b"`,
			`kubernetes.services.pools[0].nodes: "a in (b" is not a label selector`},
		{"auto_assign type", "auto_assign: false", "auto_assign: sometimes",
			`kubernetes.services.pools[1].auto_assign: "sometimes" is not true or false (line 13)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(goodServices, tc.from, tc.to, 1)
			if src == goodServices {
				t.Fatalf("replacement %q not found", tc.from)
			}
			_, err := Parse([]byte(src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error\n%v\nwant it to contain\n%s", err, tc.want)
			}
		})
	}
}

// With dataplane dsr a bgp pool names the interface its traffic comes in
// on: the XDP program runs there.
func TestServicesDSRBGPPoolTakesAnInterface(t *testing.T) {
	src := strings.Replace(strings.Replace(goodServices, "dataplane: proxy", "dataplane: dsr", 1), "announce: bgp", "announce: bgp\n        interface: eth1", 1)
	c, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Kubernetes.Services; s.Dataplane != "dsr" || s.Pools[1].Interface != "eth1" {
		t.Fatalf("services %+v, pool %+v", s, s.Pools[1])
	}
	roundTrip(t, c)
}

// A services section with no pools says so, and is something to do on its own.
func TestServicesNeedPools(t *testing.T) {
	_, err := Parse([]byte("kubernetes:\n  services: {dataplane: none}\n"))
	if err == nil || err.Error() != "kubernetes.services.pools: needs at least one pool (line 2)" {
		t.Fatalf("error %v", err)
	}
}

func TestParseAddressRange(t *testing.T) {
	cases := []struct {
		in          string
		first, last string
		bits        int
	}{
		{"192.0.2.0/28", "192.0.2.0", "192.0.2.15", 28},
		{"192.0.2.7/32", "192.0.2.7", "192.0.2.7", 32},
		{"0.0.0.0/0", "0.0.0.0", "255.255.255.255", 0},
		{"192.0.2.10-192.0.2.20", "192.0.2.10", "192.0.2.20", -1},
		{"192.0.2.10 - 192.0.2.10", "192.0.2.10", "192.0.2.10", -1},
		{"2001:db8::/120", "2001:db8::", "2001:db8::ff", 120},
		{"2001:db8::/64", "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", 64},
		{"2001:db8::1-2001:db8::1:0", "2001:db8::1", "2001:db8::1:0", -1},
	}
	for _, tc := range cases {
		r, err := ParseAddressRange(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if r.First != netip.MustParseAddr(tc.first) || r.Last != netip.MustParseAddr(tc.last) || r.Bits != tc.bits {
			t.Errorf("%q = %+v, want %s..%s /%d", tc.in, r, tc.first, tc.last, tc.bits)
		}
	}
	for _, bad := range []string{"", "-", "192.0.2.1", "192.0.2.0/33", "192.0.2.1/24", "192.0.2.9-192.0.2.1",
		"192.0.2.1-", "-192.0.2.1", "192.0.2.1-2001:db8::1", "fe80::1%eth0-fe80::2", "::ffff:192.0.2.0/120",
		"::ffff:192.0.2.1-::ffff:192.0.2.2", "192.0.2.1-192.0.2.2-192.0.2.3", "a-b"} {
		if r, err := ParseAddressRange(bad); err == nil {
			t.Errorf("%q parsed as %+v", bad, r)
		}
	}
}

func FuzzParseAddressRange(f *testing.F) {
	for _, s := range []string{"192.0.2.0/28", "192.0.2.10-192.0.2.20", "2001:db8::/120", "2001:db8::1-2001:db8::ff",
		"192.0.2.10 - 192.0.2.20", "0.0.0.0/0", "::/0", "192.0.2.1-192.0.2.0", "192.0.2.1-::1", "fe80::1%eth0-fe80::2",
		"::ffff:192.0.2.1-::ffff:192.0.2.9", "192.0.2.1/24", "1-2-3", "192.0.2.255/32"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseAddressRange(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("error without text")
			}
			return
		}
		if !r.First.IsValid() || r.First.Is4() != r.Last.Is4() || r.Last.Less(r.First) || r.First.Zone() != "" || r.First.Is4In6() {
			t.Fatalf("%q gave %+v", s, r)
		}
		if !r.Overlaps(r) {
			t.Fatalf("%q does not overlap itself", s)
		}
		back, err := ParseAddressRange(r.String())
		if err != nil || back != r {
			t.Fatalf("%q -> %q -> %+v, %v", s, r.String(), back, err)
		}
	})
}
