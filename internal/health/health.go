// Package health holds the latest state of everything whose health decides
// traffic: checks, balancers' backends, balancers as a whole, tracked
// interfaces, VRRP mastership. It is level-triggered: a writer sets the
// state of a typed key, and each subscriber is woken and reads the keys that
// changed since its last read with their latest states. A burst of changes
// to one key coalesces into one, a slow subscriber never blocks a writer,
// and no subscriber can miss the last state of any key. It is not an event
// log: intermediate states of a key that changed twice between two reads
// are not seen, by design.
package health

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Kind says what a Key names.
type Kind uint8

// The kinds of keys. Their order is the order Changes returns keys in.
const (
	// Check is a named check of the config's checks section.
	Check Kind = iota + 1
	// Backend is one backend of a balancer (proxy or dsr): Name is the
	// balancer, Addr the backend's address.
	Backend
	// Balancer is a balancer as a whole: up while it has a backend in
	// rotation.
	Balancer
	// Interface is a network interface: up while it is up and running.
	Interface
	// Master is a VRRP instance: up while it is master.
	Master
	// Endpoint is a Kubernetes Service (NS/NAME): up while this node has a
	// ready endpoint of it.
	Endpoint
	// BFD is the BFD session with a BGP neighbor (Name: its address): up
	// while the session is Up, or while the neighbor holds it
	// administratively down (RFC 5882 3.2: not a failure of the path).
	BFD
)

var kindNames = [...]string{Check: "check", Backend: "backend", Balancer: "balancer", Interface: "interface",
	Master: "master", Endpoint: "endpoint", BFD: "bfd"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Key identifies one thing whose health is tracked. Keys are values: two
// keys naming the same thing are equal.
type Key struct {
	Kind Kind
	Name string
	Addr netip.AddrPort // Backend only
}

// CheckKey names a configured check.
func CheckKey(name string) Key { return Key{Kind: Check, Name: name} }

// BackendKey names one backend of a balancer.
func BackendKey(balancer string, addr netip.AddrPort) Key {
	return Key{Kind: Backend, Name: balancer, Addr: addr}
}

// BalancerKey names a balancer as a whole.
func BalancerKey(name string) Key { return Key{Kind: Balancer, Name: name} }

// InterfaceKey names a network interface.
func InterfaceKey(name string) Key { return Key{Kind: Interface, Name: name} }

// MasterKey names a VRRP instance's mastership.
func MasterKey(instance string) Key { return Key{Kind: Master, Name: instance} }

// EndpointKey names a Kubernetes Service's local readiness.
func EndpointKey(service string) Key { return Key{Kind: Endpoint, Name: service} }

// BFDKey names the BFD session with a BGP neighbor.
func BFDKey(neighbor string) Key { return Key{Kind: BFD, Name: neighbor} }

func (k Key) String() string {
	if k.Kind == Backend {
		return k.Kind.String() + " " + k.Name + " " + k.Addr.String()
	}
	return k.Kind.String() + " " + k.Name
}

// Compare orders keys by kind, name and address.
func (k Key) Compare(o Key) int {
	if c := cmp.Compare(k.Kind, o.Kind); c != 0 {
		return c
	}
	if c := strings.Compare(k.Name, o.Name); c != 0 {
		return c
	}
	return k.Addr.Compare(o.Addr)
}

// State is the health of one key.
type State struct {
	Up bool
	// Reason says why, for logs and status: the last probe error of a check
	// that went down, "no backend in rotation", ...; "" when there is none.
	Reason string
}

// Change is one key's latest state as a subscriber reads it. Known is
// false when the key was removed (a check no longer configured).
type Change struct {
	Key   Key
	State State
	Known bool
}

// Store is the one health state of a daemon. The zero value is not usable:
// call New.
type Store struct {
	mu     sync.Mutex
	states map[Key]State
	subs   map[*Subscription]struct{}
}

// New returns an empty store.
func New() *Store {
	return &Store{states: map[Key]State{}, subs: map[*Subscription]struct{}{}}
}

// Set records k's state and wakes the subscribers when it differs from the
// one recorded. It never blocks on a subscriber.
func (s *Store) Set(k Key, st State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.states[k]; ok && old == st {
		return
	}
	s.states[k] = st
	s.markLocked(k)
}

// Delete forgets k; subscribers see it once as not Known.
func (s *Store) Delete(k Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.states[k]; !ok {
		return
	}
	delete(s.states, k)
	s.markLocked(k)
}

func (s *Store) markLocked(k Key) {
	for sub := range s.subs {
		sub.dirty[k] = struct{}{}
		select {
		case sub.wake <- struct{}{}:
		default: // already woken: it reads every dirty key when it runs
		}
	}
}

// Get returns k's state; ok is false when nobody set it.
func (s *Store) Get(k Key) (st State, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok = s.states[k]
	return st, ok
}

// Snapshot returns every known key's state, in key order.
func (s *Store) Snapshot() []Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Change, 0, len(s.states))
	for k, st := range s.states {
		out = append(out, Change{Key: k, State: st, Known: true})
	}
	slices.SortFunc(out, func(a, b Change) int { return a.Key.Compare(b.Key) })
	return out
}

// Subscription is one reader of the store. Its first Changes returns every
// key already known, so a late subscriber starts from the current state.
type Subscription struct {
	s     *Store
	wake  chan struct{}
	dirty map[Key]struct{} // guarded by s.mu
}

// Subscribe returns a new subscription, woken at once when the store holds
// any key.
func (s *Store) Subscribe() *Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := &Subscription{s: s, wake: make(chan struct{}, 1), dirty: make(map[Key]struct{}, len(s.states))}
	for k := range s.states {
		sub.dirty[k] = struct{}{}
	}
	if len(sub.dirty) > 0 {
		sub.wake <- struct{}{}
	}
	s.subs[sub] = struct{}{}
	return sub
}

// Wake receives a value when keys changed since the last Changes. One
// value stands for any number of changes.
func (sub *Subscription) Wake() <-chan struct{} { return sub.wake }

// Changes returns, in key order, the keys that changed since the last
// call, each with its state now. It returns nil when nothing changed.
func (sub *Subscription) Changes() []Change {
	sub.s.mu.Lock()
	defer sub.s.mu.Unlock()
	if len(sub.dirty) == 0 {
		return nil
	}
	out := make([]Change, 0, len(sub.dirty))
	for k := range sub.dirty {
		st, ok := sub.s.states[k]
		out = append(out, Change{Key: k, State: st, Known: ok})
	}
	clear(sub.dirty)
	slices.SortFunc(out, func(a, b Change) int { return a.Key.Compare(b.Key) })
	return out
}

// Close ends the subscription; the store forgets it.
func (sub *Subscription) Close() {
	sub.s.mu.Lock()
	defer sub.s.mu.Unlock()
	delete(sub.s.subs, sub)
	clear(sub.dirty)
}
