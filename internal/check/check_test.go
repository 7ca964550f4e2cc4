package check

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestRiseFall(t *testing.T) {
	r := &Runner{Name: "c", Rise: 2, Fall: 3, up: true}
	bad := errors.New("bad")
	steps := []struct {
		err     error
		changed bool
		up      bool
	}{
		{bad, false, true}, {bad, false, true}, {bad, true, false}, // third failure: down
		{nil, false, false}, {bad, false, false}, {nil, false, false}, {nil, true, true}, // two in a row: up
		{nil, false, true},
	}
	for i, s := range steps {
		up, changed := r.record(s.err)
		if changed != s.changed || r.up != s.up || up != s.up {
			t.Fatalf("step %d: changed=%v up=%v, want %v %v", i, changed, r.up, s.changed, s.up)
		}
	}
}

func TestExec(t *testing.T) {
	ctx := context.Background()
	if err := (Exec{Script: "exit 0"}).Probe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := (Exec{Script: "echo nope; exit 3"}).Probe(ctx); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("failing script: %v", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := (Exec{Script: "sleep 5 & sleep 5"}).Probe(tctx)
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("hung script: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("timeout took %v: the process group was not killed", d)
	}
}

func TestTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := (TCP{Address: addr}).Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := (TCP{Address: addr}).Probe(context.Background()); err == nil {
		t.Fatal("closed port probed up")
	}
}
