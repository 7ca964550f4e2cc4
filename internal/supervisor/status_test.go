package supervisor

import (
	"log/slog"
	"net"
	"testing"

	"github.com/vigil-lb/vigil/internal/config"
)

// A backend drained with weight 0 shows as drain, not up, in the snapshot
// that feeds vigil status, the status page and the metrics.
func TestSnapshotShowsDrainedBackend(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0") // a free port; config refuses port 0
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg, err := config.Parse([]byte(`balancers:
  - name: api
    listen: ["` + addr + `"]
    backends: [{address: "127.0.0.1:6443"}, {address: "127.0.0.2:6443", weight: 0}]
`))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, Options{EventLoops: 1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	snap := s.Snapshot()
	if len(snap.Balancers) != 1 || len(snap.Balancers[0].Backends) != 2 {
		t.Fatalf("balancers: %+v", snap.Balancers)
	}
	got := map[string]string{}
	for _, be := range snap.Balancers[0].Backends {
		got[be.Address] = be.State
	}
	if got["127.0.0.1:6443"] != "up" || got["127.0.0.2:6443"] != "drain" {
		t.Fatalf("backend states %v, want 127.0.0.1:6443 up and 127.0.0.2:6443 (weight 0) drain", got)
	}
}
