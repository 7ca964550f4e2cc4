package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"time"
)

// crashRow kills a random node of three with SIGKILL rounds times, checks
// that the VIP is on exactly one live node while it is down, restarts it and
// checks that lb1 (the highest priority) alone holds the VIP again: a
// restarted node removes the VIP its crash left configured.
func crashRow(ctx context.Context, vigil string, rounds int) row {
	r := row{scenario: "crash loop: kill -9 and restart over 3 nodes",
		goal: "one holder after every round, no stale VIP"}
	l, err := newLab(ctx, vigil, 3)
	if err != nil {
		return r.broken(err)
	}
	defer l.Close()
	rng := rand.New(rand.NewPCG(23, 5))
	var settle []time.Duration
	stale := 0
	for round := range rounds {
		if ctx.Err() != nil {
			return r.broken(ctx.Err())
		}
		r.tries++
		victim := l.Nodes[rng.IntN(len(l.Nodes))]
		fail := func(format string, a ...any) {
			r.failures++
			r.notes = append(r.notes, fmt.Sprintf("round %d (%s killed): %s", round+1, victim.Name, fmt.Sprintf(format, a...)))
		}
		if err := victim.Kill(syscall.SIGKILL); err != nil {
			return r.broken(err)
		}
		if ok, _ := victim.Proc.Wait(5 * time.Second); !ok {
			return r.broken(fmt.Errorf("%s survived SIGKILL", victim.Name))
		}
		// While it is down, one live node holds the VIP.
		var live []string
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			live = live[:0]
			for _, o := range l.Owners() {
				if o != victim.Name {
					live = append(live, o)
				}
			}
			if len(live) == 1 {
				break
			}
		}
		if len(live) != 1 {
			fail("while down, live holders %v", live)
		}
		t0 := time.Now()
		if err := victim.Start(); err != nil {
			return r.broken(err)
		}
		err := waitOwners(ctx, l.Cluster, []string{"lb1"}, 10*time.Second)
		if err == nil {
			err = l.waitStates(ctx, 10*time.Second)
		}
		if err != nil {
			fail("after restart: %v", err)
			if o := l.Owners(); len(o) > 1 && slices.Contains(o, victim.Name) {
				stale++
			}
			continue
		}
		settle = append(settle, time.Since(t0))
	}
	r.figure = fmt.Sprintf("%d rounds; stale VIPs left %d; restart to settled (lb1 alone, others BACKUP) median %s max %s",
		rounds, stale, med(settle), maxOf(settle))
	return r
}
