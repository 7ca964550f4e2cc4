package kube

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

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
	// Slot is the name of the VRRP instance of that slot ("" without one).
	Slot string
	// Local: externalTrafficPolicy Local.
	Local bool
}

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
func (x *Expanded) services(c *config.Config, snap *Snapshot) (dsr []Service) {
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
			x.slots(c, snap, pc, pools[i], eligible, addrs)
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

// slots plans the L2 slots of pool pc over the Nodes that may announce now,
// and adds this node's instances of them, each with the addresses it
// carries. Slots follow the Nodes: one that joins gets its slots, and one
// that is deleted loses them, at the next expansion (the VRRP component
// adds and removes them live); whether a node is alive is for VRRP to
// tell. Each family of the pool has its own slots: VRRP for IPv4 and IPv6
// are separate groups with separate VRIDs.
func (x *Expanded) slots(c *config.Config, snap *Snapshot, pc *config.ServicePool, p lbipam.Pool, eligible []string,
	addrs []ServiceAddr) {
	if len(eligible) == 0 {
		for _, sa := range addrs {
			x.ServiceAddrs = append(x.ServiceAddrs, sa)
		}
		if len(addrs) > 0 {
			x.note("kubernetes.services pool %s: no Node may announce (nodes %q); %d addresses unannounced", pc.Name, pc.Nodes, len(addrs))
		}
		return
	}
	for _, is6 := range poolFamilies(p) {
		in := l2slot.Input{Cluster: c.Cluster, Pool: pc.Name, Nodes: eligible, Taken: takenVRIDs(c, pc.Interface, is6),
			Budget: slotBudget(c, pc.Interface, is6)}
		var fam []ServiceAddr
		for _, sa := range addrs {
			if sa.Addr.Is6() != is6 {
				continue
			}
			fam = append(fam, sa)
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
			x.ServiceAddrs = append(x.ServiceAddrs, fam...)
			x.note("kubernetes.services pool %s: %v; not announced", pc.Name, err)
			continue
		}
		if plan.Limited() {
			n := len(eligible)
			x.note("kubernetes.services pool %s (%s): %d Nodes need %d VRIDs on %s for a dead Node's addresses to spread over every survivor; "+
				"the VRIDs free to the pool allow %d slots per Node, so they spread over %d survivors", pc.Name, familyName(is6), n, n*(n-1),
				pc.Interface, plan.Heirs, plan.Heirs)
		}
		for _, sa := range fam {
			if s, ok := plan.SlotOf(sa.Addr); ok {
				sa.Owner, sa.Slot = s.Node, slotName(pc.Name, s, is6)
			}
			x.ServiceAddrs = append(x.ServiceAddrs, sa)
		}
		if !slices.Contains(eligible, c.Node) {
			continue // this node announces nothing of the pool
		}
		for _, s := range plan.Slots {
			x.Config.VRRP.SlotInstances = append(x.Config.VRRP.SlotInstances, slotInstance(c, pc, s, is6))
		}
	}
}

// poolFamilies lists the families of p's ranges: false for IPv4, true for
// IPv6, IPv4 first.
func poolFamilies(p lbipam.Pool) []bool {
	var v4, v6 bool
	for _, r := range p.Ranges {
		v4, v6 = v4 || r.First.Is4(), v6 || r.First.Is6()
	}
	var out []bool
	if v4 {
		out = append(out, false)
	}
	if v6 {
		out = append(out, true)
	}
	return out
}

func familyName(is6 bool) string {
	if is6 {
		return "IPv6"
	}
	return "IPv4"
}

// slotName is the VRRP instance name of slot s of pool: "slot/POOL/NAME"
// for IPv4, "slot6/POOL/NAME" for IPv6.
func slotName(pool string, s l2slot.Slot, is6 bool) string {
	prefix := "slot/"
	if is6 {
		prefix = "slot6/"
	}
	return prefix + pool + "/" + s.Name()
}

// slotInstance is this node's VRRP instance for slot s. Its one VIP is the
// family's unspecified address: an anchor that adverts name and nothing
// configures.
func slotInstance(c *config.Config, pc *config.ServicePool, s l2slot.Slot, is6 bool) config.Instance {
	anchor := netip.IPv4Unspecified()
	if is6 {
		anchor = netip.IPv6Unspecified()
	}
	slot := &config.Slot{Pool: pc.Name}
	for _, a := range s.Addrs {
		slot.Extra = append(slot.Extra, netip.PrefixFrom(a, a.BitLen()))
	}
	preempt, accept := true, true
	count, refresh := config.DefaultGARPCount, config.DefaultGARPRefresh
	return config.Instance{
		Name: slotName(pc.Name, s, is6), Interface: pc.Interface, VRID: int(s.VRID),
		Version: config.DefaultVersion, Priority: s.Priority(c.Node), AdvertInterval: config.DefaultAdvertInterval,
		Preempt: &preempt, Accept: &accept, VIPs: []string{netip.PrefixFrom(anchor, anchor.BitLen()).String()},
		GARP:          config.GARP{Count: &count, Interval: config.DefaultGARPInterval, Refresh: &refresh},
		NotifyTimeout: config.DefaultNotifyTimeout,
		Path:          "kubernetes.services.pools[" + pc.Name + "]",
		Slot:          slot,
	}
}

// takenVRIDs are the VRIDs the slots of a pool on ifname must avoid: those
// of the configured instances there, and of the slots of the family's
// pools planned before it.
func takenVRIDs(c *config.Config, ifname string, is6 bool) []uint8 {
	var out []uint8
	for _, in := range c.VRRP.All() {
		if in.Interface == ifname && (in.Slot == nil || strings.HasPrefix(in.Name, "slot6/") == is6) {
			out = append(out, uint8(in.VRID))
		}
	}
	return out
}

// slotBudget is how many VRIDs each l2 pool of the family on ifname may
// use: the ones the configured instances leave, shared evenly, so that the
// pools planned first do not leave the later ones none.
func slotBudget(c *config.Config, ifname string, is6 bool) int {
	taken := map[int]bool{}
	for _, in := range c.VRRP.Instances {
		if in.Interface == ifname {
			taken[in.VRID] = true
		}
	}
	for _, in := range c.VRRP.PoolInstances {
		if in.Interface == ifname {
			taken[in.VRID] = true
		}
	}
	pools := 0
	if sc := c.Kubernetes.Services; sc != nil {
		all, err := lbipam.PoolsFrom(sc)
		if err != nil {
			return 0
		}
		for i, pc := range sc.Pools {
			if pc.Announce != "bgp" && pc.Interface == ifname && slices.Contains(poolFamilies(all[i]), is6) {
				pools++
			}
		}
	}
	return (255 - len(taken)) / max(pools, 1)
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
