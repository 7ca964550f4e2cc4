// Package garp tells a segment who owns an address: gratuitous ARP and
// unsolicited IPv6 neighbour advertisements, and ARP probes that ask the wire
// who answers for an address. It announces; deciding who owns what is vrrp's job.
package garp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// ARP operations.
const (
	OpRequest = 1
	OpReply   = 2
)

const (
	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
	ethHeaderLen  = 14
	arpLen        = 28
)

// Errors of the ARP decoder.
var (
	ErrShortFrame  = errors.New("arp: frame too short")
	ErrNotARP      = errors.New("arp: not an ARP frame")
	ErrNotEthernet = errors.New("arp: not Ethernet/IPv4 ARP")
)

// ARP is an Ethernet/IPv4 ARP message (RFC 826).
type ARP struct {
	Op        uint16
	SenderMAC net.HardwareAddr
	SenderIP  netip.Addr
	TargetMAC net.HardwareAddr
	TargetIP  netip.Addr
}

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Frame encodes the message in an Ethernet frame from src to dst.
func (a *ARP) Frame(dst, src net.HardwareAddr) ([]byte, error) {
	if len(dst) != 6 || len(src) != 6 || len(a.SenderMAC) != 6 || len(a.TargetMAC) != 6 {
		return nil, fmt.Errorf("arp: hardware addresses must be 6 bytes")
	}
	if !a.SenderIP.Is4() || !a.TargetIP.Is4() {
		return nil, fmt.Errorf("arp: %s or %s is not IPv4", a.SenderIP, a.TargetIP)
	}
	b := make([]byte, ethHeaderLen+arpLen)
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], etherTypeARP)
	p := b[ethHeaderLen:]
	binary.BigEndian.PutUint16(p[0:2], 1) // Ethernet
	binary.BigEndian.PutUint16(p[2:4], etherTypeIPv4)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:8], a.Op)
	copy(p[8:14], a.SenderMAC)
	s4, t4 := a.SenderIP.As4(), a.TargetIP.As4()
	copy(p[14:18], s4[:])
	copy(p[18:24], a.TargetMAC)
	copy(p[24:28], t4[:])
	return b, nil
}

// ParseFrame decodes an Ethernet frame that carries Ethernet/IPv4 ARP.
func ParseFrame(b []byte) (*ARP, error) {
	if len(b) < ethHeaderLen+arpLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrShortFrame, len(b))
	}
	if binary.BigEndian.Uint16(b[12:14]) != etherTypeARP {
		return nil, ErrNotARP
	}
	p := b[ethHeaderLen:]
	if binary.BigEndian.Uint16(p[0:2]) != 1 || binary.BigEndian.Uint16(p[2:4]) != etherTypeIPv4 || p[4] != 6 || p[5] != 4 {
		return nil, ErrNotEthernet
	}
	return &ARP{
		Op:        binary.BigEndian.Uint16(p[6:8]),
		SenderMAC: net.HardwareAddr(append([]byte(nil), p[8:14]...)),
		SenderIP:  netip.AddrFrom4([4]byte(p[14:18])),
		TargetMAC: net.HardwareAddr(append([]byte(nil), p[18:24]...)),
		TargetIP:  netip.AddrFrom4([4]byte(p[24:28])),
	}, nil
}

// gratuitousFrames returns a request and a reply announcing ip at mac. Routers
// differ in which of the two they learn from, so both go out; both carry the
// VIP as sender address, which is what updates neighbour caches.
func gratuitousFrames(ip netip.Addr, mac net.HardwareAddr) ([][]byte, error) {
	req := ARP{Op: OpRequest, SenderMAC: mac, SenderIP: ip, TargetMAC: make(net.HardwareAddr, 6), TargetIP: ip}
	rep := ARP{Op: OpReply, SenderMAC: mac, SenderIP: ip, TargetMAC: broadcast, TargetIP: ip}
	a, err := req.Frame(broadcast, mac)
	if err != nil {
		return nil, err
	}
	b, err := rep.Frame(broadcast, mac)
	if err != nil {
		return nil, err
	}
	return [][]byte{a, b}, nil
}

// neighborAdvert builds an unsolicited ICMPv6 neighbour advertisement
// (RFC 4861 section 7.2.6) for target at mac, with the override flag so
// caches replace the old link-layer address. The kernel fills the checksum.
func neighborAdvert(target netip.Addr, mac net.HardwareAddr) []byte {
	b := make([]byte, 32)
	b[0] = 136                                     // neighbour advertisement
	binary.BigEndian.PutUint32(b[4:8], 0x20000000) // O (override)
	t := target.As16()
	copy(b[8:24], t[:])
	b[24], b[25] = 2, 1 // option: target link-layer address, 8 bytes
	copy(b[26:32], mac)
	return b
}
