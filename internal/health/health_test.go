package health

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// A slow subscriber under 100,000 random changes from several writers ends
// with exactly the final state of every key, and is woken far fewer times
// than there were changes.
func TestSlowSubscriberSeesFinalStates(t *testing.T) {
	s := New()
	sub := s.Subscribe()
	defer sub.Close()
	keys := make([]Key, 500)
	for i := range keys {
		switch i % 3 {
		case 0:
			keys[i] = CheckKey("c" + string(rune('a'+i%26)) + netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 1).String())
		case 1:
			keys[i] = BackendKey("lb", netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 80))
		default:
			keys[i] = InterfaceKey("eth" + netip.AddrFrom4([4]byte{0, 0, byte(i >> 8), byte(i)}).String())
		}
	}
	const writers, perWriter = 4, 25_000
	seen := map[Key]Change{}
	done, writersDone := make(chan struct{}), make(chan struct{})
	wakes := 0
	go func() {
		defer close(done)
		for {
			select {
			case <-sub.Wake():
			case <-writersDone:
				// Every write happened before this: one last read
				// takes whatever the last wake left.
				for _, c := range sub.Changes() {
					seen[c.Key] = c
				}
				return
			}
			wakes++
			time.Sleep(50 * time.Microsecond) // slow
			for _, c := range sub.Changes() {
				seen[c.Key] = c
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range perWriter {
				k := keys[r.IntN(len(keys))]
				if r.IntN(50) == 0 {
					s.Delete(k)
				} else {
					s.Set(k, State{Up: r.IntN(2) == 0, Reason: []string{"", "timeout", "refused"}[r.IntN(3)]})
				}
			}
		})
	}
	wg.Wait()
	close(writersDone)
	<-done
	for _, k := range keys {
		want, known := s.Get(k)
		got, ok := seen[k]
		switch {
		case !ok && known:
			t.Errorf("%v: never seen, final state %+v", k, want)
		case ok && got.Known != known:
			t.Errorf("%v: seen known=%v, final known=%v", k, got.Known, known)
		case ok && known && got.State != want:
			t.Errorf("%v: last seen %+v, final %+v", k, got.State, want)
		}
	}
	if wakes >= writers*perWriter/10 {
		t.Errorf("woken %d times for %d changes: bursts did not coalesce", wakes, writers*perWriter)
	}
	t.Logf("%d changes, %d wakes", writers*perWriter, wakes)
}

func TestSubscribeStartsFromCurrentState(t *testing.T) {
	s := New()
	s.Set(CheckKey("a"), State{Up: true})
	s.Set(CheckKey("b"), State{Up: false, Reason: "refused"})
	s.Set(CheckKey("a"), State{Up: true}) // no change: no wake for anyone
	sub := s.Subscribe()
	select {
	case <-sub.Wake():
	default:
		t.Fatal("a new subscriber of a non-empty store is not woken")
	}
	got := sub.Changes()
	if len(got) != 2 || got[0].Key != CheckKey("a") || !got[0].State.Up || got[1].State.Reason != "refused" {
		t.Fatalf("first changes %+v", got)
	}
	if c := sub.Changes(); c != nil {
		t.Fatalf("changes again without a change: %+v", c)
	}
	s.Set(CheckKey("a"), State{Up: true})
	select {
	case <-sub.Wake():
		t.Fatal("woken by a Set that changed nothing")
	default:
	}
	s.Delete(CheckKey("b"))
	<-sub.Wake()
	if c := sub.Changes(); len(c) != 1 || c[0].Known || c[0].Key != CheckKey("b") {
		t.Fatalf("after delete %+v", c)
	}
	sub.Close()
	s.Set(CheckKey("a"), State{Up: false})
	select {
	case <-sub.Wake():
		t.Fatal("a closed subscription was woken")
	default:
	}
}

func TestKeyOrderAndNames(t *testing.T) {
	ap := netip.MustParseAddrPort("10.0.0.1:80")
	tests := []struct {
		k    Key
		want string
	}{
		{CheckKey("api"), "check api"},
		{BackendKey("lb", ap), "backend lb 10.0.0.1:80"},
		{BalancerKey("lb"), "balancer lb"},
		{InterfaceKey("eth0"), "interface eth0"},
		{MasterKey("api"), "master api"},
		{EndpointKey("ns/svc"), "endpoint ns/svc"},
		{Key{Kind: 99}, "kind(99) "},
	}
	for i, tt := range tests {
		if got := tt.k.String(); got != tt.want {
			t.Errorf("%d: %q, want %q", i, got, tt.want)
		}
		if i > 0 && tests[i-1].k.Compare(tt.k) >= 0 {
			t.Errorf("%v does not sort before %v", tests[i-1].k, tt.k)
		}
	}
	if BackendKey("lb", ap) != BackendKey("lb", netip.MustParseAddrPort("10.0.0.1:80")) {
		t.Error("equal keys compare unequal")
	}
}
