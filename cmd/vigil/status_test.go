package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/statelog/logtest"
	"sigs.k8s.io/yaml"
)

// fakeDaemon serves a snapshot on a control socket until stopped.
type fakeDaemon struct {
	sock   string
	cancel context.CancelFunc
	done   chan struct{}
}

func serveStatus(t *testing.T, sock string) *fakeDaemon {
	t.Helper()
	snap := api.Snapshot{Node: "lb1", Version: "test", Started: time.Now(), Instances: []api.Instance{
		{Name: "api", Interface: "eth0", VRID: 51, Version: 3, State: "BACKUP", Priority: 100, EffectivePriority: 100,
			Master: "10.0.0.2", MasterNode: "lb2", MasterPriority: 150, VIPs: []string{"192.0.2.10"}, Since: time.Now(),
			LastTransition: &api.Transition{PrevState: "MASTER", State: "BACKUP", Cause: "preempted", Reason: "preempted by lb2 (10.0.0.2) (priority 150 > ours 100)"}},
	}, Balancers: []api.Balancer{{Name: "web", Listen: []string{"192.0.2.10:80"}, Algorithm: "roundrobin"}}}
	s, err := api.Listen(sock, "", func() api.Snapshot { snap.Taken = time.Now(); return snap }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &fakeDaemon{sock: sock, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(d.done); s.Run(ctx) }()
	t.Cleanup(d.stop)
	return d
}

func (d *fakeDaemon) stop() { d.cancel(); <-d.done }

func runStatus(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := statusCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	return out.String(), err
}

func TestStatusOutputsAndFilters(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vigil.sock")
	serveStatus(t, sock)

	out, err := runStatus(t, "--socket", sock, "-o", "yaml")
	var snap api.Snapshot
	if err != nil || yaml.Unmarshal([]byte(out), &snap) != nil || snap.Instances[0].MasterNode != "lb2" ||
		snap.Instances[0].LastTransition.Cause != "preempted" {
		t.Fatalf("-o yaml: %v\n%s", err, out)
	}
	out, err = runStatus(t, "instance", "api", "--socket", sock, "-o", "wide")
	if err != nil || !strings.Contains(out, "lb2 10.0.0.2 (150)") || !strings.Contains(out, "ADVERTS OUT/IN") ||
		strings.Contains(out, "BALANCER web") {
		t.Fatalf("status instance api -o wide: %v\n%s", err, out)
	}
	out, err = runStatus(t, "balancer", "--socket", sock)
	if err != nil || !strings.Contains(out, "BALANCER web") || strings.Contains(out, "VRRP INSTANCE") {
		t.Fatalf("status balancer: %v\n%s", err, out)
	}
	var ee *exitError
	if _, err := runStatus(t, "instance", "nope", "--socket", sock); !errors.As(err, &ee) || ee.code != 1 ||
		err.Error() != `no instance "nope" (known: api)` {
		t.Fatalf("status instance nope: %v", err)
	}
	if _, err := runStatus(t, "--socket", sock, "-o", "xml"); !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("-o xml: %v", err)
	}
}

// --watch outlives a daemon restart: each frame has a timestamp, the gap
// says "daemon not answering" once, and frames come again after it.
func TestStatusWatchSurvivesARestart(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vigil.sock")
	d := serveStatus(t, sock)
	var out logtest.Buffer // written by the loop, read here
	w := statusWriter{out: &out, output: "table", watch: 20 * time.Millisecond, socket: func() string { return sock }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.loop(ctx) }()
	wait := func(what string, cond func(string) bool) {
		t.Helper()
		for end := time.Now().Add(10 * time.Second); !cond(out.String()); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("no %s in:\n%s", what, out.String())
			}
		}
	}
	wait("first frame", func(s string) bool { return strings.Contains(s, "VRRP INSTANCE") })
	d.stop()
	wait("daemon not answering", func(s string) bool { return strings.Contains(s, "daemon not answering") })
	time.Sleep(100 * time.Millisecond) // several frames' worth of retries
	serveStatus(t, sock)
	wait("a frame after the restart", func(s string) bool {
		i := strings.Index(s, "daemon not answering")
		return strings.Contains(s[i:], "VRRP INSTANCE")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if n := strings.Count(s, "daemon not answering"); n != 1 {
		t.Errorf("%d 'daemon not answering' lines, want 1 for the one outage:\n%s", n, s)
	}
	if strings.Count(s, " every 20ms\n") < 3 || strings.Contains(s, "\033[") {
		t.Errorf("frames without timestamps, or terminal codes on a pipe:\n%s", s)
	}
}
