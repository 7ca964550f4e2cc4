package bfd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// State is a session state, as carried in the Sta field (RFC 5880 4.1).
type State uint8

// The session states, in their wire values.
const (
	AdminDown State = 0
	Down      State = 1
	Init      State = 2
	Up        State = 3
)

func (s State) String() string {
	switch s {
	case AdminDown:
		return "AdminDown"
	case Down:
		return "Down"
	case Init:
		return "Init"
	case Up:
		return "Up"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Diag is the diagnostic code: why the sender's session last left Up
// (RFC 5880 4.1).
type Diag uint8

// The diagnostic codes of RFC 5880 4.1.
const (
	DiagNone                 Diag = 0
	DiagDetectionTimeExpired Diag = 1
	DiagEchoFailed           Diag = 2
	DiagNeighborDown         Diag = 3
	DiagForwardingReset      Diag = 4
	DiagPathDown             Diag = 5
	DiagConcatenatedPathDown Diag = 6
	DiagAdminDown            Diag = 7
	DiagReverseConcatenated  Diag = 8
)

var diagNames = [...]string{"none", "control detection time expired", "echo function failed",
	"neighbor signaled session down", "forwarding plane reset", "path down", "concatenated path down",
	"administratively down", "reverse concatenated path down"}

func (d Diag) String() string {
	if int(d) < len(diagNames) {
		return diagNames[d]
	}
	return fmt.Sprintf("diag(%d)", uint8(d))
}

// AuthType is the Auth Type field of an authentication section.
type AuthType uint8

// Auth is an authentication section, kept as received: vigil runs no
// authentication and drops packets that carry one, but the codec reads
// and writes it whole.
type Auth struct {
	Type AuthType
	// Data is what follows the Auth Type and Auth Len bytes.
	Data []byte
}

// Packet is a BFD control packet (RFC 5880 4.1). Intervals are carried in
// microseconds on the wire. The version is always 1; the A bit is set when
// Auth is not nil, and the Length field is computed.
type Packet struct {
	Diag  Diag
	State State
	// Poll and Final are the P and F bits of a poll sequence.
	Poll, Final bool
	// ControlPlaneIndependent is the C bit.
	ControlPlaneIndependent bool
	// Demand is the D bit.
	Demand bool
	// Multipoint is the M bit, reserved: a packet with it set is invalid.
	Multipoint        bool
	DetectMult        uint8
	MyDiscriminator   uint32
	YourDiscriminator uint32
	DesiredMinTx      time.Duration
	RequiredMinRx     time.Duration
	RequiredMinEchoRx time.Duration
	Auth              *Auth
}

// Version is the protocol version this package speaks.
const Version = 1

// HeaderLen is the length of a control packet without authentication.
const HeaderLen = 24

// Why a control packet is invalid, the checks of RFC 5880 6.8.6 that need
// no session. Callers count drops by these.
var (
	ErrShort             = errors.New("bfd: shorter than the 24-byte header")
	ErrVersion           = errors.New("bfd: version is not 1")
	ErrLength            = errors.New("bfd: length field below the minimum")
	ErrTruncated         = errors.New("bfd: length field beyond the payload")
	ErrDetectMult        = errors.New("bfd: detect mult is zero")
	ErrMultipoint        = errors.New("bfd: multipoint bit set")
	ErrMyDiscriminator   = errors.New("bfd: my discriminator is zero")
	ErrYourDiscriminator = errors.New("bfd: your discriminator is zero in state Init or Up")
	ErrAuthLength        = errors.New("bfd: auth len does not fit the packet")
)

const (
	bitPoll      = 0x20
	bitFinal     = 0x10
	bitCPI       = 0x08
	bitAuth      = 0x04
	bitDemand    = 0x02
	bitMultipont = 0x01
)

// MarshalBinary encodes p. It fails on an interval that does not fit the
// 32-bit microsecond field, or an authentication section too long for the
// 8-bit length fields.
func (p *Packet) MarshalBinary() ([]byte, error) {
	n := HeaderLen
	if p.Auth != nil {
		if len(p.Auth.Data) > math.MaxUint8-2-HeaderLen {
			return nil, fmt.Errorf("bfd: auth data of %d bytes: %w", len(p.Auth.Data), ErrAuthLength)
		}
		n += 2 + len(p.Auth.Data)
	}
	b := make([]byte, n)
	b[0] = Version<<5 | uint8(p.Diag)&0x1f
	b[1] = uint8(p.State)<<6 | flag(p.Poll, bitPoll) | flag(p.Final, bitFinal) | flag(p.ControlPlaneIndependent, bitCPI) |
		flag(p.Auth != nil, bitAuth) | flag(p.Demand, bitDemand) | flag(p.Multipoint, bitMultipont)
	b[2] = p.DetectMult
	b[3] = uint8(n)
	binary.BigEndian.PutUint32(b[4:], p.MyDiscriminator)
	binary.BigEndian.PutUint32(b[8:], p.YourDiscriminator)
	for i, d := range []struct {
		name string
		v    time.Duration
	}{{"desired min tx", p.DesiredMinTx}, {"required min rx", p.RequiredMinRx}, {"required min echo rx", p.RequiredMinEchoRx}} {
		us := d.v / time.Microsecond
		if us < 0 || us > math.MaxUint32 {
			return nil, fmt.Errorf("bfd: %s %v does not fit 32 bits of microseconds", d.name, d.v)
		}
		binary.BigEndian.PutUint32(b[12+4*i:], uint32(us))
	}
	if p.Auth != nil {
		b[24], b[25] = uint8(p.Auth.Type), uint8(2+len(p.Auth.Data))
		copy(b[26:], p.Auth.Data)
	}
	return b, nil
}

func flag(set bool, bit uint8) uint8 {
	if set {
		return bit
	}
	return 0
}

// UnmarshalBinary decodes a control packet and applies the checks of RFC
// 5880 6.8.6 that need no session, returning one of the Err values (wrapped)
// for an invalid packet. Bytes past the Length field are ignored. It keeps
// no reference to b.
func (p *Packet) UnmarshalBinary(b []byte) error {
	if len(b) < HeaderLen {
		return fmt.Errorf("%w (%d bytes)", ErrShort, len(b))
	}
	if v := b[0] >> 5; v != Version {
		return fmt.Errorf("%w (%d)", ErrVersion, v)
	}
	auth := b[1]&bitAuth != 0
	length, minLen := int(b[3]), HeaderLen
	if auth {
		minLen += 2
	}
	if length < minLen {
		return fmt.Errorf("%w (length %d, at least %d)", ErrLength, length, minLen)
	}
	if length > len(b) {
		return fmt.Errorf("%w (length %d, %d bytes)", ErrTruncated, length, len(b))
	}
	q := Packet{
		Diag:                    Diag(b[0] & 0x1f),
		State:                   State(b[1] >> 6),
		Poll:                    b[1]&bitPoll != 0,
		Final:                   b[1]&bitFinal != 0,
		ControlPlaneIndependent: b[1]&bitCPI != 0,
		Demand:                  b[1]&bitDemand != 0,
		Multipoint:              b[1]&bitMultipont != 0,
		DetectMult:              b[2],
		MyDiscriminator:         binary.BigEndian.Uint32(b[4:]),
		YourDiscriminator:       binary.BigEndian.Uint32(b[8:]),
		DesiredMinTx:            time.Duration(binary.BigEndian.Uint32(b[12:])) * time.Microsecond,
		RequiredMinRx:           time.Duration(binary.BigEndian.Uint32(b[16:])) * time.Microsecond,
		RequiredMinEchoRx:       time.Duration(binary.BigEndian.Uint32(b[20:])) * time.Microsecond,
	}
	switch {
	case q.DetectMult == 0:
		return ErrDetectMult
	case q.Multipoint:
		return ErrMultipoint
	case q.MyDiscriminator == 0:
		return ErrMyDiscriminator
	case q.YourDiscriminator == 0 && q.State != Down && q.State != AdminDown:
		return fmt.Errorf("%w (state %v)", ErrYourDiscriminator, q.State)
	}
	if auth {
		alen := int(b[25])
		if alen < 2 || HeaderLen+alen > length {
			return fmt.Errorf("%w (auth len %d, packet length %d)", ErrAuthLength, alen, length)
		}
		q.Auth = &Auth{Type: AuthType(b[24]), Data: append([]byte{}, b[26:HeaderLen+alen]...)}
	}
	*p = q
	return nil
}
