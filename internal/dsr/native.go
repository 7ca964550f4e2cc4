package dsr

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/xdp"
)

// linkXDP is what native XDP needs to know of an interface.
type linkXDP struct {
	name     string
	veth     bool
	features xdp.Features
	known    bool // the kernel reported the features (Linux 6.3 and later)
}

// describeLink looks an interface up; what cannot be found stays unknown,
// and unknown never blocks native mode (attaching says what is wrong).
func (p *Plane) describeLink(name string) linkXDP {
	l := linkXDP{name: name}
	lk, err := p.k.LinkByName(name)
	if err != nil {
		return l
	}
	l.veth = lk.Kind == "veth"
	f, err := p.k.XDPFeatures(lk.Index)
	l.known = err == nil
	l.features = f
	return l
}

// egress is where the program on one interface sends frames: back out of it
// (XDP_TX) for backends on it, redirected to the others.
type egress struct {
	tx        bool
	redirects map[string]string // interface -> a backend reached through it, for the message
}

// targets names the interfaces frames are redirected to, in order.
func (e egress) targets() []string {
	names := make([]string, 0, len(e.redirects))
	for n := range e.redirects {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// sendsOn collects the egress of the program on interface ifname from every
// dsr balancer attached there.
func sendsOn(bals []config.Balancer, links map[string]map[netip.Addr]backendLink, ifname string) egress {
	e := egress{redirects: map[string]string{}}
	for _, b := range bals {
		if b.Interface != ifname {
			continue
		}
		for _, be := range b.Backends {
			l := links[b.Name][netip.MustParseAddrPort(be.Address).Addr()]
			if l.ifindex == 0 {
				e.tx = true
			} else if _, ok := e.redirects[l.name]; !ok {
				e.redirects[l.name] = be.Address
			}
		}
	}
	return e
}

// nativeDropsFrames says why a native program on own would lose frames the
// kernel accepts without complaint, or "" when it would not (or cannot
// tell). A veth hands its XDP_TX frames to its peer, which takes them only
// while it runs an XDP program of its own; a redirect needs a target that
// takes XDP frames (ndo_xdp_xmit; for a veth again a peer with a program).
// The kernel reports both as the NDO_XMIT feature of the sending device.
// Generic mode sends skbs, which every device takes.
func nativeDropsFrames(own linkXDP, e egress, describe func(name string) linkXDP) string {
	if e.tx && own.veth && own.known && own.features&xdp.FeatureNdoXmit == 0 {
		return fmt.Sprintf("%s is a veth whose peer runs no XDP program, and a veth hands frames sent back out (XDP_TX) only to a peer that runs one", own.name)
	}
	var whys []string
	for _, n := range e.targets() {
		t := describe(n)
		if t.known && t.features&xdp.FeatureNdoXmit == 0 {
			what := "its driver takes no redirected XDP frames"
			if t.veth {
				what = "it is a veth whose peer runs no XDP program"
			}
			whys = append(whys, fmt.Sprintf("backend %s is reached through %s, and %s", e.redirects[n], n, what))
		}
	}
	return strings.Join(whys, "; ")
}

// autoAvoidsNative says why xdp_mode auto runs generic although native
// would pass nativeDropsFrames, or "". A veth hands XDP frames to its peer,
// and may lose them even when the kernel says the peer takes them: a peer
// with GRO on and no program of its own reports so, and of 100 frames sent
// back out (XDP_TX) into one, 2 came through. Only a program on the peer
// makes sure, and the peer, in another namespace, cannot be seen from
// here. On veth generic mode costs little (it copies as native does).
func autoAvoidsNative(own linkXDP, e egress, describe func(name string) linkXDP) string {
	if e.tx && own.veth {
		return own.name + " is a veth, which hands frames sent back out (XDP_TX) to its peer, and whether the peer runs the XDP program that needs cannot be seen from here"
	}
	for _, n := range e.targets() {
		if describe(n).veth {
			return fmt.Sprintf("backend %s is reached through %s, a veth, and whether its peer runs the XDP program redirected frames need cannot be seen from here", e.redirects[n], n)
		}
	}
	return ""
}
