package importer

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/config"
)

// metallbCases are the MetalLB set-ups in testdata/metallb, with what a
// vigil import of each must give: the options it needs, every note that
// loses behaviour (a prefix each, in file and line order) and the facts of
// the parsed config.
var metallbCases = []struct {
	name  string
	opts  MetalLBOptions
	lost  []string
	check func(t *testing.T, c *config.Config)
}{{
	name: "l2",
	check: func(t *testing.T, c *config.Config) {
		ps := c.Kubernetes.Services.Pools
		if len(ps) != 2 || ps[0].Name != "lan" || ps[0].Announce != "l2" || ps[0].Interface != "eno1" ||
			ps[0].Nodes != "kubernetes.io/hostname in (node-a,node-b)" || *ps[0].AvoidBuggyIPs || !*ps[0].AutoAssign {
			t.Fatalf("pools %+v", ps)
		}
		if !slices.Equal(ps[1].Addresses, []string{"192.168.10.199/32"}) || *ps[1].AutoAssign {
			t.Fatalf("reserved pool %+v: A-A is one address, autoAssign false", ps[1])
		}
		if c.BGP.ASN != 0 {
			t.Fatalf("bgp %+v in an L2-only set-up", c.BGP)
		}
	},
}, {
	name: "bgp",
	opts: MetalLBOptions{RouterID: "10.0.0.11"},
	lost: []string{
		"bgp.yaml:39: NOT CONVERTED: BGPAdvertisement/transit: attributes for pool public",
		"bgp.yaml:47: NOT CONVERTED: BGPAdvertisement/transit: aggregationLength 24",
	},
	check: func(t *testing.T, c *config.Config) {
		b := c.BGP
		if b.ASN != 64512 || b.RouterID != "10.0.0.11" || len(b.Neighbors) != 2 {
			t.Fatalf("bgp %+v", b)
		}
		a, bb := b.Neighbors[0], b.Neighbors[1]
		if a.Address != "10.0.0.1" || a.ASN != 64500 || a.Port != 179 || a.Password != "s3cret-md5" || a.HoldTime != 9*time.Second {
			t.Fatalf("tor-a %+v (password from the Secret)", a)
		}
		if bb.Port != 1179 || bb.HoldTime != 30*time.Second ||
			bb.BFD == nil || *bb.BFD != (config.BFD{MinRx: 100 * time.Millisecond, MinTx: 100 * time.Millisecond, Multiplier: 3}) {
			t.Fatalf("tor-b %+v (bfd from BFDProfile fast)", bb)
		}
		if a.BFD != nil {
			t.Fatalf("tor-a %+v has bfd; its BGPPeer names no bfdProfile", a)
		}
		p := c.Kubernetes.Services.Pools[0]
		if p.Announce != "bgp" || p.Interface != "" || !*p.AvoidBuggyIPs || p.BGP == nil ||
			!slices.Equal(p.BGP.Communities, []string{"64500:100", "65535:65282"}) || p.BGP.LocalPref != 100 {
			t.Fatalf("pool %+v bgp %+v (the alias no-advertise is 65535:65282)", p, p.BGP)
		}
	},
}, {
	name: "bfd",
	lost: []string{
		"bfd.yaml:56: NOT CONVERTED: BGPPeer/bfd-c: bfdProfile missing is not in the input",
		"bfd.yaml:67: NOT CONVERTED: BFDProfile/full: echoMode",
		"bfd.yaml:69: NOT CONVERTED: BFDProfile/full: passiveMode",
		"bfd.yaml:70: NOT CONVERTED: BFDProfile/full: minimumTtl 10",
	},
	check: func(t *testing.T, c *config.Config) {
		ns := c.BGP.Neighbors
		if len(ns) != 3 {
			t.Fatalf("neighbors %+v", ns)
		}
		want := []*config.BFD{
			{MinRx: 150 * time.Millisecond, MinTx: 100 * time.Millisecond, Multiplier: 5},
			{MinRx: 50 * time.Millisecond, MinTx: 50 * time.Millisecond, Multiplier: 3},
			nil,
		}
		for i, w := range want {
			if got := ns[i].BFD; (got == nil) != (w == nil) || got != nil && *got != *w {
				t.Errorf("neighbor %s: bfd %+v, want %+v", ns[i].Address, got, w)
			}
		}
	},
}, {
	name: "dualstack",
	opts: MetalLBOptions{Interface: "eth0"},
	check: func(t *testing.T, c *config.Config) {
		p := c.Kubernetes.Services.Pools[0]
		if p.Interface != "eth0" || p.Nodes != "" || len(p.Addresses) != 3 {
			t.Fatalf("pool %+v", p)
		}
		var v4, v6 int
		for _, a := range p.Addresses {
			r, err := config.ParseAddressRange(a)
			if err != nil {
				t.Fatal(err)
			}
			if r.First.Is4() {
				v4++
			} else {
				v6++
			}
		}
		if v4 != 1 || v6 != 2 {
			t.Fatalf("addresses %q", p.Addresses)
		}
	},
}, {
	name: "selectors",
	lost: []string{
		"selectors.yaml:35: NOT CONVERTED: IPAddressPool/tenant-a: serviceAllocation (priority 50 among the pools a Service may use; only Services in namespaces tenant-a)",
		"selectors.yaml:51: NOT CONVERTED: L2Advertisement/east: interfaces [bond0, bond1]: vigil answers for pool zone-east on one interface, bond0",
		"selectors.yaml:51: NOT CONVERTED: L2Advertisement/east: interfaces [bond0, bond1]: vigil answers for pool tenant-a",
	},
	check: func(t *testing.T, c *config.Config) {
		ps := c.Kubernetes.Services.Pools
		east := "!node-role.kubernetes.io/control-plane,topology.kubernetes.io/zone in (east-1,east-2)"
		if len(ps) != 3 || ps[0].Nodes != east || ps[2].Nodes != east || ps[1].Nodes != "topology.kubernetes.io/zone=west-1" {
			t.Fatalf("pools %+v", ps)
		}
	},
}}

func readMetalLBCase(t testing.TB, name string) []MetalLBFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "metallb", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return []MetalLBFile{{Name: name + ".yaml", Src: string(b)}}
}

func lostNotes(r *Result) []string {
	r.Sort()
	var lost []string
	for _, n := range r.Notes {
		if n.Lost {
			lost = append(lost, n.String())
		}
	}
	return lost
}

func TestMetalLB(t *testing.T) {
	for _, tc := range metallbCases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := MetalLB(readMetalLBCase(t, tc.name), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			lost := lostNotes(r)
			if len(lost) != len(tc.lost) {
				t.Fatalf("lost notes:\n%s\nwant prefixes:\n%s", strings.Join(lost, "\n"), strings.Join(tc.lost, "\n"))
			}
			for i, w := range tc.lost {
				if !strings.HasPrefix(lost[i], w) {
					t.Fatalf("note %d: %q, want prefix %q", i, lost[i], w)
				}
			}
			y, err := r.YAML()
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "metallb", "golden", tc.name+".yaml")
			if *update {
				os.WriteFile(golden, y, 0o644)
			}
			if want, _ := os.ReadFile(golden); string(want) != string(y) {
				t.Fatalf("output differs from %s (go test -update rewrites it):\n%s", golden, y)
			}
			c, err := config.Parse(y)
			if err != nil {
				t.Fatalf("the converted config does not validate: %v\n%s", err, y)
			}
			tc.check(t, c)
			checkRoundTrip(t, r, true)
		})
	}
}

// What vigil needs and MetalLB leaves to the node is asked for: without
// --interface and --router-id the notes say so and the config does not
// validate.
func TestMetalLBNeedsInterfaceAndRouterID(t *testing.T) {
	for name, want := range map[string]string{
		"dualstack": "give --interface",
		"bgp":       "give --router-id",
	} {
		r, err := MetalLB(readMetalLBCase(t, name), MetalLBOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(strings.Join(lostNotes(r), "\n"), want) {
			t.Errorf("%s: notes %q, want one saying %q", name, lostNotes(r), want)
		}
		y, _ := r.YAML()
		if _, err := config.Parse(y); err == nil {
			t.Errorf("%s: validates without the option:\n%s", name, y)
		}
	}
}

// Advertisements select pools of other files; peers, selectors and
// addresses in their less common forms.
func TestMetalLBCases(t *testing.T) {
	pool := func(name, labels, addrs string) string {
		return "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: " + name + ", labels: {" + labels + "}}\nspec: {addresses: [" + addrs + "]}\n"
	}
	peer := func(name, spec string) string {
		return "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: " + name + "}\nspec: {" + spec + "}\n"
	}
	for _, tc := range []struct {
		name  string
		files []string
		opts  MetalLBOptions
		lost  []string // substrings, one per lost note, in order
		check func(t *testing.T, c *config.Config)
	}{{
		name: "advertisement in another file, a pool nothing advertises",
		files: []string{pool("a", "", "10.0.0.0/28") + "---\n" + pool("b", "", "10.0.1.0/28"),
			"apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {ipAddressPools: [a, missing], interfaces: [eth1]}\n"},
		opts: MetalLBOptions{Interface: "eth0"},
		lost: []string{"IPAddressPool/b: advertised by no L2Advertisement or BGPAdvertisement", "b.yaml:4: NOT CONVERTED: L2Advertisement/l2: ipAddressPools names missing, which is not in the input"},
		check: func(t *testing.T, c *config.Config) {
			ps := c.Kubernetes.Services.Pools
			if ps[0].Interface != "eth1" || ps[1].Interface != "eth0" || ps[1].Announce != "l2" {
				t.Fatalf("pools %+v", ps)
			}
		},
	}, {
		name: "host bits, IPv6 range of one address, IPAddressPoolList",
		files: []string{"apiVersion: metallb.io/v1beta1\nkind: IPAddressPoolList\nitems:\n- " +
			strings.ReplaceAll(pool("p.one", "", "'198.51.100.10/24', '2001:db8::7 - 2001:db8::7'"), "\n", "\n  ") +
			"\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: all}\nspec: {interfaces: [eth0]}\n"},
		check: func(t *testing.T, c *config.Config) {
			p := c.Kubernetes.Services.Pools[0]
			if p.Name != "p-one" || !slices.Equal(p.Addresses, []string{"198.51.100.0/24", "2001:db8::7/128"}) {
				t.Fatalf("pool %+v", p)
			}
		},
	}, {
		name: "avoidBuggyIPs over a /23 and a range",
		files: []string{"apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [10.0.0.0/23], avoidBuggyIPs: true}\n" +
			"---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: all}\nspec: {interfaces: [eth0]}\n"},
		lost: []string{"may hand out 10.0.0.255 of 10.0.0.0/23"},
	}, {
		name: "peers: dynamic ASNs, another myASN, a duplicate address, unnumbered, v1beta1",
		files: []string{pool("p", "", "10.1.0.0/28") +
			"---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: adv}\nspec: {peers: [r1], nodeSelectors: [{matchLabels: {rack: r1}}, {matchLabels: {rack: r2}}]}\n" +
			"---\n" + peer("r1", "myASN: 64512, dynamicASN: internal, peerAddress: '10.0.0.1', routerID: 10.9.9.9, keepaliveTime: 10s") +
			"---\n" + peer("r2", "myASN: 64512, dynamicASN: external, peerAddress: '10.0.0.2'") +
			"---\n" + peer("r3", "myASN: 64999, peerASN: 1, peerAddress: '10.0.0.3'") +
			"---\n" + peer("r4", "myASN: 64512, peerASN: 2, peerAddress: '10.0.0.1'") +
			"---\n" + peer("r5", "myASN: 64512, peerASN: 3, interface: eth3") +
			"---\n" + strings.Replace(peer("r6", "myASN: 64512, peerASN: 4, peerAddress: 'fd00::1', holdTime: 1m30s, ebgpMultiHop: true, nodeSelectors: [{matchLabels: {a: b}}], vrf: red"), "v1beta2", "v1beta1", 1)},
		lost: []string{
			"peers [r1]: vigil announces a pool to every neighbor, r6 included",
			"keepaliveTime 10s is not converted",
			"dynamicASN external",
			"myASN 64999 is not converted",
			"peerAddress 10.0.0.1 is also BGPPeer r1's",
			"unnumbered BGP on interface eth3",
			"ebgpMultiHop",
			"nodeSelectors are not converted",
			"spec.vrf is not converted",
		},
		check: func(t *testing.T, c *config.Config) {
			b := c.BGP
			if b.ASN != 64512 || b.RouterID != "10.9.9.9" || len(b.Neighbors) != 2 || b.Neighbors[0].ASN != 64512 ||
				b.Neighbors[1].Address != "fd00::1" || b.Neighbors[1].HoldTime != 90*time.Second {
				t.Fatalf("bgp %+v", b)
			}
			if p := c.Kubernetes.Services.Pools[0]; p.Nodes != "rack in (r1,r2)" || p.BGP != nil {
				t.Fatalf("pool %+v", p)
			}
		},
	}, {
		name: "both L2 and BGP, large and unknown communities, a whole install manifest",
		files: []string{"apiVersion: v1\nkind: Namespace\nmetadata: {name: metallb-system}\n---\n" + pool("p", "", "10.1.0.0/28") +
			"---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\n" +
			"---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: adv}\nspec: {communities: ['large:1:2:3', gold, '1:2']}\n" +
			"---\n" + peer("r1", "myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, routerID: 10.0.0.9") +
			"---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: speaker}\n"},
		lost: []string{"also advertised by L2Advertisement l2", "large community large:1:2:3", "community gold: no Community in the input defines it"},
		check: func(t *testing.T, c *config.Config) {
			if p := c.Kubernetes.Services.Pools[0]; p.Announce != "bgp" || !slices.Equal(p.BGP.Communities, []string{"1:2"}) {
				t.Fatalf("pool %+v", p)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var files []MetalLBFile
			for i, f := range tc.files {
				files = append(files, MetalLBFile{Name: string(rune('a'+i)) + ".yaml", Src: f})
			}
			r, err := MetalLB(files, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			lost := lostNotes(r)
			ok := len(lost) == len(tc.lost)
			for i := 0; ok && i < len(lost); i++ {
				ok = strings.Contains(lost[i], tc.lost[i])
			}
			if !ok {
				t.Fatalf("lost notes:\n%s\nwant, in order:\n%s", strings.Join(lost, "\n"), strings.Join(tc.lost, "\n"))
			}
			checkRoundTrip(t, r, true)
			if tc.check != nil {
				y, _ := r.YAML()
				c, err := config.Parse(y)
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, c)
			}
		})
	}
}

// An input that cannot be read is an error naming the file, the document
// (and List item), the object and the field.
func TestMetalLBErrors(t *testing.T) {
	const hdr = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\n"
	for _, tc := range []struct {
		src, want string
		field     string
	}{
		{"a: [\n", "f.yaml:1: document 1: did not find expected node content", ""},
		{"---\n" + hdr + "spec: {addresses: [10.0.0.0/24, 10.0.1.1/33]}\n", `f.yaml:5: document 1 (IPAddressPool/p): spec.addresses[1]: "10.0.1.1/33" is not a CIDR`, "spec.addresses[1]"},
		{hdr + "spec: {addresses: [10.0.0.0/24]}\n---\n" + hdr + "spec: {addresses: [10.0.1.0/24]}\n", "document 2 (IPAddressPool/p): metadata.name: IPAddressPool/p is also document 1 of f.yaml", "metadata.name"},
		{hdr + "spec: {autoAssign: maybe, addresses: [10.0.0.0/24]}\n", "spec.autoAssign: cannot unmarshal !!str `maybe` into bool", "spec.autoAssign"},
		{hdr + "spec: {}\n", "(IPAddressPool/p): spec.addresses: needs at least one CIDR or range", "spec.addresses"},
		{"kind: List\nitems:\n- " + strings.ReplaceAll(hdr, "\n", "\n  ") + "spec: {addresses: ['10.0.0.9-10.0.0.1']}\n", "document 1 items[0] (IPAddressPool/p): spec.addresses[0]", "spec.addresses[0]"},
		{"apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l}\nspec: {nodeSelectors: [{matchExpressions: [{key: a, operator: Near}]}]}\n", "(L2Advertisement/l): spec.nodeSelectors[0]", "spec.nodeSelectors[0]"},
		{"apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: b}\nspec: {communities: ['70000:1']}\n", "spec.communities[0]", "spec.communities[0]"},
		{"apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: r}\nspec: {myASN: 1, peerASN: 2, peerAddress: router}\n", `(BGPPeer/r): spec.peerAddress: "router" is not an IP address`, "spec.peerAddress"},
		{"apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: r}\nspec: {myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, holdTime: 90}\n", `spec.holdTime: "90" is not a duration`, "spec.holdTime"},
		{"apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: r}\nspec: {peerASN: 2, peerAddress: 10.0.0.1}\n", "spec.myASN: is required", "spec.myASN"},
		{"apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nspec: {}\n", "metadata.name: is missing", "metadata.name"},
		{"apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: f}\nspec: {receiveInterval: 5}\n", "(BFDProfile/f): spec.receiveInterval: 5 ms is outside 10ms to 1m0s", "spec.receiveInterval"},
		{"apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: f}\nspec: {transmitInterval: fast}\n", "spec.transmitInterval: cannot unmarshal", "spec.transmitInterval"},
		{"apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: f}\nspec: {detectMultiplier: 256}\n", "spec.detectMultiplier: 256 is outside 1 to 255", "spec.detectMultiplier"},
		{"apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: f}\nspec: {transmitInterval: 9223372036854775807}\n", "spec.transmitInterval: 9223372036854775807 ms is outside", "spec.transmitInterval"},
		{"- a\n- b\n", "is not a Kubernetes object", ""},
	} {
		_, err := MetalLB([]MetalLBFile{{Name: "f.yaml", Src: tc.src}}, MetalLBOptions{})
		var de *DocumentError
		if !errors.As(err, &de) || !strings.Contains(err.Error(), tc.want) || de.Field != tc.field {
			t.Errorf("%q:\n got %v\nwant %q (field %q)", tc.src, err, tc.want, tc.field)
		}
	}
}

func TestAnyOfSelectors(t *testing.T) {
	r, err := MetalLB([]MetalLBFile{{Name: "f", Src: `apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: p}
spec: {addresses: [10.0.0.0/28]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: a}
spec: {interfaces: [eth0], nodeSelectors: [{matchLabels: {rack: r1, zone: z}}, {matchLabels: {rack: r2}}]}
`}}, MetalLBOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := r.Config.Kubernetes.Services.Pools[0]; p.Nodes != "rack=r1,zone=z" {
		t.Fatalf("nodes %q, want the first selector (fewer nodes, not more)", p.Nodes)
	}
	if l := lostNotes(r); len(l) != 1 || !strings.Contains(l[0], "vigil takes one label selector per pool") {
		t.Fatalf("notes %q", l)
	}
}

func FuzzMetalLB(f *testing.F) {
	for _, tc := range metallbCases {
		f.Add(readMetalLBCase(f, tc.name)[0].Src)
	}
	f.Add("kind: List\nitems: [{apiVersion: metallb.io/v1beta1, kind: IPAddressPool, metadata: {name: p}, spec: {addresses: ['::1-::2']}}]\n")
	f.Fuzz(func(t *testing.T, src string) {
		r, err := MetalLB([]MetalLBFile{{Name: "f", Src: src}}, MetalLBOptions{Interface: "eth0", RouterID: "10.0.0.1"})
		if err != nil {
			var de *DocumentError
			if !errors.As(err, &de) {
				t.Fatalf("%T %v: not a DocumentError", err, err)
			}
			return
		}
		if _, err := r.YAML(); err != nil {
			t.Fatal(err)
		}
		checkRoundTrip(t, r, false)
	})
}
