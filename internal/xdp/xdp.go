package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vigil-lb/vigil/internal/maglev"
	"golang.org/x/sys/unix"
)

// Limits of the program (bpf/dsr.c).
const (
	RingSize    = 65537
	MaxServices = 16
	MaxBackends = 4096
	noBackend   = ^uint32(0)
)

// Verdicts in the order of the program's counters.
var Verdicts = []string{"pass", "tx", "redirect", "drop", "fragment", "no_backend"}

// Dataplane is the loaded program and its maps.
type Dataplane struct {
	objs   dsrObjects
	links  []link.Link
	mu     sync.Mutex // guards the three below
	filter filter
	ids    map[svcKey]uint32   // the services in the maps
	gens   [MaxServices]uint32 // the program's svc_gen
}

// ErrLoad wraps every failure to load the program (no BPF rights, an old
// kernel): the daemon can go on without the DSR path.
var ErrLoad = errors.New("xdp: the BPF program could not be loaded")

// Load loads the program into the kernel. Without BPF privileges it says so.
func Load() (*Dataplane, error) {
	d := &Dataplane{}
	if err := loadDsrObjects(&d.objs, nil); err != nil {
		if errors.Is(err, os.ErrPermission) {
			// cilium/ebpf's own text goes on about MEMLOCK, which
			// is not the cause on kernels that account BPF memory
			// to the cgroup (5.11 and later): name what is missing.
			return nil, fmt.Errorf("%w: %w: it needs CAP_BPF and CAP_NET_ADMIN (root)", ErrLoad, os.ErrPermission)
		}
		return nil, fmt.Errorf("%w: %w", ErrLoad, err)
	}
	return d, nil
}

// Close detaches and unloads everything.
func (d *Dataplane) Close() error {
	var errs []error
	for _, l := range d.links {
		errs = append(errs, l.Close())
	}
	d.links = nil
	errs = append(errs, d.objs.Close())
	return errors.Join(errs...)
}

// Attach attaches the program to an interface in mode native, generic, or
// auto (native when the driver can, else generic), and returns the mode in
// use.
func (d *Dataplane) Attach(ifindex int, mode string) (string, error) {
	try := []string{mode}
	if mode == "auto" {
		try = []string{"native", "generic"}
	}
	var errs []error
	for _, m := range try {
		flags := link.XDPDriverMode
		if m == "generic" {
			flags = link.XDPGenericMode
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: d.objs.XdpDsr, Interface: ifindex, Flags: flags})
		if err == nil {
			d.links = append(d.links, l)
			return m, nil
		}
		if m == "native" && errors.Is(err, unix.EOPNOTSUPP) {
			err = fmt.Errorf("%w: its driver has no native XDP (xdp_mode auto or generic runs the program in generic mode)", err)
		}
		errs = append(errs, fmt.Errorf("attach in %s mode: %w", m, err))
	}
	return "", fmt.Errorf("xdp: %w", errors.Join(errs...))
}

// SetBackend stores backend idx: its MAC and, when it is reached through
// another interface than the one packets come in on, that interface's
// index and MAC (the frame's new source); ifindex 0 sends frames back out
// of the interface they came in on (XDP_TX).
func (d *Dataplane) SetBackend(idx uint32, mac net.HardwareAddr, ifindex uint32, ifaceMAC net.HardwareAddr) error {
	if idx >= MaxBackends || len(mac) != 6 || (ifindex != 0 && len(ifaceMAC) != 6) {
		return fmt.Errorf("xdp: backend %d with MAC %v via interface %d (%v): index or MAC out of range", idx, mac, ifindex, ifaceMAC)
	}
	var b dsrBackend
	copy(b.Mac[:], mac)
	copy(b.Src[:], ifaceMAC)
	b.Ifindex = ifindex
	return d.objs.Backends.Put(idx, b)
}

// Service is one VIP:port/protocol and its Maglev table.
type Service struct {
	ID    uint32 // 0..MaxServices-1
	VIP   netip.Addr
	Port  uint16
	Proto uint8 // 6 TCP, 17 UDP
	// Table is the service's Maglev table (size RingSize) and Index maps its
	// backend positions to backend indexes given to SetBackend. A nil Table
	// means no backend: packets are dropped and counted.
	Table *maglev.Table
	Index []uint32
}

// putService and deleteService address the service map of the VIP's family.
func (d *Dataplane) putService(vip netip.Addr, port uint16, proto uint8, v dsrSvcVal) error {
	port = port<<8 | port>>8 // network byte order
	if vip.Is4() {
		return d.objs.Services4.Put(dsrSvc4Key{Addr: ipv4Word(vip), Port: port, Proto: proto}, v)
	}
	return d.objs.Services6.Put(dsrSvc6Key{Addr: vip.As16(), Port: port, Proto: proto}, v)
}

func (d *Dataplane) deleteService(vip netip.Addr, port uint16, proto uint8) error {
	port = port<<8 | port>>8
	if vip.Is4() {
		return d.objs.Services4.Delete(dsrSvc4Key{Addr: ipv4Word(vip), Port: port, Proto: proto})
	}
	return d.objs.Services6.Delete(dsrSvc6Key{Addr: vip.As16(), Port: port, Proto: proto})
}

// ipv4Word is an IPv4 address as the program reads it from the packet: the
// four bytes in memory order, as a native-endian word.
func ipv4Word(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

// SetService writes a service's table first, then its key, so no packet
// sees a half-written table of a new service.
func (d *Dataplane) SetService(s Service) error {
	if s.ID >= MaxServices {
		return fmt.Errorf("xdp: service id %d: at most %d services", s.ID, MaxServices)
	}
	vals := make([]uint32, RingSize)
	if s.Table == nil {
		for i := range vals {
			vals[i] = noBackend
		}
	} else {
		if s.Table.Size() != RingSize {
			return fmt.Errorf("xdp: service %v:%d: table size %d, the program uses %d", s.VIP, s.Port, s.Table.Size(), RingSize)
		}
		for i, e := range s.Table.Entries() {
			vals[i] = s.Index[e]
		}
	}
	keys := make([]uint32, RingSize)
	for i := range keys {
		keys[i] = s.ID*RingSize + uint32(i)
	}
	if _, err := d.objs.Tables.BatchUpdate(keys, vals, nil); err != nil {
		for i := range keys { // kernels without batch ops on arrays
			if err := d.objs.Tables.Put(keys[i], vals[i]); err != nil {
				return fmt.Errorf("xdp: writing the table of %v:%d: %w", s.VIP, s.Port, err)
			}
		}
	}
	return d.keyService(svcKey{s.VIP.Unmap(), s.Port, s.Proto}, s.ID)
}

// keyService makes k's packets find service id. A key new to its id moves
// the id's generation on first, so flows tracked for whatever the id meant
// before are no longer taken as tracked; and it sets the filter's bit
// before the key, so a packet never finds the key behind a cleared bit.
func (d *Dataplane) keyService(k svcKey, id uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.ids[k]; !ok || old != id {
		if err := d.nextGeneration(id); err != nil {
			return fmt.Errorf("xdp: service %v:%d: %w", k.vip, k.port, err)
		}
	}
	if _, ok := d.ids[k]; !ok && d.filter.add(k) {
		if err := d.objs.SvcFilter.Set(d.filter.words); err != nil {
			return fmt.Errorf("xdp: service %v:%d: writing the service filter: %w", k.vip, k.port, err)
		}
	}
	if d.ids == nil {
		d.ids = map[svcKey]uint32{}
	}
	d.ids[k] = id
	return d.putService(k.vip, k.port, k.proto, dsrSvcVal{Id: id})
}

// nextGeneration moves a service id's generation on (never to 0, which
// tracks nothing).
func (d *Dataplane) nextGeneration(id uint32) error {
	if d.gens[id]++; d.gens[id] == 0 {
		d.gens[id] = 1
	}
	if err := d.objs.SvcGen.Set(d.gens); err != nil {
		return fmt.Errorf("writing the service generations: %w", err)
	}
	return nil
}

// RemoveService stops steering a service; its packets pass to the kernel.
func (d *Dataplane) RemoveService(vip netip.Addr, port uint16, proto uint8) error {
	k := svcKey{vip.Unmap(), port, proto}
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.deleteService(k.vip, k.port, k.proto)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	id, ok := d.ids[k]
	if !ok {
		return nil
	}
	delete(d.ids, k)
	if err := d.nextGeneration(id); err != nil {
		return fmt.Errorf("xdp: service %v:%d: %w", vip, port, err)
	}
	if d.filter.remove(k) {
		if err := d.objs.SvcFilter.Set(d.filter.words); err != nil {
			return fmt.Errorf("xdp: service %v:%d: writing the service filter: %w", vip, port, err)
		}
	}
	return nil
}

// Counters sums the per-CPU verdict counters.
func (d *Dataplane) Counters() (map[string]uint64, error) {
	out := map[string]uint64{}
	for i, name := range Verdicts {
		var per []uint64
		if err := d.objs.Verdicts.Lookup(uint32(i), &per); err != nil {
			return nil, err
		}
		for _, n := range per {
			out[name] += n
		}
	}
	return out, nil
}

// ServiceCounters sums a service's per-CPU packet and byte counters.
func (d *Dataplane) ServiceCounters(id uint32) (packets, bytes uint64, err error) {
	return sumStats(d.objs.SvcCounters, id)
}

// BackendCounters sums what the program sent to backend idx, over every
// service.
func (d *Dataplane) BackendCounters(idx uint32) (packets, bytes uint64, err error) {
	return sumStats(d.objs.BeCounters, idx)
}

func sumStats(m *ebpf.Map, key uint32) (packets, bytes uint64, err error) {
	var per []dsrSvcStats
	if err := m.Lookup(key, &per); err != nil {
		return 0, 0, err
	}
	for _, s := range per {
		packets += s.Packets
		bytes += s.Bytes
	}
	return packets, bytes, nil
}
