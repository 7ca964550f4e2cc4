package notify

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHookRunsInOrderWithKeepalivedArgs(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	script := filepath.Join(dir, "hook.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$@\" >> "+out+"\n"), 0o755)
	h := New(script, time.Second, slog.New(slog.DiscardHandler))
	h.Notify("INSTANCE", "api", "MASTER", 150)
	h.Notify("INSTANCE", "api", "STOP", 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.Run(ctx) // drains the queue, then returns
	b, _ := os.ReadFile(out)
	if got := strings.TrimSpace(string(b)); got != "INSTANCE api MASTER 150\nINSTANCE api STOP 0" {
		t.Fatalf("hook saw %q", got)
	}
}

func TestHookTimeoutKillsScript(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "hang.sh")
	os.WriteFile(script, []byte("#!/bin/sh\nsleep 30\n"), 0o755)
	h := New(script, 100*time.Millisecond, slog.New(slog.DiscardHandler))
	start := time.Now()
	h.run([]string{"INSTANCE", "x", "MASTER", "1"})
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("hung hook held the runner for %v", d)
	}
}
