package proxyproto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
)

var (
	h4 = Header{Src: netip.MustParseAddrPort("192.0.2.7:40000"), Dst: netip.MustParseAddrPort("198.51.100.1:9445")}
	h6 = Header{Src: netip.MustParseAddrPort("[2001:db8::7]:40000"), Dst: netip.MustParseAddrPort("[2001:db8::1]:443")}
)

func TestRoundTrip(t *testing.T) {
	mapped := Header{Src: netip.MustParseAddrPort("[::ffff:192.0.2.7]:40000"), Dst: h4.Dst}
	mixed := Header{Src: h6.Src, Dst: h4.Dst}
	cases := []struct {
		name string
		in   Header
		want Header
	}{
		{"v4", h4, h4}, {"v6", h6, h6}, {"mapped v6 is sent as v4", mapped, h4},
		{"mixed families are local", mixed, Header{Local: true}}, {"local", Header{Local: true}, Header{Local: true}},
	}
	for _, c := range cases {
		for _, enc := range []struct {
			name string
			f    func([]byte, Header) []byte
		}{{"v1", AppendV1}, {"v2", AppendV2}} {
			b := enc.f(nil, c.in)
			got, n, err := Parse(append(b, "GET / HTTP/1.1\r\n"...))
			if err != nil || n != len(b) || got != c.want {
				t.Errorf("%s %s: Parse(%q) = %+v, %d, %v; want %+v, %d", c.name, enc.name, b, got, n, err, c.want, len(b))
			}
		}
	}
}

func TestSpecExamples(t *testing.T) {
	v1 := "PROXY TCP4 192.0.2.7 198.51.100.1 40000 9445\r\n"
	if got := string(AppendV1(nil, h4)); got != v1 {
		t.Fatalf("v1 = %q, want %q", got, v1)
	}
	// v2 TCP4 per the spec: signature, 0x21 PROXY, 0x11 TCP4, length 12, addresses, ports.
	want := "0d0a0d0a000d0a515549540a" + "2111000c" + "c0000207" + "c6336401" + "9c40" + "24e5"
	if got := hex.EncodeToString(AppendV2(nil, h4)); got != want {
		t.Fatalf("v2 = %s, want %s", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	v2 := AppendV2(nil, h4)
	withTLV := append(append([]byte{}, v2[:14]...), 0, 12+7)
	withTLV = append(append(withTLV, v2[16:]...), 0x04, 0, 4, 'n', 'o', 'o', 'p') // a NOOP TLV is skipped
	cases := []struct {
		name, data string
		err        string // "" = parses, "incomplete" = ErrIncomplete
	}{
		{"empty", "", "incomplete"},
		{"partial v1", "PROXY TCP4 192.0.2.7", "incomplete"},
		{"partial v2", string(v2[:20]), "incomplete"},
		{"v2 with TLV", string(withTLV), ""},
		{"http", "GET / HTTP/1.1\r\n", "no header"},
		{"lowercase", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "no header"},
		{"v1 unknown with addresses", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ""},
		{"v1 bad family", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "not PROXY TCP4"},
		{"v1 v6 in TCP4", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "not an TCP4 address"},
		{"v1 port range", "PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n", "not 0..65535"},
		{"v1 leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "not 0..65535"},
		{"v1 too long", "PROXY TCP4 " + strings.Repeat("1", 120), "longer than 107"},
		{"v1 missing field", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "not PROXY TCP4"},
		{"v2 bad signature", "\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c", "bad v2 signature"},
		{"v2 version 1", string(v2[:12]) + "\x11\x11\x00\x0c" + string(v2[16:]), "v2 version 1"},
		{"v2 command 5", string(v2[:12]) + "\x25\x11\x00\x0c" + string(v2[16:]), "v2 command 5"},
		{"v2 udp", string(v2[:12]) + "\x21\x12\x00\x0c" + string(v2[16:]), "not TCP4 or TCP6"},
		{"v2 short block", string(v2[:12]) + "\x21\x21\x00\x0c" + string(v2[16:]), "too short"},
		{"v2 huge", string(v2[:12]) + "\x21\x11\xff\xff", "over the"},
		{"v2 local", string(v2[:12]) + "\x20\x00\x00\x00", ""},
	}
	for _, c := range cases {
		_, _, err := Parse([]byte(c.data))
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.err == "incomplete" && !errors.Is(err, ErrIncomplete):
			t.Errorf("%s: %v, want ErrIncomplete", c.name, err)
		case c.err != "" && c.err != "incomplete" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: %v, want %q", c.name, err, c.err)
		}
	}
}

func TestReadKeepsTheRest(t *testing.T) {
	for _, hdr := range [][]byte{AppendV1(nil, h6), AppendV2(nil, h6)} {
		stream := append(append([]byte{}, hdr...), "hello"...)
		// One byte per read: the header is assembled across reads.
		h, rest, err := Read(iotest.OneByteReader(bytes.NewReader(stream)))
		if err != nil || h != h6 || len(rest) != 0 {
			t.Fatalf("one byte reads: %+v %q %v", h, rest, err)
		}
		h, rest, err = Read(bytes.NewReader(stream))
		if err != nil || h != h6 || string(rest) != "hello" {
			t.Fatalf("whole: %+v %q %v", h, rest, err)
		}
		if _, _, err := Read(bytes.NewReader(hdr[:len(hdr)-1])); err == nil || !strings.Contains(err.Error(), "ended inside") {
			t.Fatalf("cut header: %v", err)
		}
	}
}

// FuzzParse: no input panics; whatever parses re-encodes to the same header.
func FuzzParse(f *testing.F) {
	f.Add(AppendV1(nil, h4))
	f.Add(AppendV1(nil, h6))
	f.Add(AppendV2(nil, h4))
	f.Add(AppendV2(nil, h6))
	f.Add(AppendV2(nil, Header{Local: true}))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := Parse(data)
		if err != nil {
			return
		}
		if n <= 0 || n > len(data) {
			t.Fatalf("length %d of %d bytes", n, len(data))
		}
		for _, enc := range []func([]byte, Header) []byte{AppendV1, AppendV2} {
			h2, _, err := Parse(enc(nil, h))
			if err != nil || h2 != h.normal() {
				t.Fatalf("%+v re-encoded parses as %+v, %v", h, h2, err)
			}
		}
	})
}
