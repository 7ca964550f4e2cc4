package l2slot_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/garp"
	"github.com/vigil-lb/vigil/internal/l2slot"
	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/vip"
	"github.com/vigil-lb/vigil/internal/vrrp"
)

// labNode is one namespace host running an instance of every slot, in
// process, on the real transport, netlink and GARP.
type labNode struct {
	host      *netlab.Host
	tr        *vrrp.Transport
	ann       *garp.Announcer
	shared    *vip.Shared
	sets      []*vip.Set
	instances map[string]*vrrp.Instance // by slot name
}

const labInterval = 100 * time.Millisecond

func startNode(t *testing.T, h *netlab.Host, p l2slot.Plan, anchors map[string]netip.Prefix) *labNode {
	t.Helper()
	n := &labNode{host: h, instances: map[string]*vrrp.Instance{}}
	log := slog.New(slog.DiscardHandler)
	exclude := map[netip.Addr]bool{}
	for _, a := range anchors {
		exclude[a.Addr()] = true
	}
	// Sockets and netlink handles keep the namespace they are opened in.
	err := h.Do(func() error {
		var err error
		if n.tr, err = vrrp.OpenTransport("eth0", false, exclude, log); err != nil {
			return err
		}
		n.ann = garp.NewAnnouncer("eth0")
		if err := n.ann.Open(true, false); err != nil {
			return err
		}
		if n.shared, err = vip.NewShared("eth0"); err != nil {
			return err
		}
		for _, s := range p.Slots {
			set, err := vip.New("eth0", []netip.Prefix{anchors[s.Name()]})
			if err != nil {
				return err
			}
			n.sets = append(n.sets, set)
			cfg := vrrp.Config{Name: "slot/" + s.Name(), Interface: "eth0", VRID: s.VRID, Version: 3,
				Priority: uint8(s.Priority(h.Name)), Interval: labInterval, Preempt: true,
				VIPs: []netip.Prefix{anchors[s.Name()]}, GARPCount: 2, GARPInterval: 200 * time.Millisecond}
			in := vrrp.NewInstance(cfg, n.tr, set, n.ann, log, vrrp.WithExtraAddresses(n.shared.Holder(s.Name())))
			if err := n.tr.Register(s.VRID, in); err != nil {
				return err
			}
			var extra []netip.Prefix
			for _, a := range s.Addrs {
				extra = append(extra, netip.PrefixFrom(a, 32))
			}
			if err := in.SetExtra(extra); err != nil {
				return err
			}
			n.instances[s.Name()] = in
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	return n
}

func (n *labNode) run(ctx context.Context, wg, serving *sync.WaitGroup) {
	serving.Go(n.tr.Serve)
	for _, in := range n.instances {
		wg.Go(func() { _ = in.Run(ctx) })
	}
}

func (n *labNode) close() {
	n.tr.Close()
	n.ann.Close()
	n.shared.Close()
	for _, s := range n.sets {
		s.Close()
	}
}

// probeAll asks from the client who answers ARP for every address, 32 at a
// time, each probe listening wait.
func probeAll(t *testing.T, client *netlab.Host, addrs []netip.Addr, wait time.Duration) map[netip.Addr][]string {
	t.Helper()
	var mu sync.Mutex
	out := map[netip.Addr][]string{}
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, a := range addrs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var res garp.ProbeResult
			err := client.Do(func() error {
				var err error
				res, err = garp.Probe(context.Background(), "eth0", a, wait)
				return err
			})
			if err != nil {
				t.Error(err)
				return
			}
			var macs []string
			for _, m := range res.MACs {
				macs = append(macs, m.String())
			}
			slices.Sort(macs)
			mu.Lock()
			out[a] = macs
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// Three nodes, six slots (one per pair), 300 addresses: each answered by
// exactly one MAC, its slot's first choice, 100 per node; a node cut off is
// replaced for each of its addresses by its slot's heir, half to each
// survivor, measured per address from the client.
func TestLabThreeNodes300Addresses(t *testing.T) {
	if !netlab.Root() {
		t.Skip("needs root to create network namespaces")
	}
	lab, err := netlab.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	client, err := lab.AddHost("client", netip.MustParsePrefix("10.78.0.100/16"))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"n1", "n2", "n3"}
	hosts := map[string]*netlab.Host{}
	mac := map[string]string{}
	for i, name := range names {
		h, err := lab.AddHost(name, netip.MustParsePrefix(fmt.Sprintf("10.78.0.%d/16", 11+i)))
		if err != nil {
			t.Fatal(err)
		}
		hosts[name], mac[h.MAC.String()] = h, name
	}
	var addrs []netip.Addr
	for i := range 300 {
		addrs = append(addrs, netip.AddrFrom4([4]byte{10, 78, byte(1 + i/250), byte(1 + i%250)}))
	}
	p, err := l2slot.New(l2slot.Input{Cluster: "lab", Pool: "lan", Nodes: names, Addrs: addrs})
	if err != nil {
		t.Fatal(err)
	}
	// Each slot advertises one address of its own, which no Service uses.
	anchors := map[string]netip.Prefix{}
	for i, s := range p.Slots {
		anchors[s.Name()] = netip.MustParsePrefix(fmt.Sprintf("10.78.3.%d/32", 1+i))
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var nodes []*labNode
	for _, name := range names {
		nodes = append(nodes, startNode(t, hosts[name], p, anchors))
	}
	var serving sync.WaitGroup
	start := time.Now()
	for _, n := range nodes {
		n.run(ctx, &wg, &serving)
	}
	t.Cleanup(func() {
		// Instances first (they step down and release their addresses),
		// then the sockets, which ends the transports' Serve.
		cancel()
		wg.Wait()
		for _, n := range nodes {
			n.close()
		}
		serving.Wait()
	})

	owner := func(want map[netip.Addr]string, got map[netip.Addr][]string) (bad []string) {
		for _, a := range addrs {
			macs := got[a]
			if len(macs) != 1 || mac[macs[0]] != want[a] {
				var who []string
				for _, m := range macs {
					who = append(who, mac[m])
				}
				bad = append(bad, fmt.Sprintf("%s: %v, want %s", a, who, want[a]))
			}
		}
		return bad
	}
	want := map[netip.Addr]string{}
	for _, a := range addrs {
		want[a], _ = p.Owner(a)
	}
	// The first-choice node of each slot wins after the master-down
	// interval and preemption.
	var bad []string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if bad = owner(want, probeAll(t, client, addrs, 30*time.Millisecond)); len(bad) == 0 {
			break
		}
	}
	if len(bad) > 0 {
		t.Fatalf("after start, %d addresses not answered by exactly their slot's node, e.g. %v", len(bad), bad[:min(5, len(bad))])
	}
	per := map[string]int{}
	for _, a := range addrs {
		per[want[a]]++
	}
	t.Logf("300 addresses answered, each by one MAC, %v after start; per node %v", time.Since(start).Round(10*time.Millisecond), per)
	for _, c := range per {
		if c < 100 || c > 100 {
			t.Fatalf("per node %v, want 100 each", per)
		}
	}

	// n2 loses its cable, as a crash would look from the segment: each of
	// its slots' heirs takes over that slot's addresses.
	heirOf := map[netip.Addr]string{}
	var deadAddrs []netip.Addr
	for _, s := range p.Slots {
		if s.Node == "n2" {
			for _, a := range s.Addrs {
				heirOf[a] = s.Heir
				deadAddrs = append(deadAddrs, a)
			}
		}
	}
	// The client talks to ten of n2's addresses first, so its neighbour
	// table holds n2's MAC for them: only the takeover's GARP corrects it.
	learnt := deadAddrs[:10]
	for _, a := range learnt {
		err := client.Do(func() error {
			c, err := net.Dial("udp4", netip.AddrPortFrom(a, 9).String())
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("x"))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	neighbour := func(a netip.Addr) string {
		m, _ := client.Neighbor(a)
		return mac[m.String()]
	}
	for _, a := range learnt {
		for end := time.Now().Add(2 * time.Second); neighbour(a) != "n2" && time.Now().Before(end); {
			time.Sleep(5 * time.Millisecond)
		}
		if got := neighbour(a); got != "n2" {
			t.Fatalf("client's neighbour entry for %s: %q, want n2", a, got)
		}
	}
	cut := time.Now()
	if err := hosts["n2"].SetCable(false); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		times []time.Duration
		pw    sync.WaitGroup
	)
	for _, a := range deadAddrs {
		pw.Go(func() {
			for time.Since(cut) < 5*time.Second {
				var res garp.ProbeResult
				_ = client.Do(func() error {
					var err error
					res, err = garp.Probe(context.Background(), "eth0", a, 10*time.Millisecond)
					return err
				})
				if len(res.MACs) == 1 && mac[res.MACs[0].String()] == heirOf[a] {
					mu.Lock()
					times = append(times, time.Since(cut))
					mu.Unlock()
					return
				}
			}
		})
	}
	pw.Wait()
	if len(times) != len(deadAddrs) {
		t.Fatalf("%d of %d addresses of n2 answered by their slot's heir within 5s", len(times), len(deadAddrs))
	}
	slices.Sort(times)
	t.Logf("n2 cut off: its %d addresses answered by their heirs after %v (first), %v (median), %v (last); master-down interval %v",
		len(times), times[0].Round(time.Millisecond), times[len(times)/2].Round(time.Millisecond),
		times[len(times)-1].Round(time.Millisecond), 3*labInterval+labInterval*(256-170)/256)
	// The 5 s bound above is the outcome; how fast is a figure (the
	// benchmark's), not a test: a loaded machine takes longer.
	if last := times[len(times)-1]; last > time.Second {
		t.Logf("note: failover took %v for the last address on this machine, more than 1s", last)
	}
	for _, a := range deadAddrs {
		want[a] = heirOf[a]
	}
	got := probeAll(t, client, addrs, 30*time.Millisecond)
	if bad := owner(want, got); len(bad) > 0 {
		t.Fatalf("after failover, %d addresses not answered by exactly one right node, e.g. %v", len(bad), bad[:min(5, len(bad))])
	}
	// What the wire says each survivor answers for now: the balance holds
	// without the API.
	after := map[string]int{}
	for _, a := range addrs {
		after[mac[got[a][0]]]++
	}
	t.Logf("after n2's cut, addresses answered per surviving node: %v", after)
	if d := after["n1"] - after["n3"]; len(after) != 2 || d < -1 || d > 1 {
		t.Errorf("after n2's cut the survivors answer for %v, want 150 each (within one)", after)
	}
	for _, a := range learnt {
		if got := neighbour(a); got != heirOf[a] {
			t.Errorf("after failover the client's neighbour entry for %s names %q, want %s (GARP)", a, got, heirOf[a])
		}
	}
	for _, s := range p.Slots {
		if s.Node != "n2" {
			continue
		}
		st := nodes[slices.Index(names, s.Heir)].instances[s.Name()].Status()
		if st.State != vrrp.Master || st.ExtraHeld != len(s.Addrs) {
			t.Fatalf("%s's instance of slot %s: %v, %d extra held, want master with %d", s.Heir, s.Name(), st.State, st.ExtraHeld, len(s.Addrs))
		}
	}
}
