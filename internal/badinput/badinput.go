// Package badinput is vigil's corpus of broken input: config files that
// `vigil check` must refuse with exit status 2, naming the key path and
// the line, in bounded time and memory; and Kubernetes objects that the
// conversion into vigil's view and the LoadBalancer allocator must skip or
// refuse with a reason naming the object and field, never panicking. The
// corpus lives in testdata as files (embedded here) plus a few generated
// cases too big to keep in git. The config package's test and the
// reliability suite (bench/reliability) both run it.
package badinput

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
)

//go:embed testdata/configs testdata/kube
var files embed.FS

// Marker ends the line a case's error must name: "(line N)" in the message,
// N being the marker's line.
const Marker = "#<"

// Case is one broken input and what its error must say.
type Case struct {
	Name string
	Data []byte
	// Want are substrings the error must contain: the key path from the
	// file's "# want:" lines, and "(line N)" for the marker's line.
	Want []string
	// Gap, from a "# gap:" line, says why vigil does not yet do what the
	// case wants: the test skips the case while it fails so, and fails
	// once it passes (remove the line then); the reliability row counts
	// it as a failure.
	Gap string
}

// Check returns an error unless msg says everything c wants.
func (c Case) Check(msg string) error {
	var missing []string
	for _, w := range c.Want {
		if !strings.Contains(msg, w) {
			missing = append(missing, fmt.Sprintf("%q", w))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the message lacks %s: %s", strings.Join(missing, ", "), strings.Join(strings.Fields(msg), " "))
	}
	return nil
}

// Configs returns the broken config files of testdata/configs and the
// generated ones, sorted by name.
func Configs() ([]Case, error) {
	out, err := read("testdata/configs", ".yaml")
	if err != nil {
		return nil, err
	}
	return append(out, generatedConfigs()...), nil
}

// KubeObjects returns the broken Kubernetes object files of testdata/kube
// (YAML, one or more documents each), sorted by name. Their Want are the
// "# want:" lines, "PACKAGE NAMESPACE/NAME EXPECTATION": the test of
// PACKAGE (kube: the conversion into vigil's view; lbsvc: the allocator)
// reads those for it with Expectations.
func KubeObjects() ([]Case, error) { return read("testdata/kube", ".yaml") }

// Expectation is one "# want:" line of a Kubernetes object case.
type Expectation struct {
	Object string // NAMESPACE/NAME, or NAME for a cluster-scoped object
	Want   string // the rest of the line
}

// Expectations returns c's expectations for package pkg.
func (c Case) Expectations(pkg string) []Expectation {
	var out []Expectation
	for _, w := range c.Want {
		rest, ok := strings.CutPrefix(w, pkg+" ")
		if !ok {
			continue
		}
		obj, want, _ := strings.Cut(rest, " ")
		out = append(out, Expectation{Object: obj, Want: want})
	}
	return out
}

// Documents splits c's data into its YAML documents.
func (c Case) Documents() [][]byte {
	var out [][]byte
	for _, d := range bytes.Split(c.Data, []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			out = append(out, d)
		}
	}
	return out
}

func read(dir, ext string) ([]Case, error) {
	ents, err := fs.ReadDir(files, dir)
	if err != nil {
		return nil, err
	}
	var out []Case
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ext) {
			continue
		}
		data, err := files.ReadFile(path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		c := Case{Name: strings.TrimSuffix(e.Name(), ext), Data: data}
		for i, line := range bytes.Split(data, []byte("\n")) {
			if w, ok := bytes.CutPrefix(line, []byte("# want: ")); ok {
				c.Want = append(c.Want, string(bytes.TrimSpace(w)))
			}
			if g, ok := bytes.CutPrefix(line, []byte("# gap: ")); ok {
				c.Gap = string(bytes.TrimSpace(g))
			}
			if bytes.HasSuffix(bytes.TrimRight(line, " "), []byte(Marker)) {
				c.Want = append(c.Want, fmt.Sprintf("(line %d)", i+1))
			}
		}
		if len(c.Want) == 0 {
			return nil, fmt.Errorf("%s/%s: no \"# want:\" line and no %s marker: what would the test check?", dir, e.Name(), Marker)
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// generatedConfigs are the cases too big to keep as files: a key of 1 MB,
// a file beyond the 2 MiB limit made of valid YAML, and nesting deep
// enough to hurt a recursive parser; and the start of an executable, which
// the repository's check for committed binaries would take for one.
func generatedConfigs() []Case {
	key := "cluster: prod\n" + strings.Repeat("k", 1<<20) + ": 1\n"
	var huge strings.Builder
	huge.WriteString("cluster: prod\nbalancers:\n  - name: web\n    listen: [\"192.0.2.10:80\"]\n    backends:\n")
	for i := 0; huge.Len() <= 3<<20; i++ {
		fmt.Fprintf(&huge, "      - address: 10.%d.%d.%d:8080\n", i>>16&255, i>>8&255, i&255)
	}
	deep := "cluster: prod\nx: " + strings.Repeat("{a: ", 5000) + "1" + strings.Repeat("}", 5000) + "\n"
	return []Case{
		{Name: "gen-key-1mb", Data: []byte(key), Want: []string{"(line 2)"}},
		{Name: "gen-file-3mb", Data: []byte(huge.String()), Want: []string{"the file is over 2097152 bytes"}},
		{Name: "gen-nesting-5000", Data: []byte(deep), Want: []string{"(line 2)"}},
		{Name: "elf-header", Data: []byte("\x7fELF\x02\x01\x01\x00 #<\n"), Want: []string{"(line 1)"}},
	}
}
