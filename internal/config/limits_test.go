package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Edge cases of issue 23: a second document was silently ignored (exit 0);
// a 50 MB file took 13 s and 3.2 GB; binary input, deep nesting and huge
// keys gave no line. Each is an error naming its line, before decoding.
func TestParseRefusesWhatIsBeyondTheLimits(t *testing.T) {
	nested := func(levels int) string {
		var b strings.Builder
		b.WriteString(good + "x:\n")
		for i := range levels {
			b.WriteString(strings.Repeat("  ", i+1) + "a:\n")
		}
		return b.String()
	}
	list := func(key string, n int, item string) string {
		return good + key + ":\n" + strings.Repeat("  - "+item+"\n", n)
	}
	goodLines := strings.Count(good, "\n")
	cases := []struct {
		name string
		src  string
		want string // with its line, when the file has one to name
	}{
		{"second document", good + "---\nnode: other\n", fmt.Sprintf("a second YAML document starts here: vigil reads one document per file; merge it into the first or remove it (line %d)", goodLines+1)},
		{"empty second document", good + "---\n", fmt.Sprintf("a second YAML document starts here: vigil reads one document per file; merge it into the first or remove it (line %d)", goodLines+1)},
		{"syntax error in a second document", good + "---\nnode: [\n", "line"},
		{"over the file size", good + "# " + strings.Repeat("x", MaxFileSize) + "\n", fmt.Sprintf("the file is over %d bytes (2 MiB), the limit", MaxFileSize)},
		{"NUL byte", "node: lb1\nclu\x00ster: a\n", "column 4: control character U+0000 is not allowed in YAML; a config is UTF-8 text (is this a binary file?) (line 2)"},
		{"binary file", "\x7fELF\x02\x01\x01\x00", "column 1: control character U+007F is not allowed in YAML; a config is UTF-8 text (is this a binary file?) (line 1)"},
		{"not UTF-8", "node: lb1\ncluster: a\n  # caf\xe9\n", "column 8: byte 0xe9 is not UTF-8; a config is UTF-8 text (is this a binary file?) (line 3)"},
		{"deep block nesting", nested(MaxDepth + 5), fmt.Sprintf("nested deeper than %d levels (line %d)", MaxDepth, goodLines+MaxDepth+2)},
		{"deep flow nesting", good + "x: " + strings.Repeat("[", 20000) + "\n", fmt.Sprintf("(line %d)", goodLines+1)},
		{"1 MB key", good + strings.Repeat("k", 1<<20) + ": 1\n", fmt.Sprintf("(line %d)", goodLines+1)},
		{"long key", good + strings.Repeat("k", MaxKeyLen+1) + ": 1\n", fmt.Sprintf("a key of %d bytes; the limit is %d (line %d)", MaxKeyLen+1, MaxKeyLen, goodLines+1)},
		{"too many items", good + "balancers:\n  - name: b\n    backends:\n" + strings.Repeat("      - {address: \"192.0.2.1:80\"}\n", MaxListLen+1),
			fmt.Sprintf("balancers[0].backends: %d items; the limit is %d (line %d)", MaxListLen+1, MaxListLen, goodLines+4)},
		{"too many balancers", list("balancers", MaxBalancers+1, "{name: b}"), fmt.Sprintf("balancers: %d items; the limit is %d (line %d)", MaxBalancers+1, MaxBalancers, goodLines+2)},
		{"too many pools", strings.Replace(good, "  sync_groups:", "  pools:\n"+strings.Repeat("    - {name: p}\n", MaxPools+1)+"  sync_groups:", 1),
			fmt.Sprintf("vrrp.pools: %d items; the limit is %d", MaxPools+1, MaxPools)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src))
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %v, want Errors", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error\n%.500s\ndoes not contain\n%s", err, tc.want)
			}
		})
	}
}

// One leading "---" or a final "..." is one document, as before.
func TestParseTakesOneDocumentMarkedAsSuch(t *testing.T) {
	for _, src := range []string{"---\n" + good, good + "...\n", "---\n" + good + "...\n"} {
		if _, err := Parse([]byte(src)); err != nil {
			t.Fatalf("%q: %v", src[:10], err)
		}
	}
}

// A file at the limits parses: the limits are above real configs.
func TestParseTakesAConfigNearTheLimits(t *testing.T) {
	src := good + "balancers:\n  - name: b\n    listen: [\"192.0.2.1:80\"]\n    backends:\n"
	for i := range 1000 {
		src += fmt.Sprintf("      - {address: \"10.1.%d.%d:80\"}\n", i/250, i%250+1)
	}
	if len(src) > MaxFileSize/10 {
		t.Fatalf("a 1000-backend config is %d bytes, more than a tenth of the limit", len(src))
	}
	if _, err := Parse([]byte(src)); err != nil {
		t.Fatal(err)
	}
}
