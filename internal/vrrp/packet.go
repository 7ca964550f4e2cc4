package vrrp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// TypeAdvertisement is the only VRRP message type defined by RFC 3768 and RFC 5798.
const TypeAdvertisement = 1

// Authentication types of VRRPv2 (RFC 3768 section 5.3.6). Type 2 (AH) is
// historic; it is decoded but never accepted.
const (
	AuthNone   = 0
	AuthSimple = 1 // "PASS" in keepalived: 8 bytes of clear text
	AuthAH     = 2
)

// headerLen is the fixed part of both versions; v2 adds 8 bytes of
// authentication data after the addresses.
const (
	headerLen   = 8
	authDataLen = 8
)

// Decoding errors. Callers count drops by comparing with errors.Is.
var (
	ErrTooShort   = errors.New("vrrp: packet too short")
	ErrVersion    = errors.New("vrrp: unsupported version")
	ErrType       = errors.New("vrrp: unknown message type")
	ErrAddrCount  = errors.New("vrrp: address count does not match packet length")
	ErrChecksum   = errors.New("vrrp: bad checksum")
	ErrFamily     = errors.New("vrrp: VRRPv2 carries IPv4 addresses only")
	ErrAddrFamily = errors.New("vrrp: address of the wrong family")
)

// ErrDuplicateAddr: an address listed twice. A set of VIPs never repeats
// one, and a repeated one would compare equal to our set once collapsed.
var ErrDuplicateAddr = errors.New("vrrp: address listed more than once")

// Packet is one VRRP advertisement as it appears on the wire. The same type
// serves both versions: MaxAdvertInt is in centiseconds for v3 (12 bits) and
// in seconds for v2 (8 bits); AuthType and AuthData exist only in v2.
type Packet struct {
	Version      uint8
	Type         uint8
	VRID         uint8
	Priority     uint8
	AuthType     uint8 // v2 only
	MaxAdvertInt uint16
	Checksum     uint16 // as read by Unmarshal; Marshal computes its own
	Addresses    []netip.Addr
	AuthData     [authDataLen]byte // v2 only
}

// Interval returns the advertisement interval carried by the packet.
func (p *Packet) Interval() time.Duration {
	if p.Version == 2 {
		return time.Duration(p.MaxAdvertInt) * time.Second
	}
	return time.Duration(p.MaxAdvertInt) * 10 * time.Millisecond
}

// EncodeInterval converts an interval into the packet's unit, rounding down
// and never below 1, as v2 counts seconds and v3 centiseconds.
func EncodeInterval(version uint8, d time.Duration) uint16 {
	var u time.Duration = 10 * time.Millisecond
	limit := uint16(0x0fff)
	if version == 2 {
		u, limit = time.Second, 0xff
	}
	n := d / u
	switch {
	case n < 1:
		return 1
	case n > time.Duration(limit):
		return limit
	}
	return uint16(n)
}

// Unmarshal decodes a VRRP message (the IP payload). is6 tells the address
// family, which the packet itself does not carry. The checksum is not verified
// here because that needs the IP addresses: see VerifyChecksum.
func Unmarshal(b []byte, is6 bool) (*Packet, error) {
	if len(b) < headerLen {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrTooShort, len(b), headerLen)
	}
	p := &Packet{
		Version:  b[0] >> 4,
		Type:     b[0] & 0x0f,
		VRID:     b[1],
		Priority: b[2],
		Checksum: binary.BigEndian.Uint16(b[6:8]),
	}
	count := int(b[3])
	switch p.Version {
	case 2:
		if is6 {
			return nil, ErrFamily
		}
		p.AuthType = b[4]
		p.MaxAdvertInt = uint16(b[5])
	case 3:
		p.MaxAdvertInt = binary.BigEndian.Uint16(b[4:6]) & 0x0fff
	default:
		return nil, fmt.Errorf("%w %d", ErrVersion, p.Version)
	}
	if p.Type != TypeAdvertisement {
		return nil, fmt.Errorf("%w %d", ErrType, p.Type)
	}
	alen := 4
	if is6 {
		alen = 16
	}
	need := headerLen + count*alen
	if len(b) < need {
		return nil, fmt.Errorf("%w: %d addresses need %d bytes, have %d", ErrAddrCount, count, need, len(b))
	}
	p.Addresses = make([]netip.Addr, count)
	for i := range count {
		off := headerLen + i*alen
		if is6 {
			p.Addresses[i] = netip.AddrFrom16([16]byte(b[off : off+16]))
		} else {
			p.Addresses[i] = netip.AddrFrom4([4]byte(b[off : off+4]))
		}
	}
	// The count accounts for every byte after the header: what follows the
	// addresses is v2's authentication data or nothing.
	switch rest := len(b) - need; {
	case rest == 0 && (p.Version == 3 || p.AuthType == AuthNone):
		// RFC 3768 always carries 8 bytes of authentication data; RFC 2338
		// speakers without authentication sometimes omit them.
	case rest == 0:
		return nil, fmt.Errorf("%w: authentication data missing", ErrTooShort)
	case p.Version == 2 && rest == authDataLen:
		copy(p.AuthData[:], b[need:])
	default:
		return nil, fmt.Errorf("%w: %d addresses, %d bytes after them", ErrAddrCount, count, rest)
	}
	if dup, ok := duplicate(p.Addresses); ok {
		return nil, fmt.Errorf("%w: %s", ErrDuplicateAddr, dup)
	}
	return p, nil
}

// duplicate returns an address that a appears more than once in a. It sorts
// a copy: at most 255 addresses, O(n log n) even for a hostile packet.
func duplicate(a []netip.Addr) (netip.Addr, bool) {
	s := slices.Clone(a)
	slices.SortFunc(s, netip.Addr.Compare)
	for i := 1; i < len(s); i++ {
		if s[i] == s[i-1] {
			return s[i], true
		}
	}
	return netip.Addr{}, false
}

// Len is the encoded length of the packet.
func (p *Packet) Len() int {
	alen := 4
	if p.is6() {
		alen = 16
	}
	n := headerLen + alen*len(p.Addresses)
	if p.Version == 2 {
		n += authDataLen
	}
	return n
}

// is6 reports whether the packet carries IPv6 addresses; the first decides.
func (p *Packet) is6() bool { return len(p.Addresses) > 0 && p.Addresses[0].Is6() }

// Marshal encodes the packet and fills in the checksum. src and dst are the
// IP source and destination: VRRPv3 sums a pseudo-header over them (RFC 5798
// section 5.2.8), VRRPv2 ignores them.
func (p *Packet) Marshal(src, dst netip.Addr) ([]byte, error) {
	if p.Version != 2 && p.Version != 3 {
		return nil, fmt.Errorf("%w %d", ErrVersion, p.Version)
	}
	if len(p.Addresses) > 255 {
		return nil, fmt.Errorf("vrrp: %d addresses, at most 255 fit", len(p.Addresses))
	}
	is6 := p.is6()
	if p.Version == 2 && is6 {
		return nil, ErrFamily
	}
	b := make([]byte, p.Len())
	b[0] = p.Version<<4 | p.Type&0x0f
	b[1] = p.VRID
	b[2] = p.Priority
	b[3] = uint8(len(p.Addresses))
	if p.Version == 2 {
		b[4] = p.AuthType
		b[5] = uint8(p.MaxAdvertInt)
	} else {
		binary.BigEndian.PutUint16(b[4:6], p.MaxAdvertInt&0x0fff)
	}
	off := headerLen
	for _, a := range p.Addresses {
		if a.Is6() != is6 {
			return nil, fmt.Errorf("%w: %s", ErrAddrFamily, a)
		}
		off += copy(b[off:], a.AsSlice())
	}
	if p.Version == 2 {
		copy(b[off:], p.AuthData[:])
	}
	binary.BigEndian.PutUint16(b[6:8], checksum(b, p.Version, src, dst))
	return b, nil
}

// VerifyChecksum checks the checksum of an encoded VRRP message received from
// src to dst.
func VerifyChecksum(b []byte, src, dst netip.Addr) error {
	if len(b) < headerLen {
		return ErrTooShort
	}
	// Summing a message with its checksum in place gives zero when it is right.
	if sum(b, b[0]>>4, src, dst) != 0xffff {
		return ErrChecksum
	}
	return nil
}

// checksum computes the checksum of b with its checksum field taken as zero.
func checksum(b []byte, version uint8, src, dst netip.Addr) uint16 {
	saved := [2]byte{b[6], b[7]}
	b[6], b[7] = 0, 0
	s := ^sum(b, version, src, dst)
	b[6], b[7] = saved[0], saved[1]
	return s
}

// sum is the folded one's-complement sum of b, plus the pseudo-header for v3.
func sum(b []byte, version uint8, src, dst netip.Addr) uint16 {
	var acc uint32
	if version == 3 {
		for _, a := range [2]netip.Addr{src.Unmap(), dst.Unmap()} {
			acc = addWords(acc, a.AsSlice())
		}
		// Upper-layer length and protocol number: 32 bits each way round for
		// IPv6, 16 bits for IPv4; their one's-complement sum is the same.
		acc += uint32(len(b)) + 112
	}
	acc = addWords(acc, b)
	for acc > 0xffff {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

func addWords(acc uint32, b []byte) uint32 {
	for len(b) >= 2 {
		acc += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	for acc > 0xffff {
		acc = acc&0xffff + acc>>16
	}
	return acc
}
