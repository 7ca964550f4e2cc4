package xdp

import (
	"encoding/binary"
	"net/netip"
)

// filterBits is the size of the program's svc_filter bitmap (FILTER_BITS).
const filterBits = 4096

// svcKey names a service as its map key does.
type svcKey struct {
	vip   netip.Addr
	port  uint16
	proto uint8
}

// filter mirrors the program's svc_filter: a bit per service hash, with a
// count per bit so that removing one of two services that share a bit
// keeps it set. Its caller adds a key once and removes only added keys.
type filter struct {
	uses  [filterBits]uint16
	words [filterBits / 64]uint64
}

// add sets k's bit; it reports whether the words changed.
func (f *filter) add(k svcKey) bool {
	b := filterBit(k)
	f.uses[b]++
	if f.uses[b] > 1 {
		return false
	}
	f.words[b/64] |= 1 << (b % 64)
	return true
}

// remove clears k's bit when no other service uses it; it reports whether
// the words changed.
func (f *filter) remove(k svcKey) bool {
	b := filterBit(k)
	f.uses[b]--
	if f.uses[b] > 0 {
		return false
	}
	f.words[b/64] &^= 1 << (b % 64)
	return true
}

// filterBit is the program's filter_bit: the address as the program reads
// it from the packet (IPv6: its four words folded by xor), the port in
// network byte order, as native-endian words.
func filterBit(k svcKey) uint32 {
	var addr uint32
	if k.vip.Is4() {
		addr = ipv4Word(k.vip)
	} else {
		b := k.vip.As16()
		for i := 0; i < 16; i += 4 {
			addr ^= binary.NativeEndian.Uint32(b[i:])
		}
	}
	var port [2]byte
	binary.BigEndian.PutUint16(port[:], k.port)
	p := uint32(binary.NativeEndian.Uint16(port[:]))
	return ((addr ^ p<<8 ^ uint32(k.proto)) * 0x9e3779b1) >> 20
}
