package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-lb/vigil/internal/proxyproto"
	"golang.org/x/sys/unix"
)

// session is one client connection and, once connected, its backend.
type session struct {
	client  *net.TCPConn
	server  *net.TCPConn
	backend *Backend
	aborted atomic.Bool
}

// abort resets both sides, which ends both copy directions.
func (ss *session) abort() {
	if !ss.aborted.CompareAndSwap(false, true) {
		return
	}
	for _, c := range []*net.TCPConn{ss.client, ss.server} {
		if c != nil {
			c.SetLinger(0)
			c.Close()
		}
	}
}

func (b *Balancer) track(ss *session, on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if on {
		b.sessions[ss] = struct{}{}
	} else {
		delete(b.sessions, ss)
	}
}

// serve sets up one accepted connection: PROXY header, backend connect.
// The copying runs in two fresh goroutines and serve returns, so the deep
// stack the set-up grew is not kept for the life of the connection.
func (b *Balancer) serve(c *net.TCPConn, s *settings) {
	ss := &session{client: c}
	b.track(ss, true)
	be, ok := b.setup(ss, s)
	if !ok {
		b.finish(ss, be) // be is nil unless it was connected
		return
	}
	idleTimer := newIdleWatch(ss, s.cfg.IdleTimeout)
	var left atomic.Int32
	left.Store(2)
	done := func() {
		if left.Add(-1) == 0 {
			idleTimer.Stop()
			b.finish(ss, be)
		}
	}
	splice := s.cfg.Splice
	// A direction that ends while the other still runs passes the FIN on
	// with shutdown(2); the last one leaves it to the close that follows.
	last := func() bool { return left.Load() == 1 }
	go func() { b.half(ss, ss.server, ss.client, &be.bytesIn, splice, last); done() }()
	go func() { b.half(ss, ss.client, ss.server, &be.bytesOut, splice, last); done() }()
}

// finish releases a session's descriptors and counts.
func (b *Balancer) finish(ss *session, be *Backend) {
	ss.client.Close()
	if ss.server != nil {
		ss.server.Close()
	}
	if be != nil {
		be.active.Add(-1)
	}
	b.track(ss, false)
	b.active.Add(-1)
	b.serving.Done()
}

// setup reads the client's PROXY header if configured, connects a backend
// and sends it the PROXY header and any early client bytes.
func (b *Balancer) setup(ss *session, s *settings) (*Backend, bool) {
	c := ss.client
	src, dst := addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())
	var early []byte // client bytes read along with its PROXY header
	if s.cfg.AcceptProxy {
		c.SetReadDeadline(time.Now().Add(headerTimeout))
		h, rest, err := proxyproto.Read(c)
		if err != nil {
			b.badProxyHeader.Add(1)
			b.log.Debug("connection closed: bad PROXY header", "client", src.String(), "err", err)
			ss.abort()
			return nil, false
		}
		c.SetReadDeadline(time.Time{})
		if !h.Local {
			src, dst = h.Src, h.Dst
		}
		early = rest
	}
	be, server := b.connect(s, src)
	if be == nil {
		b.noBackend.Add(1)
		ss.abort()
		return nil, false
	}
	b.mu.Lock()
	ss.server, ss.backend = server, be
	aborted := ss.aborted.Load()
	b.mu.Unlock()
	if aborted { // shut down or backend failed while we connected
		server.SetLinger(0)
		return be, false
	}
	var head []byte
	switch s.cfg.ProxyProtocol {
	case "v1":
		head = proxyproto.AppendV1(nil, proxyproto.Header{Src: src, Dst: dst})
	case "v2":
		head = proxyproto.AppendV2(nil, proxyproto.Header{Src: src, Dst: dst})
	}
	if head = append(head, early...); len(head) > 0 {
		if _, err := server.Write(head); err != nil {
			ss.abort()
			return be, false
		}
		be.bytesIn.Add(uint64(len(early)))
	}
	return be, true
}

// connect dials backends until one answers, at most 1+retries of them.
func (b *Balancer) connect(s *settings, client netip.AddrPort) (*Backend, *net.TCPConn) {
	var tried []*Backend
	for range *s.cfg.Retries + 1 {
		be := b.pick(s, tried)
		if be == nil {
			break
		}
		d := net.Dialer{Timeout: s.cfg.ConnectTimeout, KeepAlive: -1} // idle_timeout finds dead peers
		// By address string: DialTCP with a zero local address binds to
		// port 0 first, an extra and costly port search per connection.
		c, err := d.DialContext(context.Background(), "tcp", be.addr)
		if err == nil {
			be.total.Add(1)
			return be, c.(*net.TCPConn)
		}
		be.active.Add(-1)
		be.connectErrors.Add(1)
		tried = append(tried, be)
		b.log.Debug("backend connect failed, trying another", "backend", be.Addr.String(), "client", client.String(), "err", err)
	}
	if len(tried) > 0 || b.healthy() == 0 {
		b.log.Debug("no backend for connection", "client", client.String(), "tried", len(tried))
	}
	return nil, nil
}

// bufSize is the size of the pooled copy buffers. A connection borrows one
// only while data is ready to move, so idle connections hold none.
const bufSize = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// half copies src to dst until EOF, then half-closes dst (a FIN is passed
// on as a FIN and the other direction goes on). Any error resets both sides.
func (b *Balancer) half(ss *session, dst, src *net.TCPConn, count *atomic.Uint64, splice bool, last func() bool) {
	var err error
	if splice {
		err = spliceHalf(dst, src, count)
	} else {
		err = copyHalf(dst, src, count)
	}
	if err == nil && !last() {
		err = dst.CloseWrite()
	}
	if err != nil {
		if !ss.aborted.Load() && !isClosed(err) {
			b.log.Debug("connection reset", "from", src.RemoteAddr().String(), "err", err)
		}
		ss.abort()
	}
}

// copyHalf copies through pooled buffers; nil at EOF. It reads through the
// raw descriptor so that a buffer is taken only for a read and given back
// before waiting: an idle connection holds none. (It cannot skip the read
// that says EAGAIN: Go clears a pending readiness edge before the first try.)
func copyHalf(dst, src *net.TCPConn, count *atomic.Uint64) error {
	rc, err := src.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var (
			bp   *[]byte
			n    int
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
			if bp == nil {
				bp = bufPool.Get().(*[]byte)
			}
			for {
				n, rerr = unix.Read(int(fd), *bp)
				if rerr != unix.EINTR {
					break
				}
			}
			if rerr == unix.EAGAIN {
				bufPool.Put(bp)
				bp = nil
				return false
			}
			return true
		})
		if err == nil && rerr != nil {
			err = os.NewSyscallError("read", rerr)
		}
		if err != nil {
			if bp != nil {
				bufPool.Put(bp)
			}
			return err
		}
		if n <= 0 {
			bufPool.Put(bp)
			return nil // EOF
		}
		_, werr := dst.Write((*bp)[:n])
		bufPool.Put(bp)
		if werr != nil {
			return werr
		}
		count.Add(uint64(n))
	}
}

// spliceChunk is how much one splice call may move before counters update.
const spliceChunk = 4 << 20

// spliceHalf moves data with splice(2) through a kernel pipe; nil at EOF.
// Each direction holds a pipe (two descriptors) while it waits.
func spliceHalf(dst, src *net.TCPConn, count *atomic.Uint64) error {
	for {
		n, err := dst.ReadFrom(&io.LimitedReader{R: src, N: spliceChunk})
		count.Add(uint64(n))
		if err != nil {
			return err
		}
		if n < spliceChunk { // EOF
			return nil
		}
	}
}

// newIdleWatch closes a session once no data has moved either way on either
// socket for the idle timeout. It reads the kernel's per-socket times of the
// last data sent and received (TCP_INFO) instead of touching the data path,
// which keeps splice in use.

func newIdleWatch(ss *session, idle time.Duration) *time.Timer {
	var t *time.Timer
	t = time.AfterFunc(idle, func() {
		quiet := idle
		for _, c := range []*net.TCPConn{ss.client, ss.server} {
			if q, ok := quietFor(c); ok {
				quiet = min(quiet, q)
			} else {
				quiet = 0 // closed or unreadable: the copy loops handle it
			}
		}
		if quiet >= idle {
			ss.abort()
			return
		}
		t.Reset(idle - quiet)
	})
	return t
}

// quietFor is how long ago the socket last sent or received data.
func quietFor(c *net.TCPConn) (time.Duration, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var serr error
	if err := rc.Control(func(fd uintptr) { info, serr = unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO) }); err != nil || serr != nil {
		return 0, false
	}
	ms := min(info.Last_data_recv, info.Last_data_sent)
	return time.Duration(ms) * time.Millisecond, true
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	return netip.AddrPort{}
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}
