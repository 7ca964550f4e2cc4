package vip

import (
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// An address made local by LocalRoutes is delivered to the host (the
// kernel's route for it is local) but no interface answers ARP for it:
// arping from a neighbour gets no reply, while the host's own address is
// still answered. Removing it ends both, and Close removes the arp table.
func TestLocalRoutesAcceptWithoutARP(t *testing.T) {
	if !netlab.Root() {
		t.Skip("needs root to create a network namespace")
	}
	if _, err := exec.LookPath("arping"); err != nil {
		t.Skip("arping is not installed (make deps installs it)")
	}
	lab, err := netlab.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	n, err := lab.AddHost("n", netip.MustParsePrefix("10.80.0.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	peer, err := lab.AddHost("peer", netip.MustParsePrefix("10.80.0.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	any4, any6 := netip.MustParsePrefix("10.99.0.1/32"), netip.MustParsePrefix("2001:db8::1/128")
	arping := func(target string) bool {
		t.Helper()
		var out strings.Builder
		cmd := exec.Command("arping", "-c", "2", "-w", "2", "-I", "eth0", target)
		cmd.Stdout, cmd.Stderr = &out, &out
		p, err := peer.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if exited, _ := p.Wait(10 * time.Second); !exited {
			t.Fatalf("arping %s did not finish", target)
		}
		return strings.Contains(out.String(), "bytes from")
	}
	local := func(a netip.Addr) bool {
		t.Helper()
		var typ int
		n.Do(func() error {
			rs, err := netlink.RouteGet(net.IP(a.AsSlice()))
			if err == nil && len(rs) > 0 {
				typ = rs[0].Type
			}
			return nil
		})
		return typ == unix.RTN_LOCAL
	}
	tables := func() []string {
		t.Helper()
		var names []string
		n.Do(func() error {
			c, err := nftables.New()
			if err != nil {
				t.Fatal(err)
			}
			ts, _ := c.ListTables()
			for _, x := range ts {
				names = append(names, x.Name)
			}
			return nil
		})
		return names
	}

	// The control: a bare local route is answered by ARP (arp_ignore=0), so
	// the silence below is the arp table's doing.
	var bare *LocalRoutes
	if err := n.Do(func() (err error) { bare, err = NewLocalRoutes(slog.Default()); return }); err != nil {
		t.Fatal(err)
	}
	n.Do(func() error { return bare.h.RouteReplace(bare.route(any4)) })
	answered := arping("10.99.0.1")
	n.Do(func() error { return bare.h.RouteDel(bare.route(any4)) })
	n.Do(bare.Close)
	if !answered {
		t.Fatal("a bare local route is not answered by ARP here: this test would prove nothing")
	}

	var l *LocalRoutes
	if err := n.Do(func() (err error) { l, err = NewLocalRoutes(slog.Default()); return }); err != nil {
		t.Fatal(err)
	}
	if err := n.Do(func() error { return l.Set([]netip.Prefix{any4, any6}) }); err != nil {
		t.Fatal(err)
	}
	if !local(any4.Addr()) || !local(any6.Addr()) {
		t.Fatal("the addresses are not local after Set")
	}
	if arping("10.99.0.1") {
		t.Error("an ARP request for the local-routed 10.99.0.1 was answered")
	}
	if !arping("10.80.0.1") {
		t.Error("the host's own address is no longer answered by ARP")
	}
	if err := n.Do(func() error { return l.Set([]netip.Prefix{any6}) }); err != nil {
		t.Fatal(err)
	}
	if local(any4.Addr()) || !local(any6.Addr()) {
		t.Fatal("after Set(any6): want only any6 local")
	}
	if got := tables(); len(got) != 0 {
		t.Errorf("tables %v after the last IPv4 address went, want none", got)
	}
	if err := n.Do(func() error { return l.Set([]netip.Prefix{any4}) }); err != nil {
		t.Fatal(err)
	}
	if err := n.Do(l.Close); err != nil {
		t.Fatal(err)
	}
	if local(any4.Addr()) || local(any6.Addr()) {
		t.Fatal("routes left after Close")
	}
	if got := tables(); len(got) != 0 {
		t.Errorf("tables %v after Close, want none", got)
	}
}
