package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/vigil-lb/vigil/internal/benchdoc"
	"github.com/vigil-lb/vigil/internal/vrrplab"
)

// splitBrainRow splits lb1 (master) and lb2 rounds times each way and
// times, from the heal, until lb1 alone holds the VIP and the client (the
// router) has lb1's MAC for it:
//   - partition: the link stays up, VRRP is dropped both ways (nftables in
//     each node), so both become master;
//   - carrier loss: lb1's cable is pulled (lb2 takes over) and plugged back.
func splitBrainRow(ctx context.Context, vigil string, rounds int) row {
	r := row{scenario: "split brain by partition and by carrier loss",
		goal: "one holder and the router's ARP entry right after every heal"}
	l, err := newLab(ctx, vigil, 2)
	if err != nil {
		return r.broken(err)
	}
	defer l.Close()
	// The router learns from every GARP: Linux otherwise ignores a second
	// update within locktime (1 s).
	if err := l.Client.Sysctl("net/ipv4/neigh/eth0/locktime", "0"); err != nil {
		return r.broken(err)
	}
	lb1, lb2 := l.Node("lb1"), l.Node("lb2")
	var part, carrier []time.Duration
	for round := range rounds {
		for _, kind := range []string{"partition", "carrier"} {
			if ctx.Err() != nil {
				return r.broken(ctx.Err())
			}
			r.tries++
			var split, heal func() error
			if kind == "partition" {
				split = func() error { return firstErr(dropVRRP(lb1, true), dropVRRP(lb2, true)) }
				heal = func() error { return firstErr(dropVRRP(lb1, false), dropVRRP(lb2, false)) }
			} else {
				split = func() error { return lb1.Host.SetCable(false) }
				heal = func() error { return lb1.Host.SetCable(true) }
			}
			took, err := l.splitAndHeal(ctx, kind, split, heal)
			if err != nil {
				r.failures++
				r.notes = append(r.notes, fmt.Sprintf("%s round %d: %v", kind, round+1, err))
				_ = heal()
				_ = l.waitStates(ctx, 10*time.Second)
				continue
			}
			if kind == "partition" {
				part = append(part, took)
			} else {
				carrier = append(carrier, took)
			}
		}
	}
	r.figure = fmt.Sprintf("heal to one holder with the router's entry right: partition median %s max %s; carrier loss median %s max %s",
		med(part), maxOf(part), med(carrier), maxOf(carrier))
	return r
}

// splitAndHeal splits, waits for the split to show (both hold the VIP after
// a partition; lb2 alone after carrier loss), lets the client learn the
// split's holder, heals, and times until lb1 alone holds the VIP and the
// client's neighbour entry for it is lb1's MAC.
func (l *lab) splitAndHeal(ctx context.Context, kind string, split, heal func() error) (time.Duration, error) {
	if err := split(); err != nil {
		return 0, err
	}
	want := []string{"lb1", "lb2"}
	if kind == "carrier" {
		want = []string{"lb2"}
	}
	if err := waitOwners(ctx, l.Cluster, want, 10*time.Second); err != nil {
		return 0, fmt.Errorf("split: %w", err)
	}
	_, _ = l.Ask(ctx, 500*time.Millisecond) // the router has an entry to get wrong
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	if err := heal(); err != nil {
		return 0, err
	}
	mac := l.Node("lb1").Host.MAC
	for end := t0.Add(10 * time.Second); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		o := l.Owners()
		got, _ := l.Client.Neighbor(labVIP.Addr())
		if len(o) == 1 && o[0] == "lb1" && got.String() == mac.String() {
			took := time.Since(t0)
			// One holder must also last: no flapping after the heal.
			if err := waitOwners(ctx, l.Cluster, []string{"lb1"}, 0); err != nil {
				return 0, err
			}
			return took, l.waitStates(ctx, 10*time.Second)
		}
	}
	got, _ := l.Client.Neighbor(labVIP.Addr())
	return 0, fmt.Errorf("10s after the heal: VIP on %v, router's entry %v (lb1 is %v)", l.Owners(), got, mac)
}

// waitOwners waits up to d until exactly want hold the VIP; with d 0 it
// checks once.
func waitOwners(ctx context.Context, c *vrrplab.Cluster, want []string, d time.Duration) error {
	end := time.Now().Add(d)
	for {
		got := c.Owners()
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return nil
		}
		if !time.Now().Before(end) || ctx.Err() != nil {
			return fmt.Errorf("VIP on %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dropVRRP drops (or stops dropping) VRRP in and out of n, with nftables
// in its namespace: a partition with every link up.
func dropVRRP(n *vrrplab.Node, drop bool) error {
	script := "add table inet reliability\nadd chain inet reliability in { type filter hook input priority 0; }\n" +
		"add chain inet reliability out { type filter hook output priority 0; }\n" +
		"add rule inet reliability in ip protocol 112 drop\nadd rule inet reliability out ip protocol 112 drop\n"
	if !drop {
		script = "delete table inet reliability\n"
	}
	cmd := exec.Command("ip", "netns", "exec", n.Host.NSName, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", n.Name, err, out)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func med(d []time.Duration) string {
	if len(d) == 0 {
		return "-"
	}
	return benchdoc.Median(d).Round(time.Millisecond).String()
}

func maxOf(d []time.Duration) string {
	if len(d) == 0 {
		return "-"
	}
	m := d[0]
	for _, x := range d {
		m = max(m, x)
	}
	return m.Round(time.Millisecond).String()
}
