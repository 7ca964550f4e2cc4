package e2e

import (
	"net"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/vrrplab"
)

// runIn runs vigil with args in the client namespace and returns its output and exit code.
func runIn(t *testing.T, c *vrrplab.Cluster, args ...string) (string, int) {
	t.Helper()
	return execIn(t, c.Client, 30*time.Second, vigilBin, args...)
}

// execIn runs a command inside h, waits up to d, and returns its output and
// exit code.
func execIn(t *testing.T, h *netlab.Host, d time.Duration, name string, args ...string) (string, int) {
	t.Helper()
	var out strings.Builder
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	p, err := h.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	exited, err := p.Wait(d)
	if !exited {
		t.Fatalf("%s %v did not finish", name, args)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return out.String(), code
}

// injectMalformedARP broadcasts n ARP frames whose hardware type is not
// Ethernet from h.
func injectMalformedARP(t *testing.T, h *netlab.Host, n int) {
	t.Helper()
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err := packet.Listen(ifi, packet.Raw, 0x0806, nil)
		if err != nil {
			return err
		}
		defer c.Close()
		f := make([]byte, 42)
		copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		copy(f[6:12], ifi.HardwareAddr)
		f[12], f[13] = 0x08, 0x06
		f[15] = 6 // hardware type 6 (IEEE 802), not Ethernet
		for range n {
			if _, err := c.WriteTo(f, &packet.Addr{HardwareAddr: f[0:6]}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
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
	// While the audit listens, lb2's host sends three ARP frames with a bad
	// hardware type: they are ignored and counted.
	var audit strings.Builder
	cmd := exec.Command(vigilBin, "arp-audit", "-i", "eth0", "--wait", "1s", "10.77.0.10")
	cmd.Stdout, cmd.Stderr = &audit, &audit
	p, err := c.Client.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	injectMalformedARP(t, c.Node("lb2").Host, 3)
	if exited, err := p.Wait(10 * time.Second); !exited || err != nil {
		t.Fatalf("arp-audit of a healthy VIP: exited=%v err=%v\n%s", exited, err, audit.String())
	}
	if !regexp.MustCompile(`10\.77\.0\.10\s+` + c.Node("lb1").Host.MAC.String() + `\s+3\s+ok`).MatchString(audit.String()) {
		t.Fatalf("arp-audit of a healthy VIP with 3 malformed frames around:\n%s", audit.String())
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
