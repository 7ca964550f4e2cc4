package dsr

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/xdp"
)

// servicesDSR serves LoadBalancer Services with dataplane dsr, and has one
// dsr balancer of its own.
const servicesDSR = `
cluster: c
node: n1
kubernetes:
  state_file: ""
  services:
    dataplane: dsr
    pools: [{name: lan, addresses: ["10.0.0.200-10.0.0.220"], interface: eth0}]
balancers:
  - {name: own, mode: dsr, interface: eth0, listen: ["10.0.0.20:80"], backends: [{address: "10.0.0.5:80"}]}
`

// svc is the balancer package kube generates for web/NAME at addr:80.
func svc(name, addr string, backends ...string) config.Balancer {
	b := config.GeneratedDSR("service/web/"+name+"/http/"+addr, "web/"+name, "eth0", "tcp", addr+":80")
	for _, a := range backends {
		be := config.Backend{Address: a}
		be.SetDefaults()
		b.Backends = append(b.Backends, be)
	}
	return b
}

// withServices is servicesDSR with the Services' balancers after the
// config's own, as package kube expands it.
func withServices(t *testing.T, bals ...config.Balancer) *config.Config {
	t.Helper()
	c := parse(t, servicesDSR)
	c.Balancers = append(c.Balancers, bals...)
	return c
}

// servicePlane is a plane of servicesDSR on k with a new store.
func servicePlane(t *testing.T, k *fakeKernel) (*Plane, *health.Store) {
	t.Helper()
	store := health.New()
	p, err := New(withServices(t), k, store, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, store
}

func apply(t *testing.T, p *Plane, c *config.Config) {
	t.Helper()
	ch, err := p.Plan(c)
	if err != nil {
		t.Fatal(err)
	}
	ch.Commit()
}

// serviceID is the id of the service the plane steers at listen.
func serviceID(t *testing.T, p *Plane, listen string) uint32 {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.bals {
		for _, s := range b.services {
			if netip.AddrPortFrom(s.VIP, s.Port).String() == listen {
				return s.ID
			}
		}
	}
	t.Fatalf("no service at %s", listen)
	return 0
}

// Services' balancers come, change and go on reload, each address:port
// with its own service id; one that goes stops being steered and leaves
// the store, and its id is given to the next one.
func TestServiceBalancersComeAndGo(t *testing.T) {
	k := resolvingKernel()
	p, store := servicePlane(t, k)
	if k.loads != 1 || len(p.bals) != 1 {
		t.Fatalf("loads %d, balancers %d", k.loads, len(p.bals))
	}

	apply(t, p, withServices(t, svc("a", "10.0.0.200", "10.0.0.6:80", "10.0.1.6:80"), svc("b", "10.0.0.201", "10.0.0.7:80")))
	p.resolveMACs(context.Background(), true)
	a, b := serviceID(t, p, "10.0.0.200:80"), serviceID(t, p, "10.0.0.201:80")
	if a != 1 || b != 2 {
		t.Fatalf("service ids %d and %d, want 1 and 2 (0 is the config's own)", a, b)
	}
	if got := inTable(t, p, k.dp, a); !slices.Equal(got, []string{"10.0.0.6:80", "10.0.1.6:80"}) {
		t.Fatalf("web/a's table %v", got)
	}
	if st, ok := balancerState(store, "service/web/a/http/10.0.0.200"); !ok || !st.Up {
		t.Fatalf("web/a in the store: %+v %v", st, ok)
	}

	// An endpoint leaves web/a: out of its table, the other stays where it was.
	idx := p.idx(t, "service/web/a/http/10.0.0.200", "10.0.0.6:80")
	apply(t, p, withServices(t, svc("a", "10.0.0.200", "10.0.0.6:80"), svc("b", "10.0.0.201", "10.0.0.7:80")))
	if got := inTable(t, p, k.dp, a); !slices.Equal(got, []string{"10.0.0.6:80"}) || p.idx(t, "service/web/a/http/10.0.0.200", "10.0.0.6:80") != idx {
		t.Fatalf("web/a's table after an endpoint left: %v", got)
	}

	// web/a goes, web/c comes and takes its id.
	apply(t, p, withServices(t, svc("b", "10.0.0.201", "10.0.0.7:80"), svc("c", "10.0.0.202", "10.0.0.8:80")))
	p.resolveMACs(context.Background(), false)
	if !slices.Contains(k.dp.removed, netip.MustParseAddrPort("10.0.0.200:80")) {
		t.Fatalf("web/a's service not removed: %v", k.dp.removed)
	}
	if _, ok := balancerState(store, "service/web/a/http/10.0.0.200"); ok {
		t.Error("web/a's key left in the store")
	}
	if c := serviceID(t, p, "10.0.0.202:80"); c != a {
		t.Errorf("web/c got id %d, want web/a's %d", c, a)
	}
	if got := inTable(t, p, k.dp, a); !slices.Equal(got, []string{"10.0.0.8:80"}) {
		t.Errorf("id %d's table now %v, want web/c's", a, got)
	}
	if serviceID(t, p, "10.0.0.201:80") != b {
		t.Error("web/b changed its id")
	}

	// A Service's balancer that changes otherwise (here UDP) is replaced:
	// the old service goes before the new one is written.
	udp := svc("b", "10.0.0.201", "10.0.0.7:80")
	udp.Protocol = "udp"
	apply(t, p, withServices(t, udp, svc("c", "10.0.0.202", "10.0.0.8:80")))
	if last := k.dp.removed[len(k.dp.removed)-1]; last != netip.MustParseAddrPort("10.0.0.201:80") {
		t.Fatalf("removed %v", k.dp.removed)
	}
	p.mu.Lock()
	s := p.find("service/web/b/http/10.0.0.201").services[0]
	p.mu.Unlock()
	if s.Proto != 17 || k.dp.services[s.ID].Proto != 17 {
		t.Fatalf("web/b after the change: %+v", s)
	}

	// The config's own dsr balancers still need a restart to change.
	c := withServices(t, svc("c", "10.0.0.202", "10.0.0.8:80"))
	c.Balancers[0].Listen = []string{"10.0.0.21:80"}
	if _, err := p.Plan(c); err == nil || !strings.Contains(err.Error(), "balancers[0] (own): a dsr balancer's settings other than its backends") {
		t.Fatalf("own balancer changed: %v", err)
	}
}

// A Service's endpoints that the program cannot reach are left out with a
// note in status, where the config's own backend would be refused: one on
// no subnet of the host, and one that is the host itself.
func TestServiceEndpointsNotOneHopAwayAreLeftOut(t *testing.T) {
	k := resolvingKernel()
	p, _ := servicePlane(t, k)
	apply(t, p, withServices(t, svc("a", "10.0.0.200", "10.0.0.6:80", "10.9.0.6:80", "10.0.0.1:80")))
	p.resolveMACs(context.Background(), true)
	if got := inTable(t, p, k.dp, 1); !slices.Equal(got, []string{"10.0.0.6:80"}) {
		t.Fatalf("table %v", got)
	}
	bals, _ := p.Status()
	want := []string{
		"endpoint 10.9.0.6:80 left out: it is not on a subnet of eth0 or of another interface, and dataplane dsr sends it frames directly, so it must be one Ethernet hop away",
		"endpoint 10.0.0.1:80 left out: it is an address of this host, and the XDP program sends frames to other hosts only",
	}
	if len(bals) != 2 || bals[1].Name != "service/web/a/http/10.0.0.200" || len(bals[1].Backends) != 1 || !slices.Equal(bals[1].Notes, want) {
		t.Fatalf("status %+v, want web/a with one backend and the notes %q", bals, want)
	}
}

// Services' balancers on an interface the program does not run on yet:
// the reload attaches it there.
func TestServiceBalancerOnAnotherInterfaceAttaches(t *testing.T) {
	k := resolvingKernel()
	p, _ := servicePlane(t, k)
	b := svc("a", "10.0.1.200", "10.0.1.6:80")
	b.Interface = "eth1"
	apply(t, p, withServices(t, b))
	if got := k.dp.attached; len(got) != 2 || got[3] != "auto" {
		t.Fatalf("attached %v, want eth0 and eth1 (3)", got)
	}
}

// More Services' addresses than the program has ids for: the reload is
// refused (package kube leaves the extra ones out before, with a note).
func TestServiceIDsRunOut(t *testing.T) {
	k := resolvingKernel()
	p, _ := servicePlane(t, k)
	var bals []config.Balancer
	for i := range xdp.MaxServices {
		bals = append(bals, svc(fmt.Sprint("s", i), fmt.Sprint("10.0.0.", 200+i), "10.0.0.6:80"))
	}
	_, err := p.Plan(withServices(t, bals...))
	if want := "balancer service/web/s15/http/10.0.0.215 (Service web/s15): listen 10.0.0.215:80: the program steers at most 16 addresses:ports, all in use"; err == nil || err.Error() != want {
		t.Fatalf("%v, want %q", err, want)
	}
}

// Without the program, Services' balancers come and go as not running,
// with the reason, in status and the store.
func TestServiceBalancersWithoutTheProgram(t *testing.T) {
	k := resolvingKernel()
	k.loadErr = fmt.Errorf("%w: %w: it needs CAP_BPF and CAP_NET_ADMIN (root)", xdp.ErrLoad, os.ErrPermission)
	p, store := servicePlane(t, k)
	apply(t, p, withServices(t, svc("a", "10.0.0.200", "10.0.0.6:80")))
	bals, _ := p.Status()
	if len(bals) != 2 || bals[1].Name != "service/web/a/http/10.0.0.200" || !strings.Contains(bals[1].Error, "CAP_BPF") {
		t.Fatalf("status %+v", bals)
	}
	if st, ok := balancerState(store, "service/web/a/http/10.0.0.200"); !ok || st.Up {
		t.Fatalf("store %+v %v", st, ok)
	}
	apply(t, p, withServices(t))
	if _, ok := balancerState(store, "service/web/a/http/10.0.0.200"); ok {
		t.Error("a gone Service's balancer left its key")
	}
	if bals, _ := p.Status(); len(bals) != 1 {
		t.Errorf("status %+v", bals)
	}
}
