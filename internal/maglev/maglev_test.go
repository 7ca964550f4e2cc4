package maglev

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/quick"
	"time"

	"github.com/vigil-lb/vigil/internal/benchdoc"
)

// reference is the paper's population algorithm written plainly: the full
// N x M permutation matrix, then the round-robin fill (Eisenbud et al.,
// NSDI 2016, pseudocode 1). Equal weights only.
func reference(names []string, m int) []int32 {
	n := len(names)
	perm := make([][]uint64, n)
	for i, name := range names {
		h1, h2 := hashes(name)
		offset, skip := h1%uint64(m), h2%uint64(m-1)+1
		perm[i] = make([]uint64, m)
		for j := range m {
			perm[i][j] = (offset + uint64(j)*skip) % uint64(m)
		}
	}
	entry := make([]int32, m)
	for i := range entry {
		entry[i] = -1
	}
	next := make([]int, n)
	filled := 0
	for {
		for i := range n {
			c := perm[i][next[i]]
			for entry[c] >= 0 {
				next[i]++
				c = perm[i][next[i]]
			}
			entry[c] = int32(i)
			next[i]++
			filled++
			if filled == m {
				return entry
			}
		}
	}
}

func names(n int) []string {
	out := make([]string, n)
	for i := range n {
		out[i] = fmt.Sprintf("10.%d.%d.%d:6443", i>>16&255, i>>8&255, i&255)
	}
	return out
}

func equal(ns []string) []Backend {
	bs := make([]Backend, len(ns))
	for i, n := range ns {
		bs[i] = Backend{Name: n, Weight: 1}
	}
	return bs
}

func mustNew(t testing.TB, bs []Backend, m int) *Table {
	t.Helper()
	tb, err := New(bs, m)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestMatchesThePaper(t *testing.T) {
	for _, c := range []struct{ n, m int }{{1, 251}, {3, 251}, {10, 65537}, {100, 65537}, {251, 251}} {
		ns := names(c.n)
		slices.Sort(ns) // the order New puts them in
		got := mustNew(t, equal(ns), c.m).Entries()
		want := reference(ns, c.m)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("N=%d M=%d: entry %d is %d, the paper's algorithm gives %d", c.n, c.m, i, got[i], want[i])
			}
		}
	}
}

func TestBalance(t *testing.T) {
	tb := mustNew(t, equal(names(100)), DefaultSize)
	counts := tb.Counts()
	most, sum := 0, 0
	for _, c := range counts {
		most, sum = max(most, c), sum+c
	}
	avg := float64(sum) / float64(len(counts))
	if sum != DefaultSize || float64(most)/avg > 1.01 {
		t.Fatalf("max/avg = %.4f (max %d, avg %.1f, sum %d)", float64(most)/avg, most, avg, sum)
	}
	t.Logf("N=100 M=%d: max/avg %.4f", DefaultSize, float64(most)/avg)
}

// disruption is the share of entries that change owner although their
// owner was not the removed backend.
func disruption(t *testing.T, n, removed int) float64 {
	ns := names(n)
	before := mustNew(t, equal(ns), DefaultSize)
	rest := append(append([]string{}, ns[:removed]...), ns[removed+1:]...)
	after := mustNew(t, equal(rest), DefaultSize)
	moved := 0
	for i, e := range before.Entries() {
		owner := before.Backends()[e].Name
		if owner != ns[removed] && after.Backends()[after.Entries()[i]].Name != owner {
			moved++
		}
	}
	return float64(moved) / float64(DefaultSize)
}

func TestDisruption(t *testing.T) {
	worst := 0.0
	for _, removed := range []int{0, 17, 50, 99} {
		d := disruption(t, 100, removed)
		worst = max(worst, d)
		if d >= 0.01 {
			t.Fatalf("removing backend %d of 100 moved %.2f%% of the other backends' entries", removed, 100*d)
		}
	}
	t.Logf("removing one of 100 backends moves at most %.3f%% of the others' entries", 100*worst)
}

func TestWeights(t *testing.T) {
	var bs []Backend
	for i, n := range names(30) {
		bs = append(bs, Backend{Name: n, Weight: uint32(i%3 + 1)}) // 10 each of weight 1, 2, 3
	}
	bs = append(bs, Backend{Name: "drained:1", Weight: 0})
	tb := mustNew(t, bs, DefaultSize)
	byWeight := map[uint32]int{}
	for i, c := range tb.Counts() {
		byWeight[tb.Backends()[i].Weight] += c
	}
	if byWeight[0] != 0 {
		t.Fatalf("a weight-0 backend owns %d entries", byWeight[0])
	}
	for w := uint32(1); w <= 3; w++ {
		want := float64(DefaultSize) * float64(w) / 6
		if got := float64(byWeight[w]); got < want*0.99 || got > want*1.01 {
			t.Errorf("weight %d: %v entries, want %.0f within 1%%", w, got, want)
		}
	}
}

// Properties over random backend sets: the table is full, owned only by
// weighted members, and independent of the order backends are given in.
func TestProperties(t *testing.T) {
	f := func(seed uint64, n8 uint8) bool {
		r := rand.New(rand.NewPCG(seed, 1))
		n := int(n8)%50 + 1
		var bs []Backend
		for i, name := range names(n) {
			bs = append(bs, Backend{Name: name, Weight: uint32(r.IntN(4))})
			if i == 0 {
				bs[0].Weight = 1 + uint32(r.IntN(3))
			}
		}
		a := mustNew(t, bs, 1009)
		r.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
		b := mustNew(t, bs, 1009)
		for i, e := range a.Entries() {
			if e < 0 || int(e) >= n || a.Backends()[e].Weight == 0 || b.Entries()[i] != e {
				return false
			}
		}
		return true
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 300}); err != nil {
		t.Fatal(err)
	}
}

func TestErrorsAndEdges(t *testing.T) {
	if _, err := New(equal(names(3)), 65536); err == nil || !strings.Contains(err.Error(), "not a prime") {
		t.Fatalf("non-prime size: %v", err)
	}
	if _, err := New(equal([]string{"a", "a"}), 251); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := New([]Backend{{Name: "a"}}, 251); err == nil {
		t.Fatal("all weights 0 accepted")
	}
	if _, err := New(equal(names(300)), 251); err == nil {
		t.Fatal("more backends than entries accepted")
	}
	empty := mustNew(t, nil, 251)
	if empty.Lookup(12345) != -1 {
		t.Fatal("lookup in an empty table")
	}
	tb := mustNew(t, equal(names(3)), 251)
	seen := map[int]bool{}
	for h := range uint32(10000) {
		seen[tb.Lookup(h*2654435761)] = true // spread over the 32-bit range
	}
	if len(seen) != 3 {
		t.Fatalf("lookups reached %d of 3 backends", len(seen))
	}
}

func benchBuild(b *testing.B, n, m int, ref bool) {
	ns := names(n)
	bs := equal(ns)
	b.ResetTimer()
	for range b.N {
		if ref {
			reference(ns, m)
		} else if _, err := New(bs, m); err != nil {
			b.Fatal(err)
		}
	}
}

var buildCases = []struct{ n, m int }{{10, 65537}, {100, 65537}, {1000, 65537}, {1000, 655373}}

func BenchmarkBuild(b *testing.B) {
	for _, c := range buildCases {
		b.Run(fmt.Sprintf("vigil/N=%d/M=%d", c.n, c.m), func(b *testing.B) { benchBuild(b, c.n, c.m, false) })
		b.Run(fmt.Sprintf("reference/N=%d/M=%d", c.n, c.m), func(b *testing.B) { benchBuild(b, c.n, c.m, true) })
	}
}

var sink int

func BenchmarkLookup(b *testing.B) {
	tb, _ := New(equal(names(100)), DefaultSize)
	h := uint32(12345)
	b.ResetTimer()
	for range b.N {
		h = h*1664525 + 1013904223
		sink += tb.Lookup(h)
	}
}

var benchTable = flag.String("bench-table", "", "run the build and lookup benchmarks and write their table into this markdown file")

// TestBenchTable is `make bench-maglev`: both implementations in one run.
func TestBenchTable(t *testing.T) {
	if *benchTable == "" {
		t.Skip("only with -bench-table FILE (make bench-maglev)")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Written by `make bench-maglev` on %s: `testing.Benchmark` of `maglev.New` against the paper's algorithm written plainly in the test "+
		"(full N x M permutation matrix), same machine, same run.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	b.WriteString("| N backends | M | vigil build | reference build | vigil / reference | goal |\n|---|---|---|---|---|---|\n")
	for _, c := range buildCases {
		ours := testing.Benchmark(func(b *testing.B) { benchBuild(b, c.n, c.m, false) })
		ref := testing.Benchmark(func(b *testing.B) { benchBuild(b, c.n, c.m, true) })
		goal := "<= 0.5x"
		if c.n == 1000 && c.m == 65537 {
			goal += ", < 2 ms"
		}
		fmt.Fprintf(&b, "| %d | %d | %v | %v | %.3fx | %s |\n", c.n, c.m, time.Duration(ours.NsPerOp()).Round(time.Microsecond),
			time.Duration(ref.NsPerOp()).Round(time.Microsecond), float64(ours.NsPerOp())/float64(ref.NsPerOp()), goal)
	}
	lk := testing.Benchmark(BenchmarkLookup)
	fmt.Fprintf(&b, "\nLookup (N=100, M=65537): %.1f ns/op (goal < 5 ns). Balance at N=100: max/avg entries %.4f (goal <= 1.01). "+
		"Removing one of 100 backends moves %.3f%% of the other backends' entries (goal < 1%%).\n",
		float64(lk.T.Nanoseconds())/float64(lk.N), balance(t), 100*disruption(t, 100, 50))
	if err := benchdoc.WriteSection(*benchTable, "maglev", "Maglev table build", b.String()); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + b.String())
}

func balance(t *testing.T) float64 {
	counts := mustNew(t, equal(names(100)), DefaultSize).Counts()
	most, sum := 0, 0
	for _, c := range counts {
		most, sum = max(most, c), sum+c
	}
	return float64(most) / (float64(sum) / float64(len(counts)))
}
