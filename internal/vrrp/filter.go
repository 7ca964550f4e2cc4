package vrrp

import (
	"slices"

	"golang.org/x/net/bpf"
)

// A socket filter keeps what is not ours in the kernel: a flood of adverts
// for other VRIDs (or of other protocols' junk on IP protocol 112) never
// wakes the daemon, never fills the socket's receive queue and so never
// crowds out our master's adverts. The filter passes a message only when it
// looks like VRRP (version 2 or 3) and its VRID is one of the instances'
// on the socket. It deliberately does not require the instance's own
// version: an advert for our VRID in the other version is a
// misconfiguration (a v2 keepalived beside a v3 vigil: both become master)
// that must reach the instance to be counted and logged as a "version" drop.
//
// What the program sees at offset 0 was checked on real sockets (kernel
// 6.18): on an IPv4 raw socket the IP header, whose length the program
// reads from the IHL; on an IPv6 raw socket the VRRP message itself.

// acceptAll is the largest snapshot length: a passed message is kept whole.
const acceptAll = 0xffff

// filterProgram returns the classic BPF program that passes VRRP messages
// for vrids. With no VRIDs it passes nothing.
func filterProgram(is6 bool, vrids []uint8) []bpf.Instruction {
	if len(vrids) == 0 {
		return []bpf.Instruction{bpf.RetConstant{Val: 0}}
	}
	vrids = slices.Compact(slices.Sorted(slices.Values(vrids)))
	var p []bpf.Instruction
	load := func(off uint32) bpf.Instruction { return bpf.LoadAbsolute{Off: off, Size: 1} }
	if !is6 {
		// X = IHL*4: the VRRP message follows the IP header and its options.
		p = append(p, bpf.LoadMemShift{Off: 0})
		load = func(off uint32) bpf.Instruction { return bpf.LoadIndirect{Off: off, Size: 1} }
	}
	p = append(p,
		load(0), // version and type
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4},
		bpf.ALUOpConstant{Op: bpf.ALUOpSub, Val: 2},                // versions 2 and 3 become 0 and 1, the rest wraps above
		bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: 1, SkipTrue: 1}, // to the drop below
		bpf.Jump{Skip: 1},
		bpf.RetConstant{Val: 0},
		load(1), // VRID
	)
	// One comparison per VRID; a match skips the others and the drop. At
	// most 255 VRIDs keep every skip within the 8-bit jump offset.
	for i, v := range vrids {
		p = append(p, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(v), SkipTrue: uint8(len(vrids) - i)})
	}
	return append(p, bpf.RetConstant{Val: 0}, bpf.RetConstant{Val: acceptAll})
}
