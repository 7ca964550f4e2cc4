package linkstate

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

func TestState(t *testing.T) {
	tests := []struct {
		name    string
		deleted bool
		flags   net.Flags
		raw     uint32
		up      bool
		reason  string
	}{
		{"up and running", false, net.FlagUp, unix.IFF_UP | unix.IFF_RUNNING, true, ""},
		{"up without carrier", false, net.FlagUp, unix.IFF_UP, false, "no carrier"},
		{"down", false, 0, unix.IFF_RUNNING, false, "administratively down"},
		{"removed", true, net.FlagUp, unix.IFF_UP | unix.IFF_RUNNING, false, "interface removed"},
	}
	for _, tt := range tests {
		st := state(tt.deleted, tt.flags, tt.raw)
		if st.Up != tt.up || st.Reason != tt.reason {
			t.Errorf("%s: %+v, want up=%v %q", tt.name, st, tt.up, tt.reason)
		}
	}
}
