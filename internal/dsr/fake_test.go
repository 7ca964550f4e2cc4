package dsr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/xdp"
)

// fakeKernel is a host of a few links, their addresses, a neighbour table
// and hosts that answer ARP, and a program that loads into fakeDataplane.
type fakeKernel struct {
	links    []Link
	features map[string]xdp.Features // absent: the kernel does not say
	addrs    []Addr
	loadErr  error
	dp       *fakeDataplane

	mu     sync.Mutex
	neigh  map[netip.Addr]net.HardwareAddr // by address, on any link
	arp    map[netip.Addr]net.HardwareAddr // who answers a probe
	probes []netip.Addr
	loads  int
	// barrier, when set, holds every ARP probe until as many as it
	// counts are under way.
	barrier *sync.WaitGroup
}

var errNoLink = errors.New("Link not found")

// newKernel is a host with eth0 (10.0.0.1/24, index 2) and eth1
// (10.0.1.1/24, index 3), both NICs that take redirected frames.
func newKernel() *fakeKernel {
	take := xdp.FeatureBasic | xdp.FeatureRedirect | xdp.FeatureNdoXmit
	return &fakeKernel{
		links: []Link{
			{Name: "eth0", Index: 2, MAC: mac(0xe0), Kind: "device"},
			{Name: "eth1", Index: 3, MAC: mac(0xe1), Kind: "device"},
		},
		features: map[string]xdp.Features{"eth0": take, "eth1": take},
		addrs: []Addr{
			{Prefix: netip.MustParsePrefix("10.0.0.1/24"), LinkIndex: 2},
			{Prefix: netip.MustParsePrefix("10.0.1.1/24"), LinkIndex: 3},
			{Prefix: netip.MustParsePrefix("fd00::1/64"), LinkIndex: 2},
		},
		dp:    newDataplane(),
		neigh: map[netip.Addr]net.HardwareAddr{},
		arp:   map[netip.Addr]net.HardwareAddr{},
	}
}

func mac(last byte) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, last} }

func (k *fakeKernel) LinkByName(name string) (Link, error) {
	for _, l := range k.links {
		if l.Name == name {
			return l, nil
		}
	}
	return Link{}, errNoLink
}

func (k *fakeKernel) LinkByIndex(index int) (Link, error) {
	for _, l := range k.links {
		if l.Index == index {
			return l, nil
		}
	}
	return Link{}, errNoLink
}

func (k *fakeKernel) XDPFeatures(ifindex int) (xdp.Features, error) {
	l, err := k.LinkByIndex(ifindex)
	if err != nil {
		return 0, err
	}
	f, ok := k.features[l.Name]
	if !ok {
		return 0, xdp.ErrNoFeatures
	}
	return f, nil
}

func (k *fakeKernel) Addrs() ([]Addr, error) { return k.addrs, nil }

func (k *fakeKernel) Neighbour(ifindex int, ip netip.Addr) (net.HardwareAddr, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.neigh[ip], nil
}

func (k *fakeKernel) ProbeARP(ctx context.Context, iface string, ip netip.Addr, wait time.Duration) ([]net.HardwareAddr, error) {
	k.mu.Lock()
	k.probes = append(k.probes, ip)
	m, barrier := k.arp[ip], k.barrier
	k.mu.Unlock()
	if barrier != nil {
		// Each probe waits for the others, as a real one waits out its
		// window: only probes that run at once all get through.
		barrier.Done()
		done := make(chan struct{})
		go func() { barrier.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			return nil, errors.New("the other probes did not come: they run one after the other")
		}
	}
	if m != nil {
		return []net.HardwareAddr{m}, nil
	}
	return nil, nil
}

func (k *fakeKernel) LoadXDP() (Dataplane, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.loads++
	if k.loadErr != nil {
		return nil, k.loadErr
	}
	return k.dp, nil
}

// setNeighbour puts ip in the neighbour table (nil takes it out).
func (k *fakeKernel) setNeighbour(ip string, m net.HardwareAddr) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.neigh[netip.MustParseAddr(ip)] = m
}

func (k *fakeKernel) answerARP(ip string, m net.HardwareAddr) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.arp[netip.MustParseAddr(ip)] = m
}

func (k *fakeKernel) probed() []netip.Addr {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.probes)
}

// fakeDataplane records what the plane writes.
type fakeDataplane struct {
	mu       sync.Mutex
	attached map[int]string // ifindex -> mode asked for
	services map[uint32]xdp.Service
	removed  []netip.AddrPort // services removed, in order
	backends map[uint32]fakeBackend
	writes   int
	closed   bool
	changed  chan struct{} // a value after every write
}

type fakeBackend struct {
	mac, src net.HardwareAddr
	ifindex  uint32
}

func newDataplane() *fakeDataplane {
	return &fakeDataplane{attached: map[int]string{}, services: map[uint32]xdp.Service{},
		backends: map[uint32]fakeBackend{}, changed: make(chan struct{}, 1)}
}

func (d *fakeDataplane) wrote() {
	d.writes++
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// Attach takes native, generic or auto; auto runs native, as on a NIC
// whose driver has it.
func (d *fakeDataplane) Attach(ifindex int, mode string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.attached[ifindex] = mode
	if mode == "auto" {
		return "native", nil
	}
	return mode, nil
}

func (d *fakeDataplane) SetService(s xdp.Service) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s.Table != nil && s.Table.Size() != xdp.RingSize {
		return fmt.Errorf("table size %d", s.Table.Size())
	}
	d.services[s.ID] = s
	d.wrote()
	return nil
}

func (d *fakeDataplane) RemoveService(vip netip.Addr, port uint16, proto uint8) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, s := range d.services {
		if s.VIP == vip && s.Port == port && s.Proto == proto {
			delete(d.services, id)
			d.removed = append(d.removed, netip.AddrPortFrom(vip, port))
		}
	}
	d.wrote()
	return nil
}

func (d *fakeDataplane) SetBackend(idx uint32, m net.HardwareAddr, ifindex uint32, src net.HardwareAddr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.backends[idx] = fakeBackend{mac: m, src: src, ifindex: ifindex}
	d.wrote()
	return nil
}

func (d *fakeDataplane) ServiceCounters(id uint32) (uint64, uint64, error) {
	return uint64(id) + 10, uint64(id) + 1000, nil
}

func (d *fakeDataplane) BackendCounters(idx uint32) (uint64, uint64, error) {
	return uint64(idx) + 1, uint64(idx) + 100, nil
}

func (d *fakeDataplane) Counters() (map[string]uint64, error) {
	return map[string]uint64{"tx": 7}, nil
}

func (d *fakeDataplane) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

// table returns the backend indexes in service id's Maglev table, in
// order; nil when the service has no table.
func (d *fakeDataplane) table(id uint32) []uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.services[id]
	if !ok || s.Table == nil {
		return nil
	}
	var out []uint32
	for _, e := range s.Table.Entries() {
		if idx := s.Index[e]; !slices.Contains(out, idx) {
			out = append(out, idx)
		}
	}
	slices.Sort(out)
	return out
}

func (d *fakeDataplane) backend(idx uint32) (fakeBackend, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, ok := d.backends[idx]
	return b, ok
}

func (d *fakeDataplane) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// parse parses a config for a test.
func parse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return c
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newPlane makes a plane of cfg on k with a new store.
func newPlane(t *testing.T, k *fakeKernel, cfg string) (*Plane, *health.Store) {
	t.Helper()
	store := health.New()
	p, err := New(parse(t, cfg), k, store, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, store
}

// idx is the backend index the plane gave a balancer's backend.
func (p *Plane) idx(t *testing.T, balancer, addr string) uint32 {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.find(balancer); b != nil {
		for _, be := range b.backends {
			if be.addr.String() == addr {
				return be.idx
			}
		}
	}
	t.Fatalf("no backend %s in balancer %s", addr, balancer)
	return 0
}

// inTable lists the addresses of a balancer's backends in the table of
// service id, sorted.
func inTable(t *testing.T, p *Plane, d *fakeDataplane, id uint32) []string {
	t.Helper()
	idxs := d.table(id)
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, b := range p.bals {
		for _, be := range b.backends {
			if slices.Contains(idxs, be.idx) {
				out = append(out, be.addr.String())
			}
		}
	}
	slices.Sort(out)
	return out
}

// waitUntil waits, woken by the dataplane's writes and the store's
// changes, until cond holds.
func waitUntil(t *testing.T, d *fakeDataplane, store *health.Store, what string, cond func() bool) {
	t.Helper()
	sub := store.Subscribe()
	defer sub.Close()
	timeout := time.After(5 * time.Second)
	for !cond() {
		select {
		case <-d.changed:
		case <-sub.Wake():
			sub.Changes()
		case <-timeout:
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// balancerState is the store's state of a balancer; ok false when unset.
func balancerState(store *health.Store, name string) (health.State, bool) {
	return store.Get(health.BalancerKey(name))
}
