package xdp

import (
	"maps"
	"slices"
	"testing"
)

// The collection a daemon start loads holds the daemon's program alone,
// and no map that program does not use: the lab's programs (generator,
// receivers, baseline) and their maps live in xdplab. Needs no root: it
// reads the committed object only.
func TestDaemonCollectionHoldsOnlyTheDaemonsProgram(t *testing.T) {
	spec, err := loadDsr()
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(spec.Programs)); !slices.Equal(got, []string{dsrProgXdpDsr}) {
		t.Fatalf("programs %v, want only %s", got, dsrProgXdpDsr)
	}
	used := map[string]bool{}
	for _, ins := range spec.Programs[dsrProgXdpDsr].Instructions {
		if ins.IsLoadFromMap() {
			used[ins.Reference()] = true
		}
	}
	for name := range spec.Maps {
		if !used[name] {
			t.Errorf("map %s is in the daemon's collection but xdp_dsr does not use it", name)
		}
	}
	if len(spec.Maps) == 0 {
		t.Fatal("no maps in the collection")
	}
}
