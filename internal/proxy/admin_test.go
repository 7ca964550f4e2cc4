package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"
)

// echoes reports whether an established connection through the balancer
// still carries data both ways.
func echoes(t *testing.T, c interface {
	Write([]byte) (int, error)
	Read([]byte) (int, error)
	SetReadDeadline(time.Time) error
}) bool {
	t.Helper()
	fmt.Fprintf(c, "still here\n")
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == "still here\n"
}

func TestAdminDrainKeepsEstablishedRefusesNew(t *testing.T) {
	s1, s2 := newServer(t, "s1", false), newServer(t, "s2", false)
	front := freeAddr(t)
	cfg := balancerConfig(t, "listen: ["+front+"]\n"+backendList(s1.addr(), s2.addr()))
	b := start(t, cfg)
	name, kept := greet(t, front)
	if name != "s1" {
		t.Fatalf("first connection went to %q, want s1", name)
	}
	defer kept.Close()
	a1 := netip.MustParseAddrPort(s1.addr())
	if err := b.SetAdmin(a1, AdminDrain); err != nil {
		t.Fatal(err)
	}
	if got := count(t, front, 6); got["s2"] != 6 {
		t.Fatalf("with s1 drained: %v", got)
	}
	if !echoes(t, kept) {
		t.Fatal("established connection to a drained backend was closed")
	}
	if st := b.Status().Backends[0]; st.Admin != AdminDrain || !st.Up || st.Active != 1 {
		t.Fatalf("status of the drained backend: %+v", st)
	}
	// A reload keeps the admin state of a backend that stays.
	ch, err := b.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	if got := count(t, front, 4); got["s2"] != 4 {
		t.Fatalf("drained s1 after a reload: %v", got)
	}
	if err := b.SetAdmin(a1, AdminReady); err != nil {
		t.Fatal(err)
	}
	if got := count(t, front, 6); got["s1"] != 3 || got["s2"] != 3 {
		t.Fatalf("after enable: %v", got)
	}
}

func TestAdminDisableClosesConnections(t *testing.T) {
	s1, s2 := newServer(t, "s1", false), newServer(t, "s2", false)
	front := freeAddr(t)
	b := start(t, balancerConfig(t, "listen: ["+front+"]\n"+backendList(s1.addr(), s2.addr())))
	_, c1 := greet(t, front) // s1
	defer c1.Close()
	_, c2 := greet(t, front) // s2
	defer c2.Close()
	if err := b.SetAdmin(netip.MustParseAddrPort(s1.addr()), AdminDisabled); err != nil {
		t.Fatal(err)
	}
	c1.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c1.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Fatalf("connection to a disabled backend stayed open: %v", err)
	}
	if !echoes(t, c2) {
		t.Fatal("connection to another backend was closed")
	}
	if got := count(t, front, 4); got["s2"] != 4 {
		t.Fatalf("with s1 disabled: %v", got)
	}
	if b.healthy() != 1 {
		t.Fatalf("healthy backends with one of two disabled: %d", b.healthy())
	}
}

func TestAdminUnknownBackend(t *testing.T) {
	s1 := newServer(t, "s1", false)
	front := freeAddr(t)
	b := start(t, balancerConfig(t, "listen: ["+front+"]\n"+backendList(s1.addr())))
	err := b.SetAdmin(netip.MustParseAddrPort("127.0.0.1:1"), AdminDrain)
	if !errors.Is(err, ErrUnknownBackend) {
		t.Fatalf("SetAdmin of an unknown address: %v", err)
	}
}
