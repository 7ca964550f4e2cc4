//go:build linux

package bfd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// listener receives control packets on UDP port 3784 (RFC 5881 4) for
// each family in use and hands each, with its source address and TTL, to
// handle.
type listener struct {
	closers []func() error
	wg      sync.WaitGroup
}

// received is one datagram off the wire.
type received struct {
	b   []byte
	src netip.Addr
	ifi int // the interface it came in on; 0 if unknown
	ttl int // TTL or hop limit; -1 if the kernel did not say
}

func listen(port int, v4, v6 bool, handle func(received)) (*listener, error) {
	l := &listener{}
	if v4 {
		c, err := net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", port))
		if err != nil {
			return nil, fmt.Errorf("bfd: listen on udp4 port %d: %w", port, err)
		}
		pc := ipv4.NewPacketConn(c)
		if err := pc.SetControlMessage(ipv4.FlagTTL|ipv4.FlagInterface, true); err != nil {
			c.Close()
			return nil, fmt.Errorf("bfd: IP_RECVTTL on udp4 port %d: %w", port, err)
		}
		l.closers = append(l.closers, c.Close)
		l.wg.Go(func() {
			l.read(handle, func(buf []byte) (received, error) {
				n, cm, src, err := pc.ReadFrom(buf)
				r := received{b: buf[:n], ttl: -1, src: addrOf(src)}
				if cm != nil {
					r.ttl, r.ifi = cm.TTL, cm.IfIndex
				}
				return r, err
			})
		})
	}
	if v6 {
		c, err := net.ListenPacket("udp6", fmt.Sprintf("[::]:%d", port))
		if err != nil {
			l.close()
			return nil, fmt.Errorf("bfd: listen on udp6 port %d: %w", port, err)
		}
		pc := ipv6.NewPacketConn(c)
		if err := pc.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagInterface, true); err != nil {
			c.Close()
			l.close()
			return nil, fmt.Errorf("bfd: IPV6_RECVHOPLIMIT on udp6 port %d: %w", port, err)
		}
		l.closers = append(l.closers, c.Close)
		l.wg.Go(func() {
			l.read(handle, func(buf []byte) (received, error) {
				n, cm, src, err := pc.ReadFrom(buf)
				r := received{b: buf[:n], ttl: -1, src: addrOf(src)}
				if cm != nil {
					r.ttl, r.ifi = cm.HopLimit, cm.IfIndex
				}
				return r, err
			})
		})
	}
	return l, nil
}

// read hands each datagram that one reads to handle until the socket is
// closed.
func (l *listener) read(handle func(received), one func(buf []byte) (received, error)) {
	buf := make([]byte, 1500)
	for {
		r, err := one(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err == nil {
			handle(r)
		}
	}
}

func addrOf(a net.Addr) netip.Addr {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// close stops the readers and waits for them.
func (l *listener) close() {
	for _, c := range l.closers {
		c()
	}
	l.wg.Wait()
}

// udpSender sends one session's packets to its peer on UDP port 3784, with
// TTL (hop limit) 255 and a source port from 49152-65535 (RFC 5881 4, 5),
// from a socket bound to the interface of the route to the peer. It opens
// the socket at the first send and again after a failed one, so a neighbor
// that is unreachable at start, or whose route moves, is reached once it
// can be.
type udpSender struct {
	peer netip.AddrPort
	log  *slog.Logger

	mu     sync.Mutex
	conn   *net.UDPConn
	warned bool
}

func (u *udpSender) Send(p *Packet) error {
	b, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn == nil {
		if u.conn, err = dialPeer(u.peer); err != nil {
			if !u.warned {
				u.warned = true
				u.log.Warn("bfd: cannot reach the neighbor yet; retrying at each packet", "peer", u.peer.Addr().String(), "err", err)
			}
			return err
		}
		u.warned = false
	}
	if _, err := u.conn.Write(b); err != nil {
		u.conn.Close()
		u.conn = nil
		return fmt.Errorf("bfd: send to %s: %w", u.peer, err)
	}
	return nil
}

func (u *udpSender) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn != nil {
		u.conn.Close()
		u.conn = nil
	}
}

// dialPeer opens the socket to a directly connected peer.
func dialPeer(peer netip.AddrPort) (*net.UDPConn, error) {
	routes, err := netlink.RouteGet(peer.Addr().AsSlice())
	if err != nil || len(routes) == 0 {
		return nil, fmt.Errorf("no route to %s: %w", peer.Addr(), err)
	}
	rt := routes[0]
	if rt.Gw != nil {
		return nil, fmt.Errorf("%s is reached via %s, not on a connected network: single-hop BFD (RFC 5881) needs a neighbor on the link", peer.Addr(), rt.Gw)
	}
	link, err := netlink.LinkByIndex(rt.LinkIndex)
	if err != nil {
		return nil, fmt.Errorf("the interface toward %s: %w", peer.Addr(), err)
	}
	ifname := link.Attrs().Name
	is6 := peer.Addr().Is6()
	control := func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname)
			if serr == nil && is6 {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, 255)
			} else if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, 255)
			}
		})
		return errors.Join(err, serr)
	}
	network, local := "udp4", &net.UDPAddr{}
	if is6 {
		network = "udp6"
	}
	if rt.Src != nil {
		local.IP = rt.Src
	}
	remote := net.UDPAddrFromAddrPort(peer)
	if peer.Addr().Is6() && peer.Addr().IsLinkLocalUnicast() && peer.Addr().Zone() == "" {
		remote.Zone = ifname
	}
	for range 32 {
		local.Port = 49152 + rand.IntN(65536-49152)
		d := net.Dialer{LocalAddr: local, Control: control}
		c, err := d.DialContext(context.Background(), network, remote.String())
		if errors.Is(err, unix.EADDRINUSE) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("on %s: %w", ifname, err)
		}
		return c.(*net.UDPConn), nil
	}
	return nil, fmt.Errorf("no free source port in 49152-65535 on %s", ifname)
}
