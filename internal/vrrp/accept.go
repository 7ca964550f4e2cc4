package vrrp

import (
	"errors"
	"net/netip"
	"slices"
	"time"
)

// DropReason says why a received message took no part in the election. Every
// drop is counted under its reason and logged at a limited rate.
type DropReason string

// Drop reasons.
const (
	DropNone        DropReason = ""
	DropTTL         DropReason = "ttl"           // TTL / hop limit not 255: not from this link
	DropMalformed   DropReason = "malformed"     // too short, bad count, unknown type
	DropDuplicate   DropReason = "duplicate"     // an address listed twice: never a VIP set
	DropVersion     DropReason = "version"       // other VRRP version than configured
	DropChecksum    DropReason = "checksum"      // checksum does not verify
	DropAuth        DropReason = "auth"          // v2 authentication type or password differ
	DropInterval    DropReason = "interval"      // v2 advert interval differs (RFC 3768 7.1)
	DropAddresses   DropReason = "vip_mismatch"  // VIP list differs: another group on our VRID
	DropUnknownPeer DropReason = "unknown_peer"  // unicast mode: sender is not a configured peer
	DropOwn         DropReason = "own"           // our own advert came back
	DropVRID        DropReason = "vrid_mismatch" // for another VRID: the instance moved to a new one (SetVRID)
	// DropQueueFull: the instance's receive queue was full (a flood on our
	// VRID); adverts from the master it follows bypass the queue.
	DropQueueFull DropReason = "queue_full"
)

// Expect is what a valid advertisement for one instance looks like.
type Expect struct {
	Version  uint8
	VRID     uint8
	Interval time.Duration // v2 only: must match
	AuthType uint8
	AuthData [8]byte
	VIPs     []netip.Addr // sorted
	Peers    []netip.Addr // unicast peers; empty accepts any source
	Local    netip.Addr
}

// Accept validates a received message against e (RFC 5798 section 7.1,
// RFC 3768 section 7.1) and returns the advert for the state machine, or the
// reason it is dropped and the decoded packet when there is one.
func Accept(r Received, e *Expect) (Advert, *Packet, DropReason) {
	if r.Src == e.Local {
		return Advert{}, nil, DropOwn
	}
	if r.TTL != 255 {
		return Advert{}, nil, DropTTL
	}
	p, err := Unmarshal(r.Payload, r.Src.Is6())
	switch {
	case errors.Is(err, ErrVersion):
		return Advert{}, nil, DropVersion
	case errors.Is(err, ErrDuplicateAddr):
		return Advert{}, nil, DropDuplicate
	case err != nil:
		return Advert{}, nil, DropMalformed
	}
	if p.Version != e.Version {
		return Advert{}, p, DropVersion
	}
	if e.VRID != 0 && p.VRID != e.VRID {
		return Advert{}, p, DropVRID
	}
	if err := VerifyChecksum(r.Payload, r.Src, r.Dst); err != nil {
		return Advert{}, p, DropChecksum
	}
	if len(e.Peers) > 0 && !slices.Contains(e.Peers, r.Src) {
		return Advert{}, p, DropUnknownPeer
	}
	if p.Version == 2 {
		if p.AuthType != e.AuthType || e.AuthType == AuthSimple && p.AuthData != e.AuthData {
			return Advert{}, p, DropAuth
		}
		if p.Interval() != e.Interval {
			return Advert{}, p, DropInterval
		}
	}
	// A priority-0 advert of a leaving master still names its VIPs, so this
	// check applies to every advert.
	// Unmarshal refused repeated addresses, so sorting gives the set.
	got := slices.Clone(p.Addresses)
	slices.SortFunc(got, netip.Addr.Compare)
	if !slices.Equal(got, e.VIPs) {
		return Advert{}, p, DropAddresses
	}
	return Advert{Source: r.Src, Priority: p.Priority, Interval: p.Interval()}, p, DropNone
}
