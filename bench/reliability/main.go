// Command reliability runs vigil's standing fault, abuse and bad-input
// suite in namespace labs (`make reliability`) and writes one row per
// scenario into docs/reliability.md between its markers: scenario, tries,
// failures, the figure measured, the goal and the command that produced
// it. Rows of scenarios not run keep their last result. Every scenario is
// bounded in count and time and sends only inside the namespaces it made.
// Needs root. -short runs every scenario small enough for CI.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-lb/vigil/internal/benchdoc"
	"github.com/vigil-lb/vigil/internal/netlab"
)

// row is one line of the table.
type row struct {
	scenario        string
	tries, failures int
	figure, goal    string
	notes           []string // what failed, shown under the table
	command         string
	err             error // the scenario could not run
}

func (r row) broken(err error) row { r.err = err; r.failures++; return r }

// scenarios in the table's order: the priority.
var order = []string{"abuse", "flood", "splitbrain", "crash", "reload", "badconfig", "badkube", "security", "fuzz"}

func main() {
	out := flag.String("out", "docs/reliability.md", "markdown file to update")
	short := flag.Bool("short", false, "small counts, for CI (minutes, not tens of minutes)")
	only := flag.String("only", "", "comma-separated scenarios to run ("+strings.Join(order, ",")+"); default all")
	vigil := flag.String("vigil", "", "vigil binary to test (default: built from this tree)")
	label := flag.String("label", "", "appended to each scenario's name, e.g. to record a run of another build")
	fuzzExecs := flag.Int("fuzz-execs", 10_000_000, "executions per fuzz target (-short: at most 10,000)")
	flag.Parse()
	if err := run(*out, *short, *only, *vigil, *label, *fuzzExecs); err != nil {
		fmt.Fprintln(os.Stderr, "bench/reliability:", err)
		os.Exit(1)
	}
}

func run(out string, short bool, only, vigil, label string, fuzzExecs int) error {
	if !netlab.Root() {
		return fmt.Errorf("needs root to build the namespace labs")
	}
	want := order
	if only != "" {
		want = strings.Split(only, ",")
		for _, w := range want {
			if !slices.Contains(order, w) {
				return fmt.Errorf("-only: unknown scenario %q (have %s)", w, strings.Join(order, ","))
			}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if vigil == "" {
		_, bin, cleanup, err := benchdoc.BuildVigil("vigil-reliability-")
		if err != nil {
			return err
		}
		defer cleanup()
		vigil = bin
	}
	args := []string{"go run ./bench/reliability"}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " []") {
			a = fmt.Sprintf("%q", a)
		}
		args = append(args, a)
	}
	cmd := strings.Join(args, " ")
	p := params(short, fuzzExecs)
	started := time.Now()
	var rows []row
	for _, name := range order {
		if !slices.Contains(want, name) || ctx.Err() != nil {
			continue
		}
		t0 := time.Now()
		fmt.Fprintf(os.Stderr, "reliability: %s ...\n", name)
		var r row
		switch name {
		case "abuse":
			r = abuseRow(ctx, vigil, p.abuseCount)
		case "flood":
			r = floodRow(ctx, vigil, p.floodRates, p.floodStep, p.burn)
		case "splitbrain":
			r = splitBrainRow(ctx, vigil, p.splitRounds)
		case "crash":
			r = crashRow(ctx, vigil, p.crashRounds)
		case "reload":
			r = reloadRow(ctx, vigil, p.reloads, p.badReloads)
		case "badconfig":
			r = badConfigRow(ctx, vigil)
		case "badkube":
			r = badKubeRow(ctx)
		case "security":
			r = securityRow(ctx, vigil)
		case "fuzz":
			r = fuzzRow(ctx, p.fuzzExecs)
		}
		r.scenario += label
		r.command = cmd
		fmt.Fprintf(os.Stderr, "reliability: %s: %d tries, %d failures, %s (%v)\n", name, r.tries, r.failures, r.figure, time.Since(t0).Round(time.Second))
		if r.err != nil {
			fmt.Fprintf(os.Stderr, "reliability: %s: %v\n", name, r.err)
		}
		rows = append(rows, r)
	}
	if err := writeTable(out, rows, time.Since(started), short); err != nil {
		return err
	}
	var failed []string
	for _, r := range rows {
		if r.err != nil {
			return fmt.Errorf("%s: %w", r.scenario, r.err)
		}
		if r.failures > 0 {
			failed = append(failed, fmt.Sprintf("%s (%d of %d)", r.scenario, r.failures, r.tries))
		}
	}
	if len(failed) > 0 {
		// The table is written either way; the exit status is CI's.
		return fmt.Errorf("failures in %s (see %s)", strings.Join(failed, "; "), out)
	}
	return nil
}

// counts are each scenario's sizes.
type counts struct {
	abuseCount  int
	floodRates  []int
	floodStep   time.Duration
	burn        int
	splitRounds int
	crashRounds int
	reloads     int // valid reloads; badReloads invalid ones
	badReloads  int
	fuzzExecs   int
}

func params(short bool, fuzzExecs int) counts {
	if short {
		return counts{abuseCount: 20, floodRates: []int{20_000, 100_000}, floodStep: 3 * time.Second, burn: 1,
			splitRounds: 2, crashRounds: 5, reloads: 10, badReloads: 2, fuzzExecs: min(fuzzExecs, 10_000)}
	}
	return counts{abuseCount: 200, floodRates: []int{10_000, 25_000, 50_000, 100_000, 150_000, 200_000, 300_000},
		floodStep: 10 * time.Second, burn: 2, splitRounds: 10, crashRounds: 100, reloads: 100, badReloads: 20, fuzzExecs: fuzzExecs}
}

// writeTable merges rows into the table in out: a scenario's row and its
// notes replace the old ones, the others stay.
func writeTable(out string, rows []row, took time.Duration, short bool) error {
	const name = "reliability"
	old, _ := os.ReadFile(out)
	kept := map[string]string{}        // scenario -> table line
	keptNotes := map[string][]string{} // scenario -> note lines
	var keptOrder []string
	if i, j := strings.Index(string(old), "<!-- "+name+":begin -->"), strings.Index(string(old), "<!-- "+name+":end -->"); i >= 0 && j > i {
		for _, line := range strings.Split(string(old)[i:j], "\n") {
			cells := strings.Split(line, "|")
			switch {
			case strings.HasPrefix(line, "- "):
				for _, k := range keptOrder {
					if strings.HasPrefix(line, "- "+k+": ") {
						keptNotes[k] = append(keptNotes[k], line)
					}
				}
			case len(cells) < 3 || strings.HasPrefix(line, "| scenario") || strings.HasPrefix(line, "|---"):
			default:
				k := strings.TrimSpace(cells[1])
				kept[k] = line
				keptOrder = append(keptOrder, k)
			}
		}
	}
	if len(old) == 0 {
		head := "# Reliability\n\nvigil's standing fault, abuse and bad-input suite (`make reliability`; `make reliability-short` for CI).\n" +
			"The table between the markers is written by bench/reliability; do not edit it by hand.\n"
		if err := os.WriteFile(out, []byte(head), 0o644); err != nil {
			return err
		}
	}
	for _, r := range rows {
		fig := r.figure
		if r.err != nil {
			fig = "could not run: " + r.err.Error()
		}
		kept[r.scenario] = fmt.Sprintf("| %s | %d | %d | %s | %s | `%s` |", r.scenario, r.tries, r.failures, cell(fig), cell(r.goal), r.command)
		if !slices.Contains(keptOrder, r.scenario) {
			keptOrder = append(keptOrder, r.scenario)
		}
		keptNotes[r.scenario] = nil
		for _, n := range r.notes {
			keptNotes[r.scenario] = append(keptNotes[r.scenario], fmt.Sprintf("- %s: %s", r.scenario, n))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Last run %s on %s, load average %s; it took %v%s and wrote the rows it names in its command.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), benchdoc.Machine(), benchdoc.LoadAverage(), took.Round(time.Second),
		map[bool]string{true: " (short mode)"}[short])
	b.WriteString("| scenario | tries | failures | figure | goal | command |\n|---|---|---|---|---|---|\n")
	var notes []string
	for _, k := range keptOrder {
		b.WriteString(kept[k] + "\n")
		notes = append(notes, keptNotes[k]...)
	}
	if len(notes) > 0 {
		b.WriteString("\nFailures and notes:\n\n" + strings.Join(notes, "\n") + "\n")
	}
	return benchdoc.WriteSection(out, name, "Results", b.String())
}

func cell(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

// goTest runs go test with args and returns its combined output. An end
// of ctx kills its whole process group: the test binary and its fuzz
// workers too, which would otherwise outlive the go command.
func goTest(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", append([]string{"test"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}
