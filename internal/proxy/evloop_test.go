package proxy

import (
	"bytes"
	"io"
	"net"
	"strconv"
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
	if st.Backends[0].ConnectErrors != 1 || st.Backends[0].Active != 0 {
		t.Fatalf("status of the full backend %+v", st.Backends[0])
	}
}
