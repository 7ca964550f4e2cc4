package proxy

import (
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// evloop is one event loop of the data path: an epoll set of its own,
// level-triggered, served by one goroutine that waits in epoll itself (see
// run). The balancers of a Fleet share its loops (loops.go). The
// sockets in it are raw descriptors the Go runtime never sees. That is what
// makes it as cheap as HAProxy's loop: a socket is read only when epoll said
// it has data (Go's edge-triggered poller must read until EAGAIN, one wasted
// read per wait), and no goroutine is parked or woken per connection or per
// packet: a wake of the loop serves every socket that became ready.
type evloop struct {
	log    *slog.Logger
	epfd   int
	wakefd int // eventfd that post writes to

	mu     sync.Mutex
	inbox  []func() // work posted by other goroutines, run by the loop
	closed bool     // stop was called: post takes no more work
	woken  atomic.Bool

	// Everything below belongs to the loop goroutine.
	fds       []fdSlot // by descriptor number
	conns     []*conn  // every session, for sweeps and aborts
	buf       *[]byte  // read buffer shared by the loop's sessions
	events    []unix.EpollEvent
	batch     uint64    // counts epoll batches, see fdSlot.closedIn
	now       time.Time // taken once per batch
	nextSweep time.Time // zero: no deadline pending
	expired   []*conn
	free      []*conn // finished sessions kept for reuse
	lastYield time.Time
	stopping  bool
	done      chan struct{}
}

// fdSlot maps a descriptor to its session. closedIn is the batch in which
// the descriptor was last closed: a later event of that batch for the same
// number is stale, even if a new socket already took the number.
type fdSlot struct {
	c        *conn
	lis      *listenSlot // set for a listener instead of c
	closedIn uint64
}

// listenSlot is a listener a loop accepts on for a balancer.
type listenSlot struct {
	b        *Balancer
	addr     string
	backoff  time.Duration // after an accept error; 0 when all is well
	lastFail time.Time     // of the last accept error
}

// acceptQuiet is how long accept must go without an error before its
// backoff starts again from the bottom. A success does not reset it: out of
// descriptors, one accept succeeds whenever a session ends, and resetting
// on it made the backoff (and its log line) restart every few milliseconds.
const acceptQuiet = 10 * time.Second

// readBuf is the read buffer of a loop: one read may take this much.
const readBuf = 64 << 10

func newEvloop(log *slog.Logger) (*evloop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("epoll add eventfd: %w", err)
	}
	lp := &evloop{log: log, epfd: epfd, wakefd: wakefd,
		buf: pendPool.Get().(*[]byte), events: make([]unix.EpollEvent, 256), done: make(chan struct{})}
	go lp.run()
	return lp, nil
}

// post hands work to the loop; it runs on the loop goroutine, in order.
// False when the loop was stopped: f will not run.
func (lp *evloop) post(f func()) bool {
	lp.mu.Lock()
	if lp.closed {
		lp.mu.Unlock()
		return false
	}
	lp.inbox = append(lp.inbox, f)
	lp.mu.Unlock()
	lp.wake()
	return true
}

func (lp *evloop) wake() {
	if !lp.woken.Swap(true) {
		one := [8]byte{1}
		sysWrite(lp.wakefd, one[:])
	}
}

// stop ends the loop once the work posted before it ran, and waits.
func (lp *evloop) stop() {
	lp.mu.Lock()
	lp.inbox = append(lp.inbox, func() { lp.stopping = true })
	lp.closed = true
	lp.mu.Unlock()
	lp.wake()
	<-lp.done
}

// holdIdle is how long a loop waits in epoll holding its processor before
// it gives the processor up. A loop in the middle of a load so never lets
// go of it: the kernel wakes its thread directly when a socket is ready, as
// it wakes HAProxy's. Parked in Go's netpoller instead, each wake went
// through the runtime, and both cores sat idle in between: 1.3-3x HAProxy's
// idle time per request, p99 1.15-1.2x HAProxy's. Longer than the kernel's
// tick (4 ms at HZ 250), so that arming the wait's timer does not
// reprogram the clock (in a VM, an exit to the hypervisor per wait: 10 %
// more CPU per request at 0.5 ms); shorter than the 10 ms after which the
// runtime preempts a goroutine that holds its processor.
const holdIdle = 5 * time.Millisecond

// yieldEvery is how often a busy loop lets the scheduler run what else is
// queued on its processor. The other goroutines have the processor loops
// never hold (loops.go); this bounds how long any waits when they do not.
const yieldEvery = time.Millisecond

// run waits for events: first for up to holdIdle in a raw system call that
// keeps the processor, then, when nothing came, in a blocking one that hands
// the processor to the scheduler until a socket, a post or the next
// session deadline wakes it. (Not in Go's netpoller: a loop's epoll set in
// that poller's set wakes the poller's thread for every event, in vain
// while the loop waits itself: 25 % more CPU per request.)
func (lp *evloop) run() {
	defer close(lp.done)
	defer unix.Close(lp.epfd)
	defer unix.Close(lp.wakefd)
	for !lp.stopping {
		n, err := sysEpollWait(lp.epfd, lp.events, lp.hold())
		if err == nil && n == 0 {
			n, err = sysEpollBlock(lp.epfd, lp.events, lp.untilSweep())
		}
		switch {
		case err == unix.EINTR:
			// A signal, such as the runtime's asking the goroutine
			// to stop for the collector.
			runtime.Gosched()
			continue
		case err != nil:
			lp.fail(fmt.Errorf("epoll_wait: %w", err))
			return
		case n == 0: // a session's deadline
			lp.now = time.Now()
			lp.sweep()
			continue
		}
		lp.handle(lp.events[:n])
		if lp.now.Sub(lp.lastYield) >= yieldEvery {
			runtime.Gosched()
			lp.lastYield = lp.now
		}
	}
}

// fail closes the loop's connections after an error of its epoll set.
func (lp *evloop) fail(err error) {
	lp.log.Error("event loop failed; its connections are closed", "err", err)
	lp.mu.Lock()
	lp.closed = true
	lp.mu.Unlock()
	lp.runInbox()
	lp.abortWhere(func(*conn) bool { return true })
	// Its listeners stop listening, so that the kernel hashes new
	// connections to the other loops' ones.
	for fd, slot := range lp.fds {
		if slot.lis != nil {
			unix.Shutdown(fd, unix.SHUT_RDWR)
		}
	}
}

// hold is how long the loop may wait holding its processor: holdIdle, or
// less when a session's deadline comes sooner.
func (lp *evloop) hold() time.Duration {
	if lp.nextSweep.IsZero() {
		return holdIdle
	}
	return min(holdIdle, max(lp.nextSweep.Sub(lp.now), 0))
}

// untilSweep is how long the loop may sleep: until the next session
// deadline, or without end (-1) when there is none.
func (lp *evloop) untilSweep() time.Duration {
	if lp.nextSweep.IsZero() {
		return -1
	}
	return max(time.Until(lp.nextSweep), 0)
}

// handle serves one batch of epoll events.
func (lp *evloop) handle(events []unix.EpollEvent) {
	lp.now = time.Now()
	lp.batch++
	woken := false
	for _, ev := range events {
		fd := int(ev.Fd)
		if fd == lp.wakefd {
			woken = true
			continue
		}
		if fd < len(lp.fds) && lp.fds[fd].closedIn != lp.batch {
			switch slot := lp.fds[fd]; {
			case slot.c != nil:
				slot.c.event(fd, ev.Events)
			case slot.lis != nil:
				lp.acceptFrom(fd, slot.lis)
			}
		}
	}
	if woken { // after the batch: new sockets must not meet its events
		lp.runInbox()
	}
	if !lp.nextSweep.IsZero() && !lp.now.Before(lp.nextSweep) {
		lp.sweep()
	}
}

func (lp *evloop) runInbox() {
	// Reset the eventfd, then the flag, then take the inbox: a post
	// after the reset either finds the flag clear and writes a new
	// wake-up, or appended before the flag was cleared and is taken
	// now. (Flag first, then the read, lost a wake-up: a post between
	// them wrote one that the read swallowed and left the flag set.)
	var b [8]byte
	sysRead(lp.wakefd, b[:])
	lp.woken.Store(false)
	lp.mu.Lock()
	work := lp.inbox
	lp.inbox = nil
	lp.mu.Unlock()
	for _, f := range work {
		f()
	}
}

// watchListener makes the loop accept on a listener: its own of the
// address's SO_REUSEPORT group (listenGroup). It serves what it accepts
// itself, without handing sessions to another loop.
func (lp *evloop) watchListener(fd int, addr string, b *Balancer) {
	lp.grow(fd)
	if err := sysEpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, fd, unix.EPOLLIN); err != nil {
		b.log.Error("listener not served by an event loop", "listen", addr, "err", err)
		return
	}
	lp.fds[fd] = fdSlot{lis: &listenSlot{b: b, addr: addr}}
}

// unwatchListener stops accepting on a listener about to be closed.
func (lp *evloop) unwatchListener(fd int) {
	if fd < len(lp.fds) && lp.fds[fd].lis != nil {
		sysEpollCtl(lp.epfd, unix.EPOLL_CTL_DEL, fd, 0)
		lp.fds[fd] = fdSlot{closedIn: lp.batch}
	}
}

// acceptBatch bounds the connections a loop accepts from one listener per
// batch of events; the listener stays ready (level-triggered) and the rest
// come in the next batch, after the sessions whose events came with this
// one. Each accept also starts its backend connect; 32 at a time made the
// sessions behind them wait: new-connection p99 1.15-1.21x HAProxy's against
// 1.12-1.17x with 8 (bench-proxy, alternated).
const acceptBatch = 8

// acceptFrom takes the connections a listener has, a bounded number at a
// time so that the sessions of the loop get their turn.
func (lp *evloop) acceptFrom(lfd int, ls *listenSlot) {
	b := ls.b
	for range acceptBatch {
		fd, src, err := sysAccept(lfd)
		switch err {
		case nil:
			lp.admit(b, fd, src)
			continue
		case unix.EAGAIN:
			return
		case unix.EINTR, unix.ECONNABORTED:
			continue
		}
		// EMFILE and the like: stop watching for a while rather than
		// spin; counted, and logged at a limited rate (noteFailure).
		now := time.Now()
		if now.Sub(ls.lastFail) > acceptQuiet {
			ls.backoff = 0
		}
		ls.lastFail = now
		ls.backoff = min(max(2*ls.backoff, 5*time.Millisecond), time.Second)
		b.noteFailure(opAccept, err)
		sysEpollCtl(lp.epfd, unix.EPOLL_CTL_DEL, lfd, 0)
		time.AfterFunc(ls.backoff, func() {
			lp.post(func() {
				if lfd < len(lp.fds) && lp.fds[lfd].lis == ls { // not closed meanwhile
					sysEpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, lfd, unix.EPOLLIN)
				}
			})
		})
		return
	}
}

// admit starts a session of b for an accepted socket, or refuses it over
// max_conn.
func (lp *evloop) admit(b *Balancer, fd int, src netip.AddrPort) {
	s := b.cur.Load()
	if b.active.Load() >= int64(s.cfg.MaxConn) {
		b.refuse(fd, s)
		return
	}
	raiseMax(&b.maxActive, b.active.Add(1))
	b.accepted.Add(1)
	b.serving.Add(1)
	lp.open(b, fd, src, s)
}

func (lp *evloop) grow(fd int) {
	if fd >= len(lp.fds) {
		lp.fds = append(lp.fds, make([]fdSlot, max(fd+1, 2*len(lp.fds))-len(lp.fds))...)
	}
}

// add ties a session's socket to the loop; want puts it in the epoll set.
func (lp *evloop) add(fd int, c *conn) {
	lp.grow(fd)
	lp.fds[fd].c = c
}

// close forgets and closes a socket; with reset the peer gets a RST.
func (lp *evloop) close(fd int, reset bool) {
	if reset {
		sysReset(fd)
	}
	lp.fds[fd] = fdSlot{closedIn: lp.batch}
	sysClose(fd) // leaves the epoll set with it: nobody else holds it
}

// want sets the events a socket is watched for, if they changed. A socket
// watched for nothing leaves the epoll set: epoll reports hang-ups whatever
// the mask says, and a hang-up the session cannot act on yet (data still
// queued for the other side) would wake the loop for ever.
func (lp *evloop) want(fd int, cur *uint32, events uint32) error {
	if *cur == events {
		return nil
	}
	op := unix.EPOLL_CTL_MOD
	switch {
	case *cur == 0:
		op = unix.EPOLL_CTL_ADD
	case events == 0:
		op = unix.EPOLL_CTL_DEL
	}
	if err := sysEpollCtl(lp.epfd, op, fd, events); err != nil {
		return fmt.Errorf("epoll_ctl %d on socket: %w", op, err)
	}
	*cur = events
	return nil
}

// schedule makes the loop sweep no later than t.
func (lp *evloop) schedule(t time.Time) {
	if lp.nextSweep.IsZero() || t.Before(lp.nextSweep) {
		lp.nextSweep = t
	}
}

// sweep acts on the sessions whose header, connect or idle time ran out
// and finds the next time one can.
func (lp *evloop) sweep() {
	var next time.Time
	lp.expired = lp.expired[:0]
	for _, c := range lp.conns {
		due := c.due()
		if !lp.now.Before(due) {
			lp.expired = append(lp.expired, c)
		} else if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	lp.nextSweep = next
	for _, c := range lp.expired {
		c.expire() // may schedule again
	}
	clear(lp.expired)
}

// abortWhere resets the loop's sessions that match.
func (lp *evloop) abortWhere(match func(*conn) bool) {
	for i := 0; i < len(lp.conns); {
		if c := lp.conns[i]; match(c) {
			c.abort() // removes c from lp.conns
			continue
		}
		i++
	}
}

// keepBuf hands the loop's read buffer, with bytes a session keeps in it,
// to that session, and takes another for the loop.
func (lp *evloop) keepBuf() *[]byte {
	b := lp.buf
	lp.buf = pendPool.Get().(*[]byte)
	return b
}

// maxFree bounds the finished sessions a loop keeps for reuse.
const maxFree = 1024

// newConn returns a cleared session, reusing a finished one when it can:
// a connection then allocates nothing, and the collector stays away from
// the accept path.
func (lp *evloop) newConn() *conn {
	if n := len(lp.free); n > 0 {
		c := lp.free[n-1]
		lp.free[n-1] = nil
		lp.free = lp.free[:n-1]
		return c
	}
	return &conn{lp: lp}
}

// freeConn keeps a finished session for reuse. Nothing may use c after.
func (lp *evloop) freeConn(c *conn) {
	if len(lp.free) >= maxFree {
		return
	}
	tried := c.tried[:0]
	clear(c.tried)
	*c = conn{lp: lp, tried: tried, state: stDone}
	lp.free = append(lp.free, c)
}

func (lp *evloop) track(c *conn) {
	c.idx = len(lp.conns)
	lp.conns = append(lp.conns, c)
}

func (lp *evloop) untrack(c *conn) {
	last := len(lp.conns) - 1
	lp.conns[c.idx] = lp.conns[last]
	lp.conns[c.idx].idx = c.idx
	lp.conns[last] = nil
	lp.conns = lp.conns[:last]
}
