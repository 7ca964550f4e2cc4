package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/vigil-lb/vigil/internal/garp"
	"github.com/vigil-lb/vigil/internal/netlab"
)

// frames counts what a host hears of the neighbour protocols, by kind and,
// for gratuitous ARP, by the sender's MAC.
type frames struct {
	window      time.Duration
	garpRequest map[string]int // sender MAC -> gratuitous requests (sender IP = target IP)
	garpReply   map[string]int // sender MAC -> gratuitous replies
	arpOther    int            // ARP that is not gratuitous (resolution: requests and answers)
	na          int            // ICMPv6 neighbour advertisements
	ns          int            // ICMPv6 neighbour solicitations
	vrrp        int            // VRRP adverts (IP protocol 112), for scale
	other       int
}

func (f frames) arp() int {
	n := f.arpOther
	for _, c := range f.garpRequest {
		n += c
	}
	for _, c := range f.garpReply {
		n += c
	}
	return n
}

// perMinute scales a count in the window to a minute.
func (f frames) perMinute(n int) float64 {
	return float64(n) * float64(time.Minute) / float64(f.window)
}

// capture counts the frames h receives on eth0 for window, with a packet
// socket opened inside h (a socket keeps the namespace it was made in).
func capture(h *netlab.Host, window time.Duration) (frames, error) {
	f := frames{window: window, garpRequest: map[string]int{}, garpReply: map[string]int{}}
	var c *packet.Conn
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		return f, fmt.Errorf("packet socket in %s: %w", h.Name, err)
	}
	defer c.Close()
	own := h.MAC.String()
	end := time.Now().Add(window)
	buf := make([]byte, 2048)
	// Bounded by the window's deadline; the count bounds a flood.
	for range 10_000_000 {
		if err := c.SetReadDeadline(end); err != nil {
			return f, err
		}
		n, _, err := c.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return f, nil
		}
		if err != nil {
			return f, err
		}
		b := buf[:n]
		if n < 14 || net.HardwareAddr(b[6:12]).String() == own {
			continue // our own frames: the packet socket sees outgoing ones too
		}
		f.classify(b)
	}
	return f, nil
}

func (f *frames) classify(b []byte) {
	switch binary.BigEndian.Uint16(b[12:14]) {
	case 0x0806:
		a, err := garp.ParseFrame(b)
		switch {
		case err != nil:
			f.other++
		case a.SenderIP == a.TargetIP && a.Op == garp.OpRequest:
			f.garpRequest[a.SenderMAC.String()]++
		case a.SenderIP == a.TargetIP && a.Op == garp.OpReply:
			f.garpReply[a.SenderMAC.String()]++
		default:
			f.arpOther++
		}
	case 0x0800:
		if len(b) >= 14+20 && b[14+9] == 112 {
			f.vrrp++
		} else {
			f.other++
		}
	case 0x86dd:
		// Fixed header only: neighbour discovery carries no extension headers.
		if len(b) >= 14+40+1 && b[14+6] == 58 {
			switch b[14+40] {
			case 136:
				f.na++
				return
			case 135:
				f.ns++
				return
			}
		}
		if len(b) >= 14+40 && b[14+6] == 112 {
			f.vrrp++
			return
		}
		f.other++
	default:
		f.other++
	}
}
