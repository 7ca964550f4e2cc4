package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
)

// reloadRow runs a balancer over three HTTP backends under a steady load
// (a new connection per request, paced, bounded in count) and reloads it
// valid times, changing its backends each time, and invalid times with a
// broken file, which must be refused with the old config kept. Goal: no
// failed request.
func reloadRow(ctx context.Context, vigil string, valid, invalid int) row {
	r := row{scenario: "reload under load: backend changes and invalid files",
		goal: "0 failed requests; every valid reload applied, every invalid one refused"}
	lab, err := netlab.New()
	if err != nil {
		return r.broken(err)
	}
	defer lab.Close()
	dir, err := os.MkdirTemp("", "vigil-reliability-reload-")
	if err != nil {
		return r.broken(err)
	}
	defer os.RemoveAll(dir)
	lb, err := lab.AddHost("lb", netip.MustParsePrefix("10.78.0.1/24"))
	if err != nil {
		return r.broken(err)
	}
	client, err := lab.AddHost("client", netip.MustParsePrefix("10.78.0.100/24"))
	if err != nil {
		return r.broken(err)
	}
	var backends []string
	for i := range 3 {
		name := fmt.Sprintf("be%d", i+1)
		h, err := lab.AddHost(name, netip.MustParsePrefix(fmt.Sprintf("10.78.0.%d/24", 11+i)))
		if err != nil {
			return r.broken(err)
		}
		l, err := h.Listen("tcp4", "0.0.0.0:8080")
		if err != nil {
			return r.broken(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }),
			ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(l)
		defer srv.Close()
		backends = append(backends, h.Addr(false).String()+":8080")
	}
	cfgPath, sock := filepath.Join(dir, "vigil.yaml"), filepath.Join(dir, "vigil.sock")
	write := func(set []string, broken bool) error {
		var b strings.Builder
		fmt.Fprintf(&b, "api: {socket: %q}\nbalancers:\n  - name: web\n    listen: [\"10.78.0.1:9445\"]\n    drain_timeout: 2s\n    backends:\n", sock)
		for _, be := range set {
			fmt.Fprintf(&b, "      - {address: %q}\n", be)
		}
		if broken {
			b.WriteString("    no_such_key: 1\n")
		}
		return os.WriteFile(cfgPath, []byte(b.String()), 0o644)
	}
	if err := write(backends, false); err != nil {
		return r.broken(err)
	}
	logf, err := os.Create(filepath.Join(dir, "vigil.log"))
	if err != nil {
		return r.broken(err)
	}
	defer logf.Close()
	cmd := exec.Command(vigil, "run", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	proc, err := lb.Start(cmd)
	if err != nil {
		return r.broken(err)
	}
	defer func() { _ = proc.Signal(syscall.SIGTERM); _, _ = proc.Wait(5 * time.Second); proc.Kill() }()

	dialer := client.Dialer(8)
	defer dialer.Close()
	httpc := dialer.HTTPClient(3 * time.Second)
	get := func() error {
		resp, err := httpc.Get("http://10.78.0.1:9445/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	up := false
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if get() == nil {
			up = true
			break
		}
	}
	if !up {
		return r.broken(errors.New("the balancer did not answer within 10s"))
	}

	// The load: two clients, a request every 2 ms each, until the reloads
	// are done (at most 10 minutes).
	loadCtx, stopLoad := context.WithTimeout(ctx, 10*time.Minute)
	var (
		wg             sync.WaitGroup
		mu             sync.Mutex
		requests, fail int
		firstErr       error
	)
	for range 2 {
		wg.Go(func() {
			for loadCtx.Err() == nil {
				err := get()
				mu.Lock()
				requests++
				if err != nil && loadCtx.Err() == nil {
					fail++
					firstErr = cmp(firstErr, err)
				}
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	sets := [][]string{{backends[0], backends[1]}, {backends[1], backends[2]}, {backends[0], backends[2]}, backends}
	applied, refused := 0, 0
	every := max(valid/max(invalid, 1), 1)
	for i := 0; i < valid+invalid && ctx.Err() == nil; i++ {
		broken := invalid > refused && i%(every+1) == every
		set := sets[i%len(sets)]
		if err := write(set, broken); err != nil {
			stopLoad()
			wg.Wait()
			return r.broken(err)
		}
		out, err := exec.CommandContext(ctx, vigil, "reload", "--socket", sock).CombinedOutput()
		switch {
		case broken && err != nil:
			refused++
		case !broken && err == nil:
			applied++
		default:
			r.notes = append(r.notes, fmt.Sprintf("reload %d (invalid %v): %v: %s", i+1, broken, err, strings.TrimSpace(string(out))))
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopLoad()
	wg.Wait()
	r.tries = applied + refused + len(r.notes)
	r.failures = fail + len(r.notes)
	if firstErr != nil {
		r.notes = append(r.notes, fmt.Sprintf("%d failed requests, the first: %v", fail, firstErr))
	}
	r.figure = fmt.Sprintf("%d requests (a new connection each) through %d valid reloads (applied %d) and %d invalid (refused %d): %d failed",
		requests, valid, applied, invalid, refused, fail)
	return r
}

// cmp keeps the first error.
func cmp(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
