package xdplab

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// xdpMd is the program context BPF_PROG_RUN takes (struct xdp_md).
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// Indexes of gen_state (bpf/lab.c).
const (
	genSeq = iota
	genOneIn
)

// Generate runs xdp_gen over frames copies of frame (64 bytes) on
// interface ifindex (of the calling thread's network namespace) in
// live-frame mode: one in every oneIn goes out (the others are dropped at
// once), each with the next of 256 UDP source ports. It returns how many went out and how long it
// took. It is the lab benchmark's load, far above what a socket can send;
// oneIn paces it. On veth the peer takes the frames only with an XDP
// program of its own (AttachPass).
func (p *Programs) Generate(ifindex int, frame []byte, frames, oneIn uint32) (sent uint32, took time.Duration, err error) {
	oneIn = max(oneIn, 1)
	var tmpl labGenTmpl
	if len(frame) != len(tmpl.Data) {
		return 0, 0, fmt.Errorf("xdplab: generate: the frame has %d bytes, xdp_gen sends %d", len(frame), len(tmpl.Data))
	}
	copy(tmpl.Data[:], frame)
	if err := p.objs.GenFrame.Put(uint32(0), tmpl); err != nil {
		return 0, 0, fmt.Errorf("xdplab: generate: %w", err)
	}
	if err := p.setGenState(oneIn, 0); err != nil {
		return 0, 0, fmt.Errorf("xdplab: generate: %w", err)
	}
	t0 := time.Now()
	_, err = p.objs.XdpGen.Run(&ebpf.RunOptions{
		Data:      frame,
		Repeat:    frames,
		Flags:     unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		Context:   xdpMd{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex)},
		BatchSize: 64,
	})
	if err != nil {
		return 0, 0, fmt.Errorf("xdplab: generate %d frames on interface %d: %w", frames, ifindex, err)
	}
	return (frames + oneIn - 1) / oneIn, time.Since(t0), nil
}

// setGenState sets gen_state on every CPU: the pacing (one frame sent in
// every oneIn) and the sequence number the next run starts from.
func (p *Programs) setGenState(oneIn, seq uint32) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	perCPU := make([]uint32, cpus)
	for _, kv := range []struct{ key, val uint32 }{{genOneIn, oneIn}, {genSeq, seq}} {
		for i := range perCPU {
			perCPU[i] = kv.val
		}
		if err := p.objs.GenState.Put(kv.key, perCPU); err != nil {
			return err
		}
	}
	return nil
}
