package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
	"go.uber.org/goleak"
)

// fleetConfig parses a config of the given balancers, each a YAML body that
// starts with its name line, through the real config code.
func fleetConfig(t *testing.T, balancers ...string) *config.Config {
	t.Helper()
	var y strings.Builder
	y.WriteString("balancers:\n")
	for _, body := range balancers {
		y.WriteString("  - " + strings.TrimPrefix(indent(body, "    "), "    "))
	}
	c, err := config.Parse([]byte(y.String()))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, y.String())
	}
	return c
}

// balancerBody is a balancer's YAML body: its name, one listener, backends.
func balancerBody(name, listen string, backends ...string) string {
	return "name: " + name + "\nlisten: [" + listen + "]\n" + backendList(backends...)
}

// runFleet creates a fleet of cfg over store and runs it; the returned
// stop (also run at cleanup) ends Run and waits for it.
func runFleet(t *testing.T, cfg *config.Config, store *health.Store) (*Fleet, func()) {
	t.Helper()
	f, err := NewFleet(cfg, store, 2, testLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("fleet run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return f, stop
}

// noLeaks checks, after every other cleanup of the test, that no goroutine
// is left. Register it first.
func noLeaks(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// eventually polls cond until it holds or 3 seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 3s: %s", what)
		}
	}
}

func backendUp(f *Fleet, balancer, addr string) (up, found bool) {
	for _, b := range f.Balancers() {
		if b.Name() != balancer {
			continue
		}
		for _, be := range b.Status().Backends {
			if be.Address == addr {
				return be.Up, true
			}
		}
	}
	return false, false
}

func balancerState(s *health.Store, name string) (health.State, bool) {
	return s.Get(health.BalancerKey(name))
}

// TestFleetHealthFromStore: a backend the store says is down leaves
// rotation and comes back when it is up or its key is gone; the balancer's
// key goes down with its last backend and up with the first back.
func TestFleetHealthFromStore(t *testing.T) {
	noLeaks(t)
	s1, s2 := newServer(t, "s1", false), newServer(t, "s2", false)
	front := freeAddr(t)
	store := health.New()
	f, stop := runFleet(t, fleetConfig(t, balancerBody("a", front, s1.addr(), s2.addr())), store)
	eventually(t, "balancer a published up", func() bool { st, ok := balancerState(store, "a"); return ok && st.Up })
	k1 := health.BackendKey("a", netip.MustParseAddrPort(s1.addr()))
	k2 := health.BackendKey("a", netip.MustParseAddrPort(s2.addr()))

	store.Set(k1, health.State{Up: false, Reason: "refused"})
	eventually(t, "s1 down", func() bool { up, _ := backendUp(f, "a", s1.addr()); return !up })
	if got := count(t, front, 6); got["s2"] != 6 {
		t.Fatalf("with s1 down: %v", got)
	}
	if st, _ := balancerState(store, "a"); !st.Up {
		t.Fatalf("balancer a %+v with s2 up", st)
	}

	store.Set(k2, health.State{Up: false})
	eventually(t, "balancer a down", func() bool { st, _ := balancerState(store, "a"); return !st.Up })
	if st, _ := balancerState(store, "a"); st.Reason != noBackendReason {
		t.Fatalf("balancer a down with reason %q", st.Reason)
	}
	if name, _ := greet(t, front); name != "" {
		t.Fatalf("reached %q with every backend down", name)
	}

	store.Set(k1, health.State{Up: true})
	eventually(t, "balancer a up again", func() bool { st, _ := balancerState(store, "a"); return st.Up })
	if got := count(t, front, 4); got["s1"] != 4 {
		t.Fatalf("with s1 back and s2 down: %v", got)
	}
	// A check removed holds nothing down.
	store.Delete(k2)
	eventually(t, "s2 up once its key is gone", func() bool { up, _ := backendUp(f, "a", s2.addr()); return up })
	if got := count(t, front, 4); got["s1"] != 2 || got["s2"] != 2 {
		t.Fatalf("with both up: %v", got)
	}
	// Keys of balancers the fleet does not run are not its business.
	store.Set(health.BackendKey("other", netip.MustParseAddrPort(s1.addr())), health.State{Up: false})
	stop()
	if _, ok := balancerState(store, "a"); ok {
		t.Fatal("balancer a's key outlived the fleet")
	}
}

// TestFleetPlanFailureChangesNothing: a reload that changes a balancer,
// adds one and adds another on an address in use fails naming that
// balancer and address, and leaves everything as it was: no listener of
// the plan stays open.
func TestFleetPlanFailureChangesNothing(t *testing.T) {
	noLeaks(t)
	s1, s2 := newServer(t, "s1", false), newServer(t, "s2", false)
	fa, extra, fb := freeAddr(t), freeAddr(t), freeAddr(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	store := health.New()
	f, _ := runFleet(t, fleetConfig(t, balancerBody("a", fa, s1.addr())), store)

	_, err = f.Plan(fleetConfig(t,
		balancerBody("a", fa+", "+extra, s2.addr()),
		balancerBody("b", fb, s2.addr()),
		balancerBody("c", taken.Addr().String(), s2.addr())))
	if want := "balancer c: listen " + taken.Addr().String() + ": address already in use"; err == nil || err.Error() != want {
		t.Fatalf("plan: %v, want %q", err, want)
	}
	if bs := f.Balancers(); len(bs) != 1 || bs[0].Name() != "a" {
		t.Fatalf("balancers after a failed plan: %d", len(bs))
	}
	if got := count(t, fa, 2); got["s1"] != 2 {
		t.Fatalf("a after the failed plan: %v", got)
	}
	for _, addr := range []string{extra, fb} { // closed again: free to take
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s still held after the failed plan: %v", addr, err)
		}
		l.Close()
	}
	if _, ok := balancerState(store, "b"); ok {
		t.Fatal("a balancer of the failed plan was published")
	}

	// The same reload without c applies.
	ch, err := f.Plan(fleetConfig(t, balancerBody("a", fa+", "+extra, s2.addr()), balancerBody("b", fb, s2.addr())))
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	for _, addr := range []string{fa, extra, fb} {
		if got := count(t, addr, 2); got["s2"] != 2 {
			t.Fatalf("through %s after the reload: %v", addr, got)
		}
	}
	if st, ok := balancerState(store, "b"); !ok || !st.Up {
		t.Fatalf("balancer b after the reload: %+v %v", st, ok)
	}
}

// TestFleetReloadAddsBackendAlreadyDown: a backend, or a balancer, that a
// reload adds comes in as the store already says: down, out of rotation
// from the first connection.
func TestFleetReloadAddsBackendAlreadyDown(t *testing.T) {
	noLeaks(t)
	s1, s2 := newServer(t, "s1", false), newServer(t, "s2", false)
	fa, fb := freeAddr(t), freeAddr(t)
	store := health.New()
	f, _ := runFleet(t, fleetConfig(t, balancerBody("a", fa, s1.addr())), store)
	store.Set(health.BackendKey("a", netip.MustParseAddrPort(s2.addr())), health.State{Up: false, Reason: "refused"})
	store.Set(health.BackendKey("b", netip.MustParseAddrPort(s2.addr())), health.State{Up: false, Reason: "refused"})

	ch, err := f.Plan(fleetConfig(t, balancerBody("a", fa, s1.addr(), s2.addr()), balancerBody("b", fb, s2.addr())))
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	// No waiting: Commit read the store.
	if up, found := backendUp(f, "a", s2.addr()); !found || up {
		t.Fatalf("a's new backend s2: up %v (found %v), want down", up, found)
	}
	if up, found := backendUp(f, "b", s2.addr()); !found || up {
		t.Fatalf("b's backend s2: up %v (found %v), want down", up, found)
	}
	if st, ok := balancerState(store, "b"); !ok || st.Up {
		t.Fatalf("balancer b with its only backend down: %+v %v", st, ok)
	}
	if got := count(t, fa, 4); got["s1"] != 4 {
		t.Fatalf("through a: %v, want s1 only", got)
	}
	if name, _ := greet(t, fb); name != "" {
		t.Fatalf("b served %q with its backend down", name)
	}
}

// TestFleetReloadRemovesAndDrains: a balancer a reload removes stops
// accepting at once, its established sessions go on until its drain
// timeout, its key is gone, and Run waits for its drain before it returns.
func TestFleetReloadRemovesAndDrains(t *testing.T) {
	noLeaks(t)
	s := newServer(t, "s", false)
	fa, fb := freeAddr(t), freeAddr(t)
	store := health.New()
	f, stop := runFleet(t, fleetConfig(t, balancerBody("a", fa, s.addr()),
		balancerBody("b", fb, s.addr())+"drain_timeout: 30s\n"), store)
	name, kept := greet(t, fb)
	if name != "s" {
		t.Fatalf("through b: %q", name)
	}
	defer kept.Close()

	ch, err := f.Plan(fleetConfig(t, balancerBody("a", fa, s.addr())))
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
	if bs := f.Balancers(); len(bs) != 1 || bs[0].Name() != "a" {
		t.Fatalf("%d balancers after removing b", len(bs))
	}
	if _, ok := balancerState(store, "b"); ok {
		t.Fatal("b's key outlived b")
	}
	eventually(t, "b's listener closed", func() bool {
		c, err := net.DialTimeout("tcp", fb, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	kept.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(kept, "still here\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(kept)
	if line, err := r.ReadString('\n'); err != nil || line != "still here\n" {
		t.Fatalf("b's session while b drains: %q %v", line, err)
	}

	// Run waits for b's drain: the client ending its session ends it.
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Run returned while a removed balancer still drained")
	case <-time.After(200 * time.Millisecond):
	}
	kept.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadAll(r); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("end of b's session: %v", err)
	}
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return once the drained session ended")
	}
}

// TestNewFleetNamesAnAddressInUse: NewFleet fails as New does and leaves
// nothing open.
func TestNewFleetNamesAnAddressInUse(t *testing.T) {
	noLeaks(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	fa := freeAddr(t)
	_, err = NewFleet(fleetConfig(t, balancerBody("a", fa, "127.0.0.1:1"),
		balancerBody("b", taken.Addr().String(), "127.0.0.1:1")), health.New(), 2, testLog())
	if want := "balancer b: listen " + taken.Addr().String() + ": address already in use"; err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
	l, err := net.Listen("tcp", fa)
	if err != nil {
		t.Fatalf("a's address still held: %v", err)
	}
	l.Close()
	// And a fleet that never runs gives back its addresses on Close.
	f, err := NewFleet(fleetConfig(t, balancerBody("a", fa, "127.0.0.1:1")), health.New(), 2, testLog())
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if l, err = net.Listen("tcp", fa); err != nil {
		t.Fatalf("a's address held after Close: %v", err)
	}
	l.Close()
}
