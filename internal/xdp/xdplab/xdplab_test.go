package xdplab

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

const (
	xdpDrop = 1
	xdpPass = 2
	xdpTx   = 3
)

func load(t *testing.T) *Programs {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root")
	}
	p, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// udpFrame is a 64-byte Ethernet frame holding an IPv4 UDP packet from
// source port 1 to port 9000, as the benchmark gives Generate.
func udpFrame() []byte {
	f := make([]byte, 64)
	copy(f[0:], []byte{0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x99, 0x08, 0x00})
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], 64-14)
	copy(ip[12:], []byte{203, 0, 113, 7, 192, 0, 2, 10})
	binary.BigEndian.PutUint16(ip[20:], 1)
	binary.BigEndian.PutUint16(ip[22:], 9000)
	binary.BigEndian.PutUint16(ip[24:], 64-14-20)
	return f
}

// xdp_gen, the benchmark's generator: every frame it sends is the whole
// template (whatever a reused page held before) with the next source port,
// and with one-in-k pacing it sends one frame in k and drops the rest.
func TestGeneratorWritesTemplateAndPaces(t *testing.T) {
	p := load(t)
	var g labGenTmpl
	copy(g.Data[:], udpFrame())
	if err := p.objs.GenFrame.Put(uint32(0), g); err != nil {
		t.Fatal(err)
	}
	gen := func() (uint32, []byte) {
		t.Helper()
		in := bytes.Repeat([]byte{0xee}, len(g.Data)) // what a reused page may hold
		out := make([]byte, len(in))
		ret, err := p.objs.XdpGen.Run(&ebpf.RunOptions{Data: in, DataOut: out})
		if err != nil {
			t.Fatal(err)
		}
		return ret, out
	}
	if err := p.setGenState(1, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		ret, out := gen()
		want := append([]byte(nil), g.Data[:]...)
		binary.BigEndian.PutUint16(want[34:], uint16(30000+i))
		if ret != xdpTx || !bytes.Equal(out, want) {
			t.Fatalf("frame %d: verdict %d\n got %x\nwant %x", i, ret, out, want)
		}
	}
	if err := p.setGenState(4, 0); err != nil {
		t.Fatal(err)
	}
	var verdicts []uint32
	for range 8 {
		ret, _ := gen()
		verdicts = append(verdicts, ret)
	}
	if want := []uint32{xdpTx, xdpDrop, xdpDrop, xdpDrop, xdpTx, xdpDrop, xdpDrop, xdpDrop}; fmt.Sprint(verdicts) != fmt.Sprint(want) {
		t.Fatalf("one in 4: verdicts %v, want %v", verdicts, want)
	}
}

// The receivers and the baseline, as frames through BPF_PROG_RUN: pass,
// drop, and the frame back with its MACs swapped.
func TestReceiversAndSwap(t *testing.T) {
	p := load(t)
	in := udpFrame()
	for _, c := range []struct {
		name string
		prog *ebpf.Program
		want uint32
	}{{"xdp_pass", p.objs.XdpPass, xdpPass}, {"xdp_drop", p.objs.XdpDrop, xdpDrop}, {"xdp_swap", p.Swap(), xdpTx}} {
		out := make([]byte, len(in))
		ret, err := c.prog.Run(&ebpf.RunOptions{Data: in, DataOut: out})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if ret != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, ret, c.want)
		}
		if c.want == xdpTx && (!bytes.Equal(out[0:6], in[6:12]) || !bytes.Equal(out[6:12], in[0:6]) || !bytes.Equal(out[12:], in[12:])) {
			t.Errorf("%s: frame %x, want %x with its MACs swapped", c.name, out[:14], in[:14])
		}
	}
}

func TestGenerateRefusesAFrameOfTheWrongSize(t *testing.T) {
	p := load(t)
	if _, _, err := p.Generate(1, make([]byte, 60), 1, 1); err == nil {
		t.Fatal("a 60-byte frame accepted")
	}
}
