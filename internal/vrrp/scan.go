package vrrp

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"time"
)

// Group is one VRRP speaker seen on the wire: a VRID and a source address.
type Group struct {
	VRID     uint8
	Version  uint8
	Source   netip.Addr
	Priority uint8
	Interval time.Duration
	VIPs     []netip.Addr
	Adverts  int
	Bad      int // adverts that failed the checksum or TTL check
}

// Scan listens passively on ifname for d and returns every VRRP speaker
// heard, by VRID then source. It sends nothing.
func Scan(ctx context.Context, ifname string, is6 bool, d time.Duration, log *slog.Logger) ([]Group, error) {
	tr, err := OpenTransport(ifname, is6, nil, log)
	if err != nil {
		return nil, err
	}
	ch := make(chan Received, 1024)
	if err := tr.Sniff(ch); err != nil {
		tr.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() { tr.Serve(); close(done) }()
	defer func() { tr.Close(); <-done }()
	seen := map[[2]any]*Group{}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return groups(seen), ctx.Err()
		case <-timer.C:
			return groups(seen), nil
		case r := <-ch:
			p, err := Unmarshal(r.Payload, is6)
			if err != nil {
				continue
			}
			key := [2]any{p.VRID, r.Src}
			g := seen[key]
			if g == nil {
				g = &Group{VRID: p.VRID, Source: r.Src}
				seen[key] = g
			}
			g.Adverts++
			if r.TTL != 255 || VerifyChecksum(r.Payload, r.Src, r.Dst) != nil {
				g.Bad++
			}
			g.Version, g.Priority, g.Interval, g.VIPs = p.Version, p.Priority, p.Interval(), p.Addresses
		}
	}
}

func groups(m map[[2]any]*Group) []Group {
	out := make([]Group, 0, len(m))
	for _, g := range m {
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b Group) int {
		if a.VRID != b.VRID {
			return int(a.VRID) - int(b.VRID)
		}
		return a.Source.Compare(b.Source)
	})
	return out
}

// FreeVRIDs returns up to n VRIDs that no group in gs uses, starting after
// the commonly used low numbers.
func FreeVRIDs(gs []Group, n int) []uint8 {
	used := map[uint8]bool{}
	for _, g := range gs {
		used[g.VRID] = true
	}
	var out []uint8
	for v := 100; v <= 255 && len(out) < n; v++ {
		if !used[uint8(v)] {
			out = append(out, uint8(v))
		}
	}
	return out
}
