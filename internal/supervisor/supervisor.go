// Package supervisor turns a validated config into running components, and
// shuts them down in reverse order: instances first (priority-0 adverts, VIPs
// removed), then sockets, then hooks.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/bgp"
	"github.com/vigil-lb/vigil/internal/check"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/garp"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/notify"
	"github.com/vigil-lb/vigil/internal/proxy"
	"github.com/vigil-lb/vigil/internal/vip"
	"github.com/vigil-lb/vigil/internal/vrrp"
	"github.com/vigil-lb/vigil/internal/xdp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Supervisor owns every component of one running config.
type Supervisor struct {
	cfg *config.Config
	log *slog.Logger

	all        []config.Instance // configured and generated from pools, in s.instances order
	transports map[string]*vrrp.Transport
	announcers map[string]*garp.Announcer
	instances  []*vrrp.Instance
	hooks      map[string]*notify.Hook // instance or group name -> hook
	groups     []*syncGroup
	vipSets    []*vip.Set
	guard      *vip.Guard
	bus        *check.Bus
	// store holds the backends' health, from the bus, for the fleet.
	store   *health.Store
	fleet   *proxy.Fleet
	dsr     *dsrPlane      // nil without dsr balancers
	dsrDown []api.Balancer // the dsr balancers when they could not start, and why, for status
	bgp     *bgp.Speaker
	// announcements are the bgp prefixes; vrrpChanged wakes the Run loop
	// to re-evaluate them when an instance changes state.
	announcements []*announcement
	vrrpChanged   chan struct{}
	specs         []checkSpec // checks to run, computed at New and at reload
	reloads       chan reloadRequest

	mu     sync.Mutex // guards checks for status readers
	checks map[string]*runningCheck

	// Version is reported in status and metrics.
	Version       string
	started       time.Time
	node, cluster string // fixed: a reload cannot change them
}

// New prepares every component. Before Run it only opens sockets and, for
// accept: false, installs the drop table, so interface and permission errors
// come before any address changes; on error it undoes what it opened.
func New(cfg *config.Config, log *slog.Logger) (*Supervisor, error) {
	s := &Supervisor{cfg: cfg, log: log, transports: map[string]*vrrp.Transport{},
		announcers: map[string]*garp.Announcer{}, hooks: map[string]*notify.Hook{}, bus: check.NewBus(), store: health.New(),
		checks: map[string]*runningCheck{}, reloads: make(chan reloadRequest), started: time.Now(), vrrpChanged: make(chan struct{}, 1),
		node: cfg.Node, cluster: cfg.Cluster}
	if err := s.build(); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *Supervisor) build() error {
	var err error
	if s.specs, err = checkSpecs(s.cfg); err != nil {
		return err
	}
	// Listeners first: a frontend address in use fails before any VRRP socket.
	if s.fleet, err = proxy.NewFleet(s.cfg, s.store, s.log); err != nil {
		return err
	}
	if s.dsr, err = newDSR(s.cfg, s.log); err != nil {
		if !errors.Is(err, xdp.ErrLoad) {
			return err
		}
		// No BPF here: say so, and run everything else. (Reload
		// refuses changes to dsr balancers, so this list stays true.)
		s.log.Error("dsr balancers are not running", "err", err)
		for _, bc := range dsrBalancers(s.cfg) {
			ab := api.Balancer{Name: bc.Name, Listen: bc.Listen, Algorithm: bc.Algorithm, Mode: "dsr", Error: err.Error()}
			for _, be := range bc.Backends {
				ab.Backends = append(ab.Backends, api.Backend{Address: be.Address, Weight: *be.Weight})
			}
			s.dsrDown = append(s.dsrDown, ab)
		}
	}
	s.all = s.cfg.VRRP.All()
	exclude := map[netip.Addr]bool{}
	parsed := make([][]netip.Prefix, len(s.all))
	for i, ic := range s.all {
		for _, v := range ic.VIPs {
			p, _ := config.ParseVIP(v) // validated already
			parsed[i] = append(parsed[i], p)
			// An address owner's VIP is its own address and may be the source.
			exclude[p.Addr()] = ic.Priority != 255
		}
	}
	for i, ic := range s.all {
		key := ic.Path + ".interface"
		if _, err := net.InterfaceByName(ic.Interface); err != nil {
			return fmt.Errorf("%s: no interface %q on this host (line %d)", key, ic.Interface, s.cfg.Line(key))
		}
		is6 := parsed[i][0].Addr().Is6()
		tkey := fmt.Sprintf("%s/%v", ic.Interface, is6)
		tr := s.transports[tkey]
		if tr == nil {
			var err error
			if tr, err = vrrp.OpenTransport(ic.Interface, is6, exclude, s.log); err != nil {
				return fmt.Errorf("vrrp instance %s: %w", ic.Name, err)
			}
			s.transports[tkey] = tr
		}
		ann := s.announcers[ic.Interface]
		if ann == nil {
			ann = garp.NewAnnouncer(ic.Interface)
			s.announcers[ic.Interface] = ann
		}
		if err := ann.Open(!is6, is6); err != nil {
			return fmt.Errorf("vrrp instance %s: %w", ic.Name, err)
		}
		set, err := vip.New(ic.Interface, parsed[i])
		if err != nil {
			return err
		}
		s.vipSets = append(s.vipSets, set)
		in := vrrp.NewInstance(instanceConfig(ic, parsed[i]), tr, set, ann, s.log)
		in.Probe = func(ctx context.Context, ip netip.Addr) ([]net.HardwareAddr, error) {
			r, err := garp.Probe(ctx, ic.Interface, ip, probeWait)
			return r.MACs, err
		}
		if err := tr.Register(uint8(ic.VRID), in.Receive()); err != nil {
			return err
		}
		s.instances = append(s.instances, in)
		s.hooks[ic.Name] = notify.New(ic.Notify, ic.NotifyTimeout, s.log)
	}
	if err := s.acceptMode(parsed); err != nil {
		return err
	}
	byName := map[string]*vrrp.Instance{}
	for _, in := range s.instances {
		byName[in.Name()] = in
	}
	for _, g := range s.cfg.VRRP.SyncGroups {
		sg := &syncGroup{name: g.Name, log: s.log.With("sync_group", g.Name), faulted: map[string]bool{}}
		for _, n := range g.Instances {
			sg.members = append(sg.members, byName[n])
		}
		s.hooks["group/"+g.Name] = notify.New(g.Notify, config.DefaultNotifyTimeout, s.log)
		sg.hook = s.hooks["group/"+g.Name]
		s.groups = append(s.groups, sg)
	}
	groupOf := map[*vrrp.Instance]*syncGroup{}
	for _, g := range s.groups {
		for _, m := range g.members {
			groupOf[m] = g
		}
	}
	for _, in := range s.instances {
		hook, g := s.hooks[in.Name()], groupOf[in]
		in.OnTransition = func(in *vrrp.Instance, t vrrp.Transition) {
			hook.Notify("INSTANCE", in.Name(), t.To.String(), int(t.Priority))
			if g != nil {
				g.transition(in, t)
			}
			select {
			case s.vrrpChanged <- struct{}{}:
			default:
			}
		}
		if g != nil {
			in.OnOwnFault = g.ownFault
		}
	}
	return nil
}

// acceptMode installs the drop rules for instances with accept: false. The
// address owner (priority 255) always accepts, as the RFC says.
func (s *Supervisor) acceptMode(parsed [][]netip.Prefix) error {
	var drop []netip.Addr
	for i, ic := range s.all {
		if !*ic.Accept && ic.Priority != 255 {
			for _, p := range parsed[i] {
				drop = append(drop, p.Addr())
			}
		}
	}
	if len(drop) == 0 {
		vip.RemoveStaleGuard()
		return nil
	}
	g, err := vip.NewGuard(drop)
	if err != nil {
		return err
	}
	s.guard = g
	return nil
}

func instanceConfig(ic config.Instance, vips []netip.Prefix) vrrp.Config {
	c := vrrp.Config{
		Name: ic.Name, Interface: ic.Interface, VRID: uint8(ic.VRID), Version: uint8(ic.Version),
		Priority: uint8(ic.Priority), Interval: ic.AdvertInterval, Preempt: *ic.Preempt,
		PreemptDelay: ic.PreemptDelay, VIPs: vips, AuthPass: ic.AuthPass,
		GARPCount: *ic.GARP.Count, GARPInterval: ic.GARP.Interval, GARPRefresh: *ic.GARP.Refresh,
	}
	for _, p := range ic.UnicastPeers {
		c.Peers = append(c.Peers, netip.MustParseAddr(p))
	}
	for _, t := range ic.Track.Interfaces {
		c.Track = append(c.Track, vrrp.TrackItem{Kind: "interface", Name: t.Name, Weight: t.Weight})
	}
	for _, t := range ic.Track.Checks {
		c.Track = append(c.Track, vrrp.TrackItem{Kind: "check", Name: t.Name, Weight: t.Weight})
	}
	return c
}

// Run runs everything until ctx ends and returns after a clean shutdown, in
// reverse order of start: instances (priority-0 adverts, VIPs removed), then
// checks and sockets, then the notify hooks, which still run the STOP events.
func (s *Supervisor) Run(ctx context.Context) error {
	var hooks, bg sync.WaitGroup
	hookCtx, stopHooks := context.WithCancel(context.Background())
	for _, h := range s.hooks {
		hooks.Go(func() { h.Run(hookCtx) })
	}
	// One instance failing to start stops the others cleanly.
	ictx, cancel := context.WithCancel(ctx)
	for _, tr := range s.transports {
		bg.Go(tr.Serve)
	}
	links := make(chan netlink.LinkUpdate, 64)
	bg.Go(func() { s.watchLinks(ictx, links) })
	events := s.bus.Subscribe()
	// Balancers going in and out of rotation change bgp announcements.
	healthSub := s.store.Subscribe()
	defer healthSub.Close()
	s.mu.Lock()
	s.syncChecks(ictx, s.specs)
	s.mu.Unlock()
	// The fleet runs until the shutdown point where it drains, below.
	fleetCtx, stopFleet := context.WithCancel(context.Background())
	defer stopFleet()
	fleetDone := make(chan struct{})
	errs := make(chan error, len(s.instances)+1)
	go func() {
		defer close(fleetDone)
		if err := s.fleet.Run(fleetCtx); err != nil {
			errs <- err
		}
	}()
	if s.dsr != nil {
		bg.Go(func() { s.dsr.run(ictx) })
	}

	var instances sync.WaitGroup
	for _, in := range s.instances {
		instances.Go(func() {
			if err := in.Run(ictx); err != nil {
				errs <- err
			}
		})
	}
	done := make(chan struct{})
	go func() { instances.Wait(); close(done) }()
	// Instances end only on errors or ctx; a config of balancers alone has
	// none, so wait on ctx there.
	instancesEnded := (<-chan struct{})(done)
	if len(s.instances) == 0 {
		instancesEnded = nil
	}

	s.startBGP(ictx)
	trackers := s.interfaceTrackers()
	linkUp := map[string]bool{}
	for name, ins := range trackers {
		if _, err := net.InterfaceByName(name); err != nil {
			// No update will ever come for it: it is down until it appears.
			s.log.Warn("tracked interface does not exist: counted as down", "interface", name)
			linkUp[name] = false
			for _, in := range ins {
				in.SetTracked("interface", name, false)
			}
		}
	}
	var err error
loop:
	for {
		select {
		case u := <-links:
			// A node may have hundreds of links (pod veths): pass on only
			// changes of the ones instances track, to those instances.
			name := u.Attrs().Name
			up := u.Attrs().Flags&net.FlagUp != 0 && u.Attrs().RawFlags&unix.IFF_RUNNING != 0
			if was, seen := linkUp[name]; seen && was == up {
				continue
			}
			linkUp[name] = up
			for _, in := range trackers[name] {
				in.SetTracked("interface", name, up)
			}
		case e := <-events:
			if name, addr, ok := parseBalancerCheckName(e.Name); ok {
				// The fleet reads its backends' health from the
				// store; the dsr plane ignores names not its own.
				s.store.Set(health.BackendKey(name, addr), health.State{Up: e.Up})
				if s.dsr != nil {
					s.dsr.setHealth(name, addr, e.Up)
				}
				s.updateBGP()
				continue
			}
			for _, in := range s.instances {
				in.SetTracked("check", e.Name, e.Up)
			}
			s.updateBGP()
		case <-healthSub.Wake():
			for _, c := range healthSub.Changes() {
				if c.Key.Kind == health.Balancer {
					s.updateBGP()
					break
				}
			}
		case req := <-s.reloads:
			req.result <- s.reload(ictx, req.cfg)
		case <-s.vrrpChanged:
			s.updateBGP()
		case err = <-errs:
			break loop
		case <-instancesEnded:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	// Withdraw from routers first, so traffic moves before anything stops.
	s.mu.Lock()
	sp := s.bgp
	s.bgp = nil // status stops asking the stopped speaker
	s.mu.Unlock()
	if sp != nil {
		if err := sp.Stop(context.Background()); err != nil {
			s.log.Debug("bgp stop", "err", err)
		}
	}
	cancel()
	// Balancers drain while the instances give up their VIPs.
	stopFleet()
	<-done
	<-fleetDone
	s.mu.Lock()
	s.stopChecks()
	s.mu.Unlock()
	s.close()
	bg.Wait()
	stopHooks()
	hooks.Wait()
	return err
}

// interfaceTrackers maps each interface name to the instances that track it,
// their own interface included.
func (s *Supervisor) interfaceTrackers() map[string][]*vrrp.Instance {
	out := map[string][]*vrrp.Instance{}
	for i, ic := range s.all {
		in := s.instances[i]
		out[ic.Interface] = append(out[ic.Interface], in)
		for _, t := range ic.Track.Interfaces {
			if t.Name != ic.Interface {
				out[t.Name] = append(out[t.Name], in)
			}
		}
	}
	return out
}

// probeWait is how long a new master listens for other hosts answering ARP
// for its VIPs.
const probeWait = 500 * time.Millisecond

// watchLinks forwards link updates until ctx ends. The netlink library ends a
// subscription on any receive error; a new one lists every link again, so no
// change is lost for good.
func (s *Supervisor) watchLinks(ctx context.Context, out chan<- netlink.LinkUpdate) {
	for ctx.Err() == nil {
		raw := make(chan netlink.LinkUpdate, 64)
		done := make(chan struct{})
		err := netlink.LinkSubscribeWithOptions(raw, done, netlink.LinkSubscribeOptions{ListExisting: true,
			ErrorCallback: func(err error) { s.log.Debug("link monitor resubscribes", "err", err) }})
		if err != nil {
			s.log.Warn("link monitor", "err", err)
		} else {
		forward:
			for {
				select {
				case u, ok := <-raw:
					if !ok {
						break forward
					}
					select {
					case out <- u:
					case <-ctx.Done():
					}
				case <-ctx.Done():
					break forward
				}
			}
		}
		close(done)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close releases what New opened, for a supervisor that will not Run.
func (s *Supervisor) Close() { s.close() }

func (s *Supervisor) close() {
	var errs []error
	for _, tr := range s.transports {
		errs = append(errs, tr.Close())
	}
	for _, a := range s.announcers {
		errs = append(errs, a.Close())
	}
	for _, v := range s.vipSets {
		v.Close()
	}
	if s.guard != nil {
		errs = append(errs, s.guard.Close())
	}
	if s.fleet != nil {
		s.fleet.Close() // no-op after Run; closes listeners of one that never ran
	}
	if s.dsr != nil {
		errs = append(errs, s.dsr.close())
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Debug("close", "err", err)
	}
}
