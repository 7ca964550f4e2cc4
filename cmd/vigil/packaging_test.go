package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// vigil version prints what the build's ldflags set; without them, what
// the Go build info records (a go install'd module version, vcs settings).
func TestVersionPrintsVersionCommitAndDate(t *testing.T) {
	saved := [3]string{buildVersion, buildCommit, buildDate}
	t.Cleanup(func() { buildVersion, buildCommit, buildDate = saved[0], saved[1], saved[2] })
	buildVersion, buildCommit, buildDate = "v1.4.0", "0123456789abcdef", "2026-12-07T18:00:00Z"
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"version"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"vigil v1.4.0\n", "commit 0123456789abcdef\n", "built 2026-12-07T18:00:00Z\n", "go1."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("vigil version printed\n%s\nwant %q in it", out.String(), want)
		}
	}

	for _, c := range []struct {
		name                  string
		set                   buildInfo
		bi                    debug.BuildInfo
		version, commit, date string
	}{
		{"vcs settings fill what ldflags left empty",
			buildInfo{},
			debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
				{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}},
			"", "abc123-dirty", "2026-12-01T10:00:00Z (commit date)"},
		{"go install of a tagged module",
			buildInfo{},
			debug.BuildInfo{Main: debug.Module{Version: "v1.3.0"}},
			"v1.3.0", "", ""},
		{"ldflags win",
			buildInfo{Version: "v2", Commit: "fff", Date: "2026-01-01T00:00:00Z"},
			debug.BuildInfo{Main: debug.Module{Version: "v1.3.0"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}}},
			"v2", "fff", "2026-01-01T00:00:00Z"},
	} {
		b := c.set
		fromBuildInfo(&b, &c.bi)
		if b.Version != c.version || b.Commit != c.commit || b.Date != c.date {
			t.Errorf("%s: got %+v, want version %q commit %q date %q", c.name, b, c.version, c.commit, c.date)
		}
	}
}

// vigil man DIR writes one page per command from the command tree, so a
// flag added to a command is in its page.
func TestManWritesAPagePerCommand(t *testing.T) {
	saved := buildDate
	t.Cleanup(func() { buildDate = saved })
	buildDate = "2026-12-07T18:00:00Z"
	dir := filepath.Join(t.TempDir(), "man")
	root := newRoot()
	root.SetArgs([]string{"man", dir})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, page := range []string{"vigil.8", "vigil-run.8", "vigil-status.8", "vigil-import.8", "vigil-backend-drain.8"} {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(`.TH "VIGIL" "8" "Dec 2026" "vigil `)) {
			t.Errorf("%s: no man header of section 8 dated by the build:\n%s", page, b)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "vigil-status.8"))
	if !strings.Contains(string(b), `\fB--socket\fP`) || !strings.Contains(string(b), "Show what the running daemon does") {
		t.Errorf("vigil-status.8 lacks the command's text and flags:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "vigil-man.8")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the hidden man command has a page of its own: %v", err)
	}
}

// vigil status -c FILE asks the socket FILE's api section names, as vigil
// reload, backend and instance do; --socket still wins.
func TestStatusFindsTheSocketInTheConfig(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "other.sock")
	cfg := writeConfig(t, poolYAML+"api: {socket: "+sock+"}\n")
	run := func(args ...string) error {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"status"}, args...))
		return root.Execute()
	}
	if err := run("-c", cfg); err == nil || !strings.Contains(err.Error(), "no vigil daemon answers on "+sock) {
		t.Fatalf("status -c %s: %v, want it to ask %s", cfg, err, sock)
	}
	flag := filepath.Join(t.TempDir(), "flag.sock")
	if err := run("-c", cfg, "--socket", flag); err == nil || !strings.Contains(err.Error(), "no vigil daemon answers on "+flag) {
		t.Fatalf("status --socket: %v, want it to ask %s", err, flag)
	}
}

// vigil manifest static-pod, run on the node, takes the liveness probe's
// address from --config-dir's vigil.yaml; --http wins; a broken file is
// refused rather than a pod written that would not start.
func TestStaticPodProbesTheConfigsHTTP(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (string, error) {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(append([]string{"manifest", "static-pod", "--config-dir", dir}, args...))
		err := root.Execute()
		return out.String(), err
	}
	if out, err := run(); err != nil || !strings.Contains(out, "port: 9110") {
		t.Fatalf("no vigil.yaml: %v, want the default port\n%s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "vigil.yaml"), []byte(poolYAML+"api: {http: \"127.0.0.1:9333\"}\n"), 0o644)
	if out, err := run(); err != nil || !strings.Contains(out, "port: 9333") {
		t.Fatalf("api.http 127.0.0.1:9333: %v\n%s", err, out)
	}
	if out, err := run("--http", "127.0.0.1:9444"); err != nil || !strings.Contains(out, "port: 9444") {
		t.Fatalf("--http wins: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "vigil.yaml"), []byte(poolYAML+"colour: red\n"), 0o644)
	var ee *exitError
	if _, err := run(); !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "colour") {
		t.Fatalf("a broken vigil.yaml: %v, want exit 2 naming the key", err)
	}
}

// vigil import keepalived of an haproxy.cfg is refused in one line, exit 2.
func TestImportRefusesAFileOfTheWrongKind(t *testing.T) {
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"import", "keepalived", "../../internal/importer/testdata/haproxy.cfg"})
	err := root.Execute()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || strings.Contains(err.Error(), "\n") || out.Len() != 0 ||
		!strings.Contains(err.Error(), "not a keepalived.conf: it reads as an haproxy.cfg") {
		t.Fatalf("import keepalived haproxy.cfg: %v, want exit 2 in one line\n%s", err, out.String())
	}
}
