package bfd

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"sync"

	"github.com/vigil-lb/vigil/internal/clock"
	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
)

// Port is the UDP port of single-hop control packets (RFC 5881 4).
const Port = 3784

// Neighbor is one BFD peer: a BGP neighbor with bfd set.
type Neighbor struct {
	Addr   netip.Addr
	Params Params
}

// NeighborsOf lists the BGP neighbors of cfg that run BFD.
func NeighborsOf(cfg *config.Config) []Neighbor {
	var out []Neighbor
	for _, n := range cfg.BGP.Neighbors {
		if n.BFD == nil {
			continue
		}
		a, _ := netip.ParseAddr(n.Address) // validated
		out = append(out, Neighbor{Addr: a, Params: Params{DesiredMinTx: n.BFD.MinTx, RequiredMinRx: n.BFD.MinRx,
			DetectMult: uint8(n.BFD.Multiplier)}})
	}
	return out
}

// Drop reasons of packets that reach no session, counted in status.
const (
	DropTTL           = "ttl not 255"
	DropInvalid       = "invalid packet"
	DropUnknownPeer   = "no session with the source"
	DropUnknownDiscr  = "unknown your discriminator"
	DropWrongSource   = "discriminator of another peer"
	DropSessionRefuse = "refused by the session"
)

// SessionStatus is one neighbor's session.
type SessionStatus struct {
	Neighbor string
	Status
}

// Sessions is the BFD component: one session per BGP neighbor with bfd
// set, each state published to the health store as health.BFDKey(addr).
type Sessions struct {
	store     *health.Store
	log       *slog.Logger
	clock     clock.Clock
	neighbors []Neighbor
	port      int

	mu      sync.Mutex
	byAddr  map[netip.Addr]*Session
	byDiscr map[uint32]*Session
	drops   map[string]uint64
}

// New prepares the sessions of cfg's BGP neighbors; Run opens the sockets
// and starts them.
func New(cfg *config.Config, store *health.Store, log *slog.Logger) *Sessions {
	return &Sessions{store: store, log: log, clock: clock.Real{}, neighbors: NeighborsOf(cfg), port: Port,
		drops: map[string]uint64{}}
}

// Name names the component.
func (m *Sessions) Name() string { return "bfd" }

// Run runs the sessions until ctx ends, then sends AdminDown on each. A
// session that cannot run (the port is taken) is logged, and the BGP
// sessions go on without BFD.
func (m *Sessions) Run(ctx context.Context) error {
	if len(m.neighbors) == 0 {
		<-ctx.Done()
		return nil
	}
	v4, v6 := false, false
	for _, n := range m.neighbors {
		v4, v6 = v4 || n.Addr.Is4(), v6 || n.Addr.Is6()
	}
	l, err := listen(m.port, v4, v6, m.receive)
	if err != nil {
		m.log.Error("bfd is not running: the BGP sessions go on without it", "err", err)
		<-ctx.Done()
		return nil
	}
	defer l.close()
	var wg sync.WaitGroup
	var senders []*udpSender
	m.mu.Lock()
	m.byAddr, m.byDiscr = map[netip.Addr]*Session{}, map[uint32]*Session{}
	for _, n := range m.neighbors {
		discr := rand.Uint32()
		for discr == 0 || m.byDiscr[discr] != nil {
			discr = rand.Uint32()
		}
		tx := &udpSender{peer: netip.AddrPortFrom(n.Addr, Port), log: m.log}
		senders = append(senders, tx)
		key := health.BFDKey(n.Addr.String())
		s := NewSession(SessionConfig{Peer: n.Addr.String(), LocalDiscr: discr, Params: n.Params, Clock: m.clock,
			Transport: tx, Log: m.log, OnChange: func(st Status) { m.store.Set(key, healthOf(st)) }})
		m.byAddr[n.Addr.WithZone("")], m.byDiscr[discr] = s, s
		wg.Go(func() { s.Run(ctx) })
	}
	m.mu.Unlock()
	wg.Wait() // each has sent AdminDown
	for _, tx := range senders {
		tx.close()
	}
	return nil
}

// healthOf is what a session's state means for the BGP session: a path
// that works. A peer that holds the session AdminDown says nothing about
// the path, and must not take the BGP session down (RFC 5882 3.2); nor
// does a peer that started a new session while its packets keep coming.
func healthOf(st Status) health.State {
	switch {
	case st.State == Up:
		return health.State{Up: true}
	case st.State == Down && st.RemoteState == AdminDown:
		return health.State{Up: true, Reason: "the neighbor holds BFD administratively down"}
	case st.State != AdminDown && st.PeerRestarted:
		return health.State{Up: true, Reason: "the neighbor started a new BFD session"}
	}
	return health.State{Reason: "bfd " + st.State.String() + ": " + st.LocalDiag.String()}
}

// receive hands a datagram to its session (RFC 5880 6.8.6, RFC 5881 5):
// by your discriminator when set, else by source address; a TTL other
// than 255 means the packet crossed a router and is dropped.
func (m *Sessions) receive(r received) {
	if r.ttl != 255 {
		m.drop(DropTTL)
		return
	}
	var p Packet
	if err := p.UnmarshalBinary(r.b); err != nil {
		m.log.Debug("bfd: invalid packet", "source", r.src.String(), "err", err)
		m.drop(DropInvalid)
		return
	}
	src := r.src.WithZone("")
	m.mu.Lock()
	s := m.byAddr[src]
	if p.YourDiscriminator != 0 {
		switch ds := m.byDiscr[p.YourDiscriminator]; {
		case ds == nil:
			s = nil
			m.drops[DropUnknownDiscr]++
		case ds != s:
			s = nil
			m.drops[DropWrongSource]++
		}
	} else if s == nil {
		m.drops[DropUnknownPeer]++
	}
	m.mu.Unlock()
	if s == nil {
		return
	}
	if err := s.Receive(&p); err != nil {
		m.drop(DropSessionRefuse)
	}
}

func (m *Sessions) drop(reason string) {
	m.mu.Lock()
	m.drops[reason]++
	m.mu.Unlock()
}

// Status lists the sessions in neighbor order, and the packets dropped
// before reaching one, by reason.
func (m *Sessions) Status() ([]SessionStatus, map[string]uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []SessionStatus
	for _, n := range m.neighbors {
		if s := m.byAddr[n.Addr.WithZone("")]; s != nil {
			out = append(out, SessionStatus{Neighbor: n.Addr.String(), Status: s.Status()})
		}
	}
	return out, maps.Clone(m.drops)
}

// Plan refuses a change of the BFD sessions: like the BGP neighbors they
// belong to, they change with a restart.
func (m *Sessions) Plan(cfg *config.Config) (component.Change, error) {
	if !reflect.DeepEqual(NeighborsOf(cfg), m.neighbors) {
		return nil, errors.New("the bfd settings of bgp.neighbors changed: that needs a restart")
	}
	return component.None{}, nil
}
