package main

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigil-lb/vigil/internal/vrrp"
)

// floodStep is one rate of the rising flood.
type floodStep struct {
	target, achieved int // packets per second
	takeover         bool
	kernelDrops      uint64 // on the backup's VRRP socket, during the step
	queueDrops       uint64 // the backup's queue_full drops, during the step
	read             uint64 // junk the backup read and dropped as vip_mismatch
}

// floodRow floods the VRID of a master (lb1) and a backup (lb2) with
// adverts for that VRID from 100 spoofed sources carrying foreign VIP sets
// (the VRID conflict of a neighbouring cluster, or an attacker), at rising
// rates for step each, while burn goroutines keep the CPUs busy. It stops
// at the first false takeover: any state change of either node. The figure
// is the highest rate with none.
func floodRow(ctx context.Context, vigil string, rates []int, step time.Duration, burn int) row {
	r := row{scenario: "flood of our VRID at rising rates (foreign VIP sets, spoofed sources, CPU saturated)",
		goal: "no false takeover at 100k packets/s"}
	l, err := newLab(ctx, vigil, 2)
	if err != nil {
		return r.broken(err)
	}
	defer l.Close()
	foreign := []netip.Addr{netip.MustParseAddr("10.77.0.211"), netip.MustParseAddr("10.77.0.212")}
	var pkts [][]byte
	for i := range 100 {
		src := spoofed(i)
		pkts = append(pkts, ipPacket(src, vrrp.Group4, 255, advert(3, labVRID, 250, foreign, src)))
	}
	backup := l.Node("lb2")
	var steps []floodStep
	best := 0
	for _, rate := range rates {
		if ctx.Err() != nil {
			break
		}
		r.tries++
		before, trBefore, kBefore := l.instance(backup), l.transitions(), l.socketDrops(backup)
		stopBurn := burnCPU(burn)
		sent, took, err := l.flooder.paced(pkts, rate, step)
		stopBurn()
		if err != nil {
			return r.broken(fmt.Errorf("flood at %d/s: %w", rate, err))
		}
		time.Sleep(time.Second) // the backup drains its queue; a late takeover shows
		after, trAfter := l.instance(backup), l.transitions()
		s := floodStep{target: rate, achieved: int(float64(sent) / took.Seconds()),
			takeover:    !slices.Equal(trBefore, trAfter),
			kernelDrops: l.socketDrops(backup) - kBefore,
			queueDrops:  after.Drops[string(vrrp.DropQueueFull)] - before.Drops[string(vrrp.DropQueueFull)],
			read:        after.Drops[string(vrrp.DropAddresses)] - before.Drops[string(vrrp.DropAddresses)]}
		steps = append(steps, s)
		if s.takeover {
			r.failures++
			r.notes = append(r.notes, fmt.Sprintf("false takeover at %d/s: transitions %v -> %v", s.achieved, trBefore, trAfter))
			break
		}
		best = max(best, s.achieved)
		if err := l.waitStates(ctx, 5*time.Second); err != nil {
			return r.broken(err)
		}
	}
	var parts []string
	for _, s := range steps {
		mark := "held"
		if s.takeover {
			mark = "FALSE TAKEOVER"
		}
		parts = append(parts, fmt.Sprintf("%dk/s: %s (backup read %d, queue_full %d, kernel drops %d)",
			s.achieved/1000, mark, s.read, s.queueDrops, s.kernelDrops))
	}
	r.figure = fmt.Sprintf("highest rate without a false takeover: %d packets/s; %s", best, strings.Join(parts, "; "))
	if best < 100_000 && r.failures == 0 {
		r.notes = append(r.notes, fmt.Sprintf("the flooder reached only %d packets/s on this machine", best))
	}
	return r
}

// burnCPU spins n goroutines until the returned stop is called, so the
// flood meets a saturated CPU as on a busy node.
func burnCPU(n int) (stop func()) {
	var wg sync.WaitGroup
	quit := make(chan struct{})
	for range n {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for x := 0; ; x++ {
				if x%1_000_000 == 0 {
					select {
					case <-quit:
						return
					default:
					}
				}
			}
		})
	}
	return func() { close(quit); wg.Wait() }
}
