package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/proxyproto"
)

// PROXY protocol against a real HAProxy, both ways, on one host's loopback:
// vigil sends v1 and v2 to HAProxy frontends with accept-proxy, which echo
// the client address they were told; HAProxy sends v2 (send-proxy-v2) to a
// vigil frontend with accept_proxy, which passes the address on as v1 to a
// backend that reads it.
func TestProxyProtocolWithHAProxy(t *testing.T) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Fatal("haproxy is not installed (make deps installs it)")
	}
	h := oneHost(t)
	dir := t.TempDir()
	hcfg := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(hcfg, []byte(`defaults
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend echo
    mode http
    bind 127.0.0.1:7001 accept-proxy
    http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port]"
listen to_vigil
    mode tcp
    bind 127.0.0.1:7002
    server v 127.0.0.1:7102 send-proxy-v2
`), 0o644)
	vcfg := filepath.Join(dir, "vigil.yaml")
	os.WriteFile(vcfg, []byte(`api: {socket: "`+filepath.Join(dir, "vigil.sock")+`"}
balancers:
  - {name: v1, listen: ["127.0.0.1:7101"], proxy_protocol: v1, backends: [{address: "127.0.0.1:7001"}]}
  - {name: v2, listen: ["127.0.0.1:7103"], proxy_protocol: v2, backends: [{address: "127.0.0.1:7001"}]}
  - {name: in, listen: ["127.0.0.1:7102"], accept_proxy: true, proxy_protocol: v1, backends: [{address: "127.0.0.1:7200"}]}
`), 0o644)
	// The backend behind the "in" balancer answers with the PROXY header it got.
	l, err := h.Listen("tcp4", "127.0.0.1:7200")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	netlab.Serve(l, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		hdr, _, err := proxyproto.Read(c)
		if err != nil {
			fmt.Fprintf(c, "error: %v", err)
			return
		}
		fmt.Fprintf(c, "%s", hdr.Src)
	})
	var hlog, vlog strings.Builder
	hp := exec.Command("haproxy", "-f", hcfg, "-db")
	hp.Stdout, hp.Stderr = &hlog, &hlog
	if _, err := h.Start(hp); err != nil {
		t.Fatal(err)
	}
	vg := exec.Command(vigilBin, "run", "-c", vcfg, "--pid-file", filepath.Join(dir, "pid"))
	vg.Stderr = &vlog
	if _, err := h.Start(vg); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("haproxy:\n%s\nvigil:\n%s", hlog.String(), vlog.String())
		}
	}()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) { return h.Dial(ctx, network, addr) }
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dial}}
	var local string
	client.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err == nil {
			local = c.LocalAddr().String()
		}
		return c, err
	}
	for _, port := range []string{"7101", "7103"} {
		var got string
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := client.Get("http://127.0.0.1:" + port + "/")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got = string(b)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no answer through vigil on %s: %v", port, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if got != local {
			t.Fatalf("HAProxy behind vigil (%s) saw the client as %q, want %q", port, got, local)
		}
	}
	// HAProxy -> vigil (accept_proxy) -> backend.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := h.Dial(ctx, "tcp4", "127.0.0.1:7002")
		cancel()
		if err == nil {
			c.SetDeadline(time.Now().Add(3 * time.Second))
			b, _ := io.ReadAll(c)
			c.Close()
			if string(b) == c.LocalAddr().String() {
				return
			}
			if len(b) > 0 {
				t.Fatalf("backend behind HAProxy and vigil saw %q, want %q", b, c.LocalAddr())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer through HAProxy and vigil: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
