package xdp

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/xdp/xdplab"
	"golang.org/x/sys/unix"
)

// genlMessage builds one netlink message of type typ: a generic netlink
// header (command 1) and attrs, as the kernel answers.
func genlMessage(typ uint16, attrs ...[]byte) []byte {
	body := []byte{1, 1, 0, 0}
	for _, a := range attrs {
		body = append(body, a...)
	}
	m := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(body)))
	m = binary.NativeEndian.AppendUint16(m, typ)
	m = append(m, make([]byte, 10)...) // flags, sequence, port id
	return append(m, body...)
}

func TestParseGenlAnswer(t *testing.T) {
	features := binary.NativeEndian.AppendUint64(nil, uint64(FeatureBasic|FeatureNdoXmit))
	errAnswer := func(errno int32) []byte {
		m := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+4))
		m = binary.NativeEndian.AppendUint16(m, unix.NLMSG_ERROR)
		m = append(m, make([]byte, 10)...)
		return binary.NativeEndian.AppendUint32(m, uint32(-errno))
	}
	for _, c := range []struct {
		name  string
		in    []byte
		attrs map[uint16]int // type -> length of its value
		err   string
	}{
		{"ifindex and features", genlMessage(20, genlAttr(netdevAttrIfindex, []byte{7, 0, 0, 0}), genlAttr(netdevAttrXDPFeatures, features)),
			map[uint16]int{netdevAttrIfindex: 4, netdevAttrXDPFeatures: 8}, ""},
		{"padded string", genlMessage(20, genlAttr(genlCtrlAttrFamilyNm, []byte("netdev\x00")), genlAttr(genlCtrlAttrFamilyID, []byte{20, 0})),
			map[uint16]int{genlCtrlAttrFamilyNm: 7, genlCtrlAttrFamilyID: 2}, ""},
		{"no attributes", genlMessage(20), map[uint16]int{}, ""},
		{"kernel error", errAnswer(int32(unix.EINVAL)), nil, "invalid argument"},
		{"attribute longer than the message", genlMessage(20, []byte{40, 0, 1, 0, 1, 2, 3, 4}), nil, "attribute of length 40 in 8 bytes"},
		{"attribute shorter than its header", genlMessage(20, []byte{2, 0, 1, 0}), nil, "attribute of length 2"},
		{"truncated", genlMessage(20)[:10], nil, "answer of 10 bytes"},
		{"no generic header", genlMessage(20)[:unix.NLMSG_HDRLEN+2], nil, "answer of"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseGenlAnswer(c.in)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one with %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.attrs) {
				t.Fatalf("attributes %v, want %v", got, c.attrs)
			}
			for typ, n := range c.attrs {
				if len(got[typ]) != n {
					t.Fatalf("attribute %d: %x, want %d bytes", typ, got[typ], n)
				}
			}
		})
	}
	got, _ := parseGenlAnswer(genlMessage(20, genlAttr(netdevAttrXDPFeatures, features)))
	if f := Features(binary.NativeEndian.Uint64(got[netdevAttrXDPFeatures])); f != FeatureBasic|FeatureNdoXmit {
		t.Fatalf("features %b", f)
	}
}

func FuzzParseGenlAnswer(f *testing.F) {
	f.Add(genlMessage(20, genlAttr(netdevAttrIfindex, []byte{7, 0, 0, 0}), genlAttr(netdevAttrXDPFeatures, make([]byte, 8))))
	f.Add(genlMessage(unix.NLMSG_ERROR, []byte{0xea, 0xff, 0xff, 0xff}))
	f.Add(genlMessage(20, []byte{5, 0, 1, 0, 9}))
	f.Fuzz(func(t *testing.T, b []byte) {
		attrs, err := parseGenlAnswer(b)
		if err != nil {
			return
		}
		for _, v := range attrs {
			if len(v) > len(b) {
				t.Fatalf("attribute of %d bytes from %d", len(v), len(b))
			}
		}
	})
}

// What the kernel reports for a veth (eth0 of a lab host, its peer the
// switch port): it takes XDP frames (NDO_XMIT) only while the peer runs an
// XDP program.
func TestDeviceFeaturesOfAVeth(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root")
	}
	progs, err := xdplab.Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { progs.Close() })
	lab, err := netlab.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	h, err := lab.AddHost("h", netip.MustParsePrefix("10.78.0.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	eth0 := func() (f Features) {
		t.Helper()
		err := h.Do(func() error {
			ifc, err := net.InterfaceByName("eth0")
			if err == nil {
				f, err = DeviceFeatures(ifc.Index)
			}
			return err
		})
		if errors.Is(err, ErrNoFeatures) {
			t.Skipf("this kernel does not report XDP features: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	if f := eth0(); f&FeatureBasic == 0 || f&FeatureNdoXmit != 0 {
		t.Fatalf("veth, peer without a program: features %b, want basic and no ndo_xmit", f)
	}
	var pass io.Closer
	if err := lab.SwitchDo(func() (err error) { pass, err = progs.AttachPass(h.SwitchPort()); return err }); err != nil {
		t.Fatal(err)
	}
	defer pass.Close()
	if f := eth0(); f&FeatureNdoXmit == 0 {
		t.Fatalf("veth, peer with a program: features %b, want ndo_xmit", f)
	}
	if err := h.Do(func() error { _, err := DeviceFeatures(9999); return err }); err == nil {
		t.Fatal("features of an interface that does not exist: no error")
	}
}
