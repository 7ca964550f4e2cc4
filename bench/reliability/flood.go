package main

import (
	"context"
	"errors"
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
	target, sent int // packets per second asked for, and sent
	// arrived is the rate at which the flood reached the backup's socket:
	// what it read, dropped as queue_full and the kernel dropped, per
	// second of the step.
	arrived     int
	takeover    bool
	kernelDrops uint64 // on the backup's VRRP socket, during the step
	queueDrops  uint64 // the backup's queue_full drops, during the step
	read        uint64 // junk the backup read and dropped as vip_mismatch
}

// floodRow floods the backup (lb2) of a master (lb1) with adverts for
// their VRID from 100 spoofed sources carrying foreign VIP sets
// (the VRID conflict of a neighbouring cluster, or an attacker), at rising
// rates for step each, while burn goroutines keep the CPUs busy. It stops
// at the first false takeover: any state change of either node. The figure
// is the highest rate with none.
func floodRow(ctx context.Context, vigil string, rates []int, step time.Duration, burn int) row {
	r := row{scenario: "flood of our VRID at rising rates (to the backup; foreign VIP sets, spoofed sources, CPU saturated)",
		goal: "no false takeover at 100k packets/s"}
	l, err := newLab(ctx, vigil, 2)
	if err != nil {
		return r.broken(err)
	}
	defer l.Close()
	foreign := []netip.Addr{netip.MustParseAddr("10.77.0.211"), netip.MustParseAddr("10.77.0.212")}
	// Sent to the backup's address: multicast through the lab's bridge
	// costs the sender every receiver's work and tops out far lower on a
	// small machine; the backup's socket takes both alike.
	backup := l.Node("lb2")
	dst := backup.Host.Addr(false)
	var pkts [][]byte
	for i := range 100 {
		src := spoofed(i)
		pkts = append(pkts, ipPacket(src, dst, 255, advertTo(3, labVRID, 250, foreign, src, dst)))
	}
	var steps []floodStep
	best := 0
	for _, rate := range rates {
		if ctx.Err() != nil {
			break
		}
		r.tries++
		before, trBefore, kBefore := l.instance(backup), l.transitions(), l.socketDrops(backup)
		stopBurn := burnCPU(burn)
		sent, took, err := l.flood(pkts, rate, step)
		stopBurn()
		if err != nil {
			return r.broken(fmt.Errorf("flood at %d/s: %w", rate, err))
		}
		time.Sleep(time.Second) // the backup drains its queue; a late takeover shows
		after, trAfter := l.instance(backup), l.transitions()
		s := floodStep{target: rate, sent: int(float64(sent) / took.Seconds()),
			takeover:    !slices.Equal(trBefore, trAfter),
			kernelDrops: l.socketDrops(backup) - kBefore,
			queueDrops:  after.Drops[string(vrrp.DropQueueFull)] - before.Drops[string(vrrp.DropQueueFull)],
			read:        after.Drops[string(vrrp.DropAddresses)] - before.Drops[string(vrrp.DropAddresses)]}
		s.arrived = int(float64(s.read+s.queueDrops+s.kernelDrops) / took.Seconds())
		steps = append(steps, s)
		if s.takeover {
			r.failures++
			r.notes = append(r.notes, fmt.Sprintf("false takeover at %d/s sent: transitions %v -> %v; %s", s.sent, trBefore, trAfter,
				lastStateChange(backup.Log())))
			break
		}
		best = max(best, s.sent)
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
		parts = append(parts, fmt.Sprintf("%dk/s sent, %dk/s arrived: %s (backup read %d, queue_full %d, kernel drops %d)",
			s.sent/1000, s.arrived/1000, mark, s.read, s.queueDrops, s.kernelDrops))
	}
	r.figure = fmt.Sprintf("highest rate sent to the backup without a false takeover: %d packets/s; %s", best, strings.Join(parts, "; "))
	if best < 100_000 && r.failures == 0 {
		r.notes = append(r.notes, fmt.Sprintf("goal not reached: the flooder sent at most %d packets/s on this machine, and the backup held", best))
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

// flood sends pkts at rate for d from one socket per CPU, each taking its
// share: a socket's send carries the packet through the lab's bridge to
// every receiver on the sender's CPU, so one socket alone tops out early.
func (l *lab) flood(pkts [][]byte, rate int, d time.Duration) (sent int, took time.Duration, err error) {
	n := runtime.NumCPU()
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	t0 := time.Now()
	for range n {
		s, err := newRawSender(l.floodHost)
		if err != nil {
			return 0, 0, err
		}
		wg.Go(func() {
			defer s.Close()
			k, _, err := s.paced(pkts, rate/n, d)
			mu.Lock()
			sent += k
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	wg.Wait()
	return sent, time.Since(t0), errors.Join(errs...)
}

// lastStateChange is the last "state change" line of a vigil log, to say
// why a takeover happened.
func lastStateChange(log string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "state change") && (strings.Contains(lines[i], "to=MASTER") || strings.Contains(lines[i], `"to":"MASTER"`)) {
			return "lb2 log: " + strings.TrimSpace(lines[i])
		}
	}
	return "no takeover line in lb2's log tail"
}
