package vrrp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"

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

// Transport is the raw IP protocol 112 socket of one interface and family.
// Every instance on that interface shares it; it hands each message to the
// instance registered for the message's VRID.
type Transport struct {
	ifi   *net.Interface
	is6   bool
	local netip.Addr
	log   *slog.Logger

	p4 *ipv4.PacketConn
	p6 *ipv6.PacketConn

	mu       sync.Mutex
	handlers map[uint8]chan<- Received
	sniffer  chan<- Received // gets every message, for scan
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
	t := &Transport{ifi: ifi, is6: is6, local: local, log: log, handlers: map[uint8]chan<- Received{}}
	network, wildcard := "ip4:112", "0.0.0.0"
	if is6 {
		network, wildcard = "ip6:112", "::"
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname)
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), network, wildcard)
	if err != nil {
		return nil, fmt.Errorf("vrrp: open raw socket on %s: %w", ifname, permission(err))
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
			p.JoinGroup(ifi, group))
	} else {
		p := ipv4.NewPacketConn(pc)
		t.p4 = p
		err = errors.Join(
			p.SetControlMessage(ipv4.FlagTTL|ipv4.FlagDst|ipv4.FlagInterface, true),
			p.SetMulticastTTL(255), p.SetTTL(255),
			p.SetMulticastLoopback(false), p.SetMulticastInterface(ifi),
			p.JoinGroup(ifi, group))
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

// Register routes messages for vrid to ch. It fails if vrid is taken.
func (t *Transport) Register(vrid uint8, ch chan<- Received) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.handlers[vrid]; ok {
		return fmt.Errorf("vrrp: vrid %d on %s is registered twice", vrid, t.ifi.Name)
	}
	t.handlers[vrid] = ch
	return nil
}

// Unregister stops routing messages for vrid; an unknown vrid is no error.
func (t *Transport) Unregister(vrid uint8) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.handlers, vrid)
}

// Sniff sends every message, whatever its VRID, to ch as well.
func (t *Transport) Sniff(ch chan<- Received) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sniffer = ch
}

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

// Serve reads until the socket closes, dispatching by VRID. A full handler
// queue drops the message: the state machine copes with a lost advert, and
// the reader must never block on one slow instance.
func (t *Transport) Serve() {
	buf := make([]byte, 65536)
	for {
		var (
			n   int
			src net.Addr
			r   Received
			err error
		)
		if t.is6 {
			var cm *ipv6.ControlMessage
			n, cm, src, err = t.p6.ReadFrom(buf)
			if cm != nil {
				r.TTL = cm.HopLimit
				r.Dst, _ = netip.AddrFromSlice(cm.Dst)
			}
		} else {
			var cm *ipv4.ControlMessage
			n, cm, src, err = t.p4.ReadFrom(buf)
			if cm != nil {
				r.TTL = cm.TTL
				r.Dst, _ = netip.AddrFromSlice(cm.Dst)
			}
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Warn("vrrp receive failed", "interface", t.ifi.Name, "err", err)
			continue
		}
		if n < 2 {
			continue
		}
		if ia, ok := src.(*net.IPAddr); ok {
			r.Src, _ = netip.AddrFromSlice(ia.IP)
		}
		r.Src, r.Dst = r.Src.Unmap(), r.Dst.Unmap()
		r.Payload = append([]byte(nil), buf[:n]...)
		t.mu.Lock()
		ch := t.handlers[r.Payload[1]]
		sniffer := t.sniffer
		t.mu.Unlock()
		for _, c := range []chan<- Received{ch, sniffer} {
			if c == nil {
				continue
			}
			select {
			case c <- r:
			default:
			}
		}
	}
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
