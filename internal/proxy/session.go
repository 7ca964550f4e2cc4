package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-lb/vigil/internal/proxyproto"
	"golang.org/x/sys/unix"
)

// conn is one client connection and, once connected, its backend. It lives
// on one event loop and is touched only by that loop's goroutine.
type conn struct {
	lp       *evloop
	b        *Balancer
	s        *settings // the config generation it started with
	be       *Backend  // picked backend; nil while none
	cfd, sfd int       // client and server sockets; sfd is -1 while none
	cev, sev uint32    // events each is watched for
	state    connState
	attempts int
	tried    []*Backend
	head     []byte  // stHeader: the client's PROXY header so far; then the client's bytes to send first
	headBuf  *[]byte // pooled buffer under head, nil when head is not pooled
	src, dst netip.AddrPort
	up, down half // client to server, server to client
	deadline time.Time
	last     time.Time // data last moved either way
	idx      int       // in lp.conns
}

type connState uint8

const (
	stStart      connState = iota // accepted, nothing started
	stHeader                      // reading the client's PROXY header
	stConnecting                  // connect to a backend in progress
	stOpen                        // copying both ways
	stDone
)

// half is one direction of a session.
type half struct {
	bp     *[]byte // pooled buffer holding pend, nil when pend is not pooled
	pend   []byte  // bytes read but not yet written (buffer mode)
	pipe   [2]int  // splice mode: the kernel pipe, 0 until first used
	inPipe int     // splice mode: bytes in the pipe not yet written
	eof    bool    // the source's FIN was read (and passed on)
	count  *atomic.Uint64
}

func (h *half) pending() bool { return len(h.pend) > 0 || h.inPipe > 0 }

// done: nothing more will move this way.
func (h *half) done() bool { return h.eof && !h.pending() }

// pendPool holds read buffers. A loop reads into one of its own; when a
// writer cannot take all of it, the session keeps that buffer until it can
// and the loop takes another. Idle connections hold none.
var pendPool = sync.Pool{New: func() any { b := make([]byte, readBuf); return &b }}

// headerTimeout bounds how long a client may take to send its PROXY header.
const headerTimeout = 5 * time.Second

// open starts a session for an accepted socket.
func (lp *evloop) open(b *Balancer, fd int, src netip.AddrPort, s *settings) {
	c := lp.newConn()
	c.b, c.s, c.cfd, c.sfd, c.src, c.last, c.state = b, s, fd, -1, src, lp.now, stStart
	lp.track(c)
	lp.add(fd, c) // TCP_NODELAY comes from the listener (listen)
	if s.cfg.AcceptProxy {
		c.state = stHeader
		c.deadline = lp.now.Add(headerTimeout)
		lp.schedule(c.deadline)
		c.update()
		return
	}
	if c.readEarly() {
		c.connect()
	}
}

// readEarly takes what the client sent before it was accepted: a client
// that speaks first (HTTP, TLS) usually has, and its bytes then go to the
// backend the moment the connect completes, without another round for the
// client's socket. False when the session ended.
func (c *conn) readEarly() bool {
	lp := c.lp
	n, err := sysRead(c.cfd, *lp.buf)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
	case err != nil:
		return c.reset(c.cfd, err)
	case n == 0:
		c.up.eof = true // passed on once connected
	default:
		c.headBuf = lp.keepBuf()
		c.head = (*c.headBuf)[:n]
	}
	return true
}

// event handles what epoll reported for one of the session's sockets.
func (c *conn) event(fd int, ev uint32) {
	const errHup = unix.EPOLLERR | unix.EPOLLHUP
	switch c.state {
	case stHeader:
		c.readHeader()
	case stConnecting:
		if fd == c.sfd {
			c.connectDone(ev)
		} else if ev&errHup != 0 {
			c.abort() // the client left while we connected
		}
	case stOpen:
		rd, wr, other := &c.up, &c.down, c.sfd
		if fd == c.sfd {
			rd, wr, other = &c.down, &c.up, c.cfd
		}
		handled := false
		if ev&(unix.EPOLLOUT|errHup) != 0 && wr.pending() {
			handled = true
			if !c.flush(wr, fd) {
				return
			}
		}
		if ev&(unix.EPOLLIN|errHup) != 0 && !rd.eof && !rd.pending() {
			handled = true
			if !c.pump(rd, fd, other, ev&unix.EPOLLRDHUP != 0) {
				return
			}
		}
		if !handled && ev&errHup != 0 {
			c.abort()
			return
		}
		c.update()
	}
}

// readable is what a session's socket is watched for while its data is
// wanted: with EPOLLRDHUP epoll also says that the peer's FIN is in, so a
// read that drains the socket knows it reached the end without a read that
// returns 0, and the FIN passed on rides with the last data.
const readable = unix.EPOLLIN | unix.EPOLLRDHUP

// update watches each socket for what the session can do with it now.
func (c *conn) update() {
	var cev, sev uint32
	switch c.state {
	case stHeader:
		cev = unix.EPOLLIN
	case stConnecting:
		sev = unix.EPOLLOUT
	case stOpen:
		if c.up.pending() {
			sev |= unix.EPOLLOUT
		} else if !c.up.eof {
			cev |= readable
		}
		if c.down.pending() {
			cev |= unix.EPOLLOUT
		} else if !c.down.eof {
			sev |= readable
		}
	}
	err := c.lp.want(c.cfd, &c.cev, cev)
	if c.sfd >= 0 && err == nil {
		err = c.lp.want(c.sfd, &c.sev, sev)
	}
	if err != nil {
		c.b.log.Warn("connection dropped", "client", c.src.String(), "err", err)
		c.abort()
	}
}

// readHeader reads the client's PROXY header; bytes after it are kept to be
// sent to the backend first.
func (c *conn) readHeader() {
	b := c.b
	if c.head == nil {
		c.head = make([]byte, 0, proxyproto.MaxHeader)
	}
	n, err := sysRead(c.cfd, c.head[len(c.head):cap(c.head)])
	if err == unix.EAGAIN || err == unix.EINTR {
		return
	}
	if n > 0 {
		c.head = c.head[:len(c.head)+n]
	}
	h, size, perr := proxyproto.Parse(c.head)
	if errors.Is(perr, proxyproto.ErrIncomplete) {
		if err == nil && n > 0 && len(c.head) < cap(c.head) {
			return // more to come
		}
		perr = fmt.Errorf("proxy protocol: connection ended inside the header (%d bytes, err %v)", len(c.head), err)
	}
	if perr != nil {
		b.badProxyHeader.Add(1)
		b.log.Debug("connection closed: bad PROXY header", "client", c.src.String(), "err", perr)
		c.abort()
		return
	}
	if !h.Local {
		c.src, c.dst = h.Src, h.Dst
	}
	c.head = c.head[size:] // early client bytes
	c.connect()
}

// connect starts a connect to the next backend to try, or ends the session
// when there is none left.
func (c *conn) connect() {
	b := c.b
	for c.attempts <= *c.s.cfg.Retries {
		be := b.pick(c.s, c.tried, c.src.Addr())
		if be == nil {
			break
		}
		c.attempts++
		fd, err := sysDial(&be.sa)
		if err != nil && outOfResources(err) {
			// The node's limit, not the backend's fault: every other
			// backend would fail the same way. Closing the client gives
			// a descriptor back.
			be.active.Add(-1)
			b.noteFailure(opConnect, err)
			c.abort()
			return
		}
		if err != nil {
			c.connectFailed(be, err)
			continue
		}
		c.lp.add(fd, c)
		c.be, c.sfd, c.sev = be, fd, 0
		c.state = stConnecting
		c.deadline = c.lp.now.Add(c.s.cfg.ConnectTimeout)
		c.lp.schedule(c.deadline)
		c.update()
		return
	}
	if len(c.tried) > 0 || b.healthy() == 0 {
		b.log.Debug("no backend for connection", "client", c.src.String(), "tried", len(c.tried))
	}
	b.noBackend.Add(1)
	c.abort()
}

func (c *conn) connectFailed(be *Backend, err error) {
	be.active.Add(-1)
	be.connectErrors.Add(1)
	if errors.Is(err, unix.ETIMEDOUT) {
		be.connectTimeouts.Add(1)
	}
	c.tried = append(c.tried, be)
	c.b.log.Debug("backend connect failed, trying another", "backend", be.Addr.String(), "client", c.src.String(), "err", err)
}

// connectDone finishes a connect epoll reported on.
func (c *conn) connectDone(ev uint32) {
	if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 { // writable without these: connected
		err := error(unix.ECONNRESET)
		if soerr, gerr := unix.GetsockoptInt(c.sfd, unix.SOL_SOCKET, unix.SO_ERROR); gerr == nil && soerr != 0 {
			err = unix.Errno(soerr)
		}
		c.dropServer(err)
		return
	}
	c.established()
}

// sendsHeader says whether backends get a PROXY header.
func (c *conn) sendsHeader() bool {
	v := c.s.cfg.ProxyProtocol
	return v == "v1" || v == "v2"
}

// established opens the session once the backend's socket is connected:
// what goes first (a PROXY header, the client's early bytes) is sent and
// copying starts.
func (c *conn) established() {
	head, copied := c.head, c.sendsHeader()
	if copied {
		if !c.dst.IsValid() {
			if dst, err := sysLocalAddr(c.cfd); err == nil {
				c.dst = dst
			}
		}
		h := proxyproto.Header{Src: c.src, Dst: c.dst}
		if c.s.cfg.ProxyProtocol == "v1" {
			head = proxyproto.AppendV1(nil, h)
		} else {
			head = proxyproto.AppendV2(nil, h)
		}
		head = append(head, c.head...)
	}
	c.be.total.Add(1)
	c.state = stOpen
	c.up.count, c.down.count = &c.be.bytesIn, &c.be.bytesOut
	c.last = c.lp.now
	c.lp.schedule(c.due())
	c.be.bytesIn.Add(uint64(len(c.head)))
	if len(head) > 0 {
		c.up.pend = head // flush sends it
		if !copied {     // head is c.head: its buffer goes with it
			c.up.bp, c.headBuf = c.headBuf, nil
		}
	}
	c.releaseHead()
	if (c.up.pending() || c.up.eof) && !c.flush(&c.up, c.sfd) {
		return
	}
	c.update()
}

// releaseHead gives back the early bytes' buffer.
func (c *conn) releaseHead() {
	if c.headBuf != nil {
		pendPool.Put(c.headBuf)
	}
	c.head, c.headBuf = nil, nil
}

// dropServer gives up the backend being connected and tries the next.
func (c *conn) dropServer(err error) {
	c.lp.close(c.sfd, true)
	c.sfd, c.sev = -1, 0
	be := c.be
	c.be = nil
	c.connectFailed(be, err)
	c.connect()
}

// spliceChunk is how much one splice call may move.
const spliceChunk = 1 << 20

// pump moves what src has to dst, through the loop's buffer or, with
// splice, a kernel pipe of the direction's; false when the session ended.
// finIn says that epoll saw src's FIN: a read that leaves src empty then
// reached the end.
func (c *conn) pump(h *half, src, dst int, finIn bool) bool {
	splice := c.s.cfg.Splice
	if splice && h.pipe[0] == 0 {
		if err := unix.Pipe2(h.pipe[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
			h.pipe = [2]int{}
			return c.reset(src, err)
		}
	}
	for range 4 { // then let other sockets have a turn
		var n int
		var err error
		if splice {
			n, err = sysSplice(src, h.pipe[1], spliceChunk)
		} else {
			n, err = sysRead(src, *c.lp.buf)
		}
		switch {
		case err == unix.EAGAIN:
			return true
		case err == unix.EINTR:
			continue
		case err != nil:
			return c.reset(src, err)
		case n == 0:
			return c.eof(h, dst)
		}
		c.last = c.lp.now
		h.count.Add(uint64(n))
		if splice {
			h.inPipe = n
			if !c.flush(h, dst) {
				return false
			}
			if h.pending() {
				return true // dst is full: epoll says when to go on
			}
			continue
		}
		last := finIn && n < readBuf // src is drained and its FIN is in
		if !c.passOn(h, dst, n, last) {
			return false
		}
		if last {
			return c.eof(h, dst)
		}
		if h.pending() || n < readBuf {
			return true // dst is full, or src drained: epoll says when to go on
		}
	}
	return true
}

// passOn writes the n bytes just read into the loop's buffer to dst. What
// dst does not take stays with the session in that buffer, and the loop
// takes another. last says the FIN follows at once: the kernel holds the
// bytes back (MSG_MORE) so that the FIN goes out in the same segment.
func (c *conn) passOn(h *half, dst, n int, last bool) bool {
	lp := c.lp
	buf := *lp.buf
	flags := 0
	if last {
		flags = unix.MSG_MORE
	}
	w, err := send(dst, buf[:n], flags)
	if err != nil {
		return c.reset(dst, err)
	}
	if w < n {
		h.bp, h.pend = lp.keepBuf(), buf[w:n]
	}
	return true
}

// flush writes what a direction holds to dst, and then the FIN when the
// source's came; false when the session ended.
func (c *conn) flush(h *half, dst int) bool {
	for h.inPipe > 0 {
		n, err := sysSplice(h.pipe[0], dst, h.inPipe)
		if err == unix.EAGAIN {
			return true
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return c.reset(dst, err)
		}
		h.inPipe -= n
		c.last = c.lp.now
	}
	if len(h.pend) > 0 {
		flags := 0
		if h.eof {
			flags = unix.MSG_MORE // the FIN follows: one segment for both
		}
		n, err := send(dst, h.pend, flags)
		if err != nil {
			return c.reset(dst, err)
		}
		c.last = c.lp.now
		if h.pend = h.pend[n:]; len(h.pend) > 0 {
			return true
		}
		if h.bp != nil {
			pendPool.Put(h.bp)
		}
		h.bp, h.pend = nil, nil
	}
	if h.eof {
		return c.passFIN(dst)
	}
	return true
}

// send writes what the socket takes now; EAGAIN is not an error.
func send(fd int, b []byte, flags int) (int, error) {
	for {
		n, err := sysSend(fd, b, flags)
		switch err {
		case nil:
			return n, nil
		case unix.EAGAIN:
			return 0, nil
		case unix.EINTR:
			continue
		}
		return 0, err
	}
}

// eof handles a FIN read on one direction. It is passed on once the bytes
// before it are written: with shutdown(2) while the other direction still
// runs, by the close when it is the last.
func (c *conn) eof(h *half, dst int) bool {
	h.eof = true
	if h.pending() {
		return true // flush passes the FIN on
	}
	return c.passFIN(dst)
}

// passFIN passes a direction's FIN on to dst, or ends the session when
// nothing moves either way any more.
func (c *conn) passFIN(dst int) bool {
	if c.up.done() && c.down.done() {
		c.finish(false)
		return false
	}
	if err := sysShutdownWrite(dst); err != nil {
		return c.reset(dst, err)
	}
	return true
}

// reset ends the session after a socket error.
func (c *conn) reset(fd int, err error) bool {
	peer := c.src.String()
	if fd == c.sfd && c.be != nil {
		peer = c.be.Addr.String()
	}
	c.b.log.Debug("connection reset", "from", peer, "err", err)
	c.abort()
	return false
}

// due is when the session's header, connect or idle time runs out.
func (c *conn) due() time.Time {
	if c.state == stOpen {
		return c.last.Add(c.s.cfg.IdleTimeout)
	}
	return c.deadline
}

// expire acts on a session whose time ran out.
func (c *conn) expire() {
	switch c.state {
	case stHeader:
		b := c.b
		b.badProxyHeader.Add(1)
		b.log.Debug("connection closed: no PROXY header in time", "client", c.src.String())
		c.abort()
	case stConnecting:
		c.dropServer(unix.ETIMEDOUT)
	case stOpen:
		c.abort()
	}
}

// abort resets both sides.
func (c *conn) abort() { c.finish(true) }

// finish closes the session's sockets (resetting them when reset is set)
// and gives back its buffers, pipes and counts.
func (c *conn) finish(reset bool) {
	if c.state == stDone {
		return
	}
	c.state = stDone
	lp := c.lp
	lp.close(c.cfd, reset)
	if c.sfd >= 0 {
		lp.close(c.sfd, reset)
	}
	for _, h := range []*half{&c.up, &c.down} {
		if h.bp != nil {
			pendPool.Put(h.bp)
		}
		if h.pipe[0] != 0 {
			sysClose(h.pipe[0])
			sysClose(h.pipe[1])
		}
		*h = half{}
	}
	c.releaseHead()
	if c.be != nil {
		c.be.active.Add(-1)
	}
	b := c.b
	lp.untrack(c)
	lp.freeConn(c)
	b.active.Add(-1)
	b.serving.Done()
}
