package bgp

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"sync"

	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/vip"
)

// Router is what announcements need of a speaker.
type Router interface {
	Announce(Route) error
	Withdraw(netip.Prefix) error
}

// announcement is one configured prefix, the health keys it waits for, and
// whether it is advertised now.
type announcement struct {
	route   Route
	healthy *health.Key // nil: always
	master  *health.Key // nil: always
	// endpoints: a Service's ready endpoint on this node (nil: always); for
	// externalTrafficPolicy Local, where only such nodes may take traffic.
	endpoints *health.Key
	on        bool
	// accept: the node takes the address as its own while announced (see
	// acceptedAddrs).
	accept bool
}

// want reports whether a should be advertised given the health state. A
// check nobody has reported is up (checks start up); a balancer or an
// instance nobody has reported is not, so nothing is announced for a
// service that has not started yet.
func (a *announcement) want(store *health.Store) bool {
	if a.healthy != nil {
		st, known := store.Get(*a.healthy)
		if known && !st.Up || !known && a.healthy.Kind != health.Check {
			return false
		}
	}
	for _, k := range []*health.Key{a.master, a.endpoints} {
		if k == nil {
			continue
		}
		if st, known := store.Get(*k); !known || !st.Up {
			return false
		}
	}
	return true
}

// announcementsOf resolves the config's announcements once: when_healthy
// names a balancer when one has that name, else a check.
func announcementsOf(cfg *config.Config) []*announcement {
	balancers := map[string]bool{}
	for _, b := range cfg.Balancers {
		balancers[b.Name] = true
	}
	accepted := acceptedAddrs(cfg)
	var out []*announcement
	for _, a := range cfg.BGP.Announce {
		pfx, _ := config.ParseVIP(a.Prefix) // validated
		r := Route{Prefix: pfx, LocalPref: a.LocalPref, MED: a.MED}
		for _, c := range a.Communities {
			v, _ := config.ParseCommunity(c) // validated
			r.Communities = append(r.Communities, v)
		}
		an := &announcement{route: r, accept: accepted[pfx]}
		switch {
		case a.WhenHealthy == "":
		case balancers[a.WhenHealthy]:
			k := health.BalancerKey(a.WhenHealthy)
			an.healthy = &k
		default:
			k := health.CheckKey(a.WhenHealthy)
			an.healthy = &k
		}
		if a.WhenMaster != "" {
			k := health.MasterKey(a.WhenMaster)
			an.master = &k
		}
		if a.WhenEndpoints != "" {
			k := health.EndpointKey(a.WhenEndpoints)
			an.endpoints = &k
		}
		out = append(out, an)
	}
	return out
}

// announcer keeps a router's announcements in step with the health state.
// It is used from one goroutine.
type announcer struct {
	router Router
	list   []*announcement
	log    *slog.Logger
	// openLocal opens the acceptor the first time an address is to be
	// accepted; local is then it, and accepted what it accepts.
	openLocal func() (Acceptor, error)
	local     Acceptor
	accepted  []netip.Prefix
}

// update announces what should be and withdraws what should not, so a
// failure is withdrawn at once rather than after a hold timer. A router
// error leaves the announcement to be tried at the next update. An address
// to accept is accepted before it is announced (and not announced while it
// cannot be) and no longer accepted after it is withdrawn, so the router
// never sends here what the kernel would drop.
func (an *announcer) update(store *health.Store) {
	wants := make([]bool, len(an.list))
	for i, a := range an.list {
		wants[i] = a.want(store)
	}
	an.accept(func(i int) bool { return an.list[i].on || wants[i] })
	defer an.accept(func(i int) bool { return an.list[i].on })
	for i, a := range an.list {
		want := wants[i]
		if want == a.on {
			continue
		}
		if want && a.accept && !slices.Contains(an.accepted, a.route.Prefix) {
			continue // not announced while the kernel would drop its traffic
		}
		var err error
		if want {
			err = an.router.Announce(a.route)
		} else {
			err = an.router.Withdraw(a.route.Prefix)
		}
		if err != nil {
			an.log.Warn("bgp", "prefix", a.route.Prefix.String(), "err", err)
			continue
		}
		a.on = want
		an.log.Info("bgp announcement change", "prefix", a.route.Prefix.String(), "announced", want,
			"when_healthy", keyName(a.healthy), "when_master", keyName(a.master), "when_endpoints", keyName(a.endpoints))
	}
}

// replace takes a reloaded list: prefixes no longer configured are
// withdrawn; an unchanged route that is advertised stays so.
func (an *announcer) replace(list []*announcement) {
	for _, old := range an.list {
		if !old.on {
			continue
		}
		kept := false
		for _, a := range list {
			if reflect.DeepEqual(a.route, old.route) {
				a.on, kept = true, true
			} else if a.route.Prefix == old.route.Prefix {
				kept = true // announced again with its new attributes
			}
		}
		if !kept {
			if err := an.router.Withdraw(old.route.Prefix); err != nil {
				an.log.Warn("bgp", "prefix", old.route.Prefix.String(), "err", err)
			} else {
				an.log.Info("bgp announcement removed by reload", "prefix", old.route.Prefix.String())
			}
		}
	}
	an.list = list
}

func keyName(k *health.Key) string {
	if k == nil {
		return ""
	}
	return k.Name
}

// Announcements is the BGP component: it runs the speaker and announces
// each configured prefix while what it waits for is healthy, woken by the
// health state (checks, balancers, VRRP mastership), never by polling.
type Announcements struct {
	store *health.Store
	log   *slog.Logger

	mu      sync.Mutex
	session config.BGP // the running session settings, announce list cleared
	next    []*announcement
	sp      *Speaker // nil unless running
	replan  chan struct{}
	// openLocal opens what accepts announced addresses (vip.LocalRoutes).
	openLocal func() (Acceptor, error)
}

// NewAnnouncements prepares the bgp section of cfg; the speaker starts
// with Run.
func NewAnnouncements(cfg *config.Config, store *health.Store, log *slog.Logger) *Announcements {
	return &Announcements{store: store, log: log, session: sessionOf(cfg.BGP),
		next: announcementsOf(cfg), replan: make(chan struct{}, 1),
		openLocal: func() (Acceptor, error) { return vip.NewLocalRoutes(log) }}
}

func sessionOf(b config.BGP) config.BGP {
	b.Announce = nil // the announce list changes live
	return b
}

// Name names the component.
func (a *Announcements) Name() string { return "bgp" }

// Run runs the speaker until ctx ends, then withdraws everything and
// stops it. A speaker that cannot start is logged and the rest of the
// daemon runs.
func (a *Announcements) Run(ctx context.Context) error {
	a.mu.Lock()
	b := a.session
	a.mu.Unlock()
	if b.ASN == 0 {
		<-ctx.Done()
		return nil
	}
	sp, err := Start(ctx, speakerConfig(b), a.log)
	if err != nil {
		a.log.Error("bgp is not running", "err", err)
		<-ctx.Done()
		return nil
	}
	a.mu.Lock()
	a.sp = sp
	a.mu.Unlock()
	an := &announcer{router: sp, log: a.log, openLocal: a.openLocal}
	gate := newBFDGate(b)
	sub := a.store.Subscribe()
	defer sub.Close()
	for {
		a.mu.Lock()
		if a.next != nil {
			an.replace(a.next)
			a.next = nil
		}
		a.mu.Unlock()
		sub.Changes() // the state is read whole below: only the wake matters
		an.update(a.store)
		gate.update(ctx, a.store, sp)
		select {
		case <-sub.Wake():
		case <-a.replan:
		case <-ctx.Done():
			a.mu.Lock()
			a.sp = nil // status stops asking the stopped speaker
			a.mu.Unlock()
			if err := sp.Stop(context.Background()); err != nil {
				a.log.Debug("bgp stop", "err", err)
			}
			an.close() // withdrawn first: the routers have stopped sending
			return nil
		}
	}
}

// Plan takes a changed announce list; changes to the speaker or its
// neighbors need a restart and are refused.
func (a *Announcements) Plan(cfg *config.Config) (component.Change, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !reflect.DeepEqual(sessionOf(cfg.BGP), a.session) {
		return nil, errors.New("the bgp section's asn, router_id, listen_port, neighbors or graceful_restart changed: that needs a restart")
	}
	list := announcementsOf(cfg)
	return component.Func{OnCommit: func() {
		a.mu.Lock()
		a.next = list
		a.mu.Unlock()
		select {
		case a.replan <- struct{}{}:
		default:
		}
	}}, nil
}

// Speaker returns the running speaker, for status; nil when none runs.
func (a *Announcements) Speaker() *Speaker {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sp
}

func speakerConfig(b config.BGP) Config {
	cfg := Config{ASN: b.ASN, RouterID: netip.MustParseAddr(b.RouterID), Listen: int32(b.ListenPort)}
	if b.GracefulRestart.Enabled {
		cfg.RestartTime = b.GracefulRestart.RestartTime
	}
	if b.ListenPort == 0 {
		cfg.Listen = -1
	}
	for _, n := range b.Neighbors {
		cfg.Neighbors = append(cfg.Neighbors, Neighbor{Address: netip.MustParseAddr(n.Address), ASN: n.ASN,
			Port: uint16(n.Port), Password: n.Password, HoldTime: n.HoldTime, Passive: n.Passive})
	}
	return cfg
}
