package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/kube"
	"github.com/vigil-lb/vigil/internal/lbipam"
	"github.com/vigil-lb/vigil/internal/lbsvc"
	"github.com/vigil-lb/vigil/internal/redirect"
)

// kubeStartWait is how long a start waits for the API before it uses the
// state file: long enough for the kubeconfig's server to time out and a
// fallback server to answer, short enough that VRRP is not held back long.
const kubeStartWait = 5 * time.Second

// members is the Kubernetes source of membership: it holds the static
// config and the last snapshot, and turns them into the effective config
// that every component plans from. The API is a source of membership only:
// its informers keep their last objects while it is down, and a snapshot is
// only taken from synced informers, so an outage changes nothing.
type members struct {
	src   *kube.Source
	stop  context.CancelFunc // ends the informers
	store *health.Store
	log   *slog.Logger

	static *config.Config // the config as written (supervisor goroutine only)
	snap   kube.Snapshot
	// tracked are the Services whose endpoint state is in the store.
	tracked map[kube.ServiceRef]bool

	mu       sync.Mutex
	last     kube.Expanded        // the expansion in force
	services []api.ServiceAddress // its Service addresses, for status
	pools    []api.PoolUsage
	// nodeNames are the Nodes' names by their addresses, so that status
	// names a VRRP master by node rather than by address.
	nodeNames map[netip.Addr]string
	applied   atomic.Uint64
}

// newMembers starts the informers and waits up to kubeStartWait for a
// first read of the API, else takes the state file's snapshot.
func newMembers(static *config.Config, store *health.Store, log *slog.Logger) (*members, error) {
	log = log.With("component", "kubernetes")
	o := kube.Options{Services: watchedServices(static), WatchNodes: watchesNodes(static), Log: log}
	if servesServices(static) {
		// Services come and go: all of them, all their slices, and the
		// Nodes that may announce.
		o.WatchServices, o.AllSlices, o.WatchNodes, o.Services = true, true, true, nil
	}
	if k := static.Kubernetes; k != nil {
		o.Kubeconfig, o.FallbackServers, o.StateFile = k.Kubeconfig, k.FallbackServers, k.StateFile
	}
	src, err := kube.NewSource(o)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	m := &members{src: src, stop: stop, store: store, log: log, static: static}
	var origin kube.Origin
	m.snap, origin = src.Start(ctx, kubeStartWait)
	st := src.Status()
	log.Info("cluster members read", "origin", origin, "server", st.Server, "nodes", len(m.snap.Nodes),
		"endpoint_slices", len(m.snap.Slices), "err", st.LastError)
	m.last = kube.ExpandFrom(static, &m.snap, kube.Expanded{})
	m.services = serviceRows(m.last, &m.snap)
	m.pools = poolUsage(static, m.last)
	m.nodeNames = nodesByAddr(&m.snap)
	m.logNotes(m.last, nil)
	m.publishTracks()
	return m, nil
}

// Name, Run and Plan make members the component that owns the informers:
// started first and stopped last, so the API is read as long as anything
// runs. Plan refuses what needs new informers; the expansion itself happens
// in Supervisor.reload, before any component plans.
func (m *members) Name() string { return "kubernetes" }

func (m *members) Run(ctx context.Context) error {
	<-ctx.Done()
	m.stop()
	return nil
}

func (m *members) Plan(cfg *config.Config) (component.Change, error) { return component.None{}, nil }

// check refuses a static config whose reading of the cluster differs: the
// informers are built at start.
func (m *members) check(static *config.Config) error {
	switch {
	case !reflect.DeepEqual(static.Kubernetes, m.static.Kubernetes):
		return errors.New("the kubernetes section changed: it needs a restart")
	case !slices.Equal(watchedServices(static), watchedServices(m.static)):
		return errors.New("the Services named by backends_from.endpoints or track.endpoints changed: watching others needs a restart")
	case watchesNodes(static) && !watchesNodes(m.static):
		return errors.New("backends_from.nodes or unicast_peers_from is new: watching Nodes needs a restart")
	}
	return nil
}

// expand is the effective config of static with the current snapshot.
func (m *members) expand(static *config.Config) kube.Expanded {
	m.mu.Lock()
	last := m.last
	m.mu.Unlock()
	return kube.ExpandFrom(static, &m.snap, last)
}

// committed records an expansion that every component has applied.
func (m *members) committed(static *config.Config, x kube.Expanded, why string) {
	rows, pools := serviceRows(x, &m.snap), poolUsage(static, x)
	m.mu.Lock()
	old := m.last
	m.last, m.services, m.pools = x, rows, pools
	m.mu.Unlock()
	m.static = static
	for _, line := range kube.Diff(old, x) {
		m.log.Info("member change applied", "why", why, "change", line)
	}
	m.logNotes(x, old.Notes)
}

// logNotes logs x's notes that were not already in old: a note repeats
// at every expansion while its cause lasts.
func (m *members) logNotes(x kube.Expanded, old []string) {
	for _, n := range x.Notes {
		if !slices.Contains(old, n) {
			m.log.Warn(n)
		}
	}
}

// update takes the source's latest snapshot; false when there is none
// (not synced: nothing changes).
func (m *members) update() bool {
	snap, ok := m.src.Latest()
	if !ok {
		return false
	}
	m.snap = snap
	m.publishTracks()
	m.mu.Lock()
	m.nodeNames = nodesByAddr(&m.snap)
	m.mu.Unlock()
	return true
}

// nodesByAddr maps every address of every Node to its name.
func nodesByAddr(snap *kube.Snapshot) map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for _, n := range snap.Nodes {
		for _, a := range n.Addresses {
			if a.Address.IsValid() {
				out[a.Address] = n.Name
			}
		}
	}
	return out
}

// nodeName is the name of the Node with address a, or "".
func (m *members) nodeName(a netip.Addr) string {
	if m == nil {
		return ""
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nodeNames[a]
}

// publishTracks writes, for every Service a track.endpoints names, whether
// this node has a ready endpoint of it.
func (m *members) publishTracks() {
	tracks := kube.EndpointTracks(m.static, &m.snap)
	if servesServices(m.static) {
		for _, svc := range m.snap.Services {
			if svc.Local {
				tracks[svc.Ref()] = m.snap.ReadyOn(svc.Ref(), m.static.Node)
			}
		}
	}
	for svc, up := range tracks {
		reason := "no ready endpoint on this node"
		if up {
			reason = "a ready endpoint on this node"
		}
		m.store.Set(health.EndpointKey(svc.String()), health.State{Up: up, Reason: reason})
	}
	// A Service no longer tracked (deleted, or no longer Local) leaves the
	// store rather than keeping its last state.
	for svc := range m.tracked {
		if _, ok := tracks[svc]; !ok {
			m.store.Delete(health.EndpointKey(svc.String()))
		}
	}
	m.tracked = map[kube.ServiceRef]bool{}
	for svc := range tracks {
		m.tracked[svc] = true
	}
}

// origins returns where each backend of balancer came from.
func (m *members) origins(balancer string) map[string]string {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last.Origins[balancer]
}

// serviceRows are the status rows of x's Service addresses.
func serviceRows(x kube.Expanded, snap *kube.Snapshot) []api.ServiceAddress {
	var out []api.ServiceAddress
	for _, sa := range x.ServiceAddrs {
		out = append(out, api.ServiceAddress{Service: sa.Service.String(), Address: sa.Addr.String(), Pool: sa.Pool,
			Announce: sa.Announce, Owner: sa.Owner, Slot: sa.Slot, Local: sa.Local, Endpoints: snap.ReadyCount(sa.Service)})
	}
	return out
}

// poolUsage is the size and use of every Service pool.
func poolUsage(static *config.Config, x kube.Expanded) []api.PoolUsage {
	if !servesServices(static) {
		return nil
	}
	pools, err := lbipam.PoolsFrom(static.Kubernetes.Services)
	if err != nil {
		return nil
	}
	inUse := map[string]map[netip.Addr]bool{}
	for _, sa := range x.ServiceAddrs {
		if inUse[sa.Pool] == nil {
			inUse[sa.Pool] = map[netip.Addr]bool{}
		}
		inUse[sa.Pool][sa.Addr] = true
	}
	var out []api.PoolUsage
	for i, p := range pools {
		out = append(out, api.PoolUsage{Name: p.Name, Announce: static.Kubernetes.Services.Pools[i].Announce,
			Size: p.Size(), InUse: len(inUse[p.Name])})
	}
	return out
}

// poolStatus returns the pools' use.
func (m *members) poolStatus() []api.PoolUsage {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.pools)
}

// serviceStatus returns the Service rows, with whether this node announces
// each now: master of the slot that carries it, or advertising it.
func (m *members) serviceStatus(master func(instance string) bool, announced func(netip.Addr) bool) []api.ServiceAddress {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	rows := slices.Clone(m.services)
	m.mu.Unlock()
	for i := range rows {
		r := &rows[i]
		if r.Announce == "bgp" {
			r.Here = announced(netip.MustParseAddr(r.Address))
		} else if r.Slot != "" {
			r.Here = master(r.Slot)
		}
	}
	return rows
}

// status is the source's part of a snapshot.
func (m *members) status() *api.Kubernetes {
	st := m.src.Status()
	m.mu.Lock()
	notes := slices.Clone(m.last.Notes)
	m.mu.Unlock()
	return &api.Kubernetes{Server: st.Server, WatchUp: st.WatchUp, Synced: st.Synced, Origin: string(st.Origin),
		Nodes: st.Nodes, Slices: st.Slices, LastSync: st.LastSync, LastError: st.LastError,
		StateFileError: st.StateFileError, ChangesApplied: m.applied.Load(), Notes: notes}
}

// watchedServices lists, sorted, the Services whose EndpointSlices the
// config reads.
func watchedServices(c *config.Config) []kube.ServiceRef {
	var out []kube.ServiceRef
	add := func(s string) {
		if r, ok := kube.ParseServiceRef(s); ok && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	for _, b := range c.Balancers {
		if b.BackendsFrom != nil && b.BackendsFrom.Endpoints != nil {
			add(b.BackendsFrom.Endpoints.Service)
		}
	}
	for _, in := range c.VRRP.Instances {
		for _, t := range in.Track.Endpoints {
			add(t.Service)
		}
	}
	for _, p := range c.VRRP.Pools {
		for _, t := range p.Track.Endpoints {
			add(t.Service)
		}
	}
	slices.SortFunc(out, func(a, b kube.ServiceRef) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// readsCluster reports whether the config reads anything from the API (a
// kubernetes section alone does not).
func readsCluster(c *config.Config) bool {
	return watchesNodes(c) || len(watchedServices(c)) > 0 || servesServices(c)
}

// servesServices reports whether vigil is the LoadBalancer implementation.
func servesServices(c *config.Config) bool {
	return c.Kubernetes != nil && c.Kubernetes.Services != nil
}

// watchesNodes reports whether the config reads Nodes.
func watchesNodes(c *config.Config) bool {
	for _, b := range c.Balancers {
		if b.BackendsFrom != nil && b.BackendsFrom.Nodes != nil {
			return true
		}
	}
	for _, in := range c.VRRP.Instances {
		if in.UnicastPeersFrom != nil {
			return true
		}
	}
	return false
}

// redirectRules are the DNATs of every balancer's redirect_from: each
// listen address, from the port clients use to the balancer's.
func redirectRules(c *config.Config) []redirect.Rule {
	var out []redirect.Rule
	for _, b := range c.Balancers {
		if b.RedirectFrom == 0 {
			continue
		}
		for _, l := range b.Listen {
			ap, err := config.ParseListen(l)
			if err != nil || ap.Addr().IsUnspecified() {
				continue // validation refuses both
			}
			out = append(out, redirect.Rule{Balancer: b.Name, VIP: ap.Addr(), From: uint16(b.RedirectFrom), To: ap.Port()})
		}
	}
	return out
}

// redirectStatus is the redirect component's part of a snapshot.
func redirectStatus(r *redirect.Redirect) []api.Redirect {
	var out []api.Redirect
	for _, st := range r.Status() {
		out = append(out, api.Redirect{Balancer: st.Rule.Balancer,
			From:      netip.AddrPortFrom(st.Rule.VIP, st.Rule.From).String(),
			To:        netip.AddrPortFrom(st.Rule.VIP, st.Rule.To).String(),
			Installed: st.Installed, Reason: st.Reason})
	}
	return out
}

// allocator is the component that runs the LoadBalancer allocator: every
// node runs it, one (elected by a Lease) writes the addresses into the
// Services' status, where every node's members read them.
type allocator struct{ c *lbsvc.Controller }

func newAllocator(static *config.Config, log *slog.Logger) (*allocator, error) {
	sc := static.Kubernetes.Services
	pools, err := lbipam.PoolsFrom(sc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes.services: %w", err)
	}
	k := static.Kubernetes
	rc, err := kube.RESTConfig(kube.Options{Kubeconfig: k.Kubeconfig, FallbackServers: k.FallbackServers, Log: log})
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client for %s: %w", rc.Host, err)
	}
	mode := corev1.LoadBalancerIPModeVIP
	if sc.Dataplane == "proxy" || sc.Dataplane == "dsr" {
		// kube-proxy must not short-circuit vigil's dataplane: with VIP it
		// would DNAT the address on every node, also on the endpoints'
		// hosts, where dsr's packets arrive with the address unchanged.
		mode = corev1.LoadBalancerIPModeProxy
	}
	c, err := lbsvc.New(client, lbsvc.Options{Pools: pools, DefaultClass: *sc.DefaultClass, Node: static.Node,
		LeaseNamespace: sc.LeaseNamespace, IPMode: mode, Hold: sc.Hold, Log: log.With("component", "allocator")})
	if err != nil {
		return nil, err
	}
	return &allocator{c}, nil
}

func (a *allocator) Name() string                                  { return "allocator" }
func (a *allocator) Run(ctx context.Context) error                 { return a.c.Run(ctx) }
func (a *allocator) Plan(*config.Config) (component.Change, error) { return component.None{}, nil }

// status is the allocator's part of a snapshot.
func (a *allocator) status() *api.Allocator {
	if a == nil {
		return nil
	}
	st := a.c.Status()
	out := &api.Allocator{Identity: st.Identity, Leader: st.Leader, Leading: st.Leading, Synced: st.Synced,
		WatchError: st.WatchError, Services: len(st.Services), Held: st.Held}
	for _, f := range st.Failures {
		out.Failures = append(out.Failures, api.AllocationFailure{Service: f.Service.String(), Reason: f.Reason})
	}
	return out
}
