package xdplab

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Programs are the lab's programs and maps, loaded into the kernel.
type Programs struct {
	objs labObjects
}

// Load loads the lab's programs (bpf/lab.c). Without BPF privileges it
// says so.
func Load() (*Programs, error) {
	p := &Programs{}
	if err := loadLabObjects(&p.objs, nil); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("xdplab: load: %w: it needs CAP_BPF and CAP_NET_ADMIN (root)", err)
		}
		return nil, fmt.Errorf("xdplab: load: %w", err)
	}
	return p, nil
}

// Close unloads the programs; links returned by AttachPass and AttachDrop
// keep theirs until they are closed.
func (p *Programs) Close() error {
	return p.objs.Close()
}

// Swap is xdp_swap, which only swaps the MACs and sends the frame back
// (XDP_TX): the baseline a benchmark of xdp_dsr compares with, run with
// its Run or Benchmark. It stays Programs' to close.
func (p *Programs) Swap() *ebpf.Program {
	return p.objs.XdpSwap
}

// AttachPass attaches xdp_pass to interface ifname (of the calling thread's
// namespace) in native mode until the returned closer is closed: on veth a
// frame sent with XDP_TX reaches the peer only when the peer has an XDP
// program, and a program turns on the NAPI receive path.
func (p *Programs) AttachPass(ifname string) (io.Closer, error) {
	return attachNative(p.objs.XdpPass, "xdp_pass", ifname)
}

// AttachDrop attaches xdp_drop to interface ifname like AttachPass: a lab
// receiver that takes frames and drops them at once (its receive counter
// still counts them).
func (p *Programs) AttachDrop(ifname string) (io.Closer, error) {
	return attachNative(p.objs.XdpDrop, "xdp_drop", ifname)
}

func attachNative(prog *ebpf.Program, name, ifname string) (io.Closer, error) {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("xdplab: attach %s to %s: %w", name, ifname, err)
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
	if err != nil {
		return nil, fmt.Errorf("xdplab: attach %s to %s: %w", name, ifname, err)
	}
	return l, nil
}
