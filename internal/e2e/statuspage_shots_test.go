package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/vrrplab"
)

// pageLab is two vigil nodes with the API VIP, a pool of three ingress
// VIPs and a balancer of three backends, the third of which (on the
// client host) the test takes down and brings back.
const pageLabInstance = `      track: {checks: [{name: api-lb-local, weight: 50}]}
  pools:
    - name: ingress
      interface: eth0
      version: 3
      advert_interval: 100ms
      vrid_base: 60
      vips: ["10.77.0.101/32", "10.77.0.102/32", "10.77.0.103/32"]
      nodes: [n1, n2]
`

const pageLabTop = `checks:
  - {name: api-lb-local, tcp: {address: "127.0.0.1:9445"}, interval: 1s}
balancers:
  - name: api
    listen: ["0.0.0.0:9445"]
    backends: [{address: "10.77.0.11:8080"}, {address: "10.77.0.12:8080"}, {address: "10.77.0.100:8080", weight: 2}]
    check: {interval: 1s, rise: 2, fall: 2}
`

// The status page, in headless Chromium, through a backend going down and
// a failover: the banner says which balancer is degraded, the page does not
// overflow at phone width, events and the ownership timeline show the
// failover, and the per-backend row has downtime and errors.
// VIGIL_SCREENSHOT_DIR=DIR keeps desktop (1440x1000) and phone (390x844)
// screenshots of both moments there.
func TestStatusPageThroughOutageAndFailover(t *testing.T) {
	spec := fast
	spec.Nodes = []vrrplab.NodeSpec{
		{Name: "n1", Impl: vrrplab.Vigil, Priority: 150, InstanceYAML: pageLabInstance, TopYAML: pageLabTop},
		{Name: "n2", Impl: vrrplab.Vigil, Priority: 100, InstanceYAML: pageLabInstance, TopYAML: pageLabTop},
	}
	c := cluster(t, spec)
	third := serveBackend(t, c.Client)
	start(t, c, "n1", "n2")
	waitOwner(t, c, "n1", 15*time.Second)
	stopLoad := clientLoad(t, c.Client, "10.77.0.10:9445")
	defer stopLoad()
	dir := os.Getenv("VIGIL_SCREENSHOT_DIR")

	n1 := openPage(t, c.Node("n1").Host, "http://127.0.0.1:9110/")
	// Samples come every 10 s: let a few accumulate, then the third
	// backend goes away (its connections are refused from then on).
	time.Sleep(25 * time.Second)
	third.Close()
	waitText(t, n1, `document.getElementById("banner").innerText`, "api: 2/3 backends", 20*time.Second)
	time.Sleep(22 * time.Second) // downtime grows, a sample or two with the outage
	row := waitText(t, n1, `document.querySelector("#balancers").innerText`, "10.77.0.100:8080", time.Second)
	if !strings.Contains(row, "down") {
		t.Fatalf("balancer rows do not show the backend down:\n%s", row)
	}
	waitText(t, n1, `document.querySelector("#events tbody").innerText`, "10.77.0.100:8080", 10*time.Second)
	if title, _ := n1.eval(`document.title`); !strings.Contains(title, "n1") {
		t.Fatalf("title %q does not name the node", title)
	}
	screens(t, n1, dir, "backend-down")

	// The backend comes back; then the master dies.
	third = serveBackend(t, c.Client)
	waitText(t, n1, `document.getElementById("banner").innerText`, "all healthy", 20*time.Second)
	n2 := openPage(t, c.Node("n2").Host, "http://127.0.0.1:9110/")
	waitText(t, n2, `document.querySelector("#vrrp tbody").innerText`, "BACKUP", 10*time.Second)
	if err := c.Node("n1").Kill(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); !c.Node("n2").HasVIP(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("n2 did not take the VIP")
		}
	}
	waitText(t, n2, `document.querySelector("#events tbody").innerText`, "master vip", 10*time.Second)
	tl, err := n2.eval(`String(document.querySelectorAll("#vrrp svg.tl rect[fill='var(--ok)']").length)`)
	if err != nil || tl == "0" {
		t.Fatalf("no MASTER span in the ownership timelines (%q, %v)", tl, err)
	}
	time.Sleep(22 * time.Second) // the new master's traffic in a sample or two
	screens(t, n2, dir, "after-failover")
	third.Close()
}

// serveBackend answers on the client host's 10.77.0.100:8080 as the lab's
// whoami servers do, until closed.
func serveBackend(t *testing.T, h *netlab.Host) net.Listener {
	t.Helper()
	l, err := h.Listen("tcp4", "10.77.0.100:8080")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conn.Write([]byte("client\n"))
			conn.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return l
}

// clientLoad opens connections to addr from h, about 25 a second, until
// stopped, at most 8,000 of them or for 5 minutes.
func clientLoad(t *testing.T, h *netlab.Host, addr string) (stop func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 8000 && ctx.Err() == nil; i++ {
			dctx, dcancel := context.WithTimeout(ctx, time.Second)
			if conn, err := h.Dial(dctx, "tcp4", addr); err == nil {
				conn.SetDeadline(time.Now().Add(time.Second))
				io.Copy(io.Discard, conn)
				conn.Close()
			}
			dcancel()
			select {
			case <-ctx.Done():
			case <-time.After(40 * time.Millisecond):
			}
		}
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// waitText waits until the page's expression contains want, and returns
// its text.
func waitText(t *testing.T, p *cdp, expr, want string, d time.Duration) string {
	t.Helper()
	var s string
	for end := time.Now().Add(d); ; time.Sleep(100 * time.Millisecond) {
		var err error
		if s, err = p.eval(expr); err == nil && strings.Contains(s, want) {
			return s
		}
		if time.Now().After(end) {
			body, _ := p.eval(`document.body.innerText`)
			t.Fatalf("page did not show %q within %v (%v):\n%s", want, d, err, body)
		}
	}
}

// screens checks the page at desktop and phone sizes: nothing wider than
// the screen at either. With dir set, it keeps a full-page screenshot of
// each (NAME-desktop.png, NAME-phone.png).
func screens(t *testing.T, p *cdp, dir, name string) {
	t.Helper()
	for _, s := range []struct {
		suffix        string
		width, height int
		scale         float64
		mobile        bool
	}{{"desktop", 1440, 1000, 1, false}, {"phone", 390, 844, 2, true}} {
		if err := p.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": s.width, "height": s.height,
			"deviceScaleFactor": s.scale, "mobile": s.mobile}, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // a poll and a layout at the new size
		if over, err := p.eval(`String(document.documentElement.scrollWidth - document.documentElement.clientWidth)`); err != nil || over != "0" {
			t.Errorf("%s at %dx%d: the page is wider than the screen by %s px (%v)", name, s.width, s.height, over, err)
		}
		// Nor does a table hide columns in a box that scrolls sideways.
		clipped, err := p.eval(`[...document.querySelectorAll(".wrap")].filter(w => w.offsetParent && w.scrollWidth > w.clientWidth + 1)
			.map(w => w.closest("section").id + " by " + (w.scrollWidth - w.clientWidth) + "px").join(", ")`)
		if err != nil || clipped != "" {
			t.Errorf("%s at %dx%d: tables wider than their card: %s (%v)", name, s.width, s.height, clipped, err)
		}
		if dir == "" {
			continue
		}
		var m struct {
			CSSContentSize struct{ Height float64 } `json:"cssContentSize"`
		}
		if err := p.call("Page.getLayoutMetrics", map[string]any{}, &m); err != nil {
			t.Fatal(err)
		}
		var shot struct{ Data string }
		clip := map[string]any{"x": 0, "y": 0, "width": s.width, "height": max(float64(s.height), m.CSSContentSize.Height), "scale": 1}
		if err := p.call("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true, "clip": clip}, &shot); err != nil {
			t.Fatal(err)
		}
		png, err := base64.StdEncoding.DecodeString(shot.Data)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, fmt.Sprintf("%s-%s.png", name, s.suffix))
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", out)
	}
	p.call("Emulation.clearDeviceMetricsOverride", map[string]any{}, nil)
}
