package supervisor

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
)

// journal records what fake components did, in order.
type journal struct {
	mu  sync.Mutex
	log []string
}

func (j *journal) add(s string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.log = append(j.log, s)
}

func (j *journal) lines() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.log)
}

type fake struct {
	name    string
	j       *journal
	started chan struct{}
	fail    chan error // a value ends Run early
	planErr error
}

func newFake(name string, j *journal) *fake {
	return &fake{name: name, j: j, started: make(chan struct{}), fail: make(chan error, 1)}
}

func (f *fake) Name() string { return f.name }

func (f *fake) Run(ctx context.Context) error {
	close(f.started)
	select {
	case <-ctx.Done():
		f.j.add("stop " + f.name)
		return nil
	case err := <-f.fail:
		f.j.add("failed " + f.name)
		return err
	}
}

func (f *fake) Plan(*config.Config) (component.Change, error) {
	if f.planErr != nil {
		return nil, f.planErr
	}
	f.j.add("plan " + f.name)
	return component.Func{OnCommit: func() { f.j.add("commit " + f.name) },
		OnAbort: func() { f.j.add("abort " + f.name) }}, nil
}

func supervisorOf(cs ...*fake) *Supervisor {
	s := &Supervisor{cfg: &config.Config{}, log: slog.New(slog.DiscardHandler), reloads: make(chan reloadRequest)}
	for _, c := range cs {
		s.order = append(s.order, c)
	}
	return s
}

// start runs s until stop, which returns what Run returned, once all of
// cs have started.
func start(t *testing.T, s *Supervisor, cs ...*fake) (context.Context, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitStarted(t, cs...)
	return ctx, func() error { cancel(); return <-done }
}

func waitStarted(t *testing.T, cs ...*fake) {
	t.Helper()
	for _, c := range cs {
		select {
		case <-c.started:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s never started", c.name)
		}
	}
}

// Components stop in reverse order, each after the later one returned.
func TestStopsInReverseOrder(t *testing.T) {
	j := &journal{}
	a, b, c := newFake("a", j), newFake("b", j), newFake("c", j)
	s := supervisorOf(a, b, c)
	_, stop := start(t, s, a, b, c)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got, want := j.lines(), []string{"stop c", "stop b", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
}

// One component failing stops the others in reverse order, and Run says
// which failed.
func TestFailureStopsTheRest(t *testing.T) {
	j := &journal{}
	a, b, c := newFake("a", j), newFake("b", j), newFake("c", j)
	s := supervisorOf(a, b, c)
	done := make(chan error)
	go func() { done <- s.Run(context.Background()) }()
	waitStarted(t, a, b, c)
	b.fail <- errors.New("no interface eth9")
	err := <-done
	if err == nil || err.Error() != "b: no interface eth9" {
		t.Fatalf("err %v", err)
	}
	if got, want := j.lines(), []string{"failed b", "stop c", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
}

// A reload plans every component, then commits all; one refusal aborts
// every plan made, in reverse, and commits none.
func TestReloadCommitsAllOrAborts(t *testing.T) {
	j := &journal{}
	a, b, c := newFake("a", j), newFake("b", j), newFake("c", j)
	s := supervisorOf(a, b, c)
	ctx, stop := start(t, s, a, b, c)
	defer stop()
	next := &config.Config{Node: "n2"}
	if err := s.Reload(ctx, next); err != nil {
		t.Fatal(err)
	}
	if got, want := j.lines(), []string{"plan a", "plan b", "plan c", "commit a", "commit b", "commit c"}; !slices.Equal(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
	j.mu.Lock()
	j.log = nil
	j.mu.Unlock()
	c.planErr = errors.New("address in use")
	err := s.Reload(ctx, &config.Config{})
	if err == nil || !strings.Contains(err.Error(), "reload: c: address in use (nothing applied)") {
		t.Fatalf("err %v", err)
	}
	if got, want := j.lines(), []string{"plan a", "plan b", "abort b", "abort a"}; !slices.Equal(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
	if s.cfg != next {
		t.Fatal("a refused reload replaced the running config")
	}
}

// Reload without Run says so instead of blocking.
func TestReloadNotRunning(t *testing.T) {
	s := supervisorOf()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Reload(ctx, &config.Config{}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("err %v", err)
	}
}
