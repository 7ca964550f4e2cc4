package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vigil-lb/vigil/internal/vrrp"
)

// abuseCase is one kind of malformed or foreign VRRP message, sent from
// spoofed sources to the group. want is the drop reason the backup must
// count it under; "" means the kernel's socket filter keeps it out (no
// instance counts it, and nothing changes).
type abuseCase struct {
	name string
	want vrrp.DropReason
	pkt  func(src netip.Addr) []byte
}

func abuseCases() []abuseCase {
	vip := labVIP.Addr()
	ours := []netip.Addr{vip}
	foreign := []netip.Addr{netip.MustParseAddr("10.77.0.211")}
	ip := func(src netip.Addr, msg []byte) []byte { return ipPacket(src, vrrp.Group4, 255, msg) }
	edit := func(f func(b []byte) []byte) func(src netip.Addr) []byte {
		return func(src netip.Addr) []byte {
			return ip(src, resum(f(advert(3, labVRID, 250, ours, src)), src))
		}
	}
	dups := make([]netip.Addr, 255)
	for i := range dups {
		dups[i] = vip
	}
	return []abuseCase{
		{"TTL 64 (routed from elsewhere)", vrrp.DropTTL, func(src netip.Addr) []byte {
			return ipPacket(src, vrrp.Group4, 64, advert(3, labVRID, 250, ours, src))
		}},
		{"bad checksum", vrrp.DropChecksum, func(src netip.Addr) []byte {
			b := advert(3, labVRID, 250, ours, src)
			b[6] ^= 0xff
			return ip(src, b)
		}},
		{"truncated to 6 bytes", vrrp.DropMalformed, func(src netip.Addr) []byte {
			return ip(src, advert(3, labVRID, 250, ours, src)[:6])
		}},
		{"truncated address list (count 2, one address)", vrrp.DropMalformed, edit(func(b []byte) []byte { b[3] = 2; return b })},
		{"count 0 with an address", vrrp.DropMalformed, edit(func(b []byte) []byte { b[3] = 0; return b })},
		{"trailing bytes after the addresses", vrrp.DropMalformed, edit(func(b []byte) []byte { return append(b, 1, 2, 3, 4) })},
		{"type 2", vrrp.DropMalformed, edit(func(b []byte) []byte { b[0] = 0x32; return b })},
		{"version 2 on a v3 router", vrrp.DropVersion, func(src netip.Addr) []byte {
			return ip(src, advert(2, labVRID, 250, ours, src))
		}},
		{"version 4 (not VRRP)", "", edit(func(b []byte) []byte { b[0] = 0x41; return b })},
		{"foreign VRID", "", func(src netip.Addr) []byte { return ip(src, advert(3, labVRID+1, 250, ours, src)) }},
		{"foreign VIP set, priority 250", vrrp.DropAddresses, func(src netip.Addr) []byte {
			return ip(src, advert(3, labVRID, 250, foreign, src))
		}},
		{"priority-0 flood, foreign VIP set", vrrp.DropAddresses, func(src netip.Addr) []byte {
			return ip(src, advert(3, labVRID, 0, foreign, src))
		}},
		{"our VIP and a foreign one", vrrp.DropAddresses, func(src netip.Addr) []byte {
			return ip(src, advert(3, labVRID, 250, append(slices.Clone(ours), foreign...), src))
		}},
		// Last: before bug 6's fix the collapsed list passed, and the
		// spoofed priority 250 took the VIP from lb1 for a while; now an
		// address listed twice is its own drop reason.
		{"our VIP 255 times, priority 250", vrrp.DropDuplicate, func(src netip.Addr) []byte {
			return ip(src, advert(3, labVRID, 250, dups, src))
		}},
	}
}

// abuseRow sends each case's packets (count per case) from spoofed sources
// and checks that the backup counted every one under the expected reason,
// or, for what the socket filter refuses, counted nothing; and that no node
// changed state and lb1 alone holds the VIP.
func abuseRow(ctx context.Context, vigil string, count int) row {
	r := row{scenario: "VRRP wire abuse", goal: "every message dropped under its reason, no state change"}
	l, err := newLab(ctx, vigil, 2)
	if err != nil {
		return r.broken(err)
	}
	defer l.Close()
	backup := l.Node("lb2")
	var bad []string
	for _, c := range abuseCases() {
		r.tries++
		before, trBefore := l.instance(backup), l.transitions()
		for i := range count {
			if err := l.flooder.send(c.pkt(spoofed(i))); err != nil {
				return r.broken(fmt.Errorf("%s: send: %w", c.name, err))
			}
			time.Sleep(200 * time.Microsecond) // well below any queue's limit
		}
		time.Sleep(500 * time.Millisecond)
		after, trAfter := l.instance(backup), l.transitions()
		var problems []string
		for reason, n := range after.Drops {
			if d := n - before.Drops[reason]; d > 0 && reason != string(c.want) {
				problems = append(problems, fmt.Sprintf("%d counted as %s", d, reason))
			}
		}
		if c.want != "" {
			if d := after.Drops[string(c.want)] - before.Drops[string(c.want)]; d != uint64(count) {
				problems = append(problems, fmt.Sprintf("%d of %d counted as %s", d, count, c.want))
			}
		}
		if !slices.Equal(trBefore, trAfter) {
			problems = append(problems, fmt.Sprintf("transitions %v -> %v", trBefore, trAfter))
		}
		if o := l.Owners(); len(o) != 1 || o[0] != "lb1" {
			problems = append(problems, fmt.Sprintf("VIP on %v", o))
		}
		if len(problems) > 0 {
			r.failures++
			bad = append(bad, c.name+": "+strings.Join(problems, ", "))
			// Let a disturbed cluster settle before the next case.
			_ = l.waitStates(ctx, 10*time.Second)
		}
	}
	r.figure = fmt.Sprintf("%d kinds × %d messages from spoofed sources; %d kinds as expected", r.tries, count, r.tries-r.failures)
	r.notes = bad
	return r
}
