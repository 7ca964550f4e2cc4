package vrrp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Multicast groups of RFC 5798.
var (
	Group4 = netip.MustParseAddr("224.0.0.18")
	Group6 = netip.MustParseAddr("ff02::12")
)

// Received is one VRRP message as it came off the wire.
type Received struct {
	Src, Dst netip.Addr
	TTL      int // TTL or hop limit
	Payload  []byte
}

// Receiver takes the messages of one VRID from the transport (an
// Instance). Deliver must not block: one slow instance must not hold up the
// socket's reader, and so every other instance on the interface.
type Receiver interface {
	Deliver(Received)
}

// Transport is the raw IP protocol 112 socket of one interface and family.
// Every instance on that interface shares it; it hands each message to the
// instance registered for the message's VRID. A socket filter in the kernel
// passes only messages for registered VRIDs (filter.go).
type Transport struct {
	ifi   *net.Interface
	is6   bool
	local netip.Addr
	log   *slog.Logger

	p4 *ipv4.PacketConn
	p6 *ipv6.PacketConn
	// raw is the socket itself, for Drain's reads that must not wait.
	raw syscall.RawConn

	mu       sync.Mutex
	handlers map[uint8]Receiver
	sniffer  chan<- Received // gets every message, for scan

	// kernelDrops is the socket's drop count (sk_drops): messages the
	// kernel dropped because the receive queue was full. The kernel hands
	// it with each message read (SO_RXQ_OVFL), so it is current as of the
	// last message. Messages the filter refuses are not in it.
	kernelDrops atomic.Uint64
}

// OpenTransport opens the socket on ifname, joins the VRRP group and picks the
// source address: the first IPv4 address that is not in exclude (the VIPs),
// or the IPv6 link-local address as RFC 5798 requires.
func OpenTransport(ifname string, is6 bool, exclude map[netip.Addr]bool, log *slog.Logger) (*Transport, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("vrrp: interface %s: %w", ifname, err)
	}
	local, err := sourceAddr(ifi, is6, exclude)
	if err != nil {
		return nil, err
	}
	t := &Transport{ifi: ifi, is6: is6, local: local, log: log, handlers: map[uint8]Receiver{}}
	network, wildcard := "ip4:112", "0.0.0.0"
	if is6 {
		network, wildcard = "ip6:112", "::"
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = errors.Join(unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname),
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1))
			// A deep queue rides out the reader's pauses on a busy node
			// (SO_RCVBUFFORCE passes net.core.rmem_max with CAP_NET_ADMIN;
			// without it the kernel's default stays).
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvBuffer) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, recvBuffer)
			}
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), network, wildcard)
	if err != nil {
		return nil, fmt.Errorf("vrrp: open raw socket on %s: %w", ifname, permission(err))
	}
	if sc, ok := pc.(syscall.Conn); ok {
		t.raw, _ = sc.SyscallConn()
	}
	group := &net.IPAddr{IP: Group4.AsSlice()}
	if is6 {
		group.IP = Group6.AsSlice()
		p := ipv6.NewPacketConn(pc)
		t.p6 = p
		err = errors.Join(
			p.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst|ipv6.FlagInterface, true),
			p.SetMulticastHopLimit(255), p.SetHopLimit(255),
			p.SetMulticastLoopback(false), p.SetMulticastInterface(ifi),
			p.JoinGroup(ifi, group), t.setFilter(nil))
	} else {
		p := ipv4.NewPacketConn(pc)
		t.p4 = p
		err = errors.Join(
			p.SetControlMessage(ipv4.FlagTTL|ipv4.FlagDst|ipv4.FlagInterface, true),
			p.SetMulticastTTL(255), p.SetTTL(255),
			p.SetMulticastLoopback(false), p.SetMulticastInterface(ifi),
			p.JoinGroup(ifi, group), t.setFilter(nil))
	}
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("vrrp: set up socket on %s: %w", ifname, err)
	}
	return t, nil
}

func sourceAddr(ifi *net.Interface, is6 bool, exclude map[netip.Addr]bool) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("vrrp: addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, _ := netip.AddrFromSlice(n.IP)
		ip = ip.Unmap()
		if exclude[ip] {
			continue
		}
		if !is6 && ip.Is4() || is6 && ip.Is6() && ip.IsLinkLocalUnicast() {
			return ip, nil
		}
	}
	if is6 {
		return netip.Addr{}, fmt.Errorf("vrrp: interface %s has no IPv6 link-local address", ifi.Name)
	}
	return netip.Addr{}, fmt.Errorf("vrrp: interface %s has no IPv4 address of its own to send adverts from", ifi.Name)
}

// Local is the source address of adverts sent here.
func (t *Transport) Local() netip.Addr { return t.local }

// Register routes messages for vrid to r and lets them through the socket
// filter. It fails if vrid is taken.
func (t *Transport) Register(vrid uint8, r Receiver) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.handlers[vrid]; ok {
		return fmt.Errorf("vrrp: vrid %d on %s is registered twice", vrid, t.ifi.Name)
	}
	t.handlers[vrid] = r
	if err := t.updateFilterLocked(); err != nil {
		delete(t.handlers, vrid)
		return err
	}
	return nil
}

// Unregister stops routing messages for vrid, in the kernel too.
func (t *Transport) Unregister(vrid uint8) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.handlers, vrid)
	return t.updateFilterLocked()
}

// Sniff sends every message, whatever its VRID, to ch as well (a full ch
// drops it): the socket filter passes everything from now on.
func (t *Transport) Sniff(ch chan<- Received) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sniffer = ch
	return t.updateFilterLocked()
}

// updateFilterLocked puts the filter for the registered VRIDs (everything
// while sniffing) on the socket. The caller holds mu.
func (t *Transport) updateFilterLocked() error {
	if t.sniffer != nil {
		return t.setProgram([]bpf.Instruction{bpf.RetConstant{Val: acceptAll}})
	}
	return t.setFilter(slices.Collect(maps.Keys(t.handlers)))
}

func (t *Transport) setFilter(vrids []uint8) error {
	return t.setProgram(filterProgram(t.is6, vrids))
}

func (t *Transport) setProgram(prog []bpf.Instruction) error {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return fmt.Errorf("vrrp: assemble socket filter on %s: %w", t.ifi.Name, err)
	}
	if t.is6 {
		err = t.p6.SetBPF(raw)
	} else {
		err = t.p4.SetBPF(raw)
	}
	if err != nil {
		return fmt.Errorf("vrrp: socket filter on %s: %w", t.ifi.Name, err)
	}
	return nil
}

// KernelDrops is how many messages the kernel dropped on this socket
// because its receive queue was full, as of the last message read.
func (t *Transport) KernelDrops() uint64 { return t.kernelDrops.Load() }

// Interface is the name of the transport's interface.
func (t *Transport) Interface() string { return t.ifi.Name }

// Send sends one encoded message to dst (the group or a unicast peer).
func (t *Transport) Send(b []byte, dst netip.Addr) error {
	var err error
	if t.is6 {
		cm := &ipv6.ControlMessage{HopLimit: 255, Src: t.local.AsSlice(), IfIndex: t.ifi.Index}
		_, err = t.p6.WriteTo(b, cm, &net.IPAddr{IP: dst.AsSlice()})
	} else {
		cm := &ipv4.ControlMessage{Src: t.local.AsSlice(), IfIndex: t.ifi.Index}
		_, err = t.p4.WriteTo(b, cm, &net.IPAddr{IP: dst.AsSlice()})
	}
	if err != nil {
		return fmt.Errorf("vrrp: send to %s on %s: %w", dst, t.ifi.Name, err)
	}
	return nil
}

// recvBuffer is the socket's receive buffer: about 4,000 adverts (the
// kernel charges each ~1 KiB), 160 ms of a 25k/s flood, where the default
// 208 KiB holds 10 ms.
const recvBuffer = 4 << 20

// readBatch is how many messages one read takes from the socket (recvmmsg):
// under a flood, fewer system calls per message keep the reader ahead of
// the kernel's receive queue.
const readBatch = 32

// maxMessage bounds what one read keeps of a message: the largest VRRP
// advert is 8 + 255*16 bytes (IPv6), or 60 + 8 + 255*4 with an IPv4
// header; anything longer is not VRRP and is dropped as malformed.
const maxMessage = 4096 + 64

// Serve reads until the socket closes, dispatching by VRID to Deliver,
// which never blocks: the reader must never wait on one slow instance.
func (t *Transport) Serve() {
	msgs := make([]ipv4.Message, readBatch) // ipv6.Message is the same type
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, maxMessage)}
		msgs[i].OOB = make([]byte, t.oobLen())
	}
	for {
		var (
			n   int
			err error
		)
		if t.is6 {
			n, err = t.p6.ReadBatch(msgs, 0)
		} else {
			n, err = t.p4.ReadBatch(msgs, 0)
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Warn("vrrp receive failed", "interface", t.ifi.Name, "err", err)
			continue
		}
		for i := range msgs[:n] {
			if r, ok := t.parse(&msgs[i]); ok {
				t.dispatch(r)
			}
		}
	}
}

// oobLen is the room a read needs for the control messages asked for, and
// SO_RXQ_OVFL's counter.
func (t *Transport) oobLen() int {
	if t.is6 {
		return len(ipv6.NewControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst|ipv6.FlagInterface)) + unix.CmsgSpace(4)
	}
	return len(ipv4.NewControlMessage(ipv4.FlagTTL|ipv4.FlagDst|ipv4.FlagInterface)) + unix.CmsgSpace(4)
}

// parse turns one message read into a Received: the payload without the
// IPv4 header (a raw IPv4 socket reads it), TTL and destination from the
// control messages, and the kernel's drop count noted.
func (t *Transport) parse(m *ipv4.Message) (Received, bool) {
	var r Received
	b := m.Buffers[0][:m.N]
	if m.Flags&unix.MSG_TRUNC != 0 {
		b = b[:0] // longer than any advert: dropped below, like a short one
	}
	cms, _ := unix.ParseSocketControlMessage(m.OOB[:m.NN])
	for _, c := range cms {
		if c.Header.Level == unix.SOL_SOCKET && c.Header.Type == unix.SO_RXQ_OVFL && len(c.Data) >= 4 {
			d := uint64(binary.NativeEndian.Uint32(c.Data))
			// The count rises only; messages may be read out of the order
			// their counts were taken in.
			for old := t.kernelDrops.Load(); d > old && !t.kernelDrops.CompareAndSwap(old, d); old = t.kernelDrops.Load() {
			}
		}
	}
	if t.is6 {
		var cm ipv6.ControlMessage
		if cm.Parse(m.OOB[:m.NN]) == nil {
			r.TTL = cm.HopLimit
			r.Dst, _ = netip.AddrFromSlice(cm.Dst)
		}
	} else {
		var cm ipv4.ControlMessage
		if cm.Parse(m.OOB[:m.NN]) == nil {
			r.TTL = cm.TTL
			r.Dst, _ = netip.AddrFromSlice(cm.Dst)
		}
		if len(b) < 20 {
			return r, false
		}
		hl := int(b[0]&0x0f) * 4
		if hl < 20 || hl > len(b) {
			return r, false
		}
		b = b[hl:]
	}
	if len(b) < 2 {
		return r, false
	}
	if ia, ok := m.Addr.(*net.IPAddr); ok {
		r.Src, _ = netip.AddrFromSlice(ia.IP)
	}
	r.Src, r.Dst = r.Src.Unmap(), r.Dst.Unmap()
	r.Payload = append([]byte(nil), b...)
	return r, true
}

func (t *Transport) dispatch(r Received) {
	t.mu.Lock()
	h := t.handlers[r.Payload[1]]
	sniffer := t.sniffer
	t.mu.Unlock()
	if h != nil {
		h.Deliver(r)
	}
	if sniffer != nil {
		select {
		case sniffer <- r:
		default:
		}
	}
}

// Drain reads, without waiting, up to max messages already queued on the
// socket and dispatches them as Serve does; it returns how many it read.
// A backup calls it before its master-down timer makes it master: when the
// whole process was paused (a saturated CPU) under a flood, the master's
// latest advert may sit in the kernel's queue behind thousands of junk
// messages that Serve has yet to read, and it arrived in time.
func (t *Transport) Drain(max int) int {
	if t.raw == nil {
		return 0
	}
	m := ipv4.Message{Buffers: [][]byte{make([]byte, maxMessage)}, OOB: make([]byte, t.oobLen())}
	read := 0
	for read < max {
		var (
			from unix.Sockaddr
			rerr error
		)
		// Control, not Read: Read would park the goroutine on an empty
		// queue, and Drain must return at once.
		err := t.raw.Control(func(fd uintptr) {
			m.N, m.NN, m.Flags, from, rerr = unix.Recvmsg(int(fd), m.Buffers[0], m.OOB, unix.MSG_DONTWAIT)
		})
		if err != nil || rerr != nil {
			break // EAGAIN: the queue is empty (or the socket closed)
		}
		read++
		switch sa := from.(type) {
		case *unix.SockaddrInet4:
			m.Addr = &net.IPAddr{IP: net.IP(sa.Addr[:])}
		case *unix.SockaddrInet6:
			m.Addr = &net.IPAddr{IP: net.IP(sa.Addr[:])}
		default:
			m.Addr = nil
		}
		if r, ok := t.parse(&m); ok {
			t.dispatch(r)
		}
	}
	return read
}

// Close closes the socket, which ends Serve.
func (t *Transport) Close() error {
	if t.is6 {
		return t.p6.Close()
	}
	return t.p4.Close()
}

func permission(err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w (vigil needs CAP_NET_RAW and CAP_NET_ADMIN; run as root or grant them)", err)
	}
	return err
}
