package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/vigil-lb/vigil/internal/config"
	"golang.org/x/sys/unix"
)

// listenGroup opens n listeners on addr in one SO_REUSEPORT group, one per
// event loop: the kernel spreads new connections over them by a hash of the
// addresses, so a connection wakes one loop, which serves it. (One listener
// watched by every loop woke them all — EPOLLEXCLUSIVE does not hold for
// epoll sets nested in Go's poller — and handing sessions between loops
// cost milliseconds on a busy machine.) A probe bound without SO_REUSEPORT
// comes first: an address any other socket holds, even another group's,
// is an error, as it would be without the group.
func listenGroup(addr string, n int) ([]*net.TCPListener, error) {
	probe, err := listen(addr, false)
	if err != nil {
		return nil, err
	}
	probe.Close()
	var ls []*net.TCPListener
	for range max(n, 1) {
		l, err := listen(addr, true)
		if err != nil {
			closeAll(ls)
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

func closeAll(ls []*net.TCPListener) {
	for _, l := range ls {
		l.Close()
	}
}

// listen opens a TCP listener with IP_FREEBIND, so a backup node can bind a
// VIP it does not hold yet and serve the instant it becomes master, and with
// TCP_NODELAY, which every accepted socket inherits (one call per listener
// instead of one per connection); with reusePort, in a SO_REUSEPORT group.
func listen(addr string, reusePort bool) (*net.TCPListener, error) {
	ap, err := config.ParseListen(addr)
	if err != nil {
		return nil, err
	}
	network := "tcp4"
	switch {
	case strings.HasPrefix(addr, ":"):
		network = "tcp" // every address, both families
	case ap.Addr().Is6():
		network = "tcp6"
	}
	lc := net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if network == "tcp4" {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
			}
			serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1))
			if reusePort {
				serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1))
			}
		})
		return errors.Join(err, serr)
	}}
	host := ap.Addr().String()
	if network == "tcp" {
		host = ""
	}
	l, err := lc.Listen(context.Background(), network, net.JoinHostPort(host, strconv.Itoa(int(ap.Port()))))
	if err != nil {
		var se *os.SyscallError
		if errors.As(err, &se) && errors.Is(se.Err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("listen %s: address already in use", addr)
		}
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return l.(*net.TCPListener), nil
}

// RaiseFileLimit lifts RLIMIT_NOFILE as far as the kernel allows (fs.nr_open
// when root), since every proxied connection costs two descriptors. Go already
// raises the soft limit to the hard one; this also lifts the hard one.
func RaiseFileLimit() (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit nofile: %w", err)
	}
	want := lim.Max
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && n > want {
			want = n
		}
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: want, Max: want}); err != nil {
		// Not root: the soft limit up to the hard one is still ours to take.
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: lim.Max, Max: lim.Max}); err != nil {
			return lim.Cur, fmt.Errorf("setrlimit nofile: %w", err)
		}
		return lim.Max, nil
	}
	return want, nil
}
