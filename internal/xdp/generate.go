package xdp

import (
	"fmt"
	"io"
	"net"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// xdpMd is the program context BPF_PROG_RUN takes (struct xdp_md).
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// Generate runs xdp_gen over frames copies of frame (64 bytes) on
// interface ifindex (of the calling thread's network namespace) in
// live-frame mode: one in every oneIn goes out (the others are dropped at
// once), each with the next of 256 UDP source ports. It returns how many went out and how long it
// took. It is the lab benchmark's load, far above what a socket can send;
// oneIn paces it. On veth the peer takes the frames only with an XDP
// program of its own (AttachPass).
func (d *Dataplane) Generate(ifindex int, frame []byte, frames, oneIn uint32) (sent uint32, took time.Duration, err error) {
	oneIn = max(oneIn, 1)
	var tmpl dsrGenTmpl
	if len(frame) != len(tmpl.Data) {
		return 0, 0, fmt.Errorf("xdp: generate: the frame has %d bytes, xdp_gen sends %d", len(frame), len(tmpl.Data))
	}
	copy(tmpl.Data[:], frame)
	if err := d.objs.GenFrame.Put(uint32(0), tmpl); err != nil {
		return 0, 0, fmt.Errorf("xdp: generate: %w", err)
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return 0, 0, fmt.Errorf("xdp: generate: %w", err)
	}
	perCPU := make([]uint32, cpus)
	for i := range perCPU {
		perCPU[i] = oneIn
	}
	if err := d.objs.GenState.Put(uint32(genOneIn), perCPU); err != nil {
		return 0, 0, fmt.Errorf("xdp: generate: %w", err)
	}
	for i := range perCPU {
		perCPU[i] = 0
	}
	if err := d.objs.GenState.Put(uint32(genSeq), perCPU); err != nil {
		return 0, 0, fmt.Errorf("xdp: generate: %w", err)
	}
	t0 := time.Now()
	_, err = d.objs.XdpGen.Run(&ebpf.RunOptions{
		Data:      frame,
		Repeat:    frames,
		Flags:     unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		Context:   xdpMd{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex)},
		BatchSize: 64,
	})
	if err != nil {
		return 0, 0, fmt.Errorf("xdp: generate %d frames on interface %d: %w", frames, ifindex, err)
	}
	return (frames + oneIn - 1) / oneIn, time.Since(t0), nil
}

// Indexes of gen_state (bpf/dsr.c).
const (
	genSeq = iota
	genOneIn
)

// AttachPass attaches xdp_pass to interface ifname (of the calling thread's
// namespace) in native mode until the returned closer is closed: on veth a
// frame sent with XDP_TX reaches the peer only when the peer has an XDP
// program, and a program turns on the NAPI receive path.
func (d *Dataplane) AttachPass(ifname string) (io.Closer, error) {
	return attachNative(d.objs.XdpPass, "xdp_pass", ifname)
}

// AttachDrop attaches xdp_drop to interface ifname like AttachPass: a lab
// receiver that takes frames and drops them at once (its receive counter
// still counts them).
func (d *Dataplane) AttachDrop(ifname string) (io.Closer, error) {
	return attachNative(d.objs.XdpDrop, "xdp_drop", ifname)
}

func attachNative(prog *ebpf.Program, name, ifname string) (io.Closer, error) {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("xdp: attach %s to %s: %w", name, ifname, err)
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
	if err != nil {
		return nil, fmt.Errorf("xdp: attach %s to %s: %w", name, ifname, err)
	}
	return l, nil
}
