package proxyproto

import (
	"errors"
	"fmt"
	"io"
)

// Read reads a header from r without knowing its length in advance. It
// returns the header and whatever it read past the header, which belongs to
// the stream and must be passed on first.
func Read(r io.Reader) (Header, []byte, error) {
	buf := make([]byte, 0, 256)
	for {
		if len(buf) == cap(buf) {
			if cap(buf) >= MaxHeader {
				return Header{}, nil, fmt.Errorf("proxy protocol: no complete header in %d bytes", len(buf))
			}
			buf = append(make([]byte, 0, MaxHeader), buf...)
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		h, size, perr := Parse(buf)
		switch {
		case perr == nil:
			return h, buf[size:], nil
		case !errors.Is(perr, ErrIncomplete):
			return Header{}, nil, perr
		case err != nil:
			return Header{}, nil, fmt.Errorf("proxy protocol: connection ended inside the header: %w", err)
		}
	}
}
