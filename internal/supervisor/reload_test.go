package supervisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-lb/vigil/internal/config"
)

// configChanges names items added, removed and changed, and sections.
func TestConfigChanges(t *testing.T) {
	parse := func(src string) *config.Config {
		t.Helper()
		c, err := config.Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old := parse(`checks: [{name: a, tcp: {address: "127.0.0.1:1"}}, {name: b, tcp: {address: "127.0.0.1:2"}}]
log: {level: info}
`)
	cur := parse(`checks: [{name: a, tcp: {address: "127.0.0.1:9"}}, {name: c, tcp: {address: "127.0.0.1:3"}}]
log: {level: debug}
`)
	got := strings.Join(configChanges(old, cur), "; ")
	if want := "check a changed; check c added; check b removed; log changed"; got != want {
		t.Fatalf("changes %q, want %q", got, want)
	}
	if got := configChanges(old, old); len(got) != 0 {
		t.Fatalf("no change: %v", got)
	}
}

// ReloadFile records a refusal (invalid file, or a component's) and an
// applied reload, for status and metrics.
func TestReloadFileRecordsTheOutcome(t *testing.T) {
	j := &journal{}
	refusing := newFake("c", j)
	s := supervisorOf(refusing)
	s.path = filepath.Join(t.TempDir(), "vigil.yaml")
	s.last = lastReload{ok: true}
	running, err := config.Parse([]byte("checks: [{name: b, tcp: {address: \"127.0.0.1:2\"}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s.cfg = running
	_, stop := start(t, s, refusing)
	defer stop()
	os.WriteFile(s.path, []byte("colour: red\n"), 0o644)
	if _, err := s.ReloadFile(context.Background()); err == nil || !strings.HasPrefix(err.Error(), "config is invalid: config "+s.path+": ") || !strings.Contains(err.Error(), `; colour: unknown key "colour" (line 1)`) {
		t.Fatalf("invalid file: %v", err)
	}
	if r := s.reloadStatus(); r.Successful || !strings.Contains(r.Error, "unknown key") || r.At.IsZero() {
		t.Fatalf("status after an invalid file: %+v", r)
	}
	os.WriteFile(s.path, []byte("checks: [{name: a, tcp: {address: \"127.0.0.1:1\"}}]\n"), 0o644)
	changes, err := s.ReloadFile(context.Background())
	if err != nil || strings.Join(changes, "; ") != "check a added; check b removed" {
		t.Fatalf("applied: %v %v", changes, err)
	}
	if r := s.reloadStatus(); !r.Successful || r.Error != "" || r.LastSuccess != r.At {
		t.Fatalf("status after an applied reload: %+v", r)
	}
}
