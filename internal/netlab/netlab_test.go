package netlab

import (
	"context"
	"io"
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
	l, err := b.Listen("tcp", "10.97.1.2:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("hello from b"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	c, err := r.Dial(ctx, "tcp", "10.97.1.2:7000")
	cancel()
	if err != nil {
		t.Fatalf("dial b from the plugged host: %v", err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "hello from b" {
		t.Fatalf("read %q", got)
	}
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
