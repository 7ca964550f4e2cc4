package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fdChildEnv carries the child's work: "FRONT BACKEND1 BACKEND2 SPARE".
const fdChildEnv = "VIGIL_TEST_FD_CHILD"

// fdReport is what the child tells the parent, one JSON line per ask.
type fdReport struct {
	Status Status
	Warns  int64
}

// With its descriptors exhausted (prlimit --nofile=1024 and 3,000
// connections in issue 23), the proxy's socket() for the backend failed
// with EMFILE and was counted as a connect error of every healthy backend
// and as no_backend, and the accept warning was logged 166 times in 8 s.
// A child process (the test binary again) runs a balancer under a low
// RLIMIT_NOFILE; the parent holds connections to it until it runs out.
// Each session takes two descriptors, so the spare descriptors' parity
// decides where it runs out: with one parity the last goes to an accept and
// the backend socket() fails, with the other accept() fails. Which parity
// is which depends on what else the process holds, so it runs with both.
func TestOutOfDescriptorsIsNotBlamedOnBackends(t *testing.T) {
	if os.Getenv(fdChildEnv) != "" {
		fdChild(t)
		return
	}
	var sawAccept, sawConnect bool
	for _, spare := range []int{20, 21} {
		t.Run(fmt.Sprintf("%d spare descriptors", spare), func(t *testing.T) {
			s1, s2 := newServer(t, "s1", false), newServer(t, "s2", false)
			front := freeAddr(t)
			cmd := exec.Command(os.Args[0], "-test.run=^TestOutOfDescriptorsIsNotBlamedOnBackends$", "-test.count=1")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %d", fdChildEnv, front, s1.addr(), s2.addr(), spare))
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				stdin.Close()
				cmd.Wait()
				if t.Failed() {
					t.Logf("child stderr:\n%s", stderr.String())
				}
			}()
			out := bufio.NewReader(stdout)
			if line, err := out.ReadString('\n'); err != nil || line != "ready\n" {
				t.Fatalf("child: %q %v\n%s", line, err, stderr.String())
			}
			ask := func() fdReport {
				t.Helper()
				fmt.Fprintln(stdin, "report")
				line, err := out.ReadString('\n')
				var r fdReport
				if err != nil || json.Unmarshal([]byte(line), &r) != nil {
					t.Fatalf("child report %q: %v\n%s", line, err, stderr.String())
				}
				return r
			}

			// Three times the connections the spare descriptors can serve,
			// held open; the kernel queues those not accepted.
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for range 3 * spare / 2 {
				c, err := net.DialTimeout("tcp", front, 5*time.Second)
				if err != nil {
					continue // reset: closed for want of a descriptor already
				}
				conns = append(conns, c)
			}
			var r fdReport
			for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
				if r = ask(); r.Status.FDExhaustedAccept+r.Status.FDExhaustedConnect > 0 {
					break
				}
			}
			st := r.Status
			t.Logf("accepted %d, fd exhausted: accept %d, connect %d; no backend %d; warnings %d",
				st.Accepted, st.FDExhaustedAccept, st.FDExhaustedConnect, st.NoBackend, r.Warns)
			if st.FDExhaustedAccept+st.FDExhaustedConnect == 0 {
				t.Errorf("the child never ran out of descriptors (or did not count it): %+v", st)
			}
			sawAccept = sawAccept || st.FDExhaustedAccept > 0
			sawConnect = sawConnect || st.FDExhaustedConnect > 0
			for _, be := range st.Backends {
				if be.ConnectErrors != 0 || !be.Up {
					t.Errorf("backend %s blamed for the node's limit: %+v", be.Address, be)
				}
			}
			if st.NoBackend != 0 {
				t.Errorf("no_backend %d: the backends were there", st.NoBackend)
			}
			if r.Warns > 2 {
				t.Errorf("%d warnings in a few seconds; want one, at most one more per %v", r.Warns, exhaustLogInterval)
			}

			// Descriptors come back as connections close: a new one is
			// served, by a backend.
			for _, c := range conns {
				c.Close()
			}
			conns = nil
			var name string
			for end := time.Now().Add(20 * time.Second); name == "" && time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
				var c net.Conn
				if name, c = greet(t, front); c != nil {
					c.Close()
				}
			}
			if name != "s1" && name != "s2" {
				t.Fatalf("no backend answered once descriptors were free: %q", name)
			}
		})
	}
	if !t.Failed() && (!sawAccept || !sawConnect) {
		t.Fatalf("ran out in accept %v, in the backend socket() %v: want both", sawAccept, sawConnect)
	}
}

// fdChild is the child's side: a balancer whose process has only SPARE
// descriptors left, reporting its status on each line read from stdin.
func fdChild(t *testing.T) {
	f := strings.Fields(os.Getenv(fdChildEnv))
	spare, _ := strconv.Atoi(f[3])
	var warns atomic.Int64
	log := slog.New(warnCounter{&warns, slog.NewTextHandler(os.Stderr, nil)})
	loops, err := NewLoops(1, log)
	if err != nil {
		t.Fatal(err)
	}
	defer loops.Close()
	b, err := New(balancerConfig(t, "listen: ["+f[0]+"]\n"+backendList(f[1], f[2])), loops, log)
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	defer b.Shutdown(t.Context())
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	open := uint64(len(ents) - 1) // the directory's own
	var lim unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	lim.Cur = open + uint64(spare)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		line, _ := json.Marshal(fdReport{Status: b.Status(), Warns: warns.Load()})
		fmt.Printf("%s\n", line)
	}
	io.Copy(io.Discard, os.Stdin)
}

// warnCounter counts the WARN records it passes on.
type warnCounter struct {
	n *atomic.Int64
	slog.Handler
}

func (w warnCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		w.n.Add(1)
	}
	return w.Handler.Handle(ctx, r)
}

func (w warnCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return warnCounter{w.n, w.Handler.WithAttrs(as)}
}
