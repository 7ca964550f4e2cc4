package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vigil-lb/vigil/internal/benchdoc"
)

func render(o options, leader string, created []createdRound, fo *failoverResult, sc *scaleResult, apiVersion, load string) string {
	var t strings.Builder
	scaleFlag := ""
	if o.scale != 1000 {
		scaleFlag = fmt.Sprintf(" -scale %d", o.scale)
	}
	fmt.Fprintf(&t, "Written by `make bench-lbsvc` (`go run ./bench/lbsvc -rounds %d -failover %d -kills %d%s`) on %s, on %s (load average %s at the start).\n",
		o.rounds, o.failover, o.kills, scaleFlag, time.Now().UTC().Format("2006-01-02 15:04 MST"), benchdoc.Machine(), load)
	fmt.Fprintf(&t, "Lab: namespaces on one switch (10.82.0.0/16). Host `api` runs etcd and kube-apiserver (%s, internal/kubetest), with namespaces %q (the allocator's Lease) and %q (the Services); "+
		"three node hosts n1..n3 are Nodes (InternalIP, label `%s=yes`), each runs vigil and a host-network \"pod\" answering its name over HTTP on :%d; a client host. "+
		"Each vigil: `kubernetes.services: {dataplane: proxy, hold: 1s, pools: [{name: lan, addresses: [%s], interface: eth0, nodes: \"%s=yes\"}]}` "+
		"(VRRP and GARP defaults: advert 200ms, garp count 5 / interval 250ms / refresh 60s), so six L2 slots (one VRRP group per ordered pair of nodes: a node's addresses go to both survivors when it dies; slots and addresses follow the Nodes live) "+
		"and a proxy balancer per Service port on every node. The allocator's leader at the start: %s. "+
		"Services are type LoadBalancer, class `vigil.io/lb`, port 80 to 8080; the bench writes each one's EndpointSlice as the controller would (one ready endpoint per node).\n\n",
		apiVersion, leaseNS, svcNS, nodeLabel, podPort, poolCIDR, nodeLabel, leader)

	st := pick(created, func(r createdRound) time.Duration { return r.status })
	an := pick(created, func(r createdRound) time.Duration { return r.answer })
	calls := pick(created, func(r createdRound) time.Duration { return r.call })
	fails := 0
	for _, r := range created {
		fails += r.failures
	}
	fmt.Fprintf(&t, "**Created.** %d rounds: a watch on the Service starts, then from just before the create call the Service and its EndpointSlice are created (the two calls: %.1f ms median); "+
		"\"in status\" is the watch event that carries the address; from then the client requests address:80 back to back, a new connection each (%v timeout: a first SYN lost to a stale neighbour entry or an unanswered ARP is retried that soon, where a real client waits for TCP's 1 s retransmission), and \"answered\" is the first answer from a pod. "+
		"Requests that failed before the first answer (no ARP answer yet, refused before the proxy listened): %d over all rounds. "+
		"Then both objects are deleted and the round waits until no vigil lists the Service, plus 100-300 ms.\n\n",
		len(created), ms(benchdoc.Median(calls)), clientTimeout, fails)

	var all, each []time.Duration
	addrs, leaders, rightMAC := 0, 0, 0
	var victims, takers []string
	for _, r := range fo.rounds {
		all = append(all, r.all)
		each = append(each, r.each...)
		addrs += r.addrs
		if r.leader {
			leaders++
		}
		if r.rightMAC {
			rightMAC++
		}
		victims = append(victims, r.victim)
		takers = append(takers, strings.Join(r.takenBy, " + "))
	}
	fmt.Fprintf(&t, "**Killed.** %d Services allocated; %d times the vigil of the node holding the most of their addresses (by its eth0: %s) gets SIGKILL "+
		"(%d of the kills hit the allocator's leader; the addresses stay on the dead node's interface, as after a crash, and its pod keeps serving); "+
		"from the signal, one prober per address of the killed node requests it back to back, and the time is when the last of them is answered (its proxy is dead, so an answer comes from another node). "+
		"Addresses per kill: %d on average; taken over by (survivor and addresses) %s. Afterwards the client's neighbour entry for each named the survivor that holds it in %d of %d kills. "+
		"Between kills the vigil is restarted and the bench waits until every slot is back at its first choice and every address answers.\n\n",
		fo.services, len(fo.rounds), strings.Join(victims, ", "), leaders, addrs/len(fo.rounds), strings.Join(takers, "; "), rightMAC, len(fo.rounds))

	t.WriteString("| measure | median | worst | goal | documented anchor (not measured) |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&t, "| Service created -> address in status (%d rounds) | %.0f ms | %.0f ms |  |  |\n", len(created), ms(benchdoc.Median(st)), ms(slices.Max(st)))
	fmt.Fprintf(&t, "| Service created -> first answer through the address (%d rounds) | %.0f ms | %.0f ms | < 300 ms median, < 1 s worst |  |\n", len(created), ms(benchdoc.Median(an)), ms(slices.Max(an)))
	fmt.Fprintf(&t, "| vigil killed -> every address it held answered elsewhere (%d kills) | %.0f ms | %.0f ms | < 1 s | MetalLB L2: \"a few seconds\"; Cilium L2 defaults: 10-20 s |\n", len(fo.rounds), ms(benchdoc.Median(all)), ms(slices.Max(all)))
	fmt.Fprintf(&t, "| vigil killed -> one of its addresses answered elsewhere (%d addresses) | %.0f ms | %.0f ms |  |  |\n", len(each), ms(benchdoc.Median(each)), ms(slices.Max(each)))
	if sc != nil {
		fmt.Fprintf(&t, "| %d Services created at once -> all in status (from the first create) | %.1f s |  |  |  |\n", sc.n, sc.status.Seconds())
		fmt.Fprintf(&t, "| %d Services -> every address on a node's eth0 | %.1f s |  |  |  |\n", sc.n, sc.held.Seconds())
		fmt.Fprintf(&t, "| %d Services -> every address answered once | %.1f s |  |  |  |\n", sc.n, sc.answered.Seconds())
		var rssRow []string
		for _, n := range nodeNames {
			rssRow = append(rssRow, fmt.Sprintf("%s %.0f -> %.0f MiB", n, float64(sc.rssBefore[n])/1024, float64(sc.rssAfter[n])/1024))
		}
		fmt.Fprintf(&t, "| vigil RSS with no Service -> with %d (VmRSS) | %s |  |  |  |\n", sc.n, strings.Join(rssRow, "; "))
		f := sc.rest
		fmt.Fprintf(&t, "| ARP + NA frames per minute at rest, heard by the client (%d addresses) | %.0f |  |  |  |\n", sc.n, f.perMinute(f.arp()+f.na))
		t.WriteString("\n")

		fmt.Fprintf(&t, "**%d Services.** Created %d in flight (a Service and its EndpointSlice each; all calls took %.1f s), timed from just before the first create; "+
			"\"in status\" by a watch on the namespace started before it, \"on a node's eth0\" by netlink dumps of the three nodes every 200 ms, "+
			"\"answered\" by one request to each address (16 at a time) once all were held. Addresses per node: %s. Services each vigil's status lists: %s. ",
			sc.n, sc.concurrency, sc.calls.Seconds(), counts(sc.heldBy), counts(sc.servicesInState))
		fmt.Fprintf(&t, "At rest (10 s after every address answered), the client counted frames on its eth0 for %v with a packet socket: ", f.window)
		var parts []string
		for _, n := range nodeNames {
			mac := sc.macs[n]
			parts = append(parts, fmt.Sprintf("%s %d requests + %d replies", n, f.garpRequest[mac], f.garpReply[mac]))
		}
		fmt.Fprintf(&t, "gratuitous ARP (sender address = target address) %s; other ARP %d; NA %d, NS %d; VRRP adverts %d; other %d. ",
			strings.Join(parts, ", "), f.arpOther, f.na, f.ns, f.vrrp, f.other)
		fmt.Fprintf(&t, "What it is made of: each slot master repeats one round (an ARP request and a reply) for every address it holds every `garp.refresh` (60 s), "+
			"so %d addresses give %d frames a minute, in six bursts of about %d (one per slot, unsynchronised). ", sc.n, 2*sc.n, 2*sc.n/6)
		var gs []string
		for _, n := range nodeNames {
			gs = append(gs, fmt.Sprintf("%s %d sent / %d suppressed", n, sc.garpSent[n], sc.garpSuppressed[n]))
		}
		fmt.Fprintf(&t, "GARP counters of vigil's status over the whole phase (creates to the end of the count; the per-interface limit is 1000 frames/s, burst 2000): %s.", strings.Join(gs, ", "))
		var ws []string
		for _, n := range nodeNames {
			if len(sc.logWarns[n]) > 0 {
				ws = append(ws, n+": "+strings.Join(sc.logWarns[n], "; "))
			}
		}
		if len(ws) > 0 {
			fmt.Fprintf(&t, " Warnings and errors in the vigils' logs during the phase: %s.", strings.Join(ws, " | "))
		} else {
			t.WriteString(" No warning or error in the vigils' logs during the phase.")
		}
		t.WriteString("\n\n")
	} else {
		t.WriteString("\n")
	}
	fmt.Fprintf(&t, "Anchors, documented figures, not measured here: %s; %s (%v to %v).\n", metallbDoc, ciliumDoc, ciliumBest, ciliumWorst)
	return t.String()
}

func pick[T any](xs []T, f func(T) time.Duration) []time.Duration {
	var out []time.Duration
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

func counts(m map[string]int) string {
	var parts []string
	for _, n := range nodeNames {
		parts = append(parts, fmt.Sprintf("%s %d", n, m[n]))
	}
	return strings.Join(parts, ", ")
}
