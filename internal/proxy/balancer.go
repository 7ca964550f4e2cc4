// Package proxy is vigil's userspace L4 load balancer: TCP frontends that
// relay each connection to a backend chosen by weighted round robin, least
// connections or Maglev hashing, with health-driven rotation, limits, PROXY
// protocol, a monitor endpoint and reload without dropping connections. The
// data path is one epoll event loop per core on raw sockets (evloop.go),
// shared by all balancers (loops.go), the shape of HAProxy's, rather than
// goroutines per connection. A Fleet (fleet.go) runs every proxy balancer
// of a config as one component, their health taken from a health.Store.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/statelog"
)

// Backend is one server and its counters. A backend object lives across
// reloads for as long as its address stays in the config, so its health and
// counters do too.
type Backend struct {
	Addr    netip.AddrPort
	sa      rawSockaddr // Addr for connect(2)
	weight  atomic.Int32
	maxConn atomic.Int32
	up      atomic.Bool
	// healthAt is when up last changed (Unix nanoseconds; 0: never), for
	// how long a backend was down.
	healthAt atomic.Int64
	// admin is the operator's AdminState (vigil backend), kept across
	// reloads with the backend object and lost at restart.
	admin atomic.Uint32

	active        atomic.Int64
	maxActive     atomic.Int64 // the most active at once (HAProxy's smax)
	total         atomic.Uint64
	connectErrors atomic.Uint64
	// connectTimeouts are the connectErrors that were connect_timeout
	// running out (the others: refused, unreachable, reset).
	connectTimeouts atomic.Uint64
	bytesIn         atomic.Uint64 // client to backend
	bytesOut        atomic.Uint64 // backend to client

	cw int // smooth weighted round robin state, under Balancer.pickMu
}

// AdminState is what an operator set on a backend at runtime (vigil
// backend drain|disable|enable), over what its config and checks say.
type AdminState uint32

// Admin states.
const (
	// AdminReady: the backend is as its config and checks say.
	AdminReady AdminState = iota
	// AdminDrain: no new connections; established ones go on, as weight 0.
	AdminDrain
	// AdminDisabled: out of rotation and its connections closed at once
	// (HAProxy's MAINT).
	AdminDisabled
)

var adminNames = [...]string{"ready", "drain", "disabled"}

func (a AdminState) String() string {
	if int(a) >= len(adminNames) {
		return "unknown"
	}
	return adminNames[a]
}

// ErrUnknownBackend is SetAdmin's error for an address that is not one of
// the balancer's backends.
var ErrUnknownBackend = errors.New("unknown backend")

// settings is one config generation of a balancer; sessions keep the one
// they started with.
type settings struct {
	cfg      config.Balancer
	backends []*Backend
	ring     *sourceRing // algorithm maglev
}

// Balancer serves one config.Balancer.
type Balancer struct {
	name string
	log  *slog.Logger
	cur  atomic.Pointer[settings]

	pickMu sync.Mutex
	rrNext int

	mu        sync.Mutex                    // guards listeners, monitor, closed
	listeners map[string][]*net.TCPListener // a SO_REUSEPORT group per address, one per loop
	monitor   *monitor
	closed    bool

	monitorRun sync.WaitGroup // the monitor's HTTP server
	serving    sync.WaitGroup // sessions, from accept to close
	evloops    []*evloop      // the data path, shared (loops.go)

	active         atomic.Int64
	maxActive      atomic.Int64
	accepted       atomic.Uint64
	refused        atomic.Uint64
	noBackend      atomic.Uint64
	badProxyHeader atomic.Uint64
	lastRefusedLog atomic.Int64
	exhaust        exhaustion // out of descriptors or socket memory (exhaust.go)
}

// New opens the balancer's listeners and monitor, a listener per loop of
// loops, which serve its sessions; nothing is served until Start. On error
// it closes what it opened. The loops must outlive the balancer: close them
// after its Shutdown.
func New(cfg config.Balancer, loops *Loops, log *slog.Logger) (*Balancer, error) {
	b := &Balancer{name: cfg.Name, log: log.With("balancer", cfg.Name),
		listeners: map[string][]*net.TCPListener{}, evloops: loops.loops}
	ch, err := b.Plan(cfg)
	if err != nil {
		return nil, err
	}
	ch.commit(false)
	return b, nil
}

// eachLoop runs f on every event loop (i is its index) and waits until all
// ran it.
func (b *Balancer) eachLoop(f func(i int, lp *evloop)) {
	var wg sync.WaitGroup
	for i, lp := range b.evloops {
		wg.Add(1)
		if !lp.post(func() { f(i, lp); wg.Done() }) {
			wg.Done() // stopped: it has no sessions left
		}
	}
	wg.Wait()
}

// Name is the balancer's config name.
func (b *Balancer) Name() string { return b.name }

// Start begins accepting on every listener.
func (b *Balancer) Start() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for addr, ls := range b.listeners {
		b.startAccept(addr, ls)
	}
	if b.monitor != nil {
		b.monitor.start(&b.monitorRun)
	}
}

// startAccept has each event loop accept on its listener of the group.
func (b *Balancer) startAccept(addr string, ls []*net.TCPListener) {
	fds := b.groupFDs(addr, ls)
	b.eachLoop(func(i int, lp *evloop) {
		if fd := fds[i%len(fds)]; fd >= 0 {
			lp.watchListener(fd, addr, b)
		}
	})
}

// stopAccept takes the group's listeners out of the event loops, then
// closes them.
func (b *Balancer) stopAccept(addr string, ls []*net.TCPListener) {
	fds := b.groupFDs(addr, ls)
	b.eachLoop(func(i int, lp *evloop) {
		if fd := fds[i%len(fds)]; fd >= 0 {
			lp.unwatchListener(fd)
		}
	})
	closeAll(ls)
}

// groupFDs are the descriptors of a listener group, -1 where one could not
// be read (logged).
func (b *Balancer) groupFDs(addr string, ls []*net.TCPListener) []int {
	fds := make([]int, len(ls))
	for i, l := range ls {
		fd, err := listenerFD(l)
		if err != nil {
			b.log.Error("listener not served", "listen", addr, "err", err)
			fd = -1
		}
		fds[i] = fd
	}
	return fds
}

func listenerFD(l *net.TCPListener) (int, error) {
	rc, err := l.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// Change is a prepared reload: new listeners are open, nothing else changed.
// Commit applies it; Abort closes what it opened.
type Change struct {
	b          *Balancer
	next       *settings
	opened     map[string][]*net.TCPListener
	closing    []string
	monitor    *monitor // new monitor, nil when unchanged
	dropMon    bool     // the old monitor goes
	weights    map[*Backend][2]int32
	newBackend map[*Backend]bool
	// upAtStart, when set, says at Commit whether a new backend comes in
	// up (a Fleet asks its health store); nil: up.
	upAtStart func(netip.AddrPort) bool
}

// Plan prepares cfg: it opens listeners the running config does not have,
// so an address in use fails here and leaves the running balancer as it was.
func (b *Balancer) Plan(cfg config.Balancer) (*Change, error) {
	ch := &Change{b: b, opened: map[string][]*net.TCPListener{}, weights: map[*Backend][2]int32{},
		newBackend: map[*Backend]bool{}}
	old := map[netip.AddrPort]*Backend{}
	if s := b.cur.Load(); s != nil {
		for _, be := range s.backends {
			old[be.Addr] = be
		}
	}
	next := &settings{cfg: cfg}
	var weights []int32
	for _, bc := range cfg.Backends {
		ap := netip.MustParseAddrPort(bc.Address) // validated
		be := old[ap]
		if be == nil {
			be = &Backend{Addr: ap, sa: newRawSockaddr(ap)}
			ch.newBackend[be] = true
		}
		ch.weights[be] = [2]int32{int32(*bc.Weight), int32(bc.MaxConn)}
		next.backends = append(next.backends, be)
		weights = append(weights, int32(*bc.Weight))
	}
	if cfg.Algorithm == "maglev" {
		ring, err := newSourceRing(next.backends, weights)
		if err != nil {
			return nil, fmt.Errorf("balancer %s: %w", cfg.Name, err)
		}
		next.ring = ring
	}
	ch.next = next
	b.mu.Lock()
	defer b.mu.Unlock()
	want := map[string]bool{}
	for _, addr := range cfg.Listen {
		want[addr] = true
		if b.listeners[addr] != nil {
			continue
		}
		ls, err := listenGroup(addr, len(b.evloops))
		if err != nil {
			ch.abortLocked()
			return nil, fmt.Errorf("balancer %s: %w", cfg.Name, err)
		}
		ch.opened[addr] = ls
	}
	for addr := range b.listeners {
		if !want[addr] {
			ch.closing = append(ch.closing, addr)
		}
	}
	oldMon := ""
	if b.monitor != nil {
		oldMon = b.monitor.addr
	}
	switch {
	case cfg.Monitor == nil:
		ch.dropMon = b.monitor != nil
	case cfg.Monitor.Listen != oldMon:
		m, err := newMonitor(cfg.Monitor.Listen, b)
		if err != nil {
			ch.abortLocked()
			return nil, fmt.Errorf("balancer %s: monitor: %w", cfg.Name, err)
		}
		ch.monitor, ch.dropMon = m, b.monitor != nil
	}
	return ch, nil
}

// Abort undoes Plan.
func (ch *Change) Abort() {
	ch.b.mu.Lock()
	defer ch.b.mu.Unlock()
	ch.abortLocked()
}

func (ch *Change) abortLocked() {
	for _, ls := range ch.opened {
		closeAll(ls)
	}
	if ch.monitor != nil {
		ch.monitor.close()
	}
}

// Commit switches new connections to the new config. Established
// connections keep their backend; listeners that stay were never closed.
func (ch *Change) Commit() { ch.commit(true) }

func (ch *Change) commit(start bool) {
	b := ch.b
	for be, w := range ch.weights {
		be.weight.Store(w[0])
		be.maxConn.Store(w[1])
		if ch.newBackend[be] {
			// As HAProxy: up until checks say otherwise. It is not
			// in rotation yet, so this is its first state.
			be.up.Store(ch.upAtStart == nil || ch.upAtStart(be.Addr))
		}
	}
	b.cur.Store(ch.next)
	b.mu.Lock()
	defer b.mu.Unlock()
	for addr, ls := range ch.opened {
		b.listeners[addr] = ls
		if start {
			b.startAccept(addr, ls)
		}
	}
	for _, addr := range ch.closing {
		b.stopAccept(addr, b.listeners[addr])
		delete(b.listeners, addr)
	}
	if ch.dropMon {
		b.monitor.close()
		b.monitor = nil
	}
	if ch.monitor != nil {
		b.monitor = ch.monitor
		if start {
			b.monitor.start(&b.monitorRun)
		}
	}
	if m := b.monitor; m != nil {
		m.path.Store(&ch.next.cfg.Monitor.Path)
	}
}

// SetHealth marks the backend at addr up or down, for reason (its
// check's last error, when down); unknown addresses are ignored (the
// backend left the config). A backend going down leaves rotation for new
// connections; with close_on_down its connections close.
func (b *Balancer) SetHealth(addr netip.AddrPort, up bool, reason string) {
	s := b.cur.Load()
	for _, be := range s.backends {
		if be.Addr != addr || be.up.Swap(up) == up {
			continue
		}
		now := time.Now()
		c := statelog.Change{Event: statelog.EventBackend, Prev: statelog.UpDown(!up), State: statelog.UpDown(up), Reason: reason}
		if prev := be.healthAt.Swap(now.UnixNano()); up && prev != 0 {
			c.DownFor = now.Sub(time.Unix(0, prev))
		}
		statelog.Log(b.log, statelog.Level(up), "backend "+c.State, c, "backend", addr.String(), "healthy_backends", b.healthy())
		if !up && s.cfg.CloseOnDown {
			b.eachLoop(func(_ int, lp *evloop) {
				lp.abortWhere(func(c *conn) bool { return c.be == be && c.state == stOpen })
			})
		}
	}
}

// SetAdmin sets the admin state of the backend at addr. Drain and disable
// take it out of rotation for new connections; disable also closes its
// connections, established ones included. A reload keeps the state while
// the address stays in the config.
func (b *Balancer) SetAdmin(addr netip.AddrPort, st AdminState) error {
	var be *Backend
	for _, x := range b.cur.Load().backends {
		if x.Addr == addr {
			be = x
		}
	}
	if be == nil {
		return fmt.Errorf("balancer %s: %w %s", b.name, ErrUnknownBackend, addr)
	}
	if old := AdminState(be.admin.Swap(uint32(st))); old != st {
		statelog.Log(b.log, slog.LevelInfo, "backend admin state change", statelog.Change{Event: statelog.EventBackendAdmin,
			Prev: old.String(), State: st.String(), Reason: "set by an operator (vigil backend)"},
			"backend", addr.String(), "healthy_backends", b.healthy())
	}
	if st == AdminDisabled {
		// Every connection of the backend, those still connecting too:
		// disabled means no traffic reaches it from now on.
		b.eachLoop(func(_ int, lp *evloop) {
			lp.abortWhere(func(c *conn) bool { return c.be == be && c.state != stDone })
		})
	}
	return nil
}

// healthy counts backends that can take new connections.
func (b *Balancer) healthy() int {
	n := 0
	for _, be := range b.cur.Load().backends {
		if be.up.Load() && be.weight.Load() > 0 && AdminState(be.admin.Load()) == AdminReady {
			n++
		}
	}
	return n
}

// Shutdown stops accepting, waits for connections to finish until ctx ends,
// then closes the rest.
func (b *Balancer) Shutdown(ctx context.Context) {
	b.mu.Lock()
	b.closed = true
	for addr, ls := range b.listeners {
		b.stopAccept(addr, ls)
		delete(b.listeners, addr)
	}
	if b.monitor != nil {
		b.monitor.close()
		b.monitor = nil
	}
	b.mu.Unlock()
	b.monitorRun.Wait()
	done := make(chan struct{})
	go func() { b.serving.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	var n atomic.Int64
	b.eachLoop(func(_ int, lp *evloop) {
		lp.abortWhere(func(c *conn) bool {
			mine := c.b == b
			if mine {
				n.Add(1)
			}
			return mine
		})
	})
	b.log.Info("closed connections still open at shutdown", "connections", n.Load())
	<-done
}

// refuse resets a connection over max_conn at once, so the client fails fast
// instead of waiting in a queue, and logs at most once a second.
func (b *Balancer) refuse(fd int, s *settings) {
	sysReset(fd)
	sysClose(fd)
	n := b.refused.Add(1)
	now := time.Now().UnixNano()
	if last := b.lastRefusedLog.Load(); now-last > int64(time.Second) && b.lastRefusedLog.CompareAndSwap(last, now) {
		b.log.Warn("connection refused: frontend at max_conn", "max_conn", s.cfg.MaxConn, "refused_total", n)
	}
}

// pick chooses a backend for a new connection from src, skipping tried
// ones, and counts the connection on it before anyone else can pick.
func (b *Balancer) pick(s *settings, tried []*Backend, src netip.Addr) *Backend {
	b.pickMu.Lock()
	defer b.pickMu.Unlock()
	eligible := func(be *Backend) bool {
		if !be.up.Load() || be.weight.Load() <= 0 || AdminState(be.admin.Load()) != AdminReady {
			return false
		}
		if m := be.maxConn.Load(); m > 0 && be.active.Load() >= int64(m) {
			return false
		}
		for _, t := range tried {
			if t == be {
				return false
			}
		}
		return true
	}
	var best *Backend
	n := len(s.backends)
	switch s.cfg.Algorithm {
	case "maglev":
		best = s.ring.pick(src, eligible)
	case "leastconn":
		// Fewest connections per unit of weight; ties rotate.
		start := b.rrNext
		b.rrNext++
		for i := range n {
			be := s.backends[(start+i)%n]
			if eligible(be) && (best == nil ||
				be.active.Load()*int64(best.weight.Load()) < best.active.Load()*int64(be.weight.Load())) {
				best = be
			}
		}
	default:
		// Smooth weighted round robin: weights 5,1,1 give a,a,b,a,c,a,a.
		total := 0
		for _, be := range s.backends {
			if !eligible(be) {
				continue
			}
			w := int(be.weight.Load())
			be.cw += w
			total += w
			if best == nil || be.cw > best.cw {
				best = be
			}
		}
		if best != nil {
			best.cw -= total
		}
	}
	if best != nil {
		raiseMax(&best.maxActive, best.active.Add(1))
	}
	return best
}

// raiseMax records n in max if it is more than max holds.
func raiseMax(max *atomic.Int64, n int64) {
	for m := max.Load(); n > m && !max.CompareAndSwap(m, n); m = max.Load() {
	}
}

// monitor answers HTTP health questions about the balancer.
type monitor struct {
	addr string
	path atomic.Pointer[string]
	l    net.Listener
	srv  *http.Server
}

func newMonitor(addr string, b *Balancer) (*monitor, error) {
	l, err := listen(addr, false)
	if err != nil {
		return nil, err
	}
	m := &monitor{addr: addr, l: l}
	p := config.DefaultMonitorPath
	m.path.Store(&p)
	m.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != *m.path.Load() {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if n := b.healthy(); n > 0 {
			fmt.Fprintf(w, "ok: %d healthy backends\n", n)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "no healthy backend")
	})}
	return m, nil
}

func (m *monitor) start(wg *sync.WaitGroup) { wg.Go(func() { m.srv.Serve(m.l) }) }

func (m *monitor) close() {
	m.srv.Close()
	m.l.Close() // when never started
}

// Status is a balancer's state for status output and metrics.
type Status struct {
	Name           string
	Listen         []string
	Algorithm      string
	Active         int64
	MaxActive      int64
	Accepted       uint64
	Refused        uint64
	NoBackend      uint64
	BadProxyHeader uint64
	// FDExhaustedAccept and FDExhaustedConnect count failures of accept()
	// and of the backend socket() for want of descriptors or socket memory
	// (EMFILE, ENFILE, ENOBUFS, ENOMEM): the node's limit, counted neither
	// as a backend's connect error nor as no backend.
	FDExhaustedAccept  uint64
	FDExhaustedConnect uint64
	Backends           []BackendStatus
}

// BackendStatus is one backend's state and counters.
type BackendStatus struct {
	Address       string
	Up            bool
	Admin         AdminState
	Weight        int
	Active        int64
	Total         uint64
	MaxActive     int64
	ConnectErrors uint64
	// ConnectTimeouts are the ConnectErrors that timed out.
	ConnectTimeouts uint64
	BytesIn         uint64
	BytesOut        uint64
}

// Status returns the current state.
func (b *Balancer) Status() Status {
	s := b.cur.Load()
	st := Status{Name: b.name, Listen: s.cfg.Listen, Algorithm: s.cfg.Algorithm, Active: b.active.Load(), MaxActive: b.maxActive.Load(),
		Accepted: b.accepted.Load(), Refused: b.refused.Load(), NoBackend: b.noBackend.Load(),
		BadProxyHeader: b.badProxyHeader.Load(), FDExhaustedAccept: b.exhaust.accept.Load(), FDExhaustedConnect: b.exhaust.connect.Load()}
	for _, be := range s.backends {
		st.Backends = append(st.Backends, BackendStatus{Address: be.Addr.String(), Up: be.up.Load(),
			Admin: AdminState(be.admin.Load()), Weight: int(be.weight.Load()), Active: be.active.Load(), Total: be.total.Load(),
			ConnectErrors: be.connectErrors.Load(), ConnectTimeouts: be.connectTimeouts.Load(), MaxActive: be.maxActive.Load(),
			BytesIn: be.bytesIn.Load(), BytesOut: be.bytesOut.Load()})
	}
	return st
}

// DrainTimeout is the config's drain_timeout.
func (b *Balancer) DrainTimeout() time.Duration { return b.cur.Load().cfg.DrainTimeout }
