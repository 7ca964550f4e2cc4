package dsr

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/vigil-lb/vigil/internal/xdp"
)

// Kernel is what the plane asks of the host it runs on.
type Kernel interface {
	// LinkByName and LinkByIndex look an interface up.
	LinkByName(name string) (Link, error)
	LinkByIndex(index int) (Link, error)
	// XDPFeatures is what the kernel says the interface can do with XDP;
	// an error when it does not say (before Linux 6.3).
	XDPFeatures(ifindex int) (xdp.Features, error)
	// Addrs lists the addresses of every interface of the host.
	Addrs() ([]Addr, error)
	// Neighbour returns ip's MAC from the neighbour table of interface
	// ifindex: an entry that is usable (reachable, stale, delay, probe or
	// permanent) with an Ethernet address, or nil when there is none.
	Neighbour(ifindex int, ip netip.Addr) (net.HardwareAddr, error)
	// ProbeARP asks on iface who has the IPv4 address ip, and returns the
	// MAC that answered first within wait (none when nobody did).
	ProbeARP(ctx context.Context, iface string, ip netip.Addr, wait time.Duration) ([]net.HardwareAddr, error)
	// LoadXDP loads the program. An error that wraps xdp.ErrLoad means the
	// host cannot run it (no BPF rights, an old kernel).
	LoadXDP() (Dataplane, error)
}

// Link is an interface of the host.
type Link struct {
	Name  string
	Index int
	MAC   net.HardwareAddr
	// Kind is the link's type as netlink names it ("veth", "device", ...).
	Kind string
}

// Addr is one address of the host and the interface it is on.
type Addr struct {
	Prefix    netip.Prefix
	LinkIndex int
}

// Dataplane is the loaded program and its maps (*xdp.Dataplane).
type Dataplane interface {
	// Attach attaches the program to an interface in mode native, generic
	// or auto, and returns the mode in use.
	Attach(ifindex int, mode string) (string, error)
	// SetService writes a service's key and Maglev table.
	SetService(s xdp.Service) error
	// RemoveService stops steering a service (address, port, protocol).
	RemoveService(vip netip.Addr, port uint16, proto uint8) error
	// SetBackend writes backend idx: its MAC and, when it is reached
	// through another interface than the program's (ifindex not 0), that
	// interface's index and MAC.
	SetBackend(idx uint32, mac net.HardwareAddr, ifindex uint32, ifaceMAC net.HardwareAddr) error
	// ServiceCounters and BackendCounters are what the program sent for
	// a service and to a backend.
	ServiceCounters(id uint32) (packets, bytes uint64, err error)
	BackendCounters(idx uint32) (packets, bytes uint64, err error)
	// Counters are the program's verdicts, by name (xdp.Verdicts).
	Counters() (map[string]uint64, error)
	// Close detaches and unloads the program.
	Close() error
}

var _ Dataplane = (*xdp.Dataplane)(nil)
