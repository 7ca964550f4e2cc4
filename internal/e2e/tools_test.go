package e2e

import (
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/vrrplab"
)

// run runs vigil with args in the client namespace and returns its output and exit code.
func runIn(t *testing.T, c *vrrplab.Cluster, args ...string) (string, int) {
	t.Helper()
	var out strings.Builder
	cmd := exec.Command(vigilBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	p, err := c.Client.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	exited, err := p.Wait(30 * time.Second)
	if !exited {
		t.Fatalf("vigil %v did not finish", args)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return out.String(), code
}

func TestScanAndARPAuditAgainstKeepalivedAndVigil(t *testing.T) {
	spec := fast
	spec.Nodes = pair(vrrplab.Keepalived, vrrplab.Vigil, 150, 100)
	c := cluster(t, spec)
	start(t, c, "lb1", "lb2")
	waitOwner(t, c, "lb1", 8*time.Second)
	stable(t, c, "lb1", 500*time.Millisecond)

	out, code := runIn(t, c, "scan", "-i", "eth0", "--duration", "1s")
	if code != 0 || !regexp.MustCompile(`(?m)^51\s+v3\s+10\.77\.0\.11\s+150\s+100ms\s+\d+\s+0\s+\[10\.77\.0\.10\]`).MatchString(out) {
		t.Fatalf("scan does not show keepalived's group (exit %d):\n%s", code, out)
	}
	if !strings.Contains(out, "free VRIDs: [100 101") {
		t.Fatalf("scan suggests no free VRIDs:\n%s", out)
	}
	out, code = runIn(t, c, "arp-audit", "-i", "eth0", "--wait", "300ms", "10.77.0.10")
	if code != 0 || !strings.Contains(out, c.Node("lb1").Host.MAC.String()) || !strings.Contains(out, "ok") {
		t.Fatalf("arp-audit of a healthy VIP (exit %d):\n%s", code, out)
	}

	// keepalived crashes with the VIP configured; vigil takes over. Now two
	// hosts answer ARP for the VIP, and the audit says so.
	failover(t, c, "lb1", syscall.SIGKILL, "lb2", 5*time.Second)
	out, code = runIn(t, c, "scan", "-i", "eth0", "--duration", "1s")
	if !regexp.MustCompile(`(?m)^51\s+v3\s+10\.77\.0\.12\s+100\s`).MatchString(out) {
		t.Fatalf("scan does not show vigil's group after the failover:\n%s", out)
	}
	out, code = runIn(t, c, "arp-audit", "-i", "eth0", "--wait", "300ms", "10.77.0.10")
	if code != 3 || !strings.Contains(out, "CONFLICT") {
		t.Fatalf("arp-audit with a stale VIP on the crashed node (exit %d):\n%s", code, out)
	}
}
