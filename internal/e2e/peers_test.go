package e2e

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/vrrp"
	"github.com/vigil-lb/vigil/internal/vrrplab"
)

// advertTap counts the VRRP adverts a host without a daemon receives, by
// source: a node about to join, whose address the others add to their peers.
type advertTap struct {
	mu    sync.Mutex
	count map[netip.Addr]int
	zero  int // priority-0 adverts
}

func tapAdverts(t *testing.T, h *netlab.Host) *advertTap {
	t.Helper()
	var tr *vrrp.Transport
	err := h.Do(func() (err error) {
		tr, err = vrrp.OpenTransport("eth0", false, nil, slog.New(slog.DiscardHandler))
		return err
	})
	if err != nil {
		t.Fatalf("tap on %s: %v", h.Name, err)
	}
	tap := &advertTap{count: map[netip.Addr]int{}}
	ch := make(chan vrrp.Received, 256)
	if err := tr.Sniff(ch); err != nil {
		tr.Close()
		t.Fatalf("tap on %s: %v", h.Name, err)
	}
	done := make(chan struct{})
	go func() { defer close(done); tr.Serve() }()
	go func() {
		for {
			select {
			case r := <-ch:
				p, err := vrrp.Unmarshal(r.Payload, false)
				tap.mu.Lock()
				tap.count[r.Src]++
				if err == nil && p.Priority == 0 {
					tap.zero++
				}
				tap.mu.Unlock()
			case <-done:
				return
			}
		}
	}()
	t.Cleanup(func() { tr.Close(); <-done })
	return tap
}

func (a *advertTap) from(src netip.Addr) (n, zero int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.count[src], a.zero
}

var peersLine = regexp.MustCompile(`(?m)^(\s*unicast_peers:) \[.*\]$`)

// reloadPeers rewrites the node's unicast_peers, sends SIGHUP and waits
// for the reload to be applied.
func reloadPeers(t *testing.T, n *vrrplab.Node, peers ...string) {
	t.Helper()
	b, err := os.ReadFile(n.Config)
	if err != nil {
		t.Fatal(err)
	}
	if !peersLine.Match(b) {
		t.Fatalf("%s has no unicast_peers line:\n%s", n.Config, b)
	}
	list := `["` + strings.Join(peers, `", "`) + `"]`
	b = peersLine.ReplaceAll(b, []byte("${1} "+list))
	if err := os.WriteFile(n.Config, b, 0o644); err != nil {
		t.Fatal(err)
	}
	off, _ := os.Stat(n.LogPath)
	if err := n.Proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLogFile(t, n.LogPath, int(off.Size()), "config reloaded", 5*time.Second)
	// Commit hands the peers to the instance, whose Run applies them next.
	for end := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got := instanceOf(t, n)
		if fmt.Sprint(got.UnicastPeers) == fmt.Sprint(peers) {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s: peers in force %v after the reload, want %v", n.Name, got.UnicastPeers, peers)
		}
	}
}

func instanceOf(t *testing.T, n *vrrplab.Node) api.Instance {
	t.Helper()
	snap := statusAt(t, n.Socket())
	if len(snap.Instances) != 1 {
		t.Fatalf("%s: %d instances in status", n.Name, len(snap.Instances))
	}
	return snap.Instances[0]
}

// A reload that changes unicast_peers changes who gets and who may send
// adverts, and nothing else: no transition on either node, the VIP stays on
// the master, the backup keeps hearing it, and a node whose address was
// added gets adverts. Then the backup drops the master from its peers:
// the master's adverts become unknown_peer drops and the backup takes over.
func TestUnicastPeersChangeOnReload(t *testing.T) {
	spec := fast
	spec.Unicast = true
	c := twoNodes(t, spec)
	lb1, lb2 := c.Node("lb1"), c.Node("lb2")
	a1, a2, a3 := lb1.Host.Addr(false), lb2.Host.Addr(false), netip.MustParseAddr("10.77.0.13")
	lb3, err := c.Lab.AddHost("lb3", netip.PrefixFrom(a3, 24))
	if err != nil {
		t.Fatal(err)
	}
	tap := tapAdverts(t, lb3)
	stable(t, c, "lb1", 500*time.Millisecond)
	before1, before2 := instanceOf(t, lb1), instanceOf(t, lb2)
	if before1.State != "MASTER" || before2.State != "BACKUP" {
		t.Fatalf("before the reload: lb1 %s, lb2 %s", before1.State, before2.State)
	}
	if n, _ := tap.from(a1); n != 0 {
		t.Fatalf("lb3 got %d adverts from lb1 before it was a peer", n)
	}

	// lb3 joins: both nodes add it, lb1's list in another order.
	reloadPeers(t, lb2, a1.String(), a3.String())
	reloadPeers(t, lb1, a2.String(), a3.String())
	const intervals = 15
	stable(t, c, "lb1", intervals*spec.Interval)
	after1, after2 := instanceOf(t, lb1), instanceOf(t, lb2)
	if after1.State != "MASTER" || after1.Transitions != before1.Transitions {
		t.Fatalf("lb1 after the reload: %s, %d transitions (was %d)", after1.State, after1.Transitions, before1.Transitions)
	}
	if after2.State != "BACKUP" || after2.Transitions != before2.Transitions {
		t.Fatalf("lb2 after the reload: %s, %d transitions (was %d)", after2.State, after2.Transitions, before2.Transitions)
	}
	if got := after2.AdvertsReceived - before2.AdvertsReceived; got < intervals {
		t.Fatalf("lb2 accepted %d adverts from lb1 across the reloads, want at least %d", got, intervals)
	}
	if d := after2.Drops[string(vrrp.DropUnknownPeer)]; d != 0 {
		t.Fatalf("lb2 dropped %d adverts as unknown_peer while lb1 was its peer", d)
	}
	n, zero := tap.from(a1)
	if n < intervals-2 || zero != 0 {
		t.Fatalf("lb3 got %d adverts from lb1 (%d of priority 0), want about %d and none of priority 0", n, zero, intervals)
	}
	t.Logf("across the reloads: no transition, lb2 accepted %d adverts, lb3 got %d", after2.AdvertsReceived-before2.AdvertsReceived, n)

	// lb2 no longer counts lb1 as a peer: lb1's adverts are unknown_peer
	// drops, and lb2 takes over after its master-down interval. lb1 does
	// not hear lb2 (it sends to lb3 only) and stays master too.
	t0 := time.Now()
	reloadPeers(t, lb2, a3.String())
	for !lb2.HasVIP() {
		if time.Since(t0) > 3*time.Second {
			t.Fatal("lb2 did not take the VIP after lb1 was removed from its peers")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("lb2 held the VIP %v after the SIGHUP", time.Since(t0).Round(time.Millisecond))
	last2 := instanceOf(t, lb2)
	if last2.State != "MASTER" || last2.Transitions != before2.Transitions+1 || last2.Drops[string(vrrp.DropUnknownPeer)] == 0 {
		t.Fatalf("lb2: %s, %d transitions (was %d), unknown_peer drops %v", last2.State, last2.Transitions, before2.Transitions, last2.Drops)
	}
	if last1 := instanceOf(t, lb1); last1.State != "MASTER" || last1.Transitions != before1.Transitions || !lb1.HasVIP() {
		t.Fatalf("lb1: %s, %d transitions (was %d), VIP held %v", last1.State, last1.Transitions, before1.Transitions, lb1.HasVIP())
	}
	eventuallyE2E(t, "lb3 gets lb2's adverts", 2*time.Second, func() bool { n, _ := tap.from(a2); return n > 0 })
}

func eventuallyE2E(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}
