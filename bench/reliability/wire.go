package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/vrrp"
	"golang.org/x/sys/unix"
)

// rawSender writes whole IPv4 packets (IP_HDRINCL) from a lab host, so a
// test can forge the source, the TTL and the VRRP message: the flooder and
// the wire-abuse cases. It sends to the VRRP group on the host's eth0.
type rawSender struct {
	fd int
}

func newRawSender(h *netlab.Host) (*rawSender, error) {
	var s rawSender
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(ifi.Index)}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("IP_MULTICAST_IF: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20); err != nil {
			unix.Close(fd)
			return err
		}
		s.fd = fd
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sender on %s: %w", h.Name, err)
	}
	return &s, nil
}

func (s *rawSender) Close() error { return unix.Close(s.fd) }

// send writes one packet to its destination. ENOBUFS is no error: on the
// lab's bridge it means some port's queue dropped its copy of the packet,
// while the others got theirs; the receivers count what reached them.
func (s *rawSender) send(pkt []byte) error {
	var dst [4]byte
	copy(dst[:], pkt[16:20])
	err := unix.Sendto(s.fd, pkt, 0, &unix.SockaddrInet4{Addr: dst})
	if err == unix.ENOBUFS {
		return nil
	}
	return err
}

// ipPacket is an IPv4 header (the kernel fills in its checksum and ID)
// around a VRRP message.
func ipPacket(src, dst netip.Addr, ttl uint8, msg []byte) []byte {
	b := make([]byte, 20, 20+len(msg))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(msg)))
	b[8], b[9] = ttl, 112
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:], s4[:])
	copy(b[16:], d4[:])
	return append(b, msg...)
}

// advert is a VRRP message from src to the group, checksum right.
func advert(version, vrid, prio uint8, vips []netip.Addr, src netip.Addr) []byte {
	return advertTo(version, vrid, prio, vips, src, vrrp.Group4)
}

// advertTo is advert sent to dst.
func advertTo(version, vrid, prio uint8, vips []netip.Addr, src, dst netip.Addr) []byte {
	p := vrrp.Packet{Version: version, Type: vrrp.TypeAdvertisement, VRID: vrid, Priority: prio, Addresses: vips,
		MaxAdvertInt: vrrp.EncodeInterval(version, 100*time.Millisecond)}
	if version == 2 {
		p.MaxAdvertInt = 1
	}
	b, err := p.Marshal(src, dst)
	if err != nil {
		panic(err) // the cases are built from constants
	}
	return b
}

// resum recomputes a v3 message's checksum (IPv4 pseudo-header) after a
// case changed its bytes.
func resum(msg []byte, src netip.Addr) []byte {
	msg[6], msg[7] = 0, 0
	s4, d4 := src.As4(), vrrp.Group4.As4()
	pseudo := append(append(append([]byte{}, s4[:]...), d4[:]...), 0, 112, byte(len(msg)>>8), byte(len(msg)))
	var sum uint32
	for _, part := range [][]byte{pseudo, msg} {
		for i := 0; i+1 < len(part); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(part[i:]))
		}
		if len(part)%2 == 1 {
			sum += uint32(part[len(part)-1]) << 8
		}
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(msg[6:], ^uint16(sum))
	return msg
}

// spoofed is the i-th forged source: addresses of the lab's /24 that no
// host has.
func spoofed(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 77, 0, byte(120 + i%100)}) }

// paced sends pkts round-robin at rate packets per second for d, and
// returns how many were sent (the receivers say how many arrived) and how
// long it took. It never exceeds the
// rate's schedule and stops at d.
func (s *rawSender) paced(pkts [][]byte, rate int, d time.Duration) (sent int, took time.Duration, err error) {
	start := time.Now()
	end := start.Add(d)
	for i := 0; ; {
		now := time.Now()
		if !now.Before(end) {
			break
		}
		due := int(float64(rate) * now.Sub(start).Seconds())
		if sent >= due {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		for ; sent < due; i++ {
			if err := s.send(pkts[i%len(pkts)]); err != nil {
				return sent, time.Since(start), err
			}
			sent++
		}
	}
	return sent, time.Since(start), nil
}
