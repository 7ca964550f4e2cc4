//go:build !linux

package bfd

import (
	"errors"
	"log/slog"
	"net/netip"
	"runtime"
)

var errNotSupported = errors.New("bfd: not supported on " + runtime.GOOS)

type listener struct{}

type received struct {
	b   []byte
	src netip.Addr
	ifi int
	ttl int
}

func listen(int, bool, bool, func(received)) (*listener, error) { return nil, errNotSupported }

func (*listener) close() {}

type udpSender struct {
	peer netip.AddrPort
	log  *slog.Logger
}

func (*udpSender) Send(*Packet) error { return errNotSupported }

func (*udpSender) close() {}
