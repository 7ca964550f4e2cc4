// Package logtest captures a logger's lines as decoded JSON, for tests of
// what a component logs: keys, levels, value types.
package logtest

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
)

// Buffer holds the lines a logger from New wrote. It is a writer safe for
// concurrent use (a command's output, too); its zero value is ready.
type Buffer struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// New returns a logger that writes every level as JSON into the buffer.
func New(t testing.TB) (*slog.Logger, *Buffer) {
	b := &Buffer{t: t}
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// Lines returns every line written so far, decoded.
func (b *Buffer) Lines() []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(b.b.Bytes()), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			b.t.Fatalf("log line is not JSON: %s: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// With returns the lines whose key k has value v (compared as JSON
// decodes it: strings, float64, bool).
func (b *Buffer) With(k string, v any) []map[string]any {
	var out []map[string]any
	for _, l := range b.Lines() {
		if l[k] == v {
			out = append(out, l)
		}
	}
	return out
}

// String is everything written, for failure messages.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
