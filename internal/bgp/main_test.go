package bgp

import (
	"testing"

	"go.uber.org/goleak"
)

// GoBGP v4.8.0 never closes a peer FSM's outgoing InfiniteChannel (only
// its own tests do), so each peer it ever made leaves that channel's
// goroutine behind: one per neighbor added, not per session, in the
// daemon too. Whether one is still running when the tests end depends on
// timing, so goleak ignores that goroutine and checks everything else.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/eapache/channels.(*InfiniteChannel).infiniteBuffer"))
}
