package redirect

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"

	"github.com/vigil-lb/vigil/internal/clock"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/netlab"
)

// A node holds the VIPs, "the API server" on :6443 of every address and
// "the balancer" on VIP:9445. Clients of VIP:6443, on the switch and on
// the node itself, reach the balancer while it is up and the API server
// while it is down; after Run the table is gone.
func TestLabRedirect(t *testing.T) {
	if !netlab.Root() {
		t.Skip("needs root to create network namespaces and nftables tables (run as root)")
	}
	lab, err := netlab.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.Close() })
	vip4, vip6 := netip.MustParseAddr("10.77.0.10"), netip.MustParseAddr("fd00:77::10")
	node, err := lab.AddHost("node", netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("fd00:77::1/64"),
		netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128))
	if err != nil {
		t.Fatal(err)
	}
	client, err := lab.AddHost("client", netip.MustParsePrefix("10.77.0.2/24"), netip.MustParsePrefix("fd00:77::2/64"))
	if err != nil {
		t.Fatal(err)
	}
	serve := func(addr, answer string) {
		l, err := node.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		netlab.Serve(l, func(c net.Conn) { _, _ = io.WriteString(c, answer) })
	}
	serve(":6443", "api") // both families, every address, as kube-apiserver
	serve(netip.AddrPortFrom(vip4, 9445).String(), "lb")
	serve(netip.AddrPortFrom(vip6, 9445).String(), "lb")

	ns, err := netns.GetFromName(node.NSName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	store := health.New()
	rules := []Rule{{Balancer: "api", VIP: vip4, From: 6443, To: 9445}, {Balancer: "api", VIP: vip6, From: 6443, To: 9445}}
	r := newWith(rules, store, discard(), nil, newNFT(int(ns)), clock.Real{})
	stop := start(t, r)

	// waitInstalled waits for Status, which changes once the kernel has
	// taken the batch: a connection after it sees the new rules.
	waitInstalled := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			all := true
			for _, s := range r.Status() {
				all = all && s.Installed == want
			}
			if all {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("rules not installed=%v: %+v", want, r.Status())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	ask := func(from *netlab.Host, vip netip.Addr, want string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		addr := netip.AddrPortFrom(vip, 6443).String()
		c, err := from.Dial(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("%s: dial %s: %v", from.Name, addr, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil || string(b) != want {
			t.Fatalf("%s: %s answered %q (%v), want %q", from.Name, addr, b, err, want)
		}
	}
	askAll := func(want string) {
		t.Helper()
		for _, h := range []*netlab.Host{client, node} {
			for _, vip := range []netip.Addr{vip4, vip6} {
				ask(h, vip, want)
			}
		}
	}

	// Before the balancer's state is known the API server answers.
	waitInstalled(false)
	askAll("api")
	store.Set(health.BalancerKey("api"), health.State{Up: true})
	waitInstalled(true)
	askAll("lb")
	store.Set(health.BalancerKey("api"), health.State{Up: false, Reason: "no backend in rotation"})
	waitInstalled(false)
	askAll("api")
	store.Set(health.BalancerKey("api"), health.State{Up: true})
	waitInstalled(true)
	askAll("lb")

	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if tableIn(t, node) {
		t.Fatalf("table %s left after Run", Table)
	}
	askAll("api")
}

// A table a crashed vigil left, with a rule up, is gone once Run starts
// and before any balancer is known.
func TestLabRemovesStaleTable(t *testing.T) {
	if !netlab.Root() {
		t.Skip("needs root to create network namespaces and nftables tables (run as root)")
	}
	lab, err := netlab.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.Close() })
	node, err := lab.AddHost("node", netip.MustParsePrefix("10.77.0.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.GetFromName(node.NSName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	stale := Rule{Balancer: "api", VIP: netip.MustParseAddr("10.77.0.1"), From: 6443, To: 9445}
	if err := newNFT(int(ns)).Sync([]Rule{stale}); err != nil {
		t.Fatal(err)
	}
	if n := ruleCount(t, ns); n != 2 {
		t.Fatalf("%d stale rules installed, want 2 (prerouting and output)", n)
	}
	r := newWith([]Rule{stale}, health.New(), discard(), nil, newNFT(int(ns)), clock.Real{})
	stop := start(t, r)
	deadline := time.Now().Add(5 * time.Second)
	for ruleCount(t, ns) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stale rules stay")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if tableIn(t, node) {
		t.Fatalf("table %s left after Run", Table)
	}
}

func tableIn(t *testing.T, h *netlab.Host) bool {
	t.Helper()
	var found bool
	err := h.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tables, err := c.ListTables()
		for _, tb := range tables {
			found = found || tb.Name == Table
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// ruleCount counts the rules in vigil's table; 0 when there is no table.
func ruleCount(t *testing.T, ns netns.NsHandle) int {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ch := range chains {
		if ch.Table.Name != Table {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		n += len(rules)
	}
	return n
}
