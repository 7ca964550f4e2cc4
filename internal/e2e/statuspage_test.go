package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
	"golang.org/x/net/websocket"
)

// cdp is a minimal Chrome DevTools Protocol client over one page's websocket.
type cdp struct {
	ws *websocket.Conn
	id atomic.Int64
}

func (c *cdp) call(method string, params any, result any) error {
	id := c.id.Add(1)
	if err := websocket.JSON.Send(c.ws, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		return err
	}
	c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var msg struct {
			ID     int64           `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := websocket.JSON.Receive(c.ws, &msg); err != nil {
			return err
		}
		if msg.ID != id {
			continue // an event
		}
		if msg.Error != nil {
			return fmt.Errorf("%s: %s", method, msg.Error.Message)
		}
		if result == nil {
			return nil
		}
		return json.Unmarshal(msg.Result, result)
	}
}

// eval returns the string value of a JavaScript expression in the page.
func (c *cdp) eval(expr string) (string, error) {
	var r struct {
		Result struct {
			Value string `json:"value"`
		} `json:"result"`
	}
	err := c.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r)
	return r.Result.Value, err
}

// openPage starts headless Chromium inside h on url and connects to it.
func openPage(t *testing.T, h *netlab.Host, url string) *cdp {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed (make deps installs it)")
	}
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
		"--remote-debugging-port=9222", "--remote-allow-origins=*", "--user-data-dir="+t.TempDir(), url)
	p, err := h.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return h.Dial(ctx, network, addr) }}}
	var wsURL string
	for deadline := time.Now().Add(20 * time.Second); wsURL == ""; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("chromium's DevTools endpoint did not come up")
		}
		resp, err := client.Get("http://127.0.0.1:9222/json")
		if err != nil {
			continue
		}
		var targets []struct{ Type, URL, WebSocketDebuggerURL string }
		json.NewDecoder(resp.Body).Decode(&targets)
		resp.Body.Close()
		for _, tg := range targets {
			if tg.Type == "page" && strings.HasPrefix(tg.URL, url) {
				wsURL = tg.WebSocketDebuggerURL
			}
		}
	}
	cfg, err := websocket.NewConfig(wsURL, "http://127.0.0.1/")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := h.Dial(ctx, "tcp", cfg.Location.Host)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, raw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return &cdp{ws: ws}
}

// The status page, open in headless Chromium on the backup, shows the
// backup becoming master within two seconds of the failover, without a
// reload. VIGIL_SCREENSHOT=FILE keeps a phone-sized screenshot.
func TestStatusPageFollowsFailover(t *testing.T) {
	c := twoNodes(t, fast)
	page := openPage(t, c.Node("lb2").Host, "http://127.0.0.1:9110/")
	state := `document.querySelector("#vrrp tbody").innerText`
	waitPage := func(want string, d time.Duration) time.Duration {
		t.Helper()
		t0 := time.Now()
		for time.Since(t0) < d {
			if s, err := page.eval(state); err == nil && strings.Contains(s, want) {
				return time.Since(t0)
			}
			time.Sleep(20 * time.Millisecond)
		}
		s, err := page.eval(`document.body.innerText`)
		t.Fatalf("page did not show %q within %v (%v):\n%s", want, d, err, s)
		return 0
	}
	waitPage("BACKUP", 10*time.Second)
	if err := c.Node("lb1").Kill(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(5 * time.Second); !c.Node("lb2").HasVIP(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("lb2 did not take the VIP")
		}
	}
	took := waitPage("MASTER", 2*time.Second)
	t.Logf("lb2 holds the VIP -> the page shows MASTER: %v", took)
	if out := os.Getenv("VIGIL_SCREENSHOT"); out != "" {
		if err := page.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 390, "height": 600, "deviceScaleFactor": 2, "mobile": true}, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // one more poll at the new size
		var shot struct{ Data string }
		if err := page.call("Page.captureScreenshot", map[string]any{"format": "png"}, &shot); err != nil {
			t.Fatal(err)
		}
		png, err := base64.StdEncoding.DecodeString(shot.Data)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
