package history

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/clock/clocktest"
	"github.com/vigil-lb/vigil/internal/health"
)

var t0 = time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC)

func change(k health.Key, up bool, reason string) health.Change {
	return health.Change{Key: k, State: health.State{Up: up, Reason: reason}, Known: true}
}

// A backend that goes down and comes back: two events, the recovery with
// how long it was down; its key state has the last change and the total
// downtime, the current outage included.
func TestEventsAndDowntime(t *testing.T) {
	r := New(health.New(), clocktest.New(t0), nil, slog.New(slog.DiscardHandler))
	be := health.BackendKey("api", netip.MustParseAddrPort("10.0.0.2:8000"))
	r.Observe([]health.Change{change(be, true, "")}, t0)
	r.Observe([]health.Change{change(be, false, "connect: connection refused")}, t0.Add(10*time.Second))
	r.Observe([]health.Change{change(be, true, "")}, t0.Add(13*time.Second+200*time.Millisecond))
	r.Observe([]health.Change{change(be, false, "timeout")}, t0.Add(20*time.Second))
	r.clock.(*clocktest.Clock).AdvanceTo(t0.Add(25 * time.Second))
	v := r.View()
	if len(v.Events) != 4 {
		t.Fatalf("events %+v", v.Events)
	}
	if e := v.Events[1]; e.State != "up" || e.DownFor != 3200*time.Millisecond || e.Addr != "10.0.0.2:8000" || e.Kind != "backend" {
		t.Fatalf("recovery event %+v, want up after 3.2s", e)
	}
	if e := v.Events[0]; e.State != "down" || e.Reason != "timeout" || !e.At.Equal(t0.Add(20*time.Second)) {
		t.Fatalf("newest event %+v", e)
	}
	if len(v.Keys) != 1 {
		t.Fatalf("keys %+v", v.Keys)
	}
	if k := v.Keys[0]; k.Up || !k.Since.Equal(t0.Add(20*time.Second)) || k.Changes != 3 || k.Downtime != 3200*time.Millisecond+5*time.Second {
		t.Fatalf("key %+v, want down since 20s, 3 changes, 8.2s down", k)
	}
	// Removed: one event, and the key is gone.
	r.Observe([]health.Change{{Key: be}}, t0.Add(30*time.Second))
	if v := r.View(); len(v.Keys) != 0 || v.Events[0].State != "removed" {
		t.Fatalf("after removal: keys %+v events[0] %+v", v.Keys, v.Events[0])
	}
}

// The ring keeps the newest MaxEvents, newest first.
func TestEventRingIsBounded(t *testing.T) {
	r := New(health.New(), clocktest.New(t0), nil, slog.New(slog.DiscardHandler))
	k := health.CheckKey("c")
	for i := range MaxEvents*2 + 7 {
		r.Observe([]health.Change{change(k, i%2 == 0, "")}, t0.Add(time.Duration(i)*time.Second))
	}
	v := r.View()
	if len(v.Events) != MaxEvents {
		t.Fatalf("%d events, want %d", len(v.Events), MaxEvents)
	}
	for i, e := range v.Events {
		if want := t0.Add(time.Duration(MaxEvents*2+6-i) * time.Second); !e.At.Equal(want) {
			t.Fatalf("event %d at %v, want %v (newest first)", i, e.At, want)
		}
	}
}

// Mastership changes make an instance's timeline: one span per state, the
// VRRP state read from the reason the supervisor writes; spans that ended
// before the window are dropped, the one that spans its start is kept.
func TestTimeline(t *testing.T) {
	r := New(health.New(), clocktest.New(t0), nil, slog.New(slog.DiscardHandler))
	m := health.MasterKey("api")
	r.Observe([]health.Change{change(m, false, "BACKUP")}, t0)
	r.Observe([]health.Change{change(m, true, "MASTER")}, t0.Add(time.Minute))
	r.Observe([]health.Change{change(m, false, "FAULT")}, t0.Add(2*time.Minute))
	r.Observe([]health.Change{change(m, false, "BACKUP")}, t0.Add(3*time.Minute))
	v := r.View()
	spans := v.Timelines[0].Spans
	if len(spans) != 4 || spans[0].State != "BACKUP" || spans[1].State != "MASTER" || spans[2].State != "FAULT" || !spans[3].To.IsZero() ||
		!spans[1].To.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("spans %+v", spans)
	}
	if e := v.Events[1]; e.Kind != "master" || e.State != "FAULT" {
		t.Fatalf("event %+v", e)
	}
	if e := v.Events[2]; e.State != "MASTER" || e.DownFor != 0 {
		t.Fatalf("event %+v: becoming master is no recovery from an outage", e)
	}
	r.Observe(nil, t0.Add(Window+150*time.Second))
	spans = r.View().Timelines[0].Spans
	if len(spans) != 2 || spans[0].State != "FAULT" {
		t.Fatalf("after an hour: %+v, want the FAULT span (ends inside the window) and the current one", spans)
	}
}

// Counters become rates per second over the step; gauges stay; a counter
// that goes back (a reload made a new balancer) has no rate for that step;
// at most a window of samples is kept, aligned with Times.
func TestSamples(t *testing.T) {
	r := New(health.New(), clocktest.New(t0), nil, slog.New(slog.DiscardHandler))
	conn, lat := SeriesKey{"conn_rate", "api"}, SeriesKey{"check_latency_ms", "c"}
	total := uint64(0)
	for i := range samples + 10 {
		total += 50 // 5 per second
		if i == 20 {
			total = 3
		}
		r.Sample(Point{Counters: map[SeriesKey]uint64{conn: total}, Gauges: map[SeriesKey]float64{lat: float64(i)}},
			t0.Add(time.Duration(i)*Step))
	}
	v := r.View()
	if len(v.Times) != samples || !v.Times[samples-1].Equal(t0.Add(time.Duration(samples+9)*Step)) || !v.Times[0].Equal(t0.Add(10*Step)) {
		t.Fatalf("%d times, %v .. %v", len(v.Times), v.Times[0], v.Times[len(v.Times)-1])
	}
	if len(v.Series) != 2 {
		t.Fatalf("series %+v", v.Series)
	}
	rates, lats := v.Series[1], v.Series[0]
	if rates.SeriesKey != conn || lats.SeriesKey != lat {
		t.Fatalf("series order %v %v", v.Series[0].SeriesKey, v.Series[1].SeriesKey)
	}
	for i, x := range rates.Values {
		switch {
		case i == 10: // sample 20: the counter went back
			if x != nil {
				t.Fatalf("rate at the reset %v, want none", *x)
			}
		case x == nil || *x != 5:
			t.Fatalf("rate %d: %v, want 5/s", i, x)
		}
	}
	if x := lats.Values[samples-1]; x == nil || *x != float64(samples+9) {
		t.Fatalf("last latency %v", x)
	}
	// A series no longer sampled for a window is forgotten.
	for i := range samples {
		r.Sample(Point{}, t0.Add(time.Duration(samples+10+i)*Step))
	}
	if v := r.View(); len(v.Series) != 0 {
		t.Fatalf("%d series left", len(v.Series))
	}
}

// Run follows the store by subscription and samples at every step of the
// clock.
func TestRunSubscribesAndSamples(t *testing.T) {
	store := health.New()
	clk := clocktest.New(t0)
	n := uint64(0)
	samples := make(chan struct{}, 10)
	r := New(store, clk, func() Point {
		n += 100
		samples <- struct{}{}
		return Point{Counters: map[SeriesKey]uint64{{"conn_rate", "api"}: n}}
	}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	store.Set(health.CheckKey("c"), health.State{Up: true})
	store.Set(health.CheckKey("c"), health.State{Up: false, Reason: "refused"})
	waitFor(t, func() bool { v := r.View(); return len(v.Keys) == 1 && !v.Keys[0].Up })
	clk.BlockUntil(1)
	for i := range 2 {
		clk.Advance(Step)
		<-samples
		// Recorded at the clock's time before it moves on again.
		waitFor(t, func() bool { return len(r.View().Times) == i+1 })
	}
	waitFor(t, func() bool {
		v := r.View()
		return len(v.Series) == 1 && len(v.Series[0].Values) == 2 && v.Series[0].Values[1] != nil && *v.Series[0].Values[1] == 10
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("not within 10s")
		}
	}
}
