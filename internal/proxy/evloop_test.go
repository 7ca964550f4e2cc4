package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestBackendClosesWhileClientLags: the backend sends a lot and closes at
// once while the client has not read yet. The backend's socket then reports
// a hang-up while data for the client still waits in the balancer; that
// must neither reset the client nor wake the loop over and over.
func TestBackendClosesWhileClientLags(t *testing.T) {
	for _, splice := range []bool{false, true} {
		t.Run("splice="+strconv.FormatBool(splice), func(t *testing.T) {
			payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Write(payload)
				c.Close()
			}()
			front := freeAddr(t)
			b := start(t, balancerConfig(t, "listen: ["+front+"]\nsplice: "+strconv.FormatBool(splice)+"\n"+backendList(l.Addr().String())))
			c, err := net.Dial("tcp", front)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.(*net.TCPConn).CloseWrite() // the backend then ends with both sides closed
			before := batches(b)
			time.Sleep(300 * time.Millisecond) // the backend is done; the client lags
			if woke := batches(b) - before; woke > 200 {
				t.Fatalf("the event loops woke %d times in 300ms while waiting for the client", woke)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("client got %d of %d bytes, err %v", len(got), len(payload), err)
			}
		})
	}
}

// batches counts the epoll batches the balancer's loops handled so far.
func batches(b *Balancer) uint64 {
	var n uint64
	for _, lp := range b.evloops {
		done := make(chan uint64)
		lp.post(func() { done <- lp.batch })
		n += <-done
	}
	return n
}

// TestConnectTimeoutTriesAnother: a backend that drops SYNs (its accept
// queue is full) costs connect_timeout, then the next backend serves.
func TestConnectTimeoutTriesAnother(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil { // room for one waiting connection
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	full := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*unix.SockaddrInet4).Port))
	filler, err := net.DialTimeout("tcp", full, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	s2 := newServer(t, "s2", false)
	front := freeAddr(t)
	b := start(t, balancerConfig(t, "listen: ["+front+"]\nconnect_timeout: 200ms\n"+backendList(full, s2.addr())))
	startAt := time.Now()
	name, c := greet(t, front) // round robin tries the full one first
	took := time.Since(startAt)
	if c != nil {
		c.Close()
	}
	if name != "s2" || took < 150*time.Millisecond {
		t.Fatalf("reached %q after %v, want s2 after the 200ms connect timeout", name, took)
	}
	st := b.Status()
	if st.Backends[0].ConnectErrors != 1 || st.Backends[0].ConnectTimeouts != 1 || st.Backends[0].Active != 0 {
		t.Fatalf("status of the full backend %+v: want one connect error, a timeout", st.Backends[0])
	}
	// The most at once: one session, counted on the balancer and on the
	// backend that served it.
	if st.MaxActive != 1 || st.Backends[1].MaxActive != 1 {
		t.Fatalf("max sessions: balancer %d, s2 %d; want 1 and 1", st.MaxActive, st.Backends[1].MaxActive)
	}
}

// TestManyStreamsByteForByte runs connections in parallel with random
// payload sizes, write chunks, pauses and slow readers (so that writes back
// up both ways), through both copy modes, and checks every echo byte for
// byte and that nothing stays open.
func TestManyStreamsByteForByte(t *testing.T) {
	for _, splice := range []bool{false, true} {
		t.Run("splice="+strconv.FormatBool(splice), func(t *testing.T) {
			s := newServer(t, "s", false)
			front := freeAddr(t)
			b := start(t, balancerConfig(t, "listen: ["+front+"]\nsplice: "+strconv.FormatBool(splice)+"\n"+backendList(s.addr())))
			rng := rand.New(rand.NewPCG(1, uint64(len(front))))
			type plan struct {
				size, chunk      int
				pause, readDelay time.Duration
			}
			plans := make([]plan, 40)
			for i := range plans {
				plans[i] = plan{size: rng.IntN(3 << 19), chunk: 1 + rng.IntN(200<<10),
					pause: time.Duration(rng.IntN(3)) * time.Millisecond, readDelay: time.Duration(rng.IntN(4)) * 50 * time.Millisecond}
				if i%8 == 0 { // more than the kernel's socket buffers hold
					plans[i].size, plans[i].pause, plans[i].readDelay = 12<<20, 0, 300*time.Millisecond
				}
			}
			var wg sync.WaitGroup
			for i, p := range plans {
				wg.Go(func() {
					payload := make([]byte, p.size)
					for j := range payload {
						payload[j] = byte(i + j*7)
					}
					d := net.Dialer{Timeout: 2 * time.Second}
					if i%2 == 1 { // a small receive window: the balancer's writes back up
						d.Control = func(_, _ string, rc syscall.RawConn) error {
							return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<10) })
						}
					}
					c, err := d.Dial("tcp", front)
					if err != nil {
						t.Error(err)
						return
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(20 * time.Second))
					go func() {
						for off := 0; off < len(payload); off += p.chunk {
							if _, err := c.Write(payload[off:min(off+p.chunk, len(payload))]); err != nil {
								return
							}
							time.Sleep(p.pause)
						}
						c.(*net.TCPConn).CloseWrite()
					}()
					time.Sleep(p.readDelay)
					got, err := io.ReadAll(c)
					if want := append([]byte("s\n"), payload...); err != nil || !bytes.Equal(got, want) {
						t.Errorf("stream %d (%d bytes in chunks of %d): got %d bytes back, err %v", i, p.size, p.chunk, len(got), err)
					}
				})
			}
			wg.Wait()
			deadline := time.Now().Add(2 * time.Second)
			for b.Status().Active != 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if st := b.Status(); st.Active != 0 || st.Accepted != uint64(len(plans)) {
				t.Fatalf("after the streams: %+v", st)
			}
		})
	}
}

// TestSessionsSpreadOverLoops: a burst of long-lived connections ends up
// spread over the event loops: each has its own listener of the address's
// SO_REUSEPORT group, and the kernel picks one by a hash of the addresses.
func TestSessionsSpreadOverLoops(t *testing.T) {
	s := newServer(t, "s", false)
	front := freeAddr(t)
	b := start(t, balancerConfig(t, "listen: ["+front+"]\n"+backendList(s.addr())))
	if len(b.evloops) < 2 {
		t.Skipf("%d event loop: nothing to spread", len(b.evloops))
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 40 { // all at once: the loops get them in bursts
		c, err := net.DialTimeout("tcp", front, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		greetOn(t, c)
	}
	var per []int
	for _, lp := range b.evloops {
		n := make(chan int)
		lp.post(func() {
			mine := 0
			for _, c := range lp.conns {
				if c.b == b {
					mine++
				}
			}
			n <- mine
		})
		per = append(per, <-n)
	}
	sum := 0
	for _, n := range per {
		sum += n
	}
	// A hash, not a count: each loop gets at least a third of an even
	// share (for two loops, 6 of 40: a binomial tail of about 1e-6).
	if slices.Min(per) < 40/len(per)/3 || sum != 40 {
		t.Fatalf("sessions per loop %v for 40 connections", per)
	}
	t.Logf("sessions per loop %v", per)
}

// TestAddressHeldByAnotherGroupIsInUse: the balancer's listeners join an
// SO_REUSEPORT group, but an address another process's group holds (as
// HAProxy binds by default) is still refused as in use, not shared.
func TestAddressHeldByAnotherGroupIsInUse(t *testing.T) {
	addr := freeAddr(t)
	other, err := listen(addr, true)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, err = listenGroup(addr, 2)
	if err == nil || !strings.Contains(err.Error(), "listen "+addr+": address already in use") {
		t.Fatalf("listening where a SO_REUSEPORT group is: %v", err)
	}
}

// greetOn reads the backend's greeting on an open connection.
func greetOn(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "s\n" {
		t.Fatalf("greeting %q: %v", buf, err)
	}
}

// TestIPv6AndDualStack: an IPv6 frontend and backend, and a dual-stack
// frontend taking an IPv4 client; the backend's PROXY header names each
// client as it connected (IPv4-mapped addresses unmapped).
func TestIPv6AndDualStack(t *testing.T) {
	s := newServerOn(t, "[::1]:0", "s", true)
	port := func() string {
		l, err := net.Listen("tcp", "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		defer l.Close()
		return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	}
	v6, dual := "[::1]:"+port(), ":"+port()
	start(t, balancerConfig(t, "listen: [\""+v6+"\", \""+dual+"\"]\nproxy_protocol: v2\n"+backendList(s.addr())))
	for _, tc := range []struct{ dial, wantDst string }{
		{v6, v6},
		{"127.0.0.1" + dual, "127.0.0.1" + dual},
	} {
		name, c := greet(t, tc.dial)
		if name != "s" {
			t.Fatalf("through %s: greeting %q", tc.dial, name)
		}
		want := c.LocalAddr().String() + " " + tc.wantDst
		c.Close()
		s.mu.Lock()
		got := s.hdrs[len(s.hdrs)-1]
		s.mu.Unlock()
		if got != want {
			t.Fatalf("through %s the backend saw %q, want %q", tc.dial, got, want)
		}
	}
}

// TestAcceptedSocketsHaveNoDelay: the event loops do not set TCP_NODELAY
// per connection; accepted sockets inherit it from the listener.
func TestAcceptedSocketsHaveNoDelay(t *testing.T) {
	l, err := listen(freeAddr(t), false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lfd, err := listenerFD(l)
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if fd, _, err = sysAccept(lfd); err != unix.EAGAIN || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer unix.Close(fd)
	if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
		t.Fatalf("TCP_NODELAY on an accepted socket: %d %v", v, err)
	}
}

// TestPostIsNeverLost: work posted to a loop from other goroutines always
// runs, however the posts interleave with the loop draining its inbox. (The
// loop once cleared its "woken" flag before reading the eventfd: a post
// between the two was taken with that read's batch but left the flag set,
// so the next post wrote no wake-up and sat in the inbox for ever.)
func TestPostIsNeverLost(t *testing.T) {
	lp, err := newEvloop(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	const posters, each = 4, 50000
	var ran atomic.Int64
	var wg sync.WaitGroup
	for range posters {
		wg.Go(func() {
			for range each {
				lp.post(func() { ran.Add(1) })
			}
		})
	}
	wg.Wait()
	for deadline := time.Now().Add(5 * time.Second); ran.Load() < posters*each; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			got := ran.Load()
			one := [8]byte{1}
			sysWrite(lp.wakefd, one[:]) // so that stop returns
			lp.stop()
			t.Fatalf("%d of %d posted functions ran in 5s (%d after a forced wake-up): a wake-up was lost", got, posters*each, ran.Load())
		}
	}
	lp.stop()
}

// TestBalancersShareLoops: balancers made with the same loops share them.
// One balancer shut down, with its sessions cut, leaves the other's sessions
// alone; the loops run until their owner closes them, after the last
// balancer, and then end.
func TestBalancersShareLoops(t *testing.T) {
	s := newServer(t, "s", false)
	loops, err := NewLoops(testLoopCount, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(loops.Close) // a second Close does nothing
	fa, fb := freeAddr(t), freeAddr(t)
	var bs []*Balancer
	for _, front := range []string{fa, fb} {
		b, err := New(balancerConfig(t, "listen: ["+front+"]\n"+backendList(s.addr())), loops, testLog())
		if err != nil {
			t.Fatal(err)
		}
		b.Start()
		t.Cleanup(func() { b.Shutdown(context.Background()) }) // a second Shutdown does nothing
		bs = append(bs, b)
	}
	a, b := bs[0], bs[1]
	if !slices.Equal(a.evloops, b.evloops) || len(a.evloops) != loops.Len() {
		t.Fatalf("loops: %d and %d, shared %v; want %d shared", len(a.evloops), len(b.evloops), slices.Equal(a.evloops, b.evloops), loops.Len())
	}
	nameA, ca := greet(t, fa)
	nameB, cb := greet(t, fb)
	if nameA != "s" || nameB != "s" {
		t.Fatalf("greetings %q %q", nameA, nameB)
	}
	defer ca.Close()
	defer cb.Close()

	cut, cancel := context.WithCancel(context.Background())
	cancel()
	a.Shutdown(cut) // cuts a's session at once
	ca.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := ca.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a's session after a's shutdown: read %d, %v; want it closed", n, err)
	}
	cb.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(cb, "still here\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(cb).ReadString('\n'); err != nil || line != "still here\n" {
		t.Fatalf("b's session after a's shutdown: %q %v", line, err)
	}

	b.Shutdown(cut)
	for i, lp := range loops.loops {
		select {
		case <-lp.done:
			t.Fatalf("loop %d ended with the balancers: its owner did not close it", i)
		default:
		}
	}
	loops.Close()
	for i, lp := range loops.loops {
		select {
		case <-lp.done:
		default:
			t.Fatalf("loop %d still runs after Close", i)
		}
	}
}
