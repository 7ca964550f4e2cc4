package e2e

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/vrrplab"
)

// capture runs tshark in host for d, writing VRRP packets to a file; wait
// returns the file once tshark has finished.
func capture(t *testing.T, h *netlab.Host, d time.Duration) (wait func() string) {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Fatal("tshark is not installed (.ci/run installs it)")
	}
	file := filepath.Join(t.TempDir(), "vrrp.pcapng")
	cmd := exec.Command("tshark", "-q", "-i", "eth0", "-f", "ip proto 112 or ip6 proto 112",
		"-a", "duration:"+strconv.Itoa(int(d.Seconds())), "-w", file)
	p, err := h.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let dumpcap open the interface
	return func() string {
		if ok, err := p.Wait(d + 10*time.Second); !ok || err != nil {
			t.Fatalf("tshark did not finish: exited=%v err=%v", ok, err)
		}
		return file
	}
}

// checkCapture asserts that tshark decodes every VRRP packet from each of
// srcs without a malformed-packet mark and with a good checksum.
func checkCapture(t *testing.T, file string, srcs ...string) {
	t.Helper()
	out, err := exec.Command("tshark", "-r", file, "-o", "vrrp.v3_checksum_as_in_v2:FALSE",
		"-T", "fields", "-E", "separator=|", "-e", "ip.src", "-e", "ipv6.src", "-e", "vrrp.version",
		"-e", "vrrp.checksum.status", "-e", "_ws.malformed", "-e", "_ws.expert.message").CombinedOutput()
	if err != nil {
		// Older or newer tshark may lack the preference: read without it.
		out, err = exec.Command("tshark", "-r", file,
			"-T", "fields", "-E", "separator=|", "-e", "ip.src", "-e", "ipv6.src", "-e", "vrrp.version",
			"-e", "vrrp.checksum.status", "-e", "_ws.malformed", "-e", "_ws.expert.message").CombinedOutput()
		if err != nil {
			t.Fatalf("tshark -r: %v\n%s", err, out)
		}
	}
	seen := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "|")
		if len(f) < 6 {
			continue
		}
		src := f[0] + f[1]
		seen[src]++
		// Checksum status 1 is "Good" (0 bad, 2 unverified).
		if f[3] != "1" || f[4] != "" || strings.Contains(strings.ToLower(f[5]), "checksum") {
			t.Errorf("tshark flags a packet from %s: version=%s checksum_status=%s malformed=%q expert=%q", src, f[2], f[3], f[4], f[5])
		}
	}
	for _, s := range srcs {
		if seen[s] == 0 {
			t.Errorf("no VRRP packet from %s in the capture (saw %v)", s, seen)
		}
	}
	t.Logf("tshark checked %v packets per source", seen)
}

func TestKeepalivedInteropV2Auth(t *testing.T) {
	spec := vrrplab.Spec{Version: 2, Interval: time.Second, AuthPass: "s3cret",
		Nodes: pair(vrrplab.Vigil, vrrplab.Keepalived, 150, 100)}
	c := cluster(t, spec)
	wait := capture(t, c.Client, 11*time.Second)
	start(t, c, "lb2")
	waitOwner(t, c, "lb2", 8*time.Second) // keepalived alone becomes master
	start(t, c, "lb1")
	waitOwner(t, c, "lb1", 8*time.Second) // vigil preempts with the higher priority
	stable(t, c, "lb1", 3*time.Second)    // keepalived accepts vigil's adverts: no flapping
	checkCapture(t, wait(), "10.77.0.11", "10.77.0.12")

	t.Logf("keepalived took over from a killed vigil after %v", failover(t, c, "lb1", syscall.SIGKILL, "lb2", 8*time.Second))
	start(t, c, "lb1")
	waitOwner(t, c, "lb1", 8*time.Second) // stale VIP removed, keepalived released it
	stable(t, c, "lb1", 2*time.Second)
}

func TestKeepalivedInteropV3(t *testing.T) {
	spec := fast
	spec.Nodes = pair(vrrplab.Keepalived, vrrplab.Vigil, 150, 100)
	c := cluster(t, spec)
	wait := capture(t, c.Client, 2*time.Second)
	start(t, c, "lb1", "lb2")
	waitOwner(t, c, "lb1", 8*time.Second)
	stable(t, c, "lb1", 1500*time.Millisecond) // vigil accepts keepalived's v3 adverts
	checkCapture(t, wait(), "10.77.0.11")

	// Graceful stop: keepalived's priority-0 advert hands over at once.
	t.Logf("vigil took over from a stopping keepalived after %v", failover(t, c, "lb1", syscall.SIGTERM, "lb2", 5*time.Second))
	waitOwner(t, c, "lb2", 3*time.Second)
	wait = capture(t, c.Client, 2*time.Second)
	stable(t, c, "lb2", time.Second)
	checkCapture(t, wait(), "10.77.0.12") // vigil's v3 adverts, as tshark sees them

	// keepalived comes back with the higher priority and preempts vigil.
	start(t, c, "lb1")
	waitOwner(t, c, "lb1", 8*time.Second)
	stable(t, c, "lb1", time.Second)

	// Crash of keepalived: vigil takes over after the master-down interval.
	t.Logf("vigil took over from a killed keepalived after %v", failover(t, c, "lb1", syscall.SIGKILL, "lb2", 5*time.Second))
}
