// Package statelog writes the one log line of a state change with the same
// keys in every component: event (what kind of thing changed), state,
// prev_state, reason, and down_for when something comes back. One query
// (event=backend state=down) then finds every change of every component,
// and a reader never meets "from"/"to" in one line and "up=true" in the
// next. It also gives lists a form both handlers print well (List).
package statelog

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"time"
)

// The keys of every state-change line.
const (
	KeyEvent   = "event"
	KeyState   = "state"
	KeyPrev    = "prev_state"
	KeyReason  = "reason"
	KeyDownFor = "down_for"
)

// Events: what kind of thing changed.
const (
	EventVRRP          = "vrrp"           // an instance's VRRP state
	EventTracked       = "tracked"        // an item a VRRP instance tracks
	EventCheck         = "check"          // a named health check
	EventBackend       = "backend"        // a balancer backend's health
	EventBackendAdmin  = "backend_admin"  // an operator's drain/disable/enable
	EventBalancer      = "balancer"       // a balancer as a whole (some backend in rotation or none)
	EventInstanceAdmin = "instance_admin" // an operator's resign/resume
)

// Change is one state change.
type Change struct {
	Event       string
	Prev, State string
	Reason      string
	// DownFor, when not zero, is how long the thing was down (on
	// recovery), rounded to 100 ms from a second on, else to 1 ms.
	DownFor time.Duration
}

// Log writes c as one line at level, with msg and attrs (which say what
// changed: instance, check, balancer, backend ...) before the common keys,
// so that in text "msg=... backend=ADDR" finds a backend's lines.
func Log(log *slog.Logger, level slog.Level, msg string, c Change, attrs ...any) {
	if !log.Enabled(context.Background(), level) {
		return
	}
	all := make([]any, 0, 10+len(attrs))
	all = append(all, attrs...)
	all = append(all, KeyEvent, c.Event, KeyState, c.State, KeyPrev, c.Prev)
	if c.Reason != "" {
		all = append(all, KeyReason, c.Reason)
	}
	if d := c.DownFor; d > 0 {
		if d >= time.Second {
			d = d.Round(100 * time.Millisecond)
		} else {
			d = d.Round(time.Millisecond)
		}
		all = append(all, KeyDownFor, d)
	}
	log.Log(context.Background(), level, msg, all...)
}

// Level is the level of a health change: WARN going down, INFO coming up.
func Level(up bool) slog.Level {
	if up {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

// UpDown names a health state.
func UpDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

// List is a list of values in a log line: a JSON array under the JSON
// handler, a comma-separated value under the text handler (where a Go
// slice would print as [a b], which no tool splits).
type List []string

// MarshalText joins the items with commas, for slog's text handler.
func (l List) MarshalText() ([]byte, error) { return []byte(strings.Join(l, ",")), nil }

// MarshalJSON is a JSON array, for slog's JSON handler.
func (l List) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]string(l))
}

// Strings makes a List of anything with a String method (addresses,
// prefixes, MACs).
func Strings[T interface{ String() string }](items []T) List {
	out := make(List, len(items))
	for i, it := range items {
		out[i] = it.String()
	}
	return out
}

// Addrs makes a List of addresses.
func Addrs(as []netip.Addr) List { return Strings(as) }
