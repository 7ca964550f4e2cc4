package config

import (
	"testing"

	"github.com/vigil-lb/vigil/internal/badinput"
)

// TestBrokenCorpus parses every broken config of the bad-input corpus:
// each is refused, and the error names the key path and the line the case
// wants. bench/reliability runs the same corpus through `vigil check`,
// with time and memory bounds.
func TestBrokenCorpus(t *testing.T) {
	cases, err := badinput.Configs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 50 {
		t.Fatalf("%d broken configs; the corpus promises at least 50", len(cases))
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			cfg, err := Parse(c.Data)
			if err == nil {
				t.Fatalf("accepted: %+v", cfg)
			}
			switch err := c.Check(err.Error()); {
			case err != nil && c.Gap != "":
				t.Skipf("known gap (%s): %v", c.Gap, err)
			case err != nil:
				t.Error(err)
			case c.Gap != "":
				t.Errorf("the gap %q is closed: remove the case's \"# gap:\" line", c.Gap)
			}
		})
	}
}
