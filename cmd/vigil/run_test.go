package main

import (
	"runtime"
	"testing"
)

// setProcs gives the event loops every processor the process had and the
// runtime one more, for the rest of the daemon.
func TestSetProcsLeavesOneForTheDaemon(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })
	if loops := setProcs(); loops != before {
		t.Fatalf("%d loops with %d processors, want one per processor", loops, before)
	}
	if got := runtime.GOMAXPROCS(0); got != before+1 {
		t.Fatalf("GOMAXPROCS %d, want %d loops + 1", got, before)
	}
}
