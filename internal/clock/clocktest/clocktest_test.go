package clocktest

import (
	"context"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/clock"
)

var t0 = time.Unix(1000, 0)

func received(ch <-chan time.Time) (time.Time, bool) {
	select {
	case v := <-ch:
		return v, true
	default:
		return time.Time{}, false
	}
}

func TestTimerFiresWhenDue(t *testing.T) {
	c := New(t0)
	tm := c.NewTimer(time.Second)
	c.Advance(999 * time.Millisecond)
	if _, ok := received(tm.C()); ok {
		t.Fatal("fired early")
	}
	c.Advance(time.Millisecond)
	if v, ok := received(tm.C()); !ok || !v.Equal(t0.Add(time.Second)) {
		t.Fatalf("fired %v %v", v, ok)
	}
	if c.Armed() != 0 {
		t.Fatalf("%d armed after firing", c.Armed())
	}
}

func TestResetAndStopDiscardAValueNotReceived(t *testing.T) {
	c := New(t0)
	tm := c.NewTimer(time.Second)
	c.Advance(time.Second)
	if tm.Reset(time.Second) {
		t.Fatal("Reset of a fired timer reports it was armed")
	}
	if _, ok := received(tm.C()); ok {
		t.Fatal("a value from before Reset was received")
	}
	c.Advance(time.Second)
	tm.Reset(0) // fires at once; the value sent before it is gone
	if v, ok := received(tm.C()); !ok || !v.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("Reset(0): %v %v", v, ok)
	}
	tm.Reset(time.Second)
	if !tm.Stop() || tm.Stop() {
		t.Fatal("Stop reports")
	}
	c.Advance(time.Hour)
	if _, ok := received(tm.C()); ok {
		t.Fatal("a stopped timer fired")
	}
}

func TestTickerFiresOncePerAdvanceAndKeepsItsPhase(t *testing.T) {
	c := New(t0)
	tk := c.NewTicker(time.Second)
	c.Advance(3500 * time.Millisecond) // three periods: one tick, as for a slow receiver
	if v, ok := received(tk.C()); !ok || !v.Equal(t0.Add(3500*time.Millisecond)) {
		t.Fatalf("tick %v %v", v, ok)
	}
	if _, ok := received(tk.C()); ok {
		t.Fatal("ticks queued up")
	}
	c.Advance(400 * time.Millisecond)
	if _, ok := received(tk.C()); ok {
		t.Fatal("ticked before 4s")
	}
	c.Advance(100 * time.Millisecond)
	if _, ok := received(tk.C()); !ok {
		t.Fatal("no tick at 4s")
	}
	tk.Stop()
	if c.Armed() != 0 {
		t.Fatal("a stopped ticker is armed")
	}
}

func TestSleepEndsWhenAdvancedOrCancelled(t *testing.T) {
	c := New(t0)
	done := make(chan error)
	go func() { done <- clock.Sleep(context.Background(), c, time.Minute) }()
	if !c.BlockUntil(1) {
		t.Fatal("Sleep armed no timer")
	}
	c.Advance(time.Minute)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- clock.Sleep(ctx, c, time.Minute) }()
	c.BlockUntil(1)
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("cancelled Sleep: %v", err)
	}
	if c.Armed() != 0 {
		t.Fatal("a cancelled Sleep left its timer armed")
	}
}
