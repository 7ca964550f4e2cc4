package check

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/health"
	"github.com/vigil-lb/vigil/internal/statelog/logtest"
)

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A failed probe names its target once: net/http's error repeats the URL
// and the dialer's the address ("http URL: Get \"URL\": dial tcp ADDR:
// connect: connection refused" named it three times).
func TestProbeErrorNamesTargetOnce(t *testing.T) {
	addr := closedAddr(t)
	h, err := NewHTTP("http://"+addr+"/readyz", "GET", "", okRange(), "", TLSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []Prober{h, TCP{Address: addr}} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := p.Probe(ctx)
		cancel()
		if err == nil {
			t.Fatalf("%T: probe of a closed port passed", p)
		}
		if n := strings.Count(err.Error(), addr); n != 1 || !strings.HasSuffix(err.Error(), ": connect: connection refused") {
			t.Errorf("%T: %q names %s %d times, want once, ending in the cause", p, err, addr, n)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%T: %q lost its cause", p, err)
		}
	}
}

// A check going down is one WARN line with the common keys and the probe's
// error; coming back, one INFO line with how long it was down and no err.
// A balancer backend's check writes only DEBUG: the balancer writes its
// line.
func TestCheckChangeLogLines(t *testing.T) {
	for _, c := range []struct {
		key       health.Key
		downLevel string
		upLevel   string
	}{
		{health.CheckKey("api-readyz"), "WARN", "INFO"},
		{health.BackendKey("api", netip.MustParseAddrPort("10.0.0.11:6443")), "DEBUG", "DEBUG"},
	} {
		log, buf := logtest.New(t)
		store := health.New()
		results := make(chan error, 10)
		r := &Runner{Name: "api-readyz", Key: c.key, Health: store, Prober: proberFunc(func(context.Context) error { return <-results }),
			Interval: 10 * time.Millisecond, Timeout: time.Second, Rise: 2, Fall: 1, Log: log}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.Run(ctx) }()
		results <- errBad
		waitState(t, store, c.key, false)
		time.Sleep(20 * time.Millisecond) // something to measure
		results <- nil
		results <- nil
		waitState(t, store, c.key, true)
		cancel()
		<-done

		lines := buf.With("event", "check")
		if len(lines) != 2 {
			t.Fatalf("%v: %d check lines, want 2:\n%s", c.key, len(lines), buf)
		}
		down, up := lines[0], lines[1]
		if down["level"] != c.downLevel || down["state"] != "down" || down["prev_state"] != "up" || down["reason"] != "bad" ||
			down["check"] != "api-readyz" {
			t.Errorf("down line %v", down)
		}
		if up["level"] != c.upLevel || up["state"] != "up" || up["prev_state"] != "down" || up["reason"] != "2 probes passed" {
			t.Errorf("up line %v", up)
		}
		if d, ok := up["down_for"].(float64); !ok || time.Duration(d) < 20*time.Millisecond {
			t.Errorf("up line without down_for of at least 20ms: %v", up)
		}
		if strings.Contains(buf.String(), `"err"`) || strings.Contains(buf.String(), "<nil>") {
			t.Errorf("an err key or <nil>:\n%s", buf)
		}
	}
}
