// Package bgp announces VIPs to routers with an embedded GoBGP speaker, so
// routers spread flows over every balancer node with ECMP, and withdraws a
// VIP the moment the service behind it fails.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/vigil-lb/vigil/internal/clock"
)

// Neighbor is one BGP peer.
type Neighbor struct {
	Address  netip.Addr
	ASN      uint32
	Port     uint16 // 0: 179
	Password string
	HoldTime time.Duration
	Passive  bool
}

// Config is the speaker's identity and peers.
type Config struct {
	ASN       uint32
	RouterID  netip.Addr
	Listen    int32 // port to accept sessions on; -1: none (vigil dials out)
	Neighbors []Neighbor
	// RestartTime turns on graceful restart (RFC 4724) with every neighbor:
	// how long a router keeps vigil's routes, marked stale, while vigil is
	// gone. Stop then sends no withdrawal. 0: off.
	RestartTime time.Duration
}

// Route is one announcement's attributes.
type Route struct {
	Prefix      netip.Prefix
	Communities []uint32
	LocalPref   uint32 // 0: not sent
	MED         uint32 // 0: not sent
}

// Speaker is a running BGP speaker.
type Speaker struct {
	s *server.BgpServer
	// peerAPI is s, seen as the session monitor sees it: tests of the
	// monitor and its back-off put a scripted neighbor there.
	peerAPI peerAPI
	clock   clock.Clock
	log     *slog.Logger

	stop context.CancelFunc // ends the session monitor and its hold-downs
	wg   sync.WaitGroup
	// gracefulStop: Stop leaves the routes to the routers' graceful restart.
	gracefulStop bool

	mu        sync.Mutex
	announced map[netip.Prefix]Route
	peers     map[string]*peerInfo // by neighbor address
}

// peerAPI is the part of GoBGP's API that the session monitor and its
// back-off use (*server.BgpServer).
type peerAPI interface {
	ListPeer(ctx context.Context, r *api.ListPeerRequest, fn func(*api.Peer)) error
	DisablePeer(ctx context.Context, r *api.DisablePeerRequest) error
	EnablePeer(ctx context.Context, r *api.EnablePeerRequest) error
}

// Option changes how Start builds a speaker.
type Option func(*Speaker)

// WithClock makes the speaker's session monitor, its back-off and Stop's
// pause run on c instead of the wall clock (clock.Real): tests pass a fake.
func WithClock(c clock.Clock) Option { return func(sp *Speaker) { sp.clock = c } }

func newSpeaker(p peerAPI, log *slog.Logger, neighbors []Neighbor, opts []Option) *Speaker {
	sp := &Speaker{peerAPI: p, clock: clock.Real{}, log: log, stop: func() {},
		announced: map[netip.Prefix]Route{}, peers: map[string]*peerInfo{}}
	for _, n := range neighbors {
		sp.peers[n.Address.String()] = &peerInfo{backoff: newBackoff()}
	}
	for _, o := range opts {
		o(sp)
	}
	return sp
}

// Start starts the speaker and its sessions.
func Start(ctx context.Context, cfg Config, log *slog.Logger, opts ...Option) (*Speaker, error) {
	s := server.NewBgpServer(server.LoggerOption(log.With("component", "gobgp"), nil))
	go s.Serve()
	sp := newSpeaker(s, log, cfg.Neighbors, opts)
	sp.s = s
	monitorCtx, stop := context.WithCancel(context.Background())
	sp.stop = stop
	err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: cfg.ASN, RouterId: cfg.RouterID.String(), ListenPort: cfg.Listen,
	}})
	if err != nil {
		stop()
		s.Stop()
		return nil, fmt.Errorf("bgp: start (asn %d, router id %s): %w", cfg.ASN, cfg.RouterID, err)
	}
	sp.wg.Go(func() { sp.monitor(monitorCtx) })
	if err := rejectLearned(ctx, s); err != nil {
		sp.Stop(context.Background())
		return nil, fmt.Errorf("bgp: import policy: %w", err)
	}
	sp.gracefulStop = cfg.RestartTime > 0
	for _, n := range cfg.Neighbors {
		hold := uint64(n.HoldTime / time.Second)
		p := &api.Peer{
			Conf: &api.PeerConf{NeighborAddress: n.Address.String(), PeerAsn: n.ASN, AuthPassword: n.Password},
			Timers: &api.Timers{Config: &api.TimersConfig{HoldTime: hold, KeepaliveInterval: max(hold/3, 1),
				ConnectRetry: 1, IdleHoldTimeAfterReset: 1}},
			Transport: &api.Transport{PassiveMode: n.Passive, RemotePort: uint32(n.Port)},
		}
		family := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
		if n.Address.Is6() {
			family = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
		}
		af := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: family, Enabled: true}}
		if cfg.RestartTime > 0 {
			// LocalRestarting sets the Restart State and Forwarding State
			// bits, so a router that kept vigil's routes as stale keeps them
			// until vigil's End-of-RIB replaces them, instead of dropping them
			// when the session comes back. With no selection deferral vigil
			// announces at once all the same.
			p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(cfg.RestartTime / time.Second), LocalRestarting: true}
			af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		p.AfiSafis = []*api.AfiSafi{af}
		if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: p}); err != nil {
			sp.Stop(context.Background())
			return nil, fmt.Errorf("bgp: neighbor %s: %w", n.Address, err)
		}
	}
	return sp, nil
}

// rejectLearned makes vigil announce only, never learn: every route a
// neighbor sends is rejected on import, so none reaches the RIB (a router
// that sends a full table by mistake fills only that neighbor's
// Adj-RIB-In). GoBGP applies the global import policy to vigil's own paths
// too, so the policy matches on any neighbor's address (its own paths have
// none) rather than rejecting by default.
func rejectLearned(ctx context.Context, s *server.BgpServer) error {
	const set, policy = "vigil-any-neighbor", "vigil-reject-learned"
	if err := s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: set, List: []string{"0.0.0.0/0", "::/0"}}}); err != nil {
		return err
	}
	if err := s.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: policy, Statements: []*api.Statement{{
		Name:       policy,
		Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: set}},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT},
	}}}}); err != nil {
		return err
	}
	return s.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		Policies: []*api.Policy{{Name: policy}}, DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
	}})
}

func (r Route) path() (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(r.Prefix)
	if err != nil {
		return nil, err
	}
	family, nh := bgp.RF_IPv4_UC, netip.IPv4Unspecified()
	if r.Prefix.Addr().Is6() {
		family, nh = bgp.RF_IPv6_UC, netip.IPv6Unspecified()
	}
	var attrs []bgp.PathAttributeInterface
	attrs = append(attrs, bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP))
	if family == bgp.RF_IPv4_UC {
		a, err := bgp.NewPathAttributeNextHop(nh)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	} else {
		a, err := bgp.NewPathAttributeMpReachNLRI(family, []bgp.PathNLRI{{NLRI: nlri}}, nh)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	}
	if len(r.Communities) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(r.Communities))
	}
	if r.LocalPref > 0 {
		attrs = append(attrs, bgp.NewPathAttributeLocalPref(r.LocalPref))
	}
	if r.MED > 0 {
		attrs = append(attrs, bgp.NewPathAttributeMultiExitDisc(r.MED))
	}
	return &apiutil.Path{Family: family, Nlri: nlri, Attrs: attrs}, nil
}

// Announce advertises r to every peer (again, if its attributes changed).
func (sp *Speaker) Announce(r Route) error {
	p, err := r.path()
	if err != nil {
		return fmt.Errorf("bgp: announce %s: %w", r.Prefix, err)
	}
	if _, err := sp.s.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{p}}); err != nil {
		return fmt.Errorf("bgp: announce %s: %w", r.Prefix, err)
	}
	sp.mu.Lock()
	sp.announced[r.Prefix] = r
	sp.mu.Unlock()
	return nil
}

// Withdraw stops advertising prefix.
func (sp *Speaker) Withdraw(prefix netip.Prefix) error {
	sp.mu.Lock()
	r, ok := sp.announced[prefix]
	delete(sp.announced, prefix)
	sp.mu.Unlock()
	if !ok {
		return nil
	}
	p, err := r.path()
	if err != nil {
		return err
	}
	if err := sp.s.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{p}}); err != nil {
		return fmt.Errorf("bgp: withdraw %s: %w", prefix, err)
	}
	return nil
}

// Session is one peer's state.
type Session struct {
	Neighbor  string
	ASN       uint32
	State     string // idle, connect, active, opensent, openconfirm, established
	Since     time.Time
	LastError string    // why the last attempt or session failed; empty once established
	Failures  int       // failed attempts in a row
	RetryAt   time.Time // set while vigil holds the neighbor down to back off
	// RoutesReceived counts the routes the neighbor sent: all rejected on
	// import (vigil only announces), kept in its Adj-RIB-In.
	RoutesReceived uint64
}

// Sessions lists the peers.
func (sp *Speaker) Sessions(ctx context.Context) []Session {
	var out []Session
	sp.peerAPI.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		s := Session{Neighbor: p.GetConf().GetNeighborAddress(), ASN: p.GetConf().GetPeerAsn()}
		if st := p.GetState(); st != nil {
			s.State = stateName(st.GetSessionState())
		}
		if t := p.GetTimers().GetState().GetUptime(); t != nil && s.State == "established" {
			s.Since = t.AsTime()
		}
		for _, af := range p.GetAfiSafis() {
			s.RoutesReceived += af.GetState().GetReceived()
		}
		sp.mu.Lock()
		if info := sp.peers[s.Neighbor]; info != nil && s.State != "established" {
			s.LastError, s.Failures = info.lastError, info.backoff.failures
			if sp.clock.Now().Before(info.retryAt) {
				s.RetryAt = info.retryAt
			}
			if info.bfdHeld {
				s.LastError = "held down while the neighbor's bfd session is down"
			}
		}
		sp.mu.Unlock()
		out = append(out, s)
	})
	return out
}

func stateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_SESSION_STATE_IDLE:
		return "idle"
	case api.PeerState_SESSION_STATE_CONNECT:
		return "connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "opensent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// Announced lists what is advertised.
func (sp *Speaker) Announced() []netip.Prefix {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	var out []netip.Prefix
	for p := range sp.announced {
		out = append(out, p)
	}
	return out
}

// Stop withdraws everything first, so routers move traffic before the
// sessions close, then stops. With graceful restart it withdraws nothing
// and closes the sessions without a NOTIFICATION: the routers keep the
// routes as stale until vigil is back or the restart time ends.
func (sp *Speaker) Stop(ctx context.Context) error {
	var errs []error
	announced := sp.Announced()
	if sp.gracefulStop {
		announced = nil
	}
	for _, p := range announced {
		errs = append(errs, sp.Withdraw(p))
	}
	if len(announced) > 0 {
		clock.Sleep(ctx, sp.clock, 100*time.Millisecond) // let the withdrawals leave before the sessions close
	}
	sp.stop()
	sp.wg.Wait()
	errs = append(errs, sp.s.StopBgp(ctx, &api.StopBgpRequest{AllowGracefulRestart: sp.gracefulStop}))
	sp.s.Stop()
	return errors.Join(errs...)
}
