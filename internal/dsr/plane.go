package dsr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/maglev"
	"github.com/vigil-lb/vigil/internal/statelog"
	"github.com/vigil-lb/vigil/internal/xdp"
)

// Plane keeps the XDP program's maps in step with the dsr balancers:
// backend MACs from the neighbour table (or an ARP probe), Maglev tables
// rebuilt from the backends that are up and have a MAC. A config without
// dsr balancers gives a plane that runs nothing; so does a host that cannot
// load the program, whose plane reports its balancers as not running.
type Plane struct {
	k     Kernel
	store *health.Store
	log   *slog.Logger
	dp    Dataplane // nil: no dsr balancer, or the program did not load
	// loadErr is why the program did not load; nil when it did, or was
	// not needed.
	loadErr error

	mu      sync.Mutex        // guards what follows; the maps are used under it
	modes   map[string]string // interface -> XDP mode in use
	cfgs    []config.Balancer // the dsr balancers of the config in force
	down    []api.Balancer    // when the program did not load: the balancers, and why
	bals    []*balancer
	closed  bool
	slots   *backendSlots
	ids     *serviceIDs
	resolve chan struct{} // a reload added backends: resolve their MACs now
}

var _ component.Component = (*Plane)(nil)

type balancer struct {
	cfg      config.Balancer
	services []xdp.Service
	backends []*backend
	state    health.State // last published under BalancerKey
	// notes say which backends of a Service's balancer were left out, and
	// why (not one hop away, an address of this host).
	notes []string
}

type backend struct {
	addr   netip.AddrPort
	idx    uint32
	weight int
	up     bool
	upAt   time.Time        // when up last changed; zero: never
	mac    net.HardwareAddr // nil until resolved
	link   backendLink      // where it is reached
}

// usable: in the Maglev table.
func (be *backend) usable() bool { return be.up && be.mac != nil && be.weight > 0 }

// New loads the program, attaches it and writes every service (with no
// backend until MACs are known), and publishes every dsr balancer as down
// until one of its backends has a MAC. Errors name the config key. When
// the program cannot load (xdp.ErrLoad), the plane runs nothing and
// reports its balancers as not running, with the reason; New logs it and
// returns no error, so that the rest of the daemon runs. With
// kubernetes.services.dataplane dsr the program is loaded even before any
// Service needs it, so that Services' balancers can come and go.
func New(cfg *config.Config, k Kernel, store *health.Store, log *slog.Logger) (*Plane, error) {
	bals, at := balancersAt(cfg)
	p := &Plane{k: k, store: store, log: log, modes: map[string]string{}, cfgs: bals,
		slots: &backendSlots{}, ids: &serviceIDs{}, resolve: make(chan struct{}, 1)}
	if len(bals) == 0 && !servesServices(cfg) {
		return p, nil
	}
	links, notes, err := p.links(bals, at)
	if err != nil {
		return nil, err
	}
	dp, err := k.LoadXDP()
	if err != nil {
		if !errors.Is(err, xdp.ErrLoad) {
			return nil, err
		}
		p.loadErr = err
		p.notRunning(err)
		return p, nil
	}
	p.dp = dp // the plane is not shared yet: no lock
	for _, bc := range bals {
		if err := p.attachLocked(bc, bals, links); err != nil {
			dp.Close()
			return nil, fmt.Errorf("%s: %w", where(cfg, bc, at), err)
		}
		b, err := p.newBalancer(bc, links[bc.Name], notes[bc.Name], p.ids, p.slots)
		if err != nil {
			dp.Close()
			return nil, fmt.Errorf("balancers[%d] (%s): %w", at[bc.Name], bc.Name, err)
		}
		if len(b.notes) > 0 {
			p.logNotes(bc, b.notes)
		}
		p.bals = append(p.bals, b)
		if err := p.write(b); err != nil {
			dp.Close()
			return nil, err
		}
	}
	p.readHealthLocked()
	p.publishLocked()
	return p, nil
}

// servesServices reports whether the config's LoadBalancer Services use
// the dsr dataplane.
func servesServices(cfg *config.Config) bool {
	k := cfg.Kubernetes
	return k != nil && k.Services != nil && k.Services.Dataplane == "dsr"
}

// where names a balancer's interface key for an error: the config key and
// line, or the Service a generated balancer serves.
func where(cfg *config.Config, bc config.Balancer, at map[string]int) string {
	if bc.Service != "" {
		return fmt.Sprintf("balancer %s (Service %s)", bc.Name, bc.Service)
	}
	key := fmt.Sprintf("balancers[%d].interface", at[bc.Name])
	return fmt.Sprintf("%s (%s, line %d)", key, bc.Name, cfg.Line(key))
}

// attachLocked attaches the program to bc's interface unless it runs
// there already, in the mode bc asks for, or generic where native would
// drop frames or auto should avoid it; bals and links are every balancer
// of the config (what the program will send on the interface). The caller
// holds p.mu or owns p.
func (p *Plane) attachLocked(bc config.Balancer, bals []config.Balancer, links map[string]map[netip.Addr]backendLink) error {
	if _, ok := p.modes[bc.Interface]; ok {
		return nil
	}
	lk, err := p.k.LinkByName(bc.Interface)
	if err != nil {
		return fmt.Errorf("interface %s: %w", bc.Interface, err)
	}
	want := bc.XDPMode
	if want != "generic" {
		own, e := p.describeLink(bc.Interface), sendsOn(bals, links, bc.Interface)
		if why := nativeDropsFrames(own, e, p.describeLink); why != "" {
			if want == "native" {
				return fmt.Errorf("interface %s: xdp: native mode would drop frames: %s (xdp_mode auto or generic runs the program in generic mode)", bc.Interface, why)
			}
			p.log.Info("xdp: generic mode, native would drop frames", "interface", bc.Interface, "why", why)
			want = "generic"
		} else if why := autoAvoidsNative(own, e, p.describeLink); want == "auto" && why != "" {
			p.log.Info("xdp: generic mode (xdp_mode native to insist)", "interface", bc.Interface, "why", why)
			want = "generic"
		}
	}
	mode, err := p.dp.Attach(lk.Index, want)
	if err != nil {
		return fmt.Errorf("interface %s: %w", bc.Interface, err)
	}
	p.modes[bc.Interface] = mode
	p.log.Info("xdp attached", "interface", bc.Interface, "mode", mode)
	return nil
}

// newBalancer makes bc's balancer with service ids and backend indexes
// from ids and slots; backends missing from links are left out (notes say
// why).
func (p *Plane) newBalancer(bc config.Balancer, links map[netip.Addr]backendLink, notes []string, ids *serviceIDs, slots *backendSlots) (*balancer, error) {
	b := &balancer{cfg: bc, notes: notes}
	proto := uint8(6)
	if bc.Protocol == "udp" {
		proto = 17
	}
	for _, l := range bc.Listen {
		ap, _ := config.ParseListen(l) // validated
		id, ok := ids.take()
		if !ok {
			return nil, fmt.Errorf("listen %s: the program steers at most %d addresses:ports, all in use", l, xdp.MaxServices)
		}
		b.services = append(b.services, xdp.Service{ID: id, VIP: ap.Addr(), Port: ap.Port(), Proto: proto})
	}
	for _, be := range bc.Backends {
		addr := netip.MustParseAddrPort(be.Address)
		link, ok := links[addr.Addr()]
		if !ok {
			continue // left out, with a note
		}
		idx, ok := slots.take()
		if !ok {
			return nil, fmt.Errorf("backend %s: all %d dsr backend slots are in use", be.Address, xdp.MaxBackends)
		}
		b.backends = append(b.backends, &backend{addr: addr, idx: idx, weight: *be.Weight, up: true, link: link})
	}
	return b, nil
}

// notRunning makes p the plane of balancers that could not start: it logs
// why, keeps their status and publishes them as down. (Plan refuses
// changes to the config's own, so the status stays true; a Service's come
// and go, not running either.)
func (p *Plane) notRunning(err error) {
	p.log.Error("dsr balancers are not running", "err", err)
	p.setDownLocked(p.cfgs)
}

// setDownLocked makes cfgs the balancers that are not running: their
// status, and their keys in the store down with the reason; the keys of
// balancers no longer there go. The caller holds p.mu or owns p.
func (p *Plane) setDownLocked(cfgs []config.Balancer) {
	for _, old := range p.cfgs {
		if !slices.ContainsFunc(cfgs, func(bc config.Balancer) bool { return bc.Name == old.Name }) {
			p.store.Delete(health.BalancerKey(old.Name))
		}
	}
	p.cfgs, p.down = cfgs, nil
	for _, bc := range cfgs {
		ab := api.Balancer{Name: bc.Name, Listen: bc.Listen, Algorithm: bc.Algorithm, Mode: "dsr", Error: p.loadErr.Error()}
		for _, be := range bc.Backends {
			ab.Backends = append(ab.Backends, api.Backend{Address: be.Address, Weight: *be.Weight})
		}
		p.down = append(p.down, ab)
		p.store.Set(health.BalancerKey(bc.Name), health.State{Reason: p.loadErr.Error()})
	}
}

// balancersAt returns the config's dsr balancers and each one's index in
// cfg.Balancers, for errors that name the config key.
func balancersAt(cfg *config.Config) ([]config.Balancer, map[string]int) {
	var bals []config.Balancer
	at := map[string]int{}
	for i, b := range cfg.Balancers {
		if b.Mode == "dsr" {
			bals = append(bals, b)
			at[b.Name] = i
		}
	}
	return bals, at
}

// links finds, per balancer, where each backend is reached: they must be
// one Ethernet hop from this host. A Service's balancer leaves out the
// backends that are not, and notes say why, by balancer.
func (p *Plane) links(bals []config.Balancer, at map[string]int) (map[string]map[netip.Addr]backendLink, map[string][]string, error) {
	links, notes := map[string]map[netip.Addr]backendLink{}, map[string][]string{}
	for _, b := range bals {
		l, n, err := p.backendLinks(b)
		if err != nil {
			return nil, nil, fmt.Errorf("balancers[%d] (%s): %w", at[b.Name], b.Name, err)
		}
		links[b.Name], notes[b.Name] = l, n
	}
	return links, notes, nil
}

// backendLink is the interface a dsr backend is reached through.
type backendLink struct {
	name    string
	ifindex uint32           // 0: the balancer's own interface (XDP_TX)
	mac     net.HardwareAddr // the interface's, the frames' new source
}

// backendLinks finds, for every backend, the interface with a subnet that
// holds it: the balancer's interface first (frames go back out with
// XDP_TX), else another one (frames are redirected to it). A backend on no
// subnet of this host is an error: mode dsr sends it Ethernet frames. A
// Service's balancer (endpoints come and go with the cluster) leaves such
// a backend out instead, and one that is an address of this host (the
// program cannot send frames to its own host), and says so in a note.
func (p *Plane) backendLinks(b config.Balancer) (map[netip.Addr]backendLink, []string, error) {
	own, err := p.k.LinkByName(b.Interface)
	if err != nil {
		return nil, nil, fmt.Errorf("interface %s: %w", b.Interface, err)
	}
	addrs, err := p.k.Addrs()
	if err != nil {
		return nil, nil, fmt.Errorf("addresses: %w", err)
	}
	out := map[netip.Addr]backendLink{}
	var notes []string
	for _, be := range b.Backends {
		ip := netip.MustParseAddrPort(be.Address).Addr()
		found, local := -1, false
		for _, a := range addrs {
			if a.Prefix.Masked().Contains(ip) && (found < 0 || a.LinkIndex == own.Index) {
				found = a.LinkIndex
			}
			local = local || a.Prefix.Addr() == ip
		}
		switch {
		case b.Service != "" && local:
			notes = append(notes, fmt.Sprintf("endpoint %s left out: it is an address of this host, and the XDP program sends frames to other hosts only", be.Address))
		case b.Service != "" && found < 0:
			notes = append(notes, fmt.Sprintf("endpoint %s left out: it is not on a subnet of %s or of another interface, and dataplane dsr sends it frames directly, so it must be one Ethernet hop away", be.Address, b.Interface))
		case found < 0:
			return nil, nil, fmt.Errorf("backend %s is not on a subnet of %s or of another interface: mode dsr sends it frames directly, so it must be one Ethernet hop away", be.Address, b.Interface)
		case found == own.Index:
			out[ip] = backendLink{name: b.Interface}
		default:
			lk, err := p.k.LinkByIndex(found)
			if err != nil {
				return nil, nil, fmt.Errorf("backend %s: interface %d: %w", be.Address, found, err)
			}
			out[ip] = backendLink{name: lk.Name, ifindex: uint32(found), mac: lk.MAC}
		}
	}
	return out, notes, nil
}

// write rebuilds a balancer's Maglev table from its usable backends and
// writes it for every service. The caller holds p.mu or owns p.
func (p *Plane) write(b *balancer) error {
	var members []maglev.Backend
	var index []*backend
	for _, be := range b.backends {
		if be.usable() {
			members = append(members, maglev.Backend{Name: be.addr.String(), Weight: uint32(be.weight)})
			index = append(index, be)
		}
	}
	var tb *maglev.Table
	var idx []uint32
	if len(members) > 0 {
		var err error
		if tb, err = maglev.New(members, xdp.RingSize); err != nil {
			return fmt.Errorf("balancer %s: %w", b.cfg.Name, err)
		}
		byName := map[string]uint32{}
		for _, be := range index {
			byName[be.addr.String()] = be.idx
		}
		for _, m := range tb.Backends() {
			idx = append(idx, byName[m.Name])
		}
	}
	for _, s := range b.services {
		s.Table, s.Index = tb, idx
		if err := p.dp.SetService(s); err != nil {
			return fmt.Errorf("balancer %s: %w", b.cfg.Name, err)
		}
	}
	return nil
}

// Name names the component.
func (p *Plane) Name() string { return "dsr" }

// Run resolves backend MACs and follows the health store's state of its
// backends until ctx ends, then detaches the program and removes its
// balancers from the store. A plane that runs nothing waits for ctx.
func (p *Plane) Run(ctx context.Context) error {
	if p.dp == nil {
		<-ctx.Done()
		return p.Close()
	}
	sub := p.store.Subscribe()
	defer sub.Close()
	var wg sync.WaitGroup
	wg.Go(func() { p.resolveLoop(ctx) })
	wg.Go(func() { p.followHealth(ctx, sub) })
	wg.Wait()
	return p.Close()
}

// resolveLoop resolves backend MACs until ctx ends: unresolved ones every
// second and at once when a reload adds some, all of them every 30 s (a
// replaced NIC changes its MAC).
func (p *Plane) resolveLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for n := 0; ; n++ {
		p.resolveMACs(ctx, n%30 == 0)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.resolve:
		}
	}
}

// followHealth applies the store's state of the plane's backends: a
// backend whose key is down leaves its balancer's table; one whose key is
// up or unknown is in it (once its MAC is known).
func (p *Plane) followHealth(ctx context.Context, sub *health.Subscription) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.Wake():
		}
		// Read under p.mu, so a reload's commit, which reads the store
		// too, never sees a newer state than the one applied after it.
		p.mu.Lock()
		if !p.closed {
			p.applyHealthLocked(sub.Changes())
		}
		p.mu.Unlock()
	}
}

func (p *Plane) applyHealthLocked(changes []health.Change) {
	changed := map[*balancer]bool{}
	for _, c := range changes {
		if c.Key.Kind != health.Backend {
			continue
		}
		b := p.find(c.Key.Name)
		if b == nil {
			continue
		}
		up := !c.Known || c.State.Up
		for _, be := range b.backends {
			if be.addr == c.Key.Addr && be.up != up {
				be.up = up
				changed[b] = true
				now := time.Now()
				ch := statelog.Change{Event: statelog.EventBackend, Prev: statelog.UpDown(!up), State: statelog.UpDown(up), Reason: c.State.Reason}
				if up && !be.upAt.IsZero() {
					ch.DownFor = now.Sub(be.upAt)
				}
				be.upAt = now
				statelog.Log(p.log, statelog.Level(up), "backend "+ch.State, ch, "balancer", b.cfg.Name, "backend", be.addr.String())
			}
		}
	}
	p.rewriteLocked(changed)
}

// readHealthLocked sets every backend's state from the store: down when
// its key says so, else up.
func (p *Plane) readHealthLocked() {
	for _, b := range p.bals {
		for _, be := range b.backends {
			st, known := p.store.Get(health.BackendKey(b.cfg.Name, be.addr))
			be.up = !known || st.Up
		}
	}
}

// rewriteLocked writes the tables of the changed balancers and publishes
// every balancer's state.
func (p *Plane) rewriteLocked(changed map[*balancer]bool) {
	for _, b := range p.bals { // in config order
		if changed[b] {
			if err := p.write(b); err != nil {
				p.log.Warn("dsr table", "err", err)
			}
		}
	}
	p.publishLocked()
}

// publishLocked sets each balancer's key in the store: up while a backend
// is in its table, else down with the reason.
func (p *Plane) publishLocked() {
	for _, b := range p.bals {
		st := b.health()
		if st != b.state {
			statelog.Log(p.log, statelog.Level(st.Up), "balancer "+statelog.UpDown(st.Up), statelog.Change{Event: statelog.EventBalancer,
				Prev: statelog.UpDown(b.state.Up), State: statelog.UpDown(st.Up), Reason: st.Reason}, "balancer", b.cfg.Name)
		}
		b.state = st
		p.store.Set(health.BalancerKey(b.cfg.Name), st) // the store ignores a Set that changes nothing
	}
}

// Reasons a dsr balancer is down.
const (
	reasonNoWeight = "no backend with a weight above 0"
	reasonAllDown  = "every backend is down"
	reasonNoMAC    = "no backend that is up has a known MAC yet (neighbour table or ARP)"
)

func (b *balancer) health() health.State {
	weighted, up := false, false
	for _, be := range b.backends {
		if be.usable() {
			return health.State{Up: true}
		}
		weighted = weighted || be.weight > 0
		up = up || (be.up && be.weight > 0)
	}
	switch {
	case !weighted:
		return health.State{Reason: reasonNoWeight}
	case !up:
		return health.State{Reason: reasonAllDown}
	}
	return health.State{Reason: reasonNoMAC}
}

func (p *Plane) resolveMACs(ctx context.Context, all bool) {
	// Probing takes time (ARP waits): ask without the lock, so status and
	// health changes never wait on it, then apply what was found.
	type query struct {
		b   *balancer
		be  *backend
		mac net.HardwareAddr
		err error
	}
	var qs []*query
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	for _, b := range p.bals {
		for _, be := range b.backends {
			if be.mac == nil || all {
				qs = append(qs, &query{b: b, be: be})
			}
		}
	}
	p.mu.Unlock()
	// At once, a few at a time: each probe waits out its window, and a
	// Service's new endpoints should not wait one window each.
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxProbes)
	for _, q := range qs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			q.mac, q.err = p.neighbourMAC(ctx, q.be.link.name, q.be.addr.Addr())
		})
	}
	wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	changed := map[*balancer]bool{}
	for _, q := range qs {
		switch {
		case q.err != nil:
			if q.be.mac == nil {
				p.log.Warn("dsr backend MAC unknown: left out of the table until it answers ARP", "balancer", q.b.cfg.Name, "backend", q.be.addr.String(), "err", q.err)
			}
		case q.be.mac.String() == q.mac.String():
		default:
			if err := p.dp.SetBackend(q.be.idx, q.mac, q.be.link.ifindex, q.be.link.mac); err != nil {
				p.log.Warn("dsr backend", "backend", q.be.addr.String(), "err", err)
				continue
			}
			p.log.Info("dsr backend MAC", "balancer", q.b.cfg.Name, "backend", q.be.addr.String(), "mac", q.mac.String(), "interface", q.be.link.name)
			q.be.mac, changed[q.b] = q.mac, true
		}
	}
	p.rewriteLocked(changed)
}

// arpWait is how long an ARP probe for a backend waits for answers;
// maxProbes probes run at once.
const (
	arpWait   = 300 * time.Millisecond
	maxProbes = 32
)

// neighbourMAC finds ip's MAC in the neighbour table, or asks with ARP.
func (p *Plane) neighbourMAC(ctx context.Context, iface string, ip netip.Addr) (net.HardwareAddr, error) {
	lk, err := p.k.LinkByName(iface)
	if err != nil {
		return nil, err
	}
	// A table that cannot be read is no answer either: ask.
	if mac, err := p.k.Neighbour(lk.Index, ip); err == nil && mac != nil {
		return mac, nil
	}
	if ip.Is6() {
		return nil, errors.New("not in the neighbour table")
	}
	macs, err := p.k.ProbeARP(ctx, iface, ip, arpWait)
	if err != nil {
		return nil, err
	}
	if len(macs) == 0 {
		return nil, errors.New("no ARP answer")
	}
	return macs[0], nil
}

// Status reports the dsr balancers and the program's verdict counters.
func (p *Plane) Status() ([]api.Balancer, map[string]uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.loadErr != nil {
		out := make([]api.Balancer, len(p.down))
		for i, ab := range p.down {
			ab.Backends = slices.Clone(ab.Backends)
			out[i] = ab
		}
		return out, nil
	}
	if p.closed || p.dp == nil {
		return nil, nil
	}
	var out []api.Balancer
	for _, b := range p.bals {
		ab := api.Balancer{Name: b.cfg.Name, Listen: b.cfg.Listen, Algorithm: b.cfg.Algorithm, Mode: "dsr",
			XDPMode: p.modes[b.cfg.Interface], Notes: slices.Clone(b.notes)}
		for _, s := range b.services {
			if pk, by, err := p.dp.ServiceCounters(s.ID); err == nil {
				ab.Packets += pk
				ab.Bytes += by
			}
		}
		for _, be := range b.backends {
			ob := api.Backend{Address: be.addr.String(), Up: be.up && be.mac != nil, Weight: be.weight}
			ob.Packets, ob.BytesIn, _ = p.dp.BackendCounters(be.idx) // zero if unreadable
			ab.Backends = append(ab.Backends, ob)
		}
		out = append(out, ab)
	}
	v, _ := p.dp.Counters()
	return out, v
}

// Close detaches the program and removes the balancers' keys from the
// store, for a plane that will not Run (Run does it when ctx ends). Later
// calls of the other methods do nothing.
func (p *Plane) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	for _, bc := range p.cfgs {
		p.store.Delete(health.BalancerKey(bc.Name))
	}
	if p.dp == nil {
		return nil
	}
	return p.dp.Close()
}
