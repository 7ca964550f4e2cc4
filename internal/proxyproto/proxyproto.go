// Package proxyproto encodes and decodes the PROXY protocol header (HAProxy's
// spec, versions 1 and 2), which carries a client's address over a proxied
// TCP connection so backends see who really connected.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Header is the addresses a PROXY header carries. Local (v2 LOCAL, v1
// UNKNOWN) means the connection is the proxy's own: use the real addresses.
type Header struct {
	Src, Dst netip.AddrPort
	Local    bool
}

// v2Sig opens every version 2 header.
var v2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// MaxV1 is the longest v1 header, CRLF included.
const MaxV1 = 107

// MaxHeader bounds what Parse accepts for v2 (TLVs included); larger headers
// are refused rather than buffered.
const MaxHeader = 16 + 2048

// ErrIncomplete means data holds the start of a header but not all of it.
var ErrIncomplete = errors.New("proxy protocol: incomplete header")

// normal returns the header as it is sent: IPv4-mapped addresses as IPv4
// when both ends are IPv4, and Local (no addresses) when the two ends are of
// different families or missing, which neither version can carry.
func (h Header) normal() Header {
	if h.Local {
		return Header{Local: true}
	}
	s, d := h.Src.Addr(), h.Dst.Addr()
	if s.Unmap().Is4() && d.Unmap().Is4() {
		h.Src = netip.AddrPortFrom(s.Unmap(), h.Src.Port())
		h.Dst = netip.AddrPortFrom(d.Unmap(), h.Dst.Port())
	}
	if !h.Src.IsValid() || !h.Dst.IsValid() || h.Src.Addr().Is4() != h.Dst.Addr().Is4() {
		return Header{Local: true}
	}
	return h
}

// AppendV1 appends the text form.
func AppendV1(b []byte, h Header) []byte {
	h = h.normal()
	if h.Local {
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	fam := "TCP4"
	if h.Src.Addr().Is6() {
		fam = "TCP6"
	}
	b = append(b, "PROXY "+fam+" "...)
	b = h.Src.Addr().AppendTo(b)
	b = append(b, ' ')
	b = h.Dst.Addr().AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(h.Src.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(h.Dst.Port()), 10)
	return append(b, "\r\n"...)
}

// AppendV2 appends the binary form, without TLVs.
func AppendV2(b []byte, h Header) []byte {
	h = h.normal()
	b = append(b, v2Sig...)
	if h.Local {
		return append(b, 0x20, 0x00, 0, 0)
	}
	if h.Src.Addr().Is4() {
		b = append(b, 0x21, 0x11, 0, 12)
	} else {
		b = append(b, 0x21, 0x21, 0, 36)
	}
	b = append(b, h.Src.Addr().AsSlice()...)
	b = append(b, h.Dst.Addr().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, h.Src.Port())
	return binary.BigEndian.AppendUint16(b, h.Dst.Port())
}

// Parse reads a v1 or v2 header from the start of data and returns it with
// its length. ErrIncomplete asks for more data; any other error means the
// stream does not start with a valid header.
func Parse(data []byte) (Header, int, error) {
	switch {
	case len(data) == 0:
		return Header{}, 0, ErrIncomplete
	case data[0] == '\r':
		n := min(len(data), len(v2Sig))
		if !bytes.Equal(data[:n], v2Sig[:n]) {
			return Header{}, 0, errors.New("proxy protocol: bad v2 signature")
		}
		return parseV2(data)
	case data[0] == 'P':
		n := min(len(data), 6)
		if string(data[:n]) != "PROXY "[:n] {
			return Header{}, 0, errors.New(`proxy protocol: does not start with "PROXY "`)
		}
		return parseV1(data)
	default:
		return Header{}, 0, fmt.Errorf("proxy protocol: no header (first byte %#02x)", data[0])
	}
}

func parseV1(data []byte) (Header, int, error) {
	end := bytes.Index(data[:min(len(data), MaxV1)], []byte("\r\n"))
	if end < 0 {
		if len(data) >= MaxV1 {
			return Header{}, 0, errors.New("proxy protocol: v1 line longer than 107 bytes")
		}
		return Header{}, 0, ErrIncomplete
	}
	f := strings.Split(string(data[:end]), " ")
	if len(f) >= 2 && f[1] == "UNKNOWN" {
		return Header{Local: true}, end + 2, nil
	}
	if len(f) != 6 || (f[1] != "TCP4" && f[1] != "TCP6") {
		return Header{}, 0, fmt.Errorf("proxy protocol: v1 line %q is not PROXY TCP4|TCP6 SRC DST SPORT DPORT", data[:end])
	}
	var h Header
	for i, part := range []struct {
		addr, port string
		out        *netip.AddrPort
	}{{f[2], f[4], &h.Src}, {f[3], f[5], &h.Dst}} {
		a, err := netip.ParseAddr(part.addr)
		if err != nil || a.Zone() != "" || a.Is4() != (f[1] == "TCP4") {
			return Header{}, 0, fmt.Errorf("proxy protocol: v1 address %d %q is not an %s address", i+1, part.addr, f[1])
		}
		p, err := strconv.ParseUint(part.port, 10, 16)
		if err != nil || (len(part.port) > 1 && part.port[0] == '0') {
			return Header{}, 0, fmt.Errorf("proxy protocol: v1 port %d %q is not 0..65535", i+1, part.port)
		}
		*part.out = netip.AddrPortFrom(a, uint16(p))
	}
	return h, end + 2, nil
}

func parseV2(data []byte) (Header, int, error) {
	if len(data) < 16 {
		return Header{}, 0, ErrIncomplete
	}
	verCmd, fam := data[12], data[13]
	size := 16 + int(binary.BigEndian.Uint16(data[14:16]))
	switch {
	case verCmd>>4 != 2:
		return Header{}, 0, fmt.Errorf("proxy protocol: v2 version %d", verCmd>>4)
	case verCmd&0xf > 1:
		return Header{}, 0, fmt.Errorf("proxy protocol: v2 command %d", verCmd&0xf)
	case size > MaxHeader:
		return Header{}, 0, fmt.Errorf("proxy protocol: v2 header of %d bytes is over the %d limit", size, MaxHeader)
	case len(data) < size:
		return Header{}, 0, ErrIncomplete
	}
	if verCmd&0xf == 0 { // LOCAL: addresses, if any, are ignored
		return Header{Local: true}, size, nil
	}
	body := data[16:size]
	var alen int
	switch fam {
	case 0x11: // TCP over IPv4
		alen = 4
	case 0x21: // TCP over IPv6
		alen = 16
	case 0x00: // UNSPEC
		return Header{Local: true}, size, nil
	default:
		return Header{}, 0, fmt.Errorf("proxy protocol: v2 family/protocol %#02x is not TCP4 or TCP6", fam)
	}
	if len(body) < 2*alen+4 {
		return Header{}, 0, fmt.Errorf("proxy protocol: v2 address block of %d bytes is too short for family %#02x", len(body), fam)
	}
	src, _ := netip.AddrFromSlice(body[:alen])
	dst, _ := netip.AddrFromSlice(body[alen : 2*alen])
	h := Header{
		Src: netip.AddrPortFrom(src, binary.BigEndian.Uint16(body[2*alen:])),
		Dst: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(body[2*alen+2:])),
	}
	return h, size, nil
}
