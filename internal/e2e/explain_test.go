package e2e

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/statelog/logtest"
	"github.com/vigil-lb/vigil/internal/vrrplab"
)

// statusText is vigil status as an operator reads it on a node.
func statusText(t *testing.T, n *vrrplab.Node, args ...string) string {
	t.Helper()
	code, out := vigilCLI(t, append([]string{"status", "--socket", n.Socket()}, args...)...)
	if code != 0 {
		t.Fatalf("vigil status on %s: exit %d: %s", n.Name, code, out)
	}
	return out
}

// A failover explains itself in vigil status on both nodes: a crash is a
// master-down timer naming the silent master by node, the restarted node's
// return a preemption with both priorities, a graceful stop a priority-0
// hand-over. A vigil status --watch on the crashed node says the daemon is
// not answering while it is down and shows it again once it is back.
// With VIGIL_STATUS_SAMPLE set, the texts are also written to that file.
func TestFailoverExplainedInStatus(t *testing.T) {
	spec := fast
	spec.PeerNames = true
	c := twoNodes(t, spec)
	n1, n2 := c.Node("lb1"), c.Node("lb2")
	var sample strings.Builder
	capture := func(when string, nodes ...*vrrplab.Node) {
		for _, n := range nodes {
			out := statusText(t, n)
			sample.WriteString("### " + when + ": vigil status on " + n.Name + "\n" + out + "\n")
		}
	}
	waitCause := func(n *vrrplab.Node, state, cause string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			in := status(t, n).Instances[0]
			if tr := in.LastTransition; in.State == state && tr != nil && tr.Cause == cause {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s with last transition %+v, want %s by %s", n.Name, in.State, in.LastTransition, state, cause)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	capture("both nodes up", n1, n2)
	in2 := status(t, n2).Instances[0]
	if in2.State != "BACKUP" || in2.MasterNode != "lb1" || in2.MasterPriority != 150 {
		t.Fatalf("lb2 before the failover: %s, master %q (%d)", in2.State, in2.MasterNode, in2.MasterPriority)
	}

	// A watch on lb1 across its crash and restart.
	watch := exec.Command(vigilBin, "status", "--socket", n1.Socket(), "--watch=200ms")
	var watched logtest.Buffer
	watch.Stdout, watch.Stderr = &watched, &watched
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	stopWatch := func() {
		if watch.Process != nil {
			watch.Process.Signal(syscall.SIGTERM)
			watch.Wait()
			watch.Process = nil
		}
	}
	t.Cleanup(stopWatch)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(watched.String(), "VRRP INSTANCE"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no first watch frame within 10s:\n%s", watched.String())
		}
	}

	// Crash: lb2 takes over when its master-down timer runs out.
	failover(t, c, "lb1", syscall.SIGKILL, "lb2", 5*time.Second)
	waitCause(n2, "MASTER", "master_down")
	in2 = status(t, n2).Instances[0]
	if tr := in2.LastTransition; tr.PeerNode != "lb1" || tr.PeerPriority != 150 ||
		!strings.HasPrefix(tr.Reason, "master down timer expired: lb1 (10.77.0.11) (priority 150) silent for ") {
		t.Fatalf("lb2's reason after lb1 crashed: %+v", tr)
	}
	capture("after kill -9 of lb1 (lb1 not running)", n2)
	time.Sleep(600 * time.Millisecond) // a few watch frames without a daemon

	// lb1 returns and preempts: both name each other and their priorities.
	start(t, c, "lb1")
	waitOwner(t, c, "lb1", 5*time.Second)
	waitCause(n1, "MASTER", "preempt")
	waitCause(n2, "BACKUP", "preempted")
	in1 := status(t, n1).Instances[0]
	if tr := in1.LastTransition; tr.PeerNode != "lb2" || !strings.HasPrefix(tr.Reason, "preempted lb2 (10.77.0.12) (priority 100 < ours 150)") {
		t.Fatalf("lb1's reason after it came back: %+v", tr)
	}
	in2 = status(t, n2).Instances[0]
	if tr := in2.LastTransition; !strings.HasPrefix(tr.Reason, "preempted by lb1 (10.77.0.11) (priority 150 > ours 100)") {
		t.Fatalf("lb2's reason after lb1 came back: %+v", tr)
	}
	capture("after lb1 restarted and preempted", n1, n2)
	time.Sleep(400 * time.Millisecond) // a frame of the daemon back
	stopWatch()
	w := watched.String()
	first, down, back := strings.Index(w, "VRRP INSTANCE"), strings.Index(w, "daemon not answering"), strings.LastIndex(w, "VRRP INSTANCE")
	if first > down || down < 0 || back < down || strings.Count(w, " every 200ms\n") < 3 {
		t.Fatalf("vigil status --watch across lb1's restart:\n%s", w)
	}

	// A graceful stop: a priority-0 hand-over.
	failover(t, c, "lb1", syscall.SIGTERM, "lb2", 3*time.Second)
	waitCause(n2, "MASTER", "handover")
	capture("after SIGTERM of lb1", n2)

	t.Logf("vigil status during the failover:\n%s", sample.String())
	if path := os.Getenv("VIGIL_STATUS_SAMPLE"); path != "" {
		if err := os.WriteFile(path, []byte(sample.String()+"### vigil status --watch on lb1 across its crash\n"+w), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
