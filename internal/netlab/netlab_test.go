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
