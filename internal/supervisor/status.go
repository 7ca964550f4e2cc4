package supervisor

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/bfd"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/proxy"
	"github.com/vigil-lb/vigil/internal/vrrp"
)

// Snapshot returns the state of every component for the control socket,
// metrics and the status page. Safe to call from any goroutine.
func (s *Supervisor) Snapshot() api.Snapshot {
	snap := api.Snapshot{Node: s.node, Cluster: s.cluster, Version: s.Version, Started: s.started, Taken: time.Now(),
		Config: s.path, LastReload: s.reloadStatus()}
	// The configured instances, then the generated slots: the namer learns
	// node names from all of them.
	var rows []vrrpRow
	for i, in := range s.vrrp.instances {
		rows = append(rows, vrrpRow{s.vrrp.all[i], in.Status()})
	}
	s.vrrp.slots.each(func(ic config.Instance, in *vrrp.Instance) {
		rows = append(rows, vrrpRow{ic, in.Status()})
	})
	sts := make([]vrrp.Status, len(rows))
	for i, r := range rows {
		sts[i] = r.st
	}
	names := newNamer(s.node, s.vrrp.names, s.kube.nodeName, s.vrrp.ranks, sts)
	for _, r := range rows {
		out := instanceRow(r.ic, r.st)
		names.explain(&out, r.st, snap.Taken)
		snap.Instances = append(snap.Instances, out)
	}
	drops := s.vrrp.socketDrops()
	for name, a := range s.vrrp.announcerList() {
		snap.Interfaces = append(snap.Interfaces, api.Interface{Name: name, GARPSent: a.Sent(), GARPSuppressed: a.Suppressed(),
			VRRPSocketDrops: drops[name]})
	}
	slices.SortFunc(snap.Interfaces, func(a, b api.Interface) int { return strings.Compare(a.Name, b.Name) })
	for _, c := range s.checks.Statuses() {
		snap.Checks = append(snap.Checks, api.Check{Name: c.Name, Up: c.Up, LastProbe: c.LastProbe, LastError: c.LastErr,
			Latency: c.Latency, Probes: c.Probes, Failures: c.Failures})
	}
	slices.SortFunc(snap.Checks, func(a, b api.Check) int { return strings.Compare(a.Name, b.Name) })
	for _, b := range s.fleet.Balancers() {
		st := b.Status()
		out := api.Balancer{Name: st.Name, Listen: st.Listen, Algorithm: st.Algorithm, Active: st.Active, MaxActive: st.MaxActive,
			Accepted: st.Accepted, Refused: st.Refused, NoBackend: st.NoBackend, BadProxyHeader: st.BadProxyHeader,
			FDExhaustedAccept: st.FDExhaustedAccept, FDExhaustedConnect: st.FDExhaustedConnect}
		for _, be := range st.Backends {
			admin := ""
			switch be.Admin {
			case proxy.AdminDrain:
				admin = api.BackendDrain
			case proxy.AdminDisabled:
				admin = api.BackendDisabled
			}
			out.Backends = append(out.Backends, api.Backend{Address: be.Address, Up: be.Up, Weight: be.Weight, Admin: admin,
				Active: be.Active, Connections: be.Total, ConnectErrors: be.ConnectErrors, BytesIn: be.BytesIn, BytesOut: be.BytesOut,
				ConnectTimeouts: be.ConnectTimeouts, MaxActive: be.MaxActive})
		}
		snap.Balancers = append(snap.Balancers, out)
	}
	if sp := s.bgp.Speaker(); sp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		b := &api.BGP{Announced: []string{}}
		for _, ss := range sp.Sessions(ctx) {
			b.Sessions = append(b.Sessions, api.BGPSession{Neighbor: ss.Neighbor, ASN: ss.ASN, State: ss.State, Since: ss.Since,
				LastError: ss.LastError, Failures: ss.Failures, RetryAt: ss.RetryAt, RoutesReceived: ss.RoutesReceived})
		}
		cancel()
		for _, p := range sp.Announced() {
			b.Announced = append(b.Announced, p.String())
		}
		slices.Sort(b.Announced)
		snap.BGP = b
	}
	snap.BFD = bfdStatus(s.bfd)
	bals, verdicts := s.dsr.Status()
	snap.Balancers = append(snap.Balancers, bals...)
	snap.XDP = verdicts
	if s.kube != nil {
		snap.Kubernetes = s.kube.status()
		for i := range snap.Balancers {
			origins := s.kube.origins(snap.Balancers[i].Name)
			for j := range snap.Balancers[i].Backends {
				be := &snap.Balancers[i].Backends[j]
				be.Source = origins[be.Address]
			}
		}
	}
	for i := range snap.Balancers {
		for j := range snap.Balancers[i].Backends {
			be := &snap.Balancers[i].Backends[j]
			be.State = api.BackendState(be.Up, be.Weight, be.Admin)
		}
	}
	snap.Redirects = redirectStatus(s.redirect)
	snap.Allocator = s.alloc.status()
	snap.Pools = s.kube.poolStatus()
	masters := map[string]bool{}
	for _, in := range snap.Instances {
		masters[in.Name] = in.State == "MASTER"
	}
	announced := map[string]bool{}
	if snap.BGP != nil {
		for _, p := range snap.BGP.Announced {
			announced[p] = true
		}
	}
	snap.Services = s.kube.serviceStatus(func(in string) bool { return masters[in] },
		func(a netip.Addr) bool { return announced[netip.PrefixFrom(a, a.BitLen()).String()] })
	return snap
}

// instanceRow is an instance's status row.
func instanceRow(ic config.Instance, st vrrp.Status) api.Instance {
	out := api.Instance{Name: ic.Name, Interface: ic.Interface, VRID: ic.VRID, Version: ic.Version,
		State: st.State.String(), Priority: ic.Priority, EffectivePriority: int(st.Priority), VIPs: ic.VIPs,
		Since: st.Since, AdvertsSent: st.Adverts, AdvertsReceived: st.Received, Transitions: st.Transition,
		ARPConflicts: st.Conflicts, Resigned: st.Resigned}
	if len(st.Peers) > 0 {
		out.UnicastPeers = addrs(st.Peers)
	}
	if st.Master.IsValid() {
		out.Master = st.Master.String()
	}
	for _, c := range st.ARPConflicts {
		ac := api.ARPConflict{VIP: c.VIP.String(), LastSeen: c.LastSeen, Others: addrs(c.Others)}
		for _, m := range c.MACs {
			ac.MACs = append(ac.MACs, m.String())
		}
		if c.Peer.IsValid() {
			ac.Peer = c.Peer.String()
		}
		if len(ac.Others) == 0 {
			ac.Others = nil
		}
		out.ARPConflictsNow = append(out.ARPConflictsNow, ac)
	}
	if len(st.Drops) > 0 {
		out.Drops = map[string]uint64{}
		for r, n := range st.Drops {
			out.Drops[string(r)] = n
		}
	}
	if f := st.Foreign; f != nil {
		out.Foreign = &api.Foreign{Source: f.Source.String(), VIPs: addrs(f.VIPs), Reason: string(f.Reason),
			LastSeen: f.LastSeen, Count: f.Count}
		for _, fs := range f.Sources {
			out.Foreign.Sources = append(out.Foreign.Sources, api.ForeignSource{Source: fs.Source.String(), Count: fs.Count, LastSeen: fs.LastSeen})
		}
	}
	return out
}

// vrrpRow is an instance's config and status, for one status row.
type vrrpRow struct {
	ic config.Instance
	st vrrp.Status
}

func addrs(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// bfdStatus is the BFD sessions for status; nil when none is configured.
func bfdStatus(m *bfd.Sessions) *api.BFD {
	sessions, dropped := m.Status()
	if len(sessions) == 0 {
		return nil
	}
	out := &api.BFD{Sessions: []api.BFDSession{}}
	if len(dropped) > 0 {
		out.Dropped = dropped
	}
	for _, s := range sessions {
		diag := s.LocalDiag.String()
		if s.PeerRestarted {
			diag += " (it started a new session)"
		}
		out.Sessions = append(out.Sessions, api.BFDSession{Neighbor: s.Neighbor, State: s.State.String(),
			RemoteState: s.RemoteState.String(), Diag: diag, LocalDiscr: s.LocalDiscr, RemoteDiscr: s.RemoteDiscr,
			TxInterval: s.TxInterval, RxInterval: s.RxInterval, DetectionTime: s.DetectionTime, Since: s.Since, Flaps: s.Flaps,
			Sent: s.Sent, Received: s.Received})
	}
	return out
}
