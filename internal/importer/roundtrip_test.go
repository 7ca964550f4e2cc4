package importer

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vigil-lb/vigil/internal/config"
	"go.yaml.in/yaml/v3"
)

// sameConfig compares models: a nil list and an empty one are the same
// config, and where a parsed config's keys stood in its file is not part of it.
var sameConfig = []cmp.Option{cmpopts.EquateEmpty(), cmpopts.IgnoreUnexported(config.Config{})}

// checkRoundTrip fails unless config.Marshal writes r.Config without losing
// or adding anything. Decoded with the schema's yaml tags and no defaults,
// the YAML is r.Config exactly. Parsed, it must validate when valid says so;
// whenever it does, the validated config (every default filled in) comes
// back from Marshal and Parse again as the same model.
func checkRoundTrip(t *testing.T, r *Result, valid bool) {
	t.Helper()
	y, err := config.Marshal(&r.Config)
	if err != nil {
		t.Fatal(err)
	}
	var raw config.Config
	dec := yaml.NewDecoder(bytes.NewReader(y))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("Marshal wrote YAML that does not decode: %v\n%s", err, y)
	}
	if d := cmp.Diff(&r.Config, &raw, sameConfig...); d != "" {
		t.Fatalf("decoded YAML differs from the imported config (-imported +decoded):\n%s\n%s", d, y)
	}
	p, err := config.Parse(y)
	if err != nil {
		if valid {
			t.Fatalf("the converted config does not validate: %v\n%s", err, y)
		}
		return
	}
	y2, err := config.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := config.Parse(y2)
	if err != nil {
		t.Fatalf("the validated config, written again, does not validate: %v\n%s", err, y2)
	}
	if d := cmp.Diff(p, p2, sameConfig...); d != "" {
		t.Fatalf("the validated config differs once written and parsed again (-first +again):\n%s\n%s", d, y2)
	}
}

// Every input in testdata, alone and all merged as vigil import merges
// them, converts into a config that config.Marshal and config.Parse carry
// over unchanged.
func TestRoundTrip(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*"))
	if err != nil {
		t.Fatal(err)
	}
	all := &Result{}
	n := 0
	for _, path := range files {
		convert := map[string]func(string, string) (*Result, error){".conf": Keepalived, ".cfg": HAProxy}[filepath.Ext(path)]
		if convert == nil {
			continue // golden output and fuzz corpus
		}
		name := filepath.Base(path)
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(name, func(t *testing.T) {
			r, err := convert(name, string(src))
			if err != nil {
				t.Fatal(err)
			}
			checkRoundTrip(t, r, true)
			all.Merge(r)
		})
		n++
	}
	if n < 2 {
		t.Fatalf("%d inputs in testdata, want keepalived.conf and haproxy.cfg at least", n)
	}
	// MetalLB's files are read together, as vigil import metallb reads
	// them, each alone and all at once.
	mls, err := filepath.Glob(filepath.Join("testdata", "metallb", "*.yaml"))
	if err != nil || len(mls) < 4 {
		t.Fatalf("MetalLB inputs %q (%v), want the four of TestMetalLB", mls, err)
	}
	opts := MetalLBOptions{Interface: "eth0", RouterID: "10.0.0.1"}
	var every []MetalLBFile
	for _, path := range mls {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f := MetalLBFile{Name: filepath.Base(path), Src: string(src)}
		every = append(every, f)
		t.Run(f.Name, func(t *testing.T) {
			r, err := MetalLB([]MetalLBFile{f}, opts)
			if err != nil {
				t.Fatal(err)
			}
			checkRoundTrip(t, r, true)
		})
	}
	r, err := MetalLB(every, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkRoundTrip(t, r, true)
	all.Merge(r)
	t.Run("merged", func(t *testing.T) { checkRoundTrip(t, all, true) })
}
