// Package benchdoc writes benchmark tables into docs/benchmarks.md between
// per-benchmark markers, so each benchmark command owns its section, and
// holds the small statistics the benchmark drivers share.
package benchdoc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// WriteSection replaces the section between the markers of name, or appends
// it under title when the file has no such section yet.
func WriteSection(path, name, title, body string) error {
	begin, end := "<!-- "+name+":begin -->", "<!-- "+name+":end -->"
	old, _ := os.ReadFile(path)
	s := string(old)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	block := begin + "\n" + body + end
	if i < 0 || j < i {
		if s == "" {
			s = "# Benchmarks\n\nTables between markers are written by the benchmark commands; do not edit them by hand.\n"
		}
		s += "\n## " + title + "\n\n" + block + "\n"
	} else {
		s = s[:i] + block + s[j+len(end):]
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// Median of a non-empty sample.
func Median[T int | int64 | float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// BuildVigil builds the vigil binary (without -race) into a new temporary
// directory and returns the directory, the binary and how to remove them.
func BuildVigil(prefix string) (dir, bin string, cleanup func(), err error) {
	dir, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	bin = filepath.Join(dir, "vigil")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/vigil").CombinedOutput(); err != nil {
		cleanup()
		return "", "", nil, fmt.Errorf("build vigil: %v\n%s", err, out)
	}
	return dir, bin, cleanup, nil
}

// Machine names the machine a table was measured on: cores, CPU model,
// kernel.
func Machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%d cores (%s), Linux %s", runtime.NumCPU(), model, strings.TrimSpace(string(kernel)))
}

// LoadAverage is the one-minute load average, to say how busy a shared
// machine was when a table was measured.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "unknown"
}
