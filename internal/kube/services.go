package kube

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/l2slot"
	"github.com/vigil-lb/vigil/internal/lbipam"
)

// ServiceAddr is one address of a LoadBalancer Service vigil serves, and
// how this node takes part in announcing it.
type ServiceAddr struct {
	Addr    netip.Addr
	Service ServiceRef
	Pool    string
	// Announce is l2 or bgp (the pool's).
	Announce string
	// Owner is the first-choice node of the L2 slot carrying the address
	// ("" for bgp, or when no slot may carry it).
	Owner string
	// Local: externalTrafficPolicy Local.
	Local bool
}

// SlotNodes maps a pool to the nodes its L2 slots were made for. The set is
// kept from the first expansion on: a slot is a VRRP instance, and
// instances are made at start; a node that joins later gets its slot at
// the next restart (Notes say so), one that leaves keeps its slot, which
// its backups carry.
type SlotNodes map[string][]string

// Serves reports whether vigil serves svc: its class is vigil's, or it has
// none and default_class holds.
func Serves(s *config.Services, svc Service) bool {
	return svc.Class == config.ServiceClass || svc.Class == "" && (s.DefaultClass == nil || *s.DefaultClass)
}

// services adds what the LoadBalancer Services need on this node: a proxy
// balancer per Service port (dataplane proxy), a BGP announcement per
// address of a bgp pool while this node may announce, and the L2 slots of
// every l2 pool with the addresses they carry. With dataplane dsr it
// returns the Services (with their addresses in a pool) for serviceDSR.
func (x *Expanded) services(c *config.Config, snap *Snapshot, prevSlots SlotNodes) (dsr []Service) {
	x.Slots = SlotNodes{}
	if c.Kubernetes == nil || c.Kubernetes.Services == nil {
		return nil
	}
	sc := c.Kubernetes.Services
	pools, err := lbipam.PoolsFrom(sc)
	if err != nil {
		x.note("kubernetes.services: %v; no Service served", err)
		return nil
	}
	self := snap.node(c.Node)
	byPool := map[string][]ServiceAddr{}
	for _, svc := range snap.Services {
		if !Serves(sc, svc) {
			continue
		}
		var ours []netip.Addr
		for _, a := range svc.Addresses {
			p := lbipam.PoolOf(pools, a)
			if p == "" {
				x.note("Service %s: address %s is in no pool of kubernetes.services; neither announced nor proxied", svc.Ref(), a)
				continue
			}
			pc := servicePool(sc, p)
			sa := ServiceAddr{Addr: a, Service: svc.Ref(), Pool: p, Announce: pc.Announce, Local: svc.Local}
			byPool[p] = append(byPool[p], sa)
			ours = append(ours, a)
		}
		if sc.Dataplane == "proxy" && len(ours) > 0 {
			svc.Addresses = ours
			x.serviceBalancers(c, snap, svc)
		}
		if sc.Dataplane == "dsr" && len(ours) > 0 {
			svc.Addresses = ours
			dsr = append(dsr, svc)
		}
	}
	for i := range sc.Pools {
		pc := &sc.Pools[i]
		eligible := eligibleNodes(snap, pc.Nodes)
		mayAnnounce := self != nil && slices.Contains(eligible, c.Node)
		addrs := byPool[pc.Name]
		switch pc.Announce {
		case "bgp":
			for _, sa := range addrs {
				if mayAnnounce {
					// With dataplane proxy, package bgp makes the node
					// accept the address while it is announced.
					x.bgpAnnounce(c, pc, sa)
				}
				x.ServiceAddrs = append(x.ServiceAddrs, sa)
			}
		default:
			x.slots(c, snap, pc, eligible, addrs, prevSlots)
		}
	}
	return dsr
}

// serviceBalancers adds one proxy balancer per TCP port of svc, listening
// on every address of the Service, over its ready endpoints.
func (x *Expanded) serviceBalancers(c *config.Config, snap *Snapshot, svc Service) {
	for _, sp := range svc.Ports {
		if sp.Protocol != "TCP" {
			x.note("Service %s: port %d/%s: dataplane proxy carries TCP only; not served", svc.Ref(), sp.Port, sp.Protocol)
			continue
		}
		name := fmt.Sprintf("service/%s/%s", svc.Ref(), portLabel(sp))
		var listen []string
		for _, a := range svc.Addresses {
			listen = append(listen, netip.AddrPortFrom(a, uint16(sp.Port)).String())
		}
		b := config.GeneratedProxy(name, listen)
		origins := map[string]string{}
		for _, ep := range snap.ReadyEndpoints(svc.Ref(), sp.Name) {
			be := config.Backend{Address: ep.Address.String()}
			be.SetDefaults()
			b.Backends = append(b.Backends, be)
			origins[be.Address] = "endpoints " + svc.Ref().String() + " (node " + ep.NodeName + ")"
		}
		c.Balancers = append(c.Balancers, b)
		x.Origins[name] = origins
	}
}

func portLabel(sp ServicePort) string {
	if sp.Name != "" {
		return sp.Name
	}
	return strconv.Itoa(sp.Port)
}

// bgpAnnounce announces sa while this node may: for Local, while it has a
// ready endpoint of the Service; with dataplane proxy, while its balancer
// has a backend.
func (x *Expanded) bgpAnnounce(c *config.Config, pc *config.ServicePool, sa ServiceAddr) {
	an := config.Announce{Prefix: netip.PrefixFrom(sa.Addr, sa.Addr.BitLen()).String()}
	if pc.BGP != nil {
		an.Communities, an.LocalPref = slices.Clone(pc.BGP.Communities), pc.BGP.LocalPref
	}
	if sa.Local {
		an.WhenEndpoints = sa.Service.String()
	}
	c.BGP.Announce = append(c.BGP.Announce, an)
}

// slots plans the L2 slots of pool pc and adds this node's slot instances,
// each with the addresses it carries.
func (x *Expanded) slots(c *config.Config, snap *Snapshot, pc *config.ServicePool, eligible []string,
	addrs []ServiceAddr, prevSlots SlotNodes) {
	nodes := prevSlots[pc.Name]
	if len(nodes) == 0 {
		nodes = eligible
	} else {
		for _, n := range eligible {
			if !slices.Contains(nodes, n) {
				x.note("kubernetes.services pool %s: Node %s may announce, but slots are made at start: it gets one at the next restart", pc.Name, n)
			}
		}
	}
	if len(nodes) == 0 {
		for _, sa := range addrs {
			x.ServiceAddrs = append(x.ServiceAddrs, sa)
		}
		if len(addrs) > 0 {
			x.note("kubernetes.services pool %s: no Node may announce (nodes %q); %d addresses unannounced", pc.Name, pc.Nodes, len(addrs))
		}
		return
	}
	x.Slots[pc.Name] = nodes
	in := l2slot.Input{Cluster: c.Cluster, Pool: pc.Name, Nodes: nodes, Taken: takenVRIDs(c, pc.Interface)}
	for _, sa := range addrs {
		in.Addrs = append(in.Addrs, sa.Addr)
		if sa.Local {
			if in.Allowed == nil {
				in.Allowed = map[netip.Addr][]string{}
			}
			in.Allowed[sa.Addr] = snap.ReadyNodes(sa.Service)
		}
	}
	plan, err := l2slot.New(in)
	if err != nil {
		x.note("kubernetes.services pool %s: %v; not announced", pc.Name, err)
		return
	}
	for _, sa := range addrs {
		sa.Owner, _ = plan.Owner(sa.Addr)
		x.ServiceAddrs = append(x.ServiceAddrs, sa)
	}
	if !slices.Contains(nodes, c.Node) {
		return // this node announces nothing of the pool
	}
	for _, s := range plan.Slots {
		x.Config.VRRP.SlotInstances = append(x.Config.VRRP.SlotInstances, slotInstance(c, pc, s))
	}
}

// slotInstance is this node's VRRP instance for slot s.
func slotInstance(c *config.Config, pc *config.ServicePool, s l2slot.Slot) config.Instance {
	anchor := netip.IPv4Unspecified()
	for _, a := range s.Addrs {
		if a.Is6() {
			anchor = netip.IPv6Unspecified()
		}
	}
	slot := &config.Slot{Pool: pc.Name}
	for _, a := range s.Addrs {
		slot.Extra = append(slot.Extra, netip.PrefixFrom(a, a.BitLen()))
	}
	preempt, accept := true, true
	count, refresh := config.DefaultGARPCount, config.DefaultGARPRefresh
	return config.Instance{
		Name: "slot/" + pc.Name + "/" + s.Node, Interface: pc.Interface, VRID: int(s.VRID),
		Version: config.DefaultVersion, Priority: s.Priority(c.Node), AdvertInterval: config.DefaultAdvertInterval,
		Preempt: &preempt, Accept: &accept, VIPs: []string{netip.PrefixFrom(anchor, anchor.BitLen()).String()},
		GARP:          config.GARP{Count: &count, Interval: config.DefaultGARPInterval, Refresh: &refresh},
		NotifyTimeout: config.DefaultNotifyTimeout,
		Path:          "kubernetes.services.pools[" + pc.Name + "]",
		Slot:          slot,
	}
}

// takenVRIDs are the VRIDs of the other instances on ifname.
func takenVRIDs(c *config.Config, ifname string) []uint8 {
	var out []uint8
	for _, in := range c.VRRP.All() {
		if in.Interface == ifname && in.Slot == nil {
			out = append(out, uint8(in.VRID))
		}
	}
	return out
}

// eligibleNodes are the Nodes matching selector, sorted.
func eligibleNodes(snap *Snapshot, selector string) []string {
	sel, err := labels.Parse(selector) // validated
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range snap.Nodes {
		if sel.Matches(labels.Set(n.Labels)) {
			out = append(out, n.Name)
		}
	}
	return out
}

func servicePool(sc *config.Services, name string) *config.ServicePool {
	for i := range sc.Pools {
		if sc.Pools[i].Name == name {
			return &sc.Pools[i]
		}
	}
	return nil
}

// node returns the named Node, nil if the snapshot has none.
func (s *Snapshot) node(name string) *Node {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name {
			return &s.Nodes[i]
		}
	}
	return nil
}
