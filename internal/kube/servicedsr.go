package kube

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/lbipam"
)

// dsrWant is one address and port of a Service that dataplane dsr would
// steer: one XDP service (address, port, protocol) each.
type dsrWant struct {
	svc   Service
	addr  netip.Addr
	port  ServicePort
	iface string // the pool's: where the program runs
	name  string // the generated balancer's
}

// serviceDSR adds, for dataplane dsr, one dsr balancer per address and
// TCP or UDP port of each Service in svcs (their addresses in a pool) over
// its ready endpoints of the address's family on the same port (the
// program changes nothing above Ethernet). The program steers at most
// config.MaxDSRServices addresses:ports in all, the config's own dsr
// balancers' first: what was steered before keeps its place, and what
// does not fit is left out with a note naming the Service. Endpoints that
// are not one hop away are for the dsr plane to leave out (it knows the
// host's interfaces).
func (x *Expanded) serviceDSR(c *config.Config, snap *Snapshot, svcs []Service, last Expanded) {
	sc := c.Kubernetes.Services
	pools, err := lbipam.PoolsFrom(sc) // validated, and read by services before
	if err != nil {
		return
	}
	var wants, before []dsrWant
	for _, svc := range svcs {
		for _, sp := range svc.Ports {
			if sp.Protocol != "TCP" && sp.Protocol != "UDP" {
				x.note("Service %s: port %d/%s: dataplane dsr steers TCP and UDP only; not served", svc.Ref(), sp.Port, sp.Protocol)
				continue
			}
			for _, a := range svc.Addresses {
				w := dsrWant{svc: svc, addr: a, port: sp, iface: servicePool(sc, lbipam.PoolOf(pools, a)).Interface,
					name: fmt.Sprintf("service/%s/%s/%s", svc.Ref(), portLabel(sp), a)}
				if _, ok := last.Origins[w.name]; ok {
					before = append(before, w)
				} else {
					wants = append(wants, w)
				}
			}
		}
	}
	room, backends := config.MaxDSRServices, config.MaxDSRBackends
	for _, b := range c.Balancers {
		if b.Mode == "dsr" {
			room -= len(b.Listen)
			backends -= len(b.Backends)
		}
	}
	for _, w := range append(before, wants...) {
		if room <= 0 {
			x.note("Service %s: %s not steered: the XDP program steers at most %d addresses:ports (balancers of mode dsr and Services with dataplane dsr together), all in use",
				w.svc.Ref(), w.listen(), config.MaxDSRServices)
			continue
		}
		room--
		backends -= x.dsrBalancer(c, snap, w, backends)
	}
}

func (w dsrWant) listen() string {
	return netip.AddrPortFrom(w.addr, uint16(w.port.Port)).String() + "/" + w.port.Protocol
}

// dsrBalancer adds w's balancer with at most room backends and returns
// how many it has.
func (x *Expanded) dsrBalancer(c *config.Config, snap *Snapshot, w dsrWant, room int) int {
	ref := w.svc.Ref()
	b := config.GeneratedDSR(w.name, ref.String(), w.iface, strings.ToLower(w.port.Protocol),
		netip.AddrPortFrom(w.addr, uint16(w.port.Port)).String())
	origins := map[string]string{}
	var otherPort, full []string
	for _, ep := range snap.ReadyEndpoints(ref, w.port.Name) {
		a := ep.Address.Addr().Unmap()
		switch {
		case a.Is4() != w.addr.Is4():
			// It serves the Service's address of its family: no note.
		case int(ep.Address.Port()) != w.port.Port:
			otherPort = append(otherPort, ep.Address.String())
		case len(b.Backends) >= room:
			full = append(full, ep.Address.String())
		default:
			be := config.Backend{Address: netip.AddrPortFrom(a, ep.Address.Port()).String()}
			be.SetDefaults()
			b.Backends = append(b.Backends, be)
			origins[be.Address] = "endpoints " + ref.String() + " (node " + ep.NodeName + ")"
		}
	}
	if len(otherPort) > 0 {
		x.note("Service %s: %s: endpoints %s left out: dataplane dsr does not change ports, so the endpoints must serve on %d (targetPort = port)",
			ref, w.listen(), strings.Join(otherPort, ", "), w.port.Port)
	}
	if len(full) > 0 {
		x.note("Service %s: %s: endpoints %s left out: the XDP program has room for %d backends in all",
			ref, w.listen(), strings.Join(full, ", "), config.MaxDSRBackends)
	}
	c.Balancers = append(c.Balancers, b)
	x.Origins[b.Name] = origins
	return len(b.Backends)
}
