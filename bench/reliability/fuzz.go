package main

import (
	"context"
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"
	"time"
)

// fuzzTargets reads the fuzz targets from the Makefile's fuzz rule, so the
// suite runs every target `make fuzz` knows and no list is kept twice.
func fuzzTargets() ([][2]string, error) {
	b, err := os.ReadFile("Makefile")
	if err != nil {
		return nil, err
	}
	re := regexp.MustCompile(`-fuzz '\^(\w+)\$\$' .*?(\./\S+)`)
	var out [][2]string
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		out = append(out, [2]string{m[1], m[2]})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no fuzz targets found in the Makefile's fuzz rule")
	}
	return out, nil
}

// fuzzRow runs every fuzz target for execs executions each.
func fuzzRow(ctx context.Context, execs int) row {
	r := row{scenario: "fuzzing, every target", goal: "no crasher"}
	targets, err := fuzzTargets()
	if err != nil {
		return r.broken(err)
	}
	var rates []string
	for _, t := range targets {
		if ctx.Err() != nil {
			return r.broken(ctx.Err())
		}
		r.tries++
		t0 := time.Now()
		// go test's default 10-minute timeout would end a long run as a
		// failure; 3 hours still bounds a target that hangs.
		out, err := goTest(ctx, "-run", "^$", "-timeout", "3h", "-fuzz", "^"+t[0]+"$", "-fuzztime", fmt.Sprintf("%dx", execs), t[1])
		took := time.Since(t0)
		if err != nil {
			r.failures++
			lines := strings.Split(strings.TrimSpace(out), "\n")
			r.notes = append(r.notes, fmt.Sprintf("%s %s: %v: %s", t[1], t[0], err, strings.Join(lines[:min(len(lines), 6)], " / ")))
			continue
		}
		rates = append(rates, fmt.Sprintf("%s.%s %.0f/s", path.Base(t[1]), t[0], float64(execs)/took.Seconds()))
	}
	r.figure = fmt.Sprintf("%d targets × %d executions, crashers %d; execs/s incl. start-up: %s", r.tries, execs, r.failures, strings.Join(rates, ", "))
	return r
}
