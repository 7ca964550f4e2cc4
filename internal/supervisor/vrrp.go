package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigil-lb/vigil/internal/clock"
	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/garp"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/notify"
	"github.com/vigil-lb/vigil/internal/vip"
	"github.com/vigil-lb/vigil/internal/vrrp"
)

// vrrpGroup is the VRRP component: every instance (configured and from
// pools), their transports, GARP announcers, VIP sets, accept-mode guard,
// sync groups and notify hooks. It reads tracked checks and interfaces
// from the health state and writes each instance's mastership to it.
type vrrpGroup struct {
	// cfg is the running config: a reload may change only instances'
	// unicast peers, and a committed one replaces it. Read and replaced on
	// the supervisor's goroutine (New, Plan, Commit).
	cfg   *config.Config
	store *health.Store
	log   *slog.Logger

	// all are the instances as configured at start, and generated from
	// pools, in instances order. Status reads them from any goroutine, so
	// a reload leaves them as they are: their unicast_peers are those at
	// start, the instances' Status has the ones in force.
	all       []config.Instance
	instances []*vrrp.Instance
	// slots are the L2 slots of kubernetes.services, which reloads add,
	// remove and change.
	slots *slotSet
	// ifMu guards transports, announcers and shared: a slot added by a
	// reload may open them, while Status reads the announcers.
	ifMu       sync.Mutex
	transports map[string]*vrrp.Transport
	announcers map[string]*garp.Announcer
	exclude    map[netip.Addr]bool // never an advert's source: the VIPs
	// serving holds the transports' Serve, once Run has started them
	// (running); a transport opened later starts serving at once.
	serving sync.WaitGroup
	running bool
	hooks   map[string]*notify.Hook // instance or group name -> hook
	groups  []*syncGroup
	vipSets []*vip.Set
	guard   *vip.Guard
	// shared holds, per interface, the Service addresses L2 slots carry.
	shared map[string]*vip.Shared
	// ranks are the pool instances' rankings, by instance name, and
	// names vrrp.peer_names, for status.
	ranks map[string]poolRank
	names map[netip.Addr]string
}

// slotSettle is how long an added L2 slot may take to win its group: the
// master-down interval (three adverts and the skew, under one more) and a
// margin.
const slotSettle = 4*config.DefaultAdvertInterval + 500*time.Millisecond

// probeWait is how long a new master listens for other hosts answering ARP
// for its VIPs.
const probeWait = 500 * time.Millisecond

// newVRRP opens every socket the instances need, and for accept: false
// installs the drop table, so interface and permission errors come before
// any address changes; on error it closes what it opened.
func newVRRP(cfg *config.Config, store *health.Store, log *slog.Logger) (*vrrpGroup, error) {
	g := &vrrpGroup{cfg: cfg, store: store, log: log, transports: map[string]*vrrp.Transport{},
		announcers: map[string]*garp.Announcer{}, hooks: map[string]*notify.Hook{}, shared: map[string]*vip.Shared{}}
	g.slots = newSlotSet(log, store, clock.Real{}, slotSettle, g.buildSlot)
	if err := g.build(); err != nil {
		g.close()
		return nil, err
	}
	return g, nil
}

func (g *vrrpGroup) build() error {
	// The slots are not among them: slotSet runs those.
	g.all = append(slices.Clone(g.cfg.VRRP.Instances), g.cfg.VRRP.PoolInstances...)
	g.ranks = poolRanks(g.cfg)
	g.names = map[netip.Addr]string{}
	for a, name := range g.cfg.VRRP.PeerNames {
		g.names[netip.MustParseAddr(a)] = name // validated
	}
	exclude := map[netip.Addr]bool{}
	parsed := make([][]netip.Prefix, len(g.all))
	for i, ic := range g.all {
		for _, v := range ic.VIPs {
			p, _ := config.ParseVIP(v) // validated already
			parsed[i] = append(parsed[i], p)
			// An address owner's VIP is its own address and may be the source.
			exclude[p.Addr()] = ic.Priority != 255
		}
	}
	g.exclude = exclude
	for i, ic := range g.all {
		key := ic.Path + ".interface"
		if _, err := net.InterfaceByName(ic.Interface); err != nil {
			return fmt.Errorf("%s: no interface %q on this host (line %d)", key, ic.Interface, g.cfg.Line(key))
		}
		tr, ann, err := g.link(ic.Interface, parsed[i][0].Addr().Is6())
		if err != nil {
			return fmt.Errorf("vrrp instance %s: %w", ic.Name, err)
		}
		set, err := vip.New(ic.Interface, parsed[i])
		if err != nil {
			return err
		}
		g.vipSets = append(g.vipSets, set)
		in := vrrp.NewInstance(instanceConfig(ic, parsed[i]), tr, set, ann, g.log)
		in.Probe = func(ctx context.Context, ip netip.Addr) ([]net.HardwareAddr, error) {
			r, err := garp.Probe(ctx, ic.Interface, ip, probeWait)
			return r.MACs, err
		}
		in.Identify = func(mac net.HardwareAddr) []netip.Addr {
			as, err := set.Neighbors(mac)
			if err != nil {
				g.log.Debug("neighbour lookup", "mac", mac.String(), "err", err)
			}
			return as
		}
		if err := tr.Register(uint8(ic.VRID), in); err != nil {
			return err
		}
		g.instances = append(g.instances, in)
		g.hooks[ic.Name] = notify.New(ic.Notify, ic.NotifyTimeout, g.log)
	}
	if err := g.acceptMode(parsed); err != nil {
		return err
	}
	g.wireSyncGroups()
	return g.slots.init(g.cfg.VRRP.SlotInstances)
}

// link returns the VRRP transport of ifname and family, and the
// interface's announcer open for the family, opening what is not yet. A
// transport opened after Run started is served at once.
func (g *vrrpGroup) link(ifname string, is6 bool) (*vrrp.Transport, *garp.Announcer, error) {
	g.ifMu.Lock()
	defer g.ifMu.Unlock()
	tkey := fmt.Sprintf("%s/%v", ifname, is6)
	tr := g.transports[tkey]
	if tr == nil {
		var err error
		if tr, err = vrrp.OpenTransport(ifname, is6, g.exclude, g.log); err != nil {
			return nil, nil, err
		}
		g.transports[tkey] = tr
		if g.running {
			g.serving.Go(tr.Serve)
		}
	}
	ann := g.announcers[ifname]
	if ann == nil {
		ann = garp.NewAnnouncer(ifname)
		g.announcers[ifname] = ann
	}
	if err := ann.Open(!is6, is6); err != nil {
		return nil, nil, err
	}
	return tr, ann, nil
}

// announcerList returns the interfaces' announcers, for status.
func (g *vrrpGroup) announcerList() map[string]*garp.Announcer {
	g.ifMu.Lock()
	defer g.ifMu.Unlock()
	return maps.Clone(g.announcers)
}

// socketDrops sums, per interface, what the kernel dropped on its
// transports' raw sockets.
func (g *vrrpGroup) socketDrops() map[string]uint64 {
	g.ifMu.Lock()
	defer g.ifMu.Unlock()
	out := map[string]uint64{}
	for _, tr := range g.transports {
		out[tr.Interface()] += tr.KernelDrops()
	}
	return out
}

// wireSyncGroups builds the sync groups and the transition callbacks:
// notify hooks, sync groups, and mastership into the health state (for
// BGP's when_master).
func (g *vrrpGroup) wireSyncGroups() {
	byName := map[string]*vrrp.Instance{}
	for _, in := range g.instances {
		byName[in.Name()] = in
	}
	groupOf := map[*vrrp.Instance]*syncGroup{}
	for _, gc := range g.cfg.VRRP.SyncGroups {
		sg := &syncGroup{name: gc.Name, log: g.log.With("sync_group", gc.Name), faulted: map[string]bool{}}
		for _, n := range gc.Instances {
			sg.members = append(sg.members, byName[n])
			groupOf[byName[n]] = sg
		}
		g.hooks["group/"+gc.Name] = notify.New(gc.Notify, config.DefaultNotifyTimeout, g.log)
		sg.hook = g.hooks["group/"+gc.Name]
		g.groups = append(g.groups, sg)
	}
	for _, in := range g.instances {
		hook, sg := g.hooks[in.Name()], groupOf[in]
		in.OnTransition = func(in *vrrp.Instance, t vrrp.Transition) {
			hook.Notify("INSTANCE", in.Name(), t.To.String(), int(t.Priority))
			if sg != nil {
				sg.transition(in, t)
			}
			g.store.Set(health.MasterKey(in.Name()), health.State{Up: t.To == vrrp.Master, Reason: t.To.String()})
		}
		if sg != nil {
			in.OnOwnFault = sg.ownFault
		}
	}
}

// buildSlot builds the VRRP instance of an L2 slot: its one VIP is an
// anchor only adverts name (never configured, never announced), and it
// carries the slot's Service addresses as extra addresses, through the
// interface's shared holder so that two slots mastered by this node can
// pass an address between them. It writes its mastership to the health
// state, and starts with its interface's state as the health state has it.
func (g *vrrpGroup) buildSlot(ic config.Instance) (*slotRun, error) {
	anchor, err := config.ParseVIP(ic.VIPs[0])
	if err != nil {
		return nil, fmt.Errorf("kubernetes.services L2 slot %s: anchor: %w", ic.Name, err)
	}
	tr, ann, err := g.link(ic.Interface, anchor.Addr().Is6())
	if err != nil {
		return nil, fmt.Errorf("kubernetes.services L2 slot %s: %w", ic.Name, err)
	}
	g.ifMu.Lock()
	sh := g.shared[ic.Interface]
	if sh == nil {
		if sh, err = vip.NewShared(ic.Interface); err == nil {
			g.shared[ic.Interface] = sh
		}
	}
	g.ifMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("kubernetes.services L2 slot %s: %w", ic.Name, err)
	}
	in := vrrp.NewInstance(instanceConfig(ic, []netip.Prefix{anchor}), tr, anchorOnly{}, skipAnchor{ann}, g.log,
		vrrp.WithExtraAddresses(sh.Holder(ic.Name)))
	in.OnTransition = func(in *vrrp.Instance, t vrrp.Transition) {
		g.store.Set(health.MasterKey(in.Name()), health.State{Up: t.To == vrrp.Master, Reason: t.To.String()})
	}
	if st, ok := g.store.Get(health.InterfaceKey(ic.Interface)); ok {
		in.SetTracked("interface", ic.Interface, st.Up)
	}
	return &slotRun{in: in, reg: tr}, nil
}

// anchorOnly is the address set of a slot's anchor: there is nothing to
// configure.
type anchorOnly struct{}

func (anchorOnly) Add() error                       { return nil }
func (anchorOnly) Remove() error                    { return nil }
func (anchorOnly) Present() ([]netip.Prefix, error) { return nil, nil }

// skipAnchor announces what a slot carries but never its anchor (the
// unspecified address).
type skipAnchor struct{ a *garp.Announcer }

func (s skipAnchor) Announce(addrs []netip.Addr) error {
	if addrs = specified(addrs); len(addrs) == 0 {
		return nil
	}
	return s.a.Announce(addrs)
}

func (s skipAnchor) Burst(ctx context.Context, addrs []netip.Addr, count int, interval time.Duration) error {
	if addrs = specified(addrs); len(addrs) == 0 {
		return nil
	}
	return s.a.Burst(ctx, addrs, count, interval)
}

func specified(addrs []netip.Addr) []netip.Addr {
	return slices.DeleteFunc(slices.Clone(addrs), netip.Addr.IsUnspecified)
}

// acceptMode installs the drop rules for instances with accept: false. The
// address owner (priority 255) always accepts, as the RFC says.
func (g *vrrpGroup) acceptMode(parsed [][]netip.Prefix) error {
	var drop []netip.Addr
	for i, ic := range g.all {
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
	guard, err := vip.NewGuard(drop)
	if err != nil {
		return err
	}
	g.guard = guard
	return nil
}

func instanceConfig(ic config.Instance, vips []netip.Prefix) vrrp.Config {
	c := vrrp.Config{
		Name: ic.Name, Interface: ic.Interface, VRID: uint8(ic.VRID), Version: uint8(ic.Version),
		Priority: uint8(ic.Priority), Interval: ic.AdvertInterval, Preempt: *ic.Preempt,
		PreemptDelay: ic.PreemptDelay, VIPs: vips, AuthPass: ic.AuthPass,
		GARPCount: *ic.GARP.Count, GARPInterval: ic.GARP.Interval, GARPRefresh: *ic.GARP.Refresh,
		PeersLater: ic.UnicastPeersFrom != nil,
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
	for _, t := range ic.Track.Endpoints {
		c.Track = append(c.Track, vrrp.TrackItem{Kind: "endpoints", Name: t.Service, Weight: t.Weight})
	}
	return c
}

// trackedInterfaces lists every interface an instance tracks, its own
// included, for the link watcher.
func (g *vrrpGroup) trackedInterfaces() []string {
	var out []string
	for _, ic := range g.all {
		out = append(out, ic.Interface)
		for _, t := range ic.Track.Interfaces {
			out = append(out, t.Name)
		}
	}
	// The L2 slots, which reloads add, track their pool's interface.
	if k := g.cfg.Kubernetes; k != nil && k.Services != nil {
		for _, p := range k.Services.Pools {
			if p.Announce != "bgp" {
				out = append(out, p.Interface)
			}
		}
	}
	return out
}

func (g *vrrpGroup) Name() string { return "vrrp" }

// Plan accepts a config whose VRRP part differs from the running one only
// in instances' unicast_peers and in the L2 slots, and refuses every other
// change to the vrrp section, cluster or node: those need a restart. Commit
// hands each changed instance its new peers (Instance.SetPeers), which take
// effect without a state change, and the slots their changes (slotSet). The
// transports keep no list of peers: they hand every message to the
// instance of its VRID, which filters by source.
func (g *vrrpGroup) Plan(cfg *config.Config) (component.Change, error) {
	peers, err := peerChanges(g.cfg, cfg)
	if err != nil {
		return nil, err
	}
	slots, err := g.slots.plan(cfg.VRRP.SlotInstances)
	if err != nil {
		return nil, err
	}
	return component.Func{OnCommit: func() {
		for i, ps := range peers {
			if err := g.instances[i].SetPeers(ps); err != nil {
				// Plan refused what SetPeers refuses; this is a bug.
				g.log.Error("unicast peers not applied", "instance", g.instances[i].Name(), "err", err)
			}
		}
		if !slots.empty() {
			g.slots.commit(slots)
		}
		g.cfg = cfg
	}}, nil
}

// errRestart ends the reason of every VRRP change a reload refuses.
const errRestart = "VRRP changes need a restart"

// peerChanges compares the VRRP part of two configs and returns the new
// unicast peers of every instance (by index in vrrp.instances) whose set
// changed, or an error naming the first difference that needs a restart.
// Pools have no unicast peers, so their instances may not change at all.
func peerChanges(old, cfg *config.Config) (map[int][]netip.Addr, error) {
	switch {
	case cfg.Cluster != old.Cluster:
		return nil, fmt.Errorf("cluster changed: %s", errRestart)
	case cfg.Node != old.Node:
		return nil, fmt.Errorf("node changed: %s", errRestart)
	case len(cfg.VRRP.Instances) != len(old.VRRP.Instances):
		return nil, fmt.Errorf("vrrp.instances: %d instances, was %d: %s", len(cfg.VRRP.Instances), len(old.VRRP.Instances), errRestart)
	}
	changed := map[int][]netip.Addr{}
	for i, was := range old.VRRP.Instances {
		now := cfg.VRRP.Instances[i]
		at := fmt.Sprintf("vrrp.instances[%d] (%s)", i, was.Name)
		if key := differingKey(was, now, "UnicastPeers", "Path"); key != "" {
			return nil, fmt.Errorf("%s.%s changed: %s", at, key, errRestart)
		}
		before, after := peerSet(was.UnicastPeers), peerSet(now.UnicastPeers)
		if slices.Equal(before, after) {
			continue
		}
		// Peers from the API may first arrive after a multicast start.
		firstFromAPI := len(before) == 0 && len(after) > 0 && now.UnicastPeersFrom != nil
		if (len(before) == 0 || len(after) == 0) && !firstFromAPI {
			return nil, fmt.Errorf("%s.unicast_peers: %w", at, vrrp.ErrPeerMode)
		}
		changed[i] = after
	}
	for _, d := range []struct {
		key      string
		was, now any
	}{
		{"vrrp.pools", old.VRRP.Pools, cfg.VRRP.Pools},
		{"vrrp.sync_groups", old.VRRP.SyncGroups, cfg.VRRP.SyncGroups},
		{"vrrp.peer_names", old.VRRP.PeerNames, cfg.VRRP.PeerNames},
		// Derived from the pools, cluster and node, compared above; kept
		// here so that nothing of what the instances run from goes unseen.
		{"vrrp.pools", old.VRRP.PoolInstances, cfg.VRRP.PoolInstances},
	} {
		if !reflect.DeepEqual(d.was, d.now) {
			return nil, fmt.Errorf("%s changed: %s", d.key, errRestart)
		}
	}
	return changed, nil
}

// differingKey returns the YAML key of the first field of the struct a
// that differs in b, skipping the named fields, or "" if none does.
func differingKey[T any](a, b T, skip ...string) string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		f := va.Type().Field(i)
		if slices.Contains(skip, f.Name) || reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			continue
		}
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" {
			key = f.Name
		}
		return key
	}
	return ""
}

// peerSet parses validated unicast peers into a sorted set.
func peerSet(peers []string) []netip.Addr {
	out := make([]netip.Addr, 0, len(peers))
	for _, p := range peers {
		out = append(out, netip.MustParseAddr(p))
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// Run runs every instance until ctx ends (or one fails), then shuts down
// in order: instances (priority-0 adverts, VIPs removed), sockets, and last
// the notify hooks, which still run the STOP events.
func (g *vrrpGroup) Run(ctx context.Context) error {
	var hooks, bg sync.WaitGroup
	hookCtx, stopHooks := context.WithCancel(context.Background())
	for _, h := range g.hooks {
		hooks.Go(func() { h.Run(hookCtx) })
	}
	ictx, cancel := context.WithCancel(ctx)
	g.ifMu.Lock()
	for _, tr := range g.transports {
		g.serving.Go(tr.Serve)
	}
	g.running = true
	g.ifMu.Unlock()
	bg.Go(func() { g.track(ictx) })
	var slots sync.WaitGroup
	slots.Go(func() { g.slots.Run(ictx) })
	var instances sync.WaitGroup
	errs := make(chan error, len(g.instances))
	for _, in := range g.instances {
		instances.Go(func() {
			if err := in.Run(ictx); err != nil {
				errs <- err
			}
		})
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs: // one instance failing stops the others cleanly
	}
	cancel()
	instances.Wait()
	slots.Wait()
	g.close()
	g.serving.Wait()
	bg.Wait()
	for _, in := range g.instances {
		g.store.Delete(health.MasterKey(in.Name()))
	}
	stopHooks()
	hooks.Wait()
	return err
}

// track passes tracked checks', interfaces' and Services' endpoint states
// to the instances until ctx ends. SetTracked ignores what an instance does
// not track. A check that is no longer known (removed by a reload), or a
// Service the API has not told about yet, holds nothing down.
func (g *vrrpGroup) track(ctx context.Context) {
	sub := g.store.Subscribe()
	defer sub.Close()
	for {
		for _, c := range sub.Changes() {
			var kind string
			switch c.Key.Kind {
			case health.Check:
				kind = "check"
			case health.Interface:
				kind = "interface"
			case health.Endpoint:
				kind = "endpoints"
			default:
				continue
			}
			up := !c.Known || c.State.Up
			for _, in := range g.instances {
				in.SetTracked(kind, c.Key.Name, up)
			}
			g.slots.each(func(_ config.Instance, in *vrrp.Instance) { in.SetTracked(kind, c.Key.Name, up) })
		}
		select {
		case <-sub.Wake():
		case <-ctx.Done():
			return
		}
	}
}

// close releases the sockets and the guard; safe to call twice.
func (g *vrrpGroup) close() {
	g.ifMu.Lock()
	defer g.ifMu.Unlock()
	var errs []error
	for _, tr := range g.transports {
		errs = append(errs, tr.Close())
	}
	for _, a := range g.announcers {
		errs = append(errs, a.Close())
	}
	for _, v := range g.vipSets {
		v.Close()
	}
	for _, sh := range g.shared {
		sh.Close()
	}
	g.shared = nil
	if g.guard != nil {
		errs = append(errs, g.guard.Close())
		g.guard = nil
	}
	if err := errors.Join(errs...); err != nil {
		g.log.Debug("close", "err", err)
	}
}
