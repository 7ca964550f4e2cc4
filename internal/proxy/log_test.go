package proxy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/statelog/logtest"
)

// A backend going down is one WARN line with its check's reason; coming
// back one INFO line saying how long it was down; an operator's change one
// line with the same keys.
func TestBackendChangeLogLines(t *testing.T) {
	s1 := newServer(t, "s1", false)
	log, buf := logtest.New(t)
	b := startLogging(t, balancerConfig(t, "listen: ["+freeAddr(t)+"]\n"+backendList(s1.addr())), log)
	addr := netip.MustParseAddrPort(s1.addr())
	b.SetHealth(addr, false, "http http://"+s1.addr()+"/: connect: connection refused")
	b.SetHealth(addr, false, "again") // no change, no line
	time.Sleep(30 * time.Millisecond)
	b.SetHealth(addr, true, "")
	if err := b.SetAdmin(addr, AdminDrain); err != nil {
		t.Fatal(err)
	}
	lines := buf.With("event", "backend")
	if len(lines) != 2 {
		t.Fatalf("%d backend lines, want 2:\n%s", len(lines), buf)
	}
	down, up := lines[0], lines[1]
	if down["level"] != "WARN" || down["state"] != "down" || down["prev_state"] != "up" || down["backend"] != s1.addr() ||
		down["reason"] != "http http://"+s1.addr()+"/: connect: connection refused" || down["healthy_backends"] != 0.0 {
		t.Errorf("down line %v", down)
	}
	if up["level"] != "INFO" || up["state"] != "up" || up["prev_state"] != "down" || up["reason"] != nil {
		t.Errorf("up line %v", up)
	}
	if d, ok := up["down_for"].(float64); !ok || time.Duration(d) < 30*time.Millisecond {
		t.Errorf("up line without down_for: %v", up)
	}
	admin := buf.With("event", "backend_admin")
	if len(admin) != 1 || admin[0]["state"] != "drain" || admin[0]["prev_state"] != "ready" {
		t.Errorf("admin lines %v", admin)
	}
}
