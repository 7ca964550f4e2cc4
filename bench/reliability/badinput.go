package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-lb/vigil/internal/badinput"
)

// Bounds on one `vigil check` of a broken file.
const (
	checkTimeBound = 2 * time.Second
	checkRSSBound  = 200 << 20 // bytes
)

// badConfigRow runs `vigil check FILE` on every broken config of the
// corpus: exit status 2, the message names the key path and line the
// case wants, within checkTimeBound and checkRSSBound (the child's peak
// RSS, from wait4's rusage). A case with a known gap counts as a failure.
func badConfigRow(ctx context.Context, vigil string) row {
	r := row{scenario: "bad input: broken configs through vigil check",
		goal: fmt.Sprintf("exit 2, key path and line named, < %v and < %d MB RSS each", checkTimeBound, checkRSSBound>>20)}
	cases, err := badinput.Configs()
	if err != nil {
		return r.broken(err)
	}
	dir, err := os.MkdirTemp("", "vigil-badinput-")
	if err != nil {
		return r.broken(err)
	}
	defer os.RemoveAll(dir)
	var slowest time.Duration
	var biggestRSS int64
	var slowName, bigName string
	for _, c := range cases {
		if ctx.Err() != nil {
			return r.broken(ctx.Err())
		}
		r.tries++
		file := filepath.Join(dir, c.Name+".yaml")
		if err := os.WriteFile(file, c.Data, 0o600); err != nil {
			return r.broken(err)
		}
		took, rss, code, out, err := runCheck(ctx, vigil, file)
		if took > slowest {
			slowest, slowName = took, c.Name
		}
		if rss > biggestRSS {
			biggestRSS, bigName = rss, c.Name
		}
		var why []string
		switch {
		case err != nil:
			why = append(why, err.Error())
		case code != 2:
			why = append(why, fmt.Sprintf("exit status %d, want 2", code))
		}
		if err := c.Check(out); err != nil {
			why = append(why, err.Error())
		}
		if took > checkTimeBound {
			why = append(why, fmt.Sprintf("took %v", took.Round(time.Millisecond)))
		}
		if rss > checkRSSBound {
			why = append(why, fmt.Sprintf("peak RSS %d MB", rss>>20))
		}
		if len(why) > 0 {
			r.failures++
			note := fmt.Sprintf("%s: %s", c.Name, strings.Join(why, "; "))
			if c.Gap != "" {
				note += " (known gap: " + c.Gap + ")"
			}
			r.notes = append(r.notes, note)
		}
	}
	r.figure = fmt.Sprintf("%d broken configs (%d files, 3 generated: 1 MB key, 3 MiB file, 5,000-deep nesting); %d refused as wanted; slowest %v (%s), peak RSS %d MB (%s)",
		r.tries, r.tries-3, r.tries-r.failures, slowest.Round(time.Millisecond), slowName, biggestRSS>>20, bigName)
	return r
}

// runCheck runs vigil check on file and returns its wall time, peak RSS
// in bytes, exit status and combined output.
func runCheck(ctx context.Context, vigil, file string) (time.Duration, int64, int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, vigil, "check", file)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	took := time.Since(t0)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return took, 0, -1, out.String(), fmt.Errorf("vigil check: %w", err)
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss << 10 // kilobytes on Linux
	}
	return took, rss, cmd.ProcessState.ExitCode(), out.String(), nil
}

// badKubeRow runs the Kubernetes half of the corpus: the tests that feed
// every broken object to vigil's conversion (internal/kube) and to the
// LoadBalancer allocator (internal/lbsvc), counting their subtests.
func badKubeRow(ctx context.Context) row {
	r := row{scenario: "bad input: broken Kubernetes objects",
		goal: "no panic; each object skipped, or its Service refused with a reason naming the object and field"}
	out, err := goTest(ctx, "-count=1", "-v", "-run", "^TestBrokenKubeCorpus$", "./internal/kube", "./internal/lbsvc")
	pass := regexp.MustCompile(`(?m)^\s*--- PASS: TestBrokenKubeCorpus/(\S+)`).FindAllStringSubmatch(out, -1)
	fail := regexp.MustCompile(`(?m)^\s*--- FAIL: TestBrokenKubeCorpus/(\S+)`).FindAllStringSubmatch(out, -1)
	r.tries = len(pass) + len(fail)
	r.failures = len(fail)
	for _, f := range fail {
		r.notes = append(r.notes, f[1]+" failed")
	}
	if err != nil && len(fail) == 0 {
		lines := strings.Split(strings.TrimSpace(out), "\n")
		return r.broken(fmt.Errorf("go test: %w: %s", err, strings.Join(lines[max(0, len(lines)-6):], " / ")))
	}
	cases, err := badinput.KubeObjects()
	if err != nil {
		return r.broken(err)
	}
	kinds := map[string]int{}
	total := 0
	for _, c := range cases {
		objs, err := c.Objects()
		if err != nil {
			return r.broken(err)
		}
		for _, o := range objs {
			kinds[reflect.TypeOf(o).Elem().Name()]++
			total++
		}
	}
	var per []string
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		per = append(per, fmt.Sprintf("%d %ss", kinds[k], k))
	}
	r.figure = fmt.Sprintf("%d objects in %d files (%s); %d checks (conversion in internal/kube, allocation in internal/lbsvc): %d as wanted",
		total, len(cases), strings.Join(per, ", "), r.tries, r.tries-r.failures)
	return r
}
