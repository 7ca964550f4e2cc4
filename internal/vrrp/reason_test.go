package vrrp

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Every transition carries the reason the machine had when it moved, so
// status and logs tell a crash, a hand-over, a preemption, tracking, a
// fault, an operator and a start apart without guessing afterwards.
func TestTransitionReasons(t *testing.T) {
	master := func(r *rig) { r.m.Start(); r.runFor(4 * time.Second); r.expectState(Master) }
	following := func(prio uint8) func(r *rig) {
		return func(r *rig) {
			r.m.Start()
			r.m.Receive(Advert{Source: upper, Priority: prio, Interval: time.Second})
		}
	}
	checkDown := Tracked{Kind: "check", Name: "api-readyz", Weight: -60}
	cases := []struct {
		name     string
		p        Params
		run      func(r *rig)
		to       State
		cause    Cause
		peer     netip.Addr
		peerPrio uint8
		text     string // a part of Reason.String()
	}{
		{"start", Params{Priority: 100}, func(r *rig) { r.m.Start() }, Backup, CauseStartup, netip.Addr{}, 0, "startup"},
		{"start as address owner", Params{Priority: 255}, func(r *rig) { r.m.Start() }, Master, CauseStartup, netip.Addr{}, 0, "startup: address owner"},
		{"nobody heard after start", Params{Priority: 100}, func(r *rig) { r.m.Start(); r.runFor(4 * time.Second) },
			Master, CauseStartup, netip.Addr{}, 0, "startup: no master heard"},
		{"master crashed", Params{Priority: 100}, func(r *rig) {
			following(200)(r)
			r.runFor(time.Second)
			r.m.Receive(Advert{Source: upper, Priority: 200, Interval: time.Second})
			r.runFor(4 * time.Second) // silence
		}, Master, CauseMasterDown, upper, 200, "master down timer expired: 10.0.0.3 (priority 200) silent for 3.609s"},
		{"priority-0 hand-over", Params{Priority: 100}, func(r *rig) {
			following(200)(r)
			r.m.Receive(Advert{Source: upper, Priority: 0, Interval: time.Second})
			r.runFor(time.Second)
		}, Master, CauseHandover, upper, 0, "priority-0 hand-over from 10.0.0.3"},
		{"we preempt a lower master", Params{Priority: 100, Preempt: true}, func(r *rig) {
			r.m.Start()
			for range 5 {
				r.m.Receive(Advert{Source: upper, Priority: 50, Interval: time.Second})
				r.runFor(time.Second)
			}
		}, Master, CausePreempt, upper, 50, "preempted 10.0.0.3 (priority 50 < ours 100)"},
		{"a higher master preempts us", Params{Priority: 100}, func(r *rig) {
			master(r)
			r.m.Receive(Advert{Source: lower, Priority: 150, Interval: time.Second})
		}, Backup, CausePreempted, lower, 150, "preempted by 10.0.0.1 (priority 150 > ours 100)"},
		{"tracking lowers us below a backup", Params{Priority: 150}, func(r *rig) {
			master(r)
			r.m.SetPriority(90, checkDown)
			r.m.Receive(Advert{Source: lower, Priority: 100, Interval: time.Second})
		}, Backup, CauseTracked, lower, 100,
			"tracking lowered our priority 150 to 90: 10.0.0.1 (priority 100) took over: check api-readyz down (weight -60)"},
		{"a fault", Params{Priority: 100}, func(r *rig) {
			master(r)
			r.m.SetFault(true, Tracked{Kind: "interface", Name: "eth1"})
		}, Fault, CauseFault, netip.Addr{}, 0, "fault: interface eth1 down (weight 0)"},
		{"a fault ends", Params{Priority: 100}, func(r *rig) {
			master(r)
			r.m.SetFault(true, Tracked{Kind: "check", Name: "disk"})
			r.m.SetFault(false)
		}, Backup, CauseFaultCleared, netip.Addr{}, 0, "fault cleared"},
		{"resigned by an operator", Params{Priority: 100}, func(r *rig) {
			master(r)
			r.m.SetResigned(true, "")
		}, Backup, CauseResign, netip.Addr{}, 0, "resigned by operator"},
		{"resumed, preempts back", Params{Priority: 200, Preempt: true}, func(r *rig) {
			master(r)
			r.m.SetResigned(true, "")
			r.m.Receive(Advert{Source: upper, Priority: 100, Interval: time.Second})
			r.m.SetResigned(false, "")
			for range 5 {
				r.m.Receive(Advert{Source: upper, Priority: 100, Interval: time.Second})
				r.runFor(time.Second)
			}
		}, Master, CausePreempt, upper, 100, "preempted 10.0.0.3 (priority 100 < ours 200) (after resume)"},
		{"sync group", Params{Priority: 100}, func(r *rig) { r.m.Start(); r.m.Claim("sync group g: member a became MASTER") },
			Master, CauseSyncGroup, netip.Addr{}, 0, "sync group g: member a became MASTER"},
		{"shutdown", Params{Priority: 100}, func(r *rig) { master(r); r.m.Stop() }, Stopped, CauseShutdown, netip.Addr{}, 0, "shutdown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.p)
			tc.run(r)
			if len(r.trans) == 0 {
				t.Fatal("no transition")
			}
			last := r.trans[len(r.trans)-1]
			if last.To != tc.to || last.Reason.Cause != tc.cause || last.Reason.Peer != tc.peer || last.Reason.PeerPriority != tc.peerPrio {
				t.Fatalf("last transition to %v cause %v peer %v/%d, want %v %v %v/%d (%s)", last.To, last.Reason.Cause,
					last.Reason.Peer, last.Reason.PeerPriority, tc.to, tc.cause, tc.peer, tc.peerPrio, last.Reason)
			}
			if got := last.Reason.String(); !strings.Contains(got, tc.text) {
				t.Fatalf("reason %q, want it to contain %q", got, tc.text)
			}
			if last.At.IsZero() || last.At.After(r.clock.Now()) {
				t.Fatalf("transition at %v, clock %v", last.At, r.clock.Now())
			}
		})
	}
}

// The master a backup follows is named with its priority, and a reason
// names a peer by node name when the caller knows it.
func TestMasterPriorityAndNamedPeer(t *testing.T) {
	r := newRig(t, Params{Priority: 100})
	r.m.Start()
	if r.m.MasterPriority() != 0 {
		t.Fatalf("master priority %d before any advert", r.m.MasterPriority())
	}
	r.m.Receive(Advert{Source: upper, Priority: 180, Interval: time.Second})
	if r.m.MasterAddr() != upper || r.m.MasterPriority() != 180 {
		t.Fatalf("master %v/%d, want %v/180", r.m.MasterAddr(), r.m.MasterPriority(), upper)
	}
	r.m.Receive(Advert{Source: upper, Priority: 0, Interval: time.Second})
	r.runFor(time.Second)
	r.expectState(Master)
	if r.m.MasterPriority() != 100 {
		t.Fatalf("master priority %d as master, want ours", r.m.MasterPriority())
	}
	got := r.trans[len(r.trans)-1].Reason.Format(func(a netip.Addr) string {
		if a == upper {
			return "lb3"
		}
		return ""
	})
	if got != "priority-0 hand-over from lb3 (10.0.0.3)" {
		t.Fatalf("named reason %q", got)
	}
}
