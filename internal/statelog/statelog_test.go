package statelog

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Lists are arrays in JSON and comma-separated in text, never Go's [a b];
// a change has the common keys, down_for rounded, and no empty reason.
func TestLogLines(t *testing.T) {
	vips := Addrs([]netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")})
	for _, c := range []struct {
		name string
		h    func(*bytes.Buffer) slog.Handler
		want []string
	}{
		{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }, []string{
			`"vips":["192.0.2.10","192.0.2.11"],"event":"backend","state":"up","prev_state":"down","down_for":3200000000`}},
		{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }, []string{
			`vips=192.0.2.10,192.0.2.11 event=backend state=up prev_state=down down_for=3.2s`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			Log(slog.New(c.h(&b)), slog.LevelInfo, "backend up", Change{Event: EventBackend, Prev: "down", State: "up",
				DownFor: 3210 * time.Millisecond}, "vips", vips)
			for _, w := range c.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("no %s in %s", w, b.String())
				}
			}
			if strings.Contains(b.String(), "reason") || strings.Contains(b.String(), "[192") && c.name == "text" {
				t.Errorf("empty reason or Go list in %s", b.String())
			}
		})
	}
	if b, _ := List(nil).MarshalJSON(); string(b) != "[]" {
		t.Errorf("empty list %s", b)
	}
}
