package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/proxyproto"
)

// maglevSettings makes settings with algorithm maglev over backends of the
// given weights, all up.
func maglevSettings(t *testing.T, weights ...int32) *settings {
	t.Helper()
	var bs []*Backend
	for i, w := range weights {
		be := &Backend{Addr: netip.MustParseAddrPort(fmt.Sprintf("10.0.0.%d:80", i+1))}
		be.weight.Store(w)
		be.up.Store(true)
		bs = append(bs, be)
	}
	ring, err := newSourceRing(bs, weights)
	if err != nil {
		t.Fatal(err)
	}
	return &settings{cfg: config.Balancer{Algorithm: "maglev"}, backends: bs, ring: ring}
}

func client(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)}) }

// assign picks a backend for each of n clients; picks do not stay counted.
func assign(t *testing.T, b *Balancer, s *settings, n int, tried []*Backend) []*Backend {
	t.Helper()
	got := make([]*Backend, n)
	for i := range got {
		got[i] = b.pick(s, tried, client(i))
		if got[i] != nil {
			got[i].active.Add(-1)
		}
	}
	return got
}

func TestMaglevKeepsClientsOnTheirBackends(t *testing.T) {
	const clients = 4000
	s := maglevSettings(t, 1, 1, 1, 1)
	b := &Balancer{}
	first := assign(t, b, s, clients, nil)
	share := map[*Backend]int{}
	for _, be := range first {
		share[be]++
	}
	for i, be := range s.backends {
		if n := share[be]; n < clients/4*8/10 || n > clients/4*12/10 {
			t.Errorf("backend %d has %d of %d clients, want %d ± 20%%", i, n, clients, clients/4)
		}
	}
	again := assign(t, b, s, clients, nil)
	for i := range again {
		if again[i] != first[i] {
			t.Fatalf("client %d moved from %v to %v with nothing changed", i, first[i].Addr, again[i].Addr)
		}
	}

	// One backend out: only its clients move, spread over the others.
	out := s.backends[1]
	out.up.Store(false)
	during := assign(t, b, s, clients, nil)
	took := map[*Backend]int{}
	for i := range during {
		switch {
		case first[i] != out && during[i] != first[i]:
			t.Fatalf("client %d moved off %v, which stayed up", i, first[i].Addr)
		case during[i] == out:
			t.Fatalf("client %d sent to a backend that is down", i)
		case first[i] == out:
			took[during[i]]++
		}
	}
	for _, be := range s.backends {
		if be != out && (took[be] < share[out]/6 || took[be] > share[out]*2/3) {
			t.Errorf("%v took %d of the %d clients of the backend out, want a fair part", be.Addr, took[be], share[out])
		}
	}
	// Back: every client is where it was.
	out.up.Store(true)
	after := assign(t, b, s, clients, nil)
	for i := range after {
		if after[i] != first[i] {
			t.Fatalf("client %d on %v after the backend came back, was on %v", i, after[i].Addr, first[i].Addr)
		}
	}

	// A retry goes elsewhere, the same elsewhere each time.
	c := client(7)
	home := b.pick(s, nil, c)
	home.active.Add(-1)
	retry := b.pick(s, []*Backend{home}, c)
	retry.active.Add(-1)
	if retry == home || b.pick(s, []*Backend{home}, c) != retry {
		t.Fatalf("retry for a client on %v went to %v", home.Addr, retry.Addr)
	}
	// Nobody left: no backend, at once.
	for _, be := range s.backends {
		be.up.Store(false)
	}
	if be := b.pick(s, nil, c); be != nil {
		t.Fatalf("picked %v with every backend down", be.Addr)
	}
}

func TestMaglevWeightsAndNodes(t *testing.T) {
	const clients = 4000
	s := maglevSettings(t, 3, 1, 0)
	b := &Balancer{}
	share := map[*Backend]int{}
	for _, be := range assign(t, b, s, clients, nil) {
		share[be]++
	}
	if n := share[s.backends[0]]; n < clients*70/100 || n > clients*80/100 || share[s.backends[2]] != 0 {
		t.Fatalf("weights 3,1,0 gave %d, %d, %d of %d clients", n, share[s.backends[1]], share[s.backends[2]], clients)
	}
	// Another node, the same backends listed the other way round, makes
	// the same choices; an IPv4-mapped IPv6 address is the same client.
	other := &settings{cfg: s.cfg, backends: []*Backend{s.backends[2], s.backends[1], s.backends[0]}}
	ring, err := newSourceRing(other.backends, []int32{0, 1, 3})
	if err != nil {
		t.Fatal(err)
	}
	other.ring = ring
	for i := range 200 {
		mine := b.pick(s, nil, client(i))
		mine.active.Add(-1)
		theirs := b.pick(other, nil, netip.AddrFrom16(client(i).As16()))
		theirs.active.Add(-1)
		if mine != theirs {
			t.Fatalf("client %d: %v here, %v on the other node", i, mine.Addr, theirs.Addr)
		}
	}
	// Every weight 0: a ring without members, no backend.
	if s := maglevSettings(t, 0, 0); b.pick(s, nil, client(1)) != nil {
		t.Fatal("picked a backend of weight 0")
	}
}

// TestMaglevThroughTheWire: clients named by PROXY headers keep their
// backend connection after connection, and different clients spread.
func TestMaglevThroughTheWire(t *testing.T) {
	s1, s2, s3 := newServer(t, "s1", false), newServer(t, "s2", false), newServer(t, "s3", false)
	front := freeAddr(t)
	start(t, balancerConfig(t, "listen: ["+front+"]\nalgorithm: maglev\naccept_proxy: true\n"+backendList(s1.addr(), s2.addr(), s3.addr())))
	as := func(src string) string {
		c, err := net.DialTimeout("tcp", front, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		h := proxyproto.Header{Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort("192.0.2.10:443")}
		c.Write(proxyproto.AppendV1(nil, h))
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("client %s: %v", src, err)
		}
		return strings.TrimSpace(line)
	}
	used := map[string]bool{}
	for i := range 30 {
		ip := fmt.Sprintf("198.51.100.%d", i+1)
		home := as(ip + ":1000")
		for port := 1001; port < 1004; port++ {
			if got := as(fmt.Sprintf("%s:%d", ip, port)); got != home {
				t.Fatalf("client %s went to %s, then to %s", ip, home, got)
			}
		}
		used[home] = true
	}
	if len(used) != 3 {
		t.Fatalf("30 clients used %v, want all three backends", used)
	}
}
