package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/vrrplab"
)

// A failing tracked check with a negative weight drops lb1 below lb2, which
// preempts; the notify hook sees every transition with keepalived's arguments.
func TestCheckTrackingAndNotify(t *testing.T) {
	dir := t.TempDir()
	flag := filepath.Join(dir, "healthy")
	hook := filepath.Join(dir, "notify.sh")
	events := filepath.Join(dir, "events")
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho \"$@\" >> "+events+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := fast
	spec.Nodes = pair(vrrplab.Vigil, vrrplab.Vigil, 150, 100)
	spec.Nodes[0].InstanceYAML = fmt.Sprintf("      track: {checks: [{name: api, weight: -100}]}\n      notify: %s\n", hook)
	spec.Nodes[0].TopYAML = fmt.Sprintf("checks:\n  - {name: api, exec: {script: \"test -e %s\"}, interval: 50ms, timeout: 40ms, rise: 2, fall: 2}\n", flag)
	c := cluster(t, spec)
	start(t, c, "lb1", "lb2")
	waitOwner(t, c, "lb1", 5*time.Second)
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	waitOwner(t, c, "lb2", 5*time.Second) // 150-100 = 50 < 100: lb2 preempts
	t.Logf("check failure to failover: %v", time.Since(t0))
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitOwner(t, c, "lb1", 5*time.Second)
	if err := c.Node("lb1").Stop(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(events)
	want := []string{"INSTANCE vip BACKUP 150", "INSTANCE vip MASTER 150", "INSTANCE vip BACKUP 50", "INSTANCE vip MASTER 150", "INSTANCE vip STOP 150"}
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("notify events\n got %q\nwant %q", got, want)
	}
}

// Bad input: the CLI names the key and line, exits 2, and touches nothing.
func TestBadConfigAndUnknownInterface(t *testing.T) {
	if !netlab.Root() {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("vrrp:\n  instances:\n    - name: a\n      interface: eth0\n      vrid: 300\n      vips: [10.0.0.1]\n      colour: red\n"), 0o644)
	for _, sub := range []string{"check", "run"} {
		out, err := exec.Command(vigilBin, sub, "-c", bad).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Fatalf("vigil %s on a bad config: %v, want exit 2\n%s", sub, err, out)
		}
		if !strings.Contains(string(out), `vrrp.instances[0].colour: unknown key "colour" (line 7)`) {
			t.Fatalf("vigil %s output does not name the key and line:\n%s", sub, out)
		}
	}
	h := oneHost(t)
	cfg := filepath.Join(dir, "noif.yaml")
	os.WriteFile(cfg, []byte("vrrp:\n  instances:\n    - {name: a, interface: eth0, vrid: 1, vips: [10.79.0.10]}\n    - {name: b, interface: eth9, vrid: 2, vips: [10.79.0.11]}\n"), 0o644)
	var out strings.Builder
	cmd := exec.Command(vigilBin, "run", "-c", cfg)
	cmd.Stderr = &out
	p, err := h.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	exited, runErr := p.Wait(10 * time.Second)
	if !exited || runErr == nil {
		t.Fatalf("vigil run with a missing interface: exited=%v err=%v", exited, runErr)
	}
	if msg := out.String(); !strings.Contains(msg, `vrrp.instances[1].interface: no interface "eth9" on this host (line 4)`) {
		t.Fatalf("error does not name the key and interface:\n%s", msg)
	}
	if ok, _ := h.HasAddr(mustPrefix("10.79.0.10/32").Addr()); ok {
		t.Fatal("a VIP was configured although the config cannot run")
	}
}

// Without privileges vigil says which capabilities it needs and changes nothing.
func TestMissingPermissions(t *testing.T) {
	h := oneHost(t)
	dir, err := os.MkdirTemp("", "vigil-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	cfg := filepath.Join(dir, "ok.yaml")
	os.WriteFile(cfg, []byte("vrrp:\n  instances:\n    - {name: a, interface: eth0, vrid: 1, vips: [10.79.0.10]}\n"), 0o644)
	bin := filepath.Join(dir, "vigil")
	data, _ := os.ReadFile(vigilBin)
	os.WriteFile(bin, data, 0o755)
	var out strings.Builder
	cmd := exec.Command(bin, "run", "-c", cfg)
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	p, err := h.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if exited, runErr := p.Wait(10 * time.Second); !exited || runErr == nil {
		t.Fatalf("unprivileged vigil: exited=%v err=%v\n%s", exited, runErr, out.String())
	}
	if !strings.Contains(out.String(), "CAP_NET_RAW") {
		t.Fatalf("error does not name the capability:\n%s", out.String())
	}
	if ok, _ := h.HasAddr(mustPrefix("10.79.0.10/32").Addr()); ok {
		t.Fatal("a VIP was configured without privileges")
	}
}
