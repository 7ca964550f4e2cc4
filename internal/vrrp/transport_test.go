package vrrp

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
)

// recorder counts what a transport delivers, by VRID.
type recorder struct {
	mu    sync.Mutex
	vrids map[uint8]int
}

func (r *recorder) Deliver(m Received) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.vrids == nil {
		r.vrids = map[uint8]int{}
	}
	r.vrids[m.Payload[1]]++
}

func (r *recorder) count(vrid uint8) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.vrids[vrid]
}

func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.vrids {
		n += c
	}
	return n
}

// transportLab is a receiver host "a" and a sender host "b" on one switch.
func transportLab(t *testing.T) (a, b *netlab.Host) {
	t.Helper()
	if !netlab.Root() {
		t.Skip("needs root: network namespaces and raw sockets")
	}
	lab, err := netlab.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	if a, err = lab.AddHost("a", netip.MustParsePrefix("10.99.0.1/24")); err != nil {
		t.Fatal(err)
	}
	if b, err = lab.AddHost("b", netip.MustParsePrefix("10.99.0.2/24")); err != nil {
		t.Fatal(err)
	}
	// Resolve a's MAC first: while ARP is pending the sender's kernel
	// queues only a few packets and drops the rest, which a test would
	// take for the receiver's doing.
	sendFrom(t, b, 0, 1)
	eventually(t, "b to resolve a's MAC", func() bool {
		mac, err := b.Neighbor(netip.MustParseAddr("10.99.0.1"))
		return err == nil && mac != nil
	})
	return a, b
}

// openOn opens a transport on a's eth0; Serve is the caller's to start.
func openOn(t *testing.T, a *netlab.Host) *Transport {
	t.Helper()
	var tr *Transport
	err := a.Do(func() (err error) {
		tr, err = OpenTransport("eth0", false, nil, slog.New(slog.DiscardHandler))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// sendFrom sends count adverts for vrid from b to 10.99.0.1.
func sendFrom(t *testing.T, b *netlab.Host, vrid uint8, count int) {
	t.Helper()
	msg := advert(t, 3, vrid)
	err := b.Do(func() error {
		c, err := net.ListenPacket("ip4:112", "10.99.0.2")
		if err != nil {
			return err
		}
		defer c.Close()
		dst := &net.IPAddr{IP: net.IPv4(10, 99, 0, 1)}
		for range count {
			if _, err := c.WriteTo(msg, dst); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func serve(t *testing.T, tr *Transport) {
	done := make(chan struct{})
	go func() { tr.Serve(); close(done) }()
	t.Cleanup(func() { tr.Close(); <-done })
}

// A flood for another VRID stays in the kernel: while nobody reads, 5,000
// foreign adverts are sent, then 5 of ours; all 5 of ours are read, no
// foreign one, and the kernel dropped nothing (without the filter the
// foreign adverts fill the receive queue and ours are lost).
func TestTransportFilterKeepsForeignVRIDsInTheKernel(t *testing.T) {
	a, b := transportLab(t)
	tr := openOn(t, a)
	rec := &recorder{}
	if err := tr.Register(51, rec); err != nil {
		t.Fatal(err)
	}
	sendFrom(t, b, 52, 5000)
	sendFrom(t, b, 51, 5)
	time.Sleep(200 * time.Millisecond) // let the switch deliver before reading starts
	serve(t, tr)
	eventually(t, "our 5 adverts", func() bool { return rec.count(51) == 5 })
	sendFrom(t, b, 51, 1) // a marker: everything sent before it has been read once it is
	eventually(t, "the marker", func() bool { return rec.count(51) == 6 })
	if n := rec.count(52); n != 0 {
		t.Fatalf("%d adverts for foreign VRID 52 reached the transport", n)
	}
	if d := tr.KernelDrops(); d != 0 {
		t.Fatalf("kernel dropped %d messages", d)
	}

	// Unregistering closes the filter again; registering opens it.
	if err := tr.Unregister(51); err != nil {
		t.Fatal(err)
	}
	sendFrom(t, b, 51, 3)
	if err := tr.Register(52, rec); err != nil {
		t.Fatal(err)
	}
	sendFrom(t, b, 52, 1)
	eventually(t, "VRID 52 once registered", func() bool { return rec.count(52) == 1 })
	if n := rec.count(51); n != 6 {
		t.Fatalf("VRID 51 after unregistering: %d delivered, want still 6", n)
	}
}

// Kernel drops are counted: 12,000 adverts (more than the 4 MiB buffer holds) for our VRID sent while nobody
// reads overflow the receive queue; once read, what was delivered and what
// the kernel says it dropped add up to what was sent.
func TestTransportCountsKernelDrops(t *testing.T) {
	a, b := transportLab(t)
	tr := openOn(t, a)
	rec := &recorder{}
	if err := tr.Register(51, rec); err != nil {
		t.Fatal(err)
	}
	const sent = 12000
	sendFrom(t, b, 51, sent-1)
	time.Sleep(200 * time.Millisecond)
	serve(t, tr)
	// Queued messages carry the drop count as of their arrival: the last
	// one sent after the overflow carries the whole count.
	eventually(t, "the queue to drain", func() bool { return rec.total() > 0 })
	time.Sleep(100 * time.Millisecond)
	sendFrom(t, b, 51, 1)
	eventually(t, "delivered + dropped = sent", func() bool { return uint64(rec.total())+tr.KernelDrops() == sent })
	if tr.KernelDrops() == 0 {
		t.Fatalf("no kernel drops counted; %d of %d delivered", rec.total(), sent)
	}
	t.Logf("%d delivered, %d dropped by the kernel", rec.total(), tr.KernelDrops())
}

// Drain reads what is queued without waiting, dispatching it, and returns at
// once on an empty queue.
func TestTransportDrain(t *testing.T) {
	a, b := transportLab(t)
	tr := openOn(t, a)
	defer tr.Close()
	rec := &recorder{}
	if err := tr.Register(51, rec); err != nil {
		t.Fatal(err)
	}
	sendFrom(t, b, 51, 5)
	sendFrom(t, b, 52, 5) // filtered: never queued
	time.Sleep(200 * time.Millisecond)
	if n := tr.Drain(3); n != 3 || rec.count(51) != 3 {
		t.Fatalf("Drain(3) read %d, delivered %d", n, rec.count(51))
	}
	t0 := time.Now()
	if n := tr.Drain(100); n != 2 || rec.count(51) != 5 {
		t.Fatalf("Drain(100) read %d, delivered %d in all", n, rec.count(51))
	}
	if n := tr.Drain(100); n != 0 {
		t.Fatalf("Drain of an empty queue read %d", n)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("Drain took %v", d)
	}
}
