package vrrp

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/clock/clocktest"
	"github.com/vigil-lb/vigil/internal/statelog/logtest"
)

// An instance's state changes are one line each with the common keys
// (event, state, prev_state, reason) and the cause; lists are arrays.
func TestInstanceLogLines(t *testing.T) {
	clk := clocktest.New(time.Unix(1000, 0))
	f := &fakeNet{has: true} // VIPs left from a crash
	log, buf := logtest.New(t)
	cfg := Config{Name: "api", Interface: "eth0", VRID: 7, Version: 3, Priority: 100, Interval: time.Second,
		VIPs:  []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")},
		Track: []TrackItem{{Kind: "check", Name: "ready", Weight: 0}}}
	in := NewInstance(cfg, f, f, f, log, WithClock(clk))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	clk.BlockUntil(1)
	clk.Advance(4 * time.Second)
	eventually(t, "master", func() bool { return in.Status().State == Master })
	in.SetTracked("check", "ready", false)
	eventually(t, "fault", func() bool { return in.Status().State == Fault })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	lines := buf.With("event", "vrrp")
	var got []string
	for _, l := range lines {
		got = append(got, l["level"].(string)+" "+l["prev_state"].(string)+">"+l["state"].(string)+" "+l["cause"].(string)+": "+l["reason"].(string))
		if l["instance"] != "api" || l["vrid"] != 7.0 || l["msg"] != "vrrp state change" {
			t.Errorf("line %v", l)
		}
	}
	want := []string{
		"INFO INIT>BACKUP startup: startup",
		"INFO BACKUP>MASTER startup: startup: no master heard",
		"WARN MASTER>FAULT fault: fault: check ready down (weight 0)",
		"INFO FAULT>STOP shutdown: shutdown",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("vrrp lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if tr, ok := lines[2]["tracked"].([]any); !ok || len(tr) != 1 || tr[0] != "check ready down (weight 0)" {
		t.Errorf("fault line's tracked is not an array of items: %v", lines[2])
	}
	tracked := buf.With("event", "tracked")
	if len(tracked) != 1 || tracked[0]["state"] != "down" || tracked[0]["level"] != "WARN" || tracked[0]["name"] != "ready" {
		t.Errorf("tracked lines %v", tracked)
	}
	stale := buf.With("msg", "removing VIPs left from an earlier run")
	if len(stale) != 1 {
		t.Fatalf("stale VIP lines:\n%s", buf)
	}
	if vips, ok := stale[0]["vips"].([]any); !ok || len(vips) != 1 || vips[0] != "192.0.2.10/32" {
		t.Errorf("vips not an array: %v", stale[0])
	}
}
