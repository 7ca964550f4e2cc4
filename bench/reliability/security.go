package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/vrrplab"
)

// The secrets the security lab configures; none may show in any output.
const (
	secretVRRP = "Pw4Vrrp!"        // vrrp auth_pass (v2, at most 8 bytes)
	secretBGP  = "BgpS3cretPw-77"  // bgp neighbor password (TCP MD5)
	secretKube = "kT0ken-5ecret-9" // the kubeconfig's bearer token
)

// securityUnitTests are the unit and integration tests of the review's
// items that the row runs as they are: package, -run pattern, item.
var securityUnitTests = [][3]string{
	{"./internal/api", "^(TestServer|TestStaleSocketIsReplaced|TestListenRefusesWhatIsNotASocket)$", "control socket mode 0600, stale socket replaced, a file that is not a socket refused"},
	{"./internal/api", "^TestHTTPAnswersOnlyItsOwnHostNames$", "HTTP Host header check (DNS rebinding)"},
	{"./internal/config", "^TestAPISocketThatIsNotASocket$", "api.socket naming a regular file refused by vigil check"},
	{"./internal/vrrp", "^(TestAcceptDropReasons|TestSetPeersOnAMaster|TestSetPeersOnABackup)$", "TTL other than 255 dropped; adverts from non-peers dropped as unknown_peer"},
	{"./internal/bgp", "^TestImportRejectsEveryRoute$", "BGP accepts no routes (import policy)"},
	{"./internal/e2e", "^TestBGPRejectsRoutesFromFRR$", "BGP accepts no routes from a real FRR peer"},
}

// securityRow checks the security review's items: on a live two-node lab
// (VRRPv2 with auth_pass, unicast peers, a BGP neighbor with a password, a
// kubeconfig with a token) and by running the items' own tests. One try
// per check.
func securityRow(ctx context.Context, vigil string) row {
	r := row{scenario: "security review items",
		goal: "socket 0600, stale socket replaced and live or non-socket files left alone, foreign Host 403, no secret in any output, adverts with TTL 255, non-peer adverts dropped, no BGP route accepted"}
	var passed []string
	check := func(name string, err error) {
		r.tries++
		if err != nil {
			r.failures++
			r.notes = append(r.notes, name+": "+strings.Join(strings.Fields(err.Error()), " "))
			return
		}
		passed = append(passed, name)
	}
	for _, t := range securityUnitTests {
		if ctx.Err() != nil {
			return r.broken(ctx.Err())
		}
		out, err := goTest(ctx, "-count=1", "-run", t[1], t[0])
		if err == nil && strings.Contains(out, "no tests to run") {
			err = errors.New("no test matched " + t[1])
		}
		if err != nil {
			// From the first failure or panic, not the goroutine dump's tail.
			lines := strings.Split(strings.TrimSpace(out), "\n")
			first := slices.IndexFunc(lines, func(l string) bool {
				return strings.Contains(l, "--- FAIL") || strings.HasPrefix(l, "panic:") || strings.Contains(l, "_test.go:")
			})
			first = max(first, 0)
			err = fmt.Errorf("go test -run '%s' %s: %w: %s", t[1], t[0], err, strings.Join(lines[first:min(len(lines), first+8)], " / "))
		}
		check("test: "+t[2], err)
	}
	if err := securityLab(ctx, vigil, check); err != nil {
		return r.broken(err)
	}
	r.figure = fmt.Sprintf("%d checks (%d tests run as they are, %d on a live lab), %d passed", r.tries, len(securityUnitTests), r.tries-len(securityUnitTests), r.tries-r.failures)
	return r
}

// securityLab builds the live lab and runs its checks.
func securityLab(ctx context.Context, vigil string, check func(string, error)) error {
	dir, err := os.MkdirTemp("", "vigil-security-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	spec := vrrplab.Spec{Version: 2, Interval: time.Second, VRID: 61, VIP: netip.MustParsePrefix("10.77.0.10/32"),
		AuthPass: secretVRRP, Unicast: true}
	for i, name := range []string{"lb1", "lb2"} {
		top := fmt.Sprintf("bgp:\n  asn: 64512\n  router_id: 10.77.0.%d\n  neighbors: [{address: 10.77.0.250, asn: 64500, password: %q}]\n", 11+i, secretBGP) +
			fmt.Sprintf("kubernetes: {kubeconfig: %q}\n", kubeconfig)
		// Tracking a Service's endpoints makes vigil read the cluster.
		inst := "      track: {endpoints: [{service: default/web, weight: 10}]}\n"
		spec.Nodes = append(spec.Nodes, vrrplab.NodeSpec{Name: name, Impl: vrrplab.Vigil, Priority: 200 - 50*i, TopYAML: top, InstanceYAML: inst})
	}
	c, err := vrrplab.Build(spec, vigil, dir)
	if err != nil {
		return err
	}
	defer c.Close()
	l := &lab{Cluster: c, dir: dir, bin: vigil}
	// lb1's API server: TLS on its own loopback, refusing every request
	// after noting that the token came with it (the secret was in use).
	var tokenSeen atomic.Bool
	apiServer := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer "+secretKube {
			tokenSeen.Store(true)
		}
		http.Error(w, "the security lab serves nothing", http.StatusServiceUnavailable)
	}))
	ln, err := c.Node("lb1").Host.Listen("tcp4", "127.0.0.1:6443")
	if err != nil {
		return err
	}
	apiServer.Listener.Close()
	apiServer.Listener = ln
	apiServer.StartTLS()
	defer apiServer.Close()
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: %q}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, secretKube)
	if err := os.WriteFile(kubeconfig, []byte(kc), 0o600); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := n.Start(); err != nil {
			return err
		}
	}
	if err := c.WaitOwner(ctx, "lb1", 15*time.Second); err != nil {
		return fmt.Errorf("%w\n%s", err, c.Node("lb1").Log())
	}
	if err := l.waitStates(ctx, 15*time.Second); err != nil {
		return err
	}
	lb1, lb2 := c.Node("lb1"), c.Node("lb2")

	check("live: control socket mode 0600", func() error {
		fi, err := os.Stat(lb1.Socket())
		if err != nil {
			return err
		}
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			return fmt.Errorf("%s is %v, want a socket of mode 0600", lb1.Socket(), fi.Mode())
		}
		return nil
	}())

	check("live: adverts sent with TTL 255", advertTTLs(ctx, lb2, lb1.Host.Addr(false), 3))

	check("live: adverts from a non-peer dropped as unknown_peer", func() error {
		before, tr := l.instance(lb1), l.transitions()
		s, err := newRawSender(c.Client)
		if err != nil {
			return err
		}
		defer s.Close()
		src, dst := c.Client.Addr(false), lb1.Host.Addr(false)
		const n = 20
		for range n {
			if err := s.send(ipPacket(src, dst, 255, advertTo(2, 61, 254, []netip.Addr{spec.VIP.Addr()}, src, dst))); err != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Second)
		after := l.instance(lb1)
		if d := after.Drops["unknown_peer"] - before.Drops["unknown_peer"]; d != n {
			return fmt.Errorf("%d of %d counted as unknown_peer (drops %v)", d, n, after.Drops)
		}
		if !slices.Equal(tr, l.transitions()) || after.State != "MASTER" {
			return fmt.Errorf("state changed: transitions %v -> %v, lb1 %s", tr, l.transitions(), after.State)
		}
		return nil
	}())

	// HTTP on lb1's own loopback (api.http's default), dialled in its namespace.
	get := func(path, host string) (int, string, error) {
		cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return lb1.Host.Dial(ctx, network, addr)
			}}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:9110"+path, nil)
		if err != nil {
			return 0, "", err
		}
		if host != "" {
			req.Host = host
		}
		resp, err := cl.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		return resp.StatusCode, string(b), err
	}
	check("live: HTTP refuses a foreign Host (DNS rebinding)", func() error {
		code, _, err := get("/api/v1/status", "evil.example.com")
		if err != nil || code != http.StatusForbidden {
			return fmt.Errorf("Host evil.example.com: status %d, %v; want 403", code, err)
		}
		code, _, err = get("/api/v1/status", "")
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("Host 127.0.0.1:9110: status %d, %v; want 200", code, err)
		}
		return nil
	}())

	// Every output, after the daemon has run a while with the secrets.
	outputs := map[string]func() (string, error){}
	for _, p := range []string{"/metrics", "/api/v1/status", "/api/v1/history", "/"} {
		outputs["HTTP "+p] = func() (string, error) {
			code, body, err := get(p, "")
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("status %d", code)
			}
			return body, err
		}
	}
	for _, args := range [][]string{{"status", "-o", "json"}, {"status"}} {
		outputs["vigil "+strings.Join(args, " ")] = func() (string, error) {
			out, err := exec.CommandContext(ctx, vigil, append(args, "--socket", lb1.Socket())...).CombinedOutput()
			return string(out), err
		}
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range outputs {
			if !yield(k) {
				return
			}
		}
	})
	for _, name := range names {
		out, err := outputs[name]()
		if err == nil {
			err = noSecret(out)
		}
		check("live: no secret in "+name, err)
	}

	check("live: a stale socket is replaced at start", func() error {
		if err := lb2.Kill(syscall.SIGKILL); err != nil {
			return err
		}
		_, _ = lb2.Proc.Wait(5 * time.Second)
		if fi, err := os.Stat(lb2.Socket()); err != nil || fi.Mode().Type() != os.ModeSocket {
			return fmt.Errorf("after kill -9 the socket is not left behind (%v): nothing to test", err)
		}
		if err := lb2.Start(); err != nil {
			return err
		}
		return l.waitStates(ctx, 15*time.Second)
	}())

	check("live: a second daemon on a live socket is refused, the first keeps it", func() error {
		out, err := runBounded(lb1.Host, 15*time.Second, vigil, "run", "-c", lb1.Config)
		if err == nil {
			return fmt.Errorf("a second vigil run on lb1's socket exited 0: %s", out)
		}
		if !strings.Contains(out, lb1.Socket()) {
			return fmt.Errorf("the refusal does not name the socket %s: %s", lb1.Socket(), out)
		}
		if _, err := l.status(lb1); err != nil {
			return fmt.Errorf("lb1 no longer answers on its socket: %w", err)
		}
		return nil
	}())

	check("live: api.socket naming a regular file: vigil run refuses, the file is left", func() error {
		victim := filepath.Join(dir, "precious.yaml")
		const content = "do not delete\n"
		if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
			return err
		}
		cfg, err := os.ReadFile(lb1.Config)
		if err != nil {
			return err
		}
		bad := regexp.MustCompile(`(?m)^api: \{socket: .*\}$`).ReplaceAllString(string(cfg), fmt.Sprintf("api: {socket: %q, http: \"\"}", victim))
		badPath := filepath.Join(dir, "bad-socket.yaml")
		if err := os.WriteFile(badPath, []byte(bad), 0o600); err != nil {
			return err
		}
		out, err := runBounded(lb1.Host, 15*time.Second, vigil, "run", "-c", badPath)
		if err == nil {
			return fmt.Errorf("vigil run exited 0: %s", out)
		}
		if b, err := os.ReadFile(victim); err != nil || string(b) != content {
			return fmt.Errorf("the regular file was changed or removed: %q, %v", b, err)
		}
		if !strings.Contains(out, "api.socket") {
			return fmt.Errorf("the refusal does not name api.socket: %s", out)
		}
		return nil
	}())

	// Logs last: everything above has been logged by then.
	logs := ""
	for _, n := range c.Nodes {
		b, err := os.ReadFile(n.LogPath)
		if err != nil {
			check("live: no secret in the logs", err)
			return nil
		}
		logs += string(b)
	}
	err = noSecret(logs)
	// The secrets were in use: the logs show the BGP neighbor being
	// tried, and lb1's API server saw the token.
	switch {
	case err != nil:
	case !strings.Contains(logs, "10.77.0.250"):
		err = errors.New("the logs never mention the BGP neighbor 10.77.0.250: was its password in use?")
	case !tokenSeen.Load():
		var kl []string
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, "kubernetes") {
				kl = append(kl, line)
			}
		}
		err = fmt.Errorf("lb1's API server never saw the token: was it in use? (the logs on kubernetes: %s)", strings.Join(kl[:min(len(kl), 4)], " / "))
	}
	check(fmt.Sprintf("live: no secret in the logs (debug level, %d KiB)", len(logs)>>10), err)
	return nil
}

// noSecret fails if out holds any configured secret.
func noSecret(out string) error {
	for _, s := range []string{secretVRRP, secretBGP, secretKube} {
		if strings.Contains(out, s) {
			i := strings.Index(out, s)
			return fmt.Errorf("%q found: ...%s...", s, out[max(0, i-80):min(len(out), i+len(s)+20)])
		}
	}
	return nil
}

// runBounded runs a command on h, killed after d, and returns its output.
func runBounded(h *netlab.Host, d time.Duration, name string, args ...string) (string, error) {
	f, err := os.CreateTemp("", "vigil-security-out-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	p, err := h.Start(cmd)
	if err != nil {
		return "", err
	}
	done, err := p.Wait(d)
	if !done {
		p.Kill()
		err = fmt.Errorf("still running after %v", d)
	}
	out, _ := os.ReadFile(f.Name())
	return string(out), err
}

// advertTTLs reads n adverts from src on h (a raw socket for protocol
// 112 in h's namespace) and checks each IP header's TTL is 255.
func advertTTLs(ctx context.Context, n *vrrplab.Node, src netip.Addr, count int) error {
	var fd int
	err := n.Host.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 112)
		return err
	})
	if err != nil {
		return fmt.Errorf("raw socket on %s: %w", n.Name, err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
		return err
	}
	buf := make([]byte, 2048)
	var ttls []int
	for end := time.Now().Add(10 * time.Second); len(ttls) < count && time.Now().Before(end) && ctx.Err() == nil; {
		m, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue // the 1 s timeout; the loop's deadline bounds it
		}
		if m < 20 || netip.AddrFrom4([4]byte(buf[12:16])) != src {
			continue
		}
		ttls = append(ttls, int(buf[8]))
	}
	if len(ttls) < count {
		return fmt.Errorf("%d adverts from %s in 10 s, want %d", len(ttls), src, count)
	}
	for _, t := range ttls {
		if t != 255 {
			return fmt.Errorf("adverts from %s had TTLs %v, want 255", src, ttls)
		}
	}
	return nil
}
