package garp_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/garp"
	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vishvananda/netlink"
)

// ProbeFirst returns at the first answer, where Probe waits out its
// window for every host that claims the address.
func TestProbeFirstReturnsAtTheFirstAnswer(t *testing.T) {
	a, b := twoHosts(t)
	var want net.HardwareAddr
	if err := b.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		want = ifi.HardwareAddr
		return err
	}); err != nil {
		t.Fatal(err)
	}
	const window = 20 * time.Second
	var res garp.ProbeResult
	t0 := time.Now()
	if err := a.Do(func() (err error) {
		res, err = garp.ProbeFirst(context.Background(), "eth0", netip.MustParseAddr("10.77.0.2"), window)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	if len(res.MACs) != 1 || res.MACs[0].String() != want.String() {
		t.Fatalf("answers %v, want b's %v", res.MACs, want)
	}
	if took >= window/2 {
		t.Fatalf("ProbeFirst took %v of its %v window: it waited it out", took, window)
	}
	t.Logf("answered after %v", took)
}

// A probe whose first request finds nobody sends it again: an address
// that appears a moment later is answered within the window.
func TestProbeSendsItsRequestAgain(t *testing.T) {
	a, b := twoHosts(t)
	late := netip.MustParsePrefix("10.77.0.3/24")
	// The address appears on b after the first request went unanswered;
	// the test waits for this before the lab is closed.
	added := make(chan error, 1)
	go func() {
		time.Sleep(1500 * time.Millisecond)
		h, err := b.Netlink()
		if err != nil {
			added <- err
			return
		}
		defer h.Close()
		lk, err := h.LinkByName("eth0")
		if err != nil {
			added <- err
			return
		}
		added <- h.AddrAdd(lk, &netlink.Addr{IPNet: &net.IPNet{IP: late.Addr().AsSlice(), Mask: net.CIDRMask(24, 32)}})
	}()
	const window = 20 * time.Second
	var res garp.ProbeResult
	t0 := time.Now()
	if err := a.Do(func() (err error) {
		res, err = garp.ProbeFirst(context.Background(), "eth0", late.Addr(), window)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := <-added; err != nil {
		t.Fatalf("adding %s on b: %v", late, err)
	}
	if took := time.Since(t0); len(res.MACs) != 1 || took >= window/2 {
		t.Fatalf("answers %v after %v: the request was not sent again once the address appeared", res.MACs, took)
	}
}

// twoHosts is a lab of two hosts on one switch, 10.77.0.1 and .2.
func twoHosts(t *testing.T) (a, b *netlab.Host) {
	t.Helper()
	if !netlab.Root() {
		t.Skip("needs root to create network namespaces")
	}
	lab, err := netlab.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	if a, err = lab.AddHost("a", netip.MustParsePrefix("10.77.0.1/24")); err != nil {
		t.Fatal(err)
	}
	b, err = lab.AddHost("b", netip.MustParsePrefix("10.77.0.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}
