package api

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// DNS rebinding: a page on evil.example.com whose name comes to resolve to
// the node reads the HTTP API with Host: evil.example.com. The HTTP API
// answers only the names it is known by (its listen address, localhost, the
// node's names) and any IP address, which no rebinding can forge.
func TestHTTPAnswersOnlyItsOwnHostNames(t *testing.T) {
	s, err := Listen(filepath.Join(t.TempDir(), "vigil.sock"), "127.0.0.1:0", func() Snapshot { return sample() }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.AllowHosts("lb1", "lb1.example.net")
	defer serve(s)()
	addr := s.HTTPAddr()
	_, port, _ := net.SplitHostPort(addr)
	hostname, _ := os.Hostname()
	get := func(host, path string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, host := range []string{
		addr, "localhost", "localhost:" + port, "LOCALHOST.", "127.0.0.1", "[::1]:" + port, "[::1]", "::1",
		"lb1", "lb1:" + port, "LB1.example.net.", "10.1.2.3:" + port, "[2001:db8::1]:" + port, hostname,
	} {
		for _, path := range []string{"/api/v1/status", "/metrics", "/healthz", "/"} {
			if code, body := get(host, path); code != http.StatusOK {
				t.Errorf("Host %q %s: %d %s", host, path, code, body)
			}
		}
	}
	for _, host := range []string{"evil.example.com", "evil.example.com:" + port, "lb1.evil.example.com", "localhost.evil.example.com", "lb10"} {
		for _, path := range []string{"/api/v1/status", "/metrics", "/healthz", "/"} {
			code, body := get(host, path)
			if code != http.StatusForbidden || !strings.Contains(body, "Host") || strings.Contains(body, "lb1") {
				t.Errorf("Host %q %s: %d %q, want 403 naming the Host header and nothing of the node", host, path, code, body)
			}
		}
	}
}
