package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/vip"
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

// A host that holds the VIP without speaking VRRP (a stale or mistyped
// address) is reported when vigil takes the VIP over.
func TestConflictingHostIsReported(t *testing.T) {
	spec := fast
	spec.Nodes = []vrrplab.NodeSpec{{Name: "lb1", Impl: vrrplab.Vigil, Priority: 100}}
	c := cluster(t, spec)
	squatter, err := c.Lab.AddHost("squatter", mustPrefix("10.77.0.50/24"), c.Spec.VIP)
	if err != nil {
		t.Fatal(err)
	}
	start(t, c, "lb1")
	waitOwner(t, c, "lb1", 5*time.Second)
	want := "address conflict: another host answers ARP for a VIP this node now owns"
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		log := c.Node("lb1").Log()
		if strings.Contains(log, want) {
			if !strings.Contains(log, squatter.MAC.String()) {
				t.Fatalf("conflict logged without the squatter's MAC %s", squatter.MAC)
			}
			return
		}
	}
	t.Fatalf("no conflict reported although %s holds the VIP", squatter.MAC)
}

// accept: false (RFC 5798 Accept_Mode False) drops traffic to the VIP on the
// master while ARP still works; stopping removes the nftables table.
func TestAcceptModeOff(t *testing.T) {
	spec := fast
	spec.Nodes = []vrrplab.NodeSpec{{Name: "lb1", Impl: vrrplab.Vigil, Priority: 100, InstanceYAML: "      accept: false\n"}}
	c := cluster(t, spec)
	start(t, c, "lb1")
	waitOwner(t, c, "lb1", 5*time.Second)
	if name, err := c.Ask(context.Background(), 300*time.Millisecond); err == nil {
		t.Fatalf("accept mode off, yet %s answered on the VIP", name)
	}
	// The node itself is reachable, and the client learned the VIP's MAC.
	conn, err := c.Client.Dial(context.Background(), "tcp", fmt.Sprintf("%s:%d", c.Node("lb1").Host.Addr(false), vrrplab.WhoamiPort))
	if err != nil {
		t.Fatalf("node address unreachable: %v", err)
	}
	conn.Close()
	if mac, _ := c.Client.Neighbor(c.Spec.VIP.Addr()); mac.String() != c.Node("lb1").Host.MAC.String() {
		t.Fatalf("client's neighbour entry for the VIP is %v, want lb1's %v", mac, c.Node("lb1").Host.MAC)
	}
	if !guardPresent(t, c.Node("lb1").Host) {
		t.Fatal("no accept-mode table while running")
	}
	if err := c.Node("lb1").Stop(); err != nil {
		t.Fatal(err)
	}
	if guardPresent(t, c.Node("lb1").Host) {
		t.Fatal("accept-mode table left after a graceful stop")
	}
}

func guardPresent(t *testing.T, h *netlab.Host) bool {
	t.Helper()
	return nftTablePresent(t, h, vip.GuardTable)
}

// A tracked interface that does not exist counts as down: with weight -100,
// lb1 (150) advertises 50 and lb2 (100) stays master.
func TestTrackedInterfaceWeight(t *testing.T) {
	spec := fast
	spec.Nodes = pair(vrrplab.Vigil, vrrplab.Vigil, 150, 100)
	spec.Nodes[0].InstanceYAML = "      track: {interfaces: [{name: ghost0, weight: -100}]}\n"
	c := cluster(t, spec)
	start(t, c, "lb2")
	waitOwner(t, c, "lb2", 5*time.Second)
	start(t, c, "lb1")
	stable(t, c, "lb2", 1500*time.Millisecond)
	if !strings.Contains(c.Node("lb1").Log(), "tracked interface does not exist") {
		t.Fatal("no warning about the missing tracked interface")
	}
}

// vigil reload waits for the daemon's answer over the control socket: a
// change the daemon refuses (the cluster name needs a restart) exits 1 and
// prints why, and status and metrics say the last reload failed; an
// applied one exits 0 and names what changed; -c naming another file draws
// a warning; SIGHUP reloads too.
func TestReloadAnswersAppliedOrRefused(t *testing.T) {
	h := oneHost(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "vigil.sock")
	cfg := filepath.Join(dir, "vigil.yaml")
	body := func(cluster, check string) string {
		return fmt.Sprintf(`cluster: %s
node: n
vrrp:
  instances:
    - {name: api, interface: eth0, vrid: 1, priority: 150, advert_interval: 100ms, vips: [10.79.0.10]}
checks:
  - {name: %s, tcp: {address: "127.0.0.1:1"}, interval: 1s}
api: {socket: %s, http: ""}
`, cluster, check, sock)
	}
	os.WriteFile(cfg, []byte(body("c1", "one")), 0o644)
	logPath := filepath.Join(dir, "vigil.log")
	logOnFailure(t, "vigil log", logPath)
	p := startVigil(t, h, cfg, "", logPath)
	t.Cleanup(p.Kill)
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the daemon's socket did not appear")
		}
	}
	reload := func(args ...string) (int, string) {
		out, err := exec.Command(vigilBin, append([]string{"reload", "--socket", sock}, args...)...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}

	os.WriteFile(cfg, []byte(body("c2", "one")), 0o644)
	code, out := reload("-c", cfg)
	if code != 1 || !strings.Contains(out, "reload refused") || !strings.Contains(out, "cluster changed: VRRP changes need a restart") {
		t.Fatalf("refused reload: exit %d, want 1 with the reason:\n%s", code, out)
	}
	if r := statusAt(t, sock).LastReload; r == nil || r.Successful || !strings.Contains(r.Error, "cluster changed") {
		t.Fatalf("status after a refused reload: %+v", r)
	}

	os.WriteFile(cfg, []byte(body("c1", "two")), 0o644)
	code, out = reload("-c", cfg)
	if code != 0 || !strings.Contains(out, cfg+": applied: check two added; check one removed") {
		t.Fatalf("applied reload: exit %d, want 0 naming the change:\n%s", code, out)
	}
	if r := statusAt(t, sock).LastReload; r == nil || !r.Successful || r.Error != "" {
		t.Fatalf("status after an applied reload: %+v", r)
	}

	other := filepath.Join(dir, "other.yaml")
	os.WriteFile(other, []byte(body("c1", "two")), 0o644)
	code, out = reload("-c", other)
	if code != 0 || !strings.Contains(out, "warning: the daemon reads "+cfg+", not "+other) || !strings.Contains(out, "nothing changed") {
		t.Fatalf("reload -c with another file: exit %d:\n%s", code, out)
	}

	// SIGHUP goes the same way, and is recorded the same way.
	os.WriteFile(cfg, []byte(body("c3", "two")), 0o644)
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if r := statusAt(t, sock).LastReload; r != nil && !r.Successful {
			break
		}
		if time.Now().After(end) {
			t.Fatal("SIGHUP with a changed cluster: status does not show the refusal")
		}
	}
	if b, _ := os.ReadFile(logPath); !strings.Contains(string(b), `msg="config reloaded" changed="check two added; check one removed"`) {
		t.Fatalf("the log does not say what the reload changed:\n%s", b)
	}
}
