package bfd

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// readHex reads a testdata file of hex bytes with # comments.
func readHex(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var digits strings.Builder
	for line := range strings.Lines(string(raw)) {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

func TestGoldenPackets(t *testing.T) {
	for _, tc := range []struct {
		file     string
		want     Packet
		trailing int // bytes past the length field
	}{
		{file: "down-slow.hex", want: Packet{State: Down, DetectMult: 3, MyDiscriminator: 0x12345678,
			DesiredMinTx: time.Second, RequiredMinRx: 300 * time.Millisecond}},
		{file: "up-poll.hex", want: Packet{State: Up, Poll: true, DetectMult: 3, MyDiscriminator: 0xabcd, YourDiscriminator: 0x12345678,
			DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond}},
		{file: "admindown-final.hex", trailing: 2, want: Packet{Diag: DiagAdminDown, State: AdminDown, Final: true, ControlPlaneIndependent: true,
			DetectMult: 5, MyDiscriminator: 0xffffffff, YourDiscriminator: 1, DesiredMinTx: 2 * time.Second,
			RequiredMinRx: 50 * time.Millisecond, RequiredMinEchoRx: 10 * time.Millisecond}},
		{file: "init-auth.hex", want: Packet{State: Init, DetectMult: 3, MyDiscriminator: 7, YourDiscriminator: 9,
			DesiredMinTx: 300 * time.Millisecond, RequiredMinRx: 300 * time.Millisecond, Auth: &Auth{Type: 1, Data: []byte{1, 'p', 'a', 's', 's'}}}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b := readHex(t, tc.file)
			var got Packet
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("decoded\n %+v\nwant\n %+v", got, tc.want)
			}
			enc, err := tc.want.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if wire := b[:len(b)-tc.trailing]; !bytes.Equal(enc, wire) {
				t.Fatalf("encoded\n % x\nwant\n % x", enc, wire)
			}
		})
	}
}

// Every check of RFC 5880 6.8.6 that needs no session, each with its error.
func TestUnmarshalInvalid(t *testing.T) {
	good := readHex(t, "up-poll.hex")
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte{}, good...)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"23 bytes", good[:23], ErrShort},
		{"version 0", edit(func(b []byte) []byte { b[0] = 0x00; return b }), ErrVersion},
		{"version 2", edit(func(b []byte) []byte { b[0] = 0x40; return b }), ErrVersion},
		{"length 23", edit(func(b []byte) []byte { b[3] = 23; return b }), ErrLength},
		{"auth bit, length 24", edit(func(b []byte) []byte { b[1] |= bitAuth; return b }), ErrLength},
		{"length past the payload", edit(func(b []byte) []byte { b[3] = 25; return b }), ErrTruncated},
		{"detect mult 0", edit(func(b []byte) []byte { b[2] = 0; return b }), ErrDetectMult},
		{"multipoint", edit(func(b []byte) []byte { b[1] |= bitMultipont; return b }), ErrMultipoint},
		{"my discriminator 0", edit(func(b []byte) []byte { copy(b[4:8], []byte{0, 0, 0, 0}); return b }), ErrMyDiscriminator},
		{"your discriminator 0 in Up", edit(func(b []byte) []byte { copy(b[8:12], []byte{0, 0, 0, 0}); return b }), ErrYourDiscriminator},
		{"your discriminator 0 in Init", edit(func(b []byte) []byte { b[1] = 0x80; copy(b[8:12], []byte{0, 0, 0, 0}); return b }), ErrYourDiscriminator},
		{"auth len 1", edit(func(b []byte) []byte { b[1] |= bitAuth; b[3] = 26; return append(b, 1, 1) }), ErrAuthLength},
		{"auth len past the length", edit(func(b []byte) []byte { b[1] |= bitAuth; b[3] = 26; return append(b, 1, 9, 0, 0, 0, 0, 0, 0, 0) }), ErrAuthLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Packet
			if err := p.UnmarshalBinary(tc.b); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Your discriminator 0 is fine in Down and AdminDown: the peer has
	// not heard from this end yet.
	for _, state := range []byte{0x00, 0x40} {
		b := edit(func(b []byte) []byte { b[1] = state; copy(b[8:12], []byte{0, 0, 0, 0}); return b })
		var p Packet
		if err := p.UnmarshalBinary(b); err != nil {
			t.Fatalf("state byte %#x: %v", state, err)
		}
	}
}

func TestMarshalRefuses(t *testing.T) {
	for _, p := range []Packet{
		{DetectMult: 3, MyDiscriminator: 1, DesiredMinTx: -time.Microsecond},
		{DetectMult: 3, MyDiscriminator: 1, RequiredMinRx: 5000 * time.Second},
		{DetectMult: 3, MyDiscriminator: 1, Auth: &Auth{Data: make([]byte, 230)}},
	} {
		if _, err := p.MarshalBinary(); err == nil {
			t.Errorf("%+v encoded", p)
		}
	}
}

// FuzzUnmarshal feeds arbitrary bytes to the decoder: it never panics, and
// what it accepts encodes to bytes that decode to the same packet.
func FuzzUnmarshal(f *testing.F) {
	for _, name := range []string{"down-slow.hex", "up-poll.hex", "admindown-final.hex", "init-auth.hex"} {
		f.Add(readHex(f, name))
	}
	f.Add(make([]byte, 24))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Packet
		if err := p.UnmarshalBinary(b); err != nil {
			return
		}
		enc, err := p.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded packet does not encode: %v (%+v)", err, p)
		}
		var q Packet
		if err := q.UnmarshalBinary(enc); err != nil {
			t.Fatalf("encoded packet does not decode: %v", err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("decode(encode(x)) != x\n got %+v\nwant %+v", q, p)
		}
	})
}
