package netlab

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestLabConnectsHostsAndCleansUp(t *testing.T) {
	if !Root() {
		t.Skip("netlab needs root to create network namespaces")
	}
	lab, err := New()
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			lab.Close()
		}
	})
	a, err := lab.AddHost("a", netip.MustParsePrefix("10.99.0.1/24"), netip.MustParsePrefix("fd00:99::1/64"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.AddHost("b", netip.MustParsePrefix("10.99.0.2/24"), netip.MustParsePrefix("fd00:99::2/64"))
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"10.99.0.2:7000", "[fd00:99::2]:7000"} {
		l, err := b.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := l.Accept()
			if err == nil {
				c.Write([]byte("hello from b"))
				c.Close()
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := a.Dial(ctx, "tcp", addr)
		cancel()
		if err != nil {
			t.Fatalf("dial %s from a: %v", addr, err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		l.Close()
		if string(got) != "hello from b" {
			t.Fatalf("read %q", got)
		}
	}
	if mac, _ := a.Neighbor(netip.MustParseAddr("10.99.0.2")); mac.String() != b.MAC.String() {
		t.Fatalf("a's neighbour entry for b is %v, want %v", mac, b.MAC)
	}
	// A process started in a host lives in that namespace and dies with the lab.
	p, err := b.Start(exec.Command("sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{lab.swName, a.NSName, b.NSName}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if !p.Exited() {
		t.Fatal("process survived Close")
	}
	for _, n := range names {
		if _, err := os.Stat("/run/netns/" + n); !os.IsNotExist(err) {
			t.Fatalf("namespace %s still exists after Close", n)
		}
	}
}

// A host of one lab plugged into another lab's switch reaches that lab's
// hosts through its new interface; sysctls are the host's own.
func TestPlugJoinsTwoSwitches(t *testing.T) {
	if !Root() {
		t.Skip("netlab needs root to create network namespaces")
	}
	var labs []*Lab
	for range 2 {
		l, err := New()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		labs = append(labs, l)
	}
	r, err := labs[0].AddHost("r", netip.MustParsePrefix("10.97.0.254/24"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := labs[1].AddHost("b", netip.MustParsePrefix("10.97.1.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := labs[1].Plug(r, "eth1", netip.MustParsePrefix("10.97.1.254/24")); err != nil {
		t.Fatal(err)
	}
	sayHello(t, b, r, "10.97.1.2:7000")
	if err := r.Sysctl("net/ipv4/ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	var fwd []byte
	r.Do(func() (err error) { fwd, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward"); return })
	if string(fwd) != "1\n" {
		t.Fatalf("ip_forward in the host is %q", fwd)
	}
	host, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	t.Logf("ip_forward: host %q, outside %q", fwd, host)
}

func TestCableJoinsTwoHostsDirectly(t *testing.T) {
	if !Root() {
		t.Skip("netlab needs root to create network namespaces")
	}
	lab, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	a, err := lab.AddHost("a", netip.MustParsePrefix("10.96.0.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.AddHost("b", netip.MustParsePrefix("10.96.0.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Cable(a, "up0", []netip.Prefix{netip.MustParsePrefix("10.96.1.1/30")}, b, "down0", []netip.Prefix{netip.MustParsePrefix("10.96.1.2/30")}); err != nil {
		t.Fatal(err)
	}
	// 10.96.1.0/30 is only on the cable: the bytes cannot take the switch.
	sayHello(t, b, a, "10.96.1.2:7000")
	mac, err := a.Neighbor(netip.MustParseAddr("10.96.1.2"))
	if err != nil {
		t.Fatal(err)
	}
	var downMAC net.HardwareAddr
	b.Do(func() error {
		ifc, err := net.InterfaceByName("down0")
		if err == nil {
			downMAC = ifc.HardwareAddr
		}
		return err
	})
	if mac.String() != downMAC.String() || mac.String() == b.MAC.String() {
		t.Fatalf("a resolved 10.96.1.2 to %v; b's cable end is %v, its switch port %v", mac, downMAC, b.MAC)
	}
}

// sayHello has to listen on addr and from dial it, and checks what arrives.
func sayHello(t *testing.T, to, from *Host, addr string) {
	t.Helper()
	l, err := to.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("hello from " + to.Name))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	c, err := from.Dial(ctx, "tcp", addr)
	cancel()
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, from.Name, err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "hello from "+to.Name {
		t.Fatalf("read %q from %s", got, addr)
	}
}
