package importer

import (
	"fmt"
	"time"

	"github.com/vigil-lb/vigil/internal/config"
)

// mlBFD is a BFDProfile converted: the neighbors' bfd map, and whether a
// BGPPeer used it.
type mlBFD struct {
	o    *mlObject
	bfd  config.BFD
	used bool
}

// bfdProfile converts a BFDProfile into the bfd map of the neighbors whose
// BGPPeer names it. receiveInterval and transmitInterval (milliseconds,
// MetalLB's default 300) become min_rx and min_tx, detectMultiplier
// (default 3) multiplier: the same defaults as vigil's. vigil's sessions
// are single-hop, asynchronous and active, so echo, passive mode and a
// lower minimum TTL are notes.
func (m *mlConv) bfdProfile(o *mlObject) error {
	p := &mlBFD{o: o, bfd: config.BFD{MinRx: config.DefaultBFDInterval, MinTx: config.DefaultBFDInterval,
		Multiplier: config.DefaultBFDMultiplier}}
	for _, f := range o.spec {
		var err error
		switch f.key {
		case "receiveInterval", "transmitInterval":
			var ms int
			if err = o.decode(f, &ms); err != nil {
				break
			}
			d := time.Duration(ms) * time.Millisecond
			if ms < int(config.MinBFDInterval/time.Millisecond) || ms > int(config.MaxBFDInterval/time.Millisecond) { // before d can overflow
				err = o.errAt("spec."+f.key, f.line, fmt.Errorf("%d ms is outside %v to %v", ms, config.MinBFDInterval, config.MaxBFDInterval))
			} else if f.key == "receiveInterval" {
				p.bfd.MinRx = d
			} else {
				p.bfd.MinTx = d
			}
		case "detectMultiplier":
			if err = o.decode(f, &p.bfd.Multiplier); err == nil && (p.bfd.Multiplier < 1 || p.bfd.Multiplier > 255) {
				err = o.errAt("spec.detectMultiplier", f.line, fmt.Errorf("%d is outside 1 to 255", p.bfd.Multiplier))
			}
		case "echoMode":
			var echo bool
			if err = o.decode(f, &echo); err == nil && echo {
				m.note(o, f.line, true, "echoMode is not converted: vigil's BFD runs asynchronous mode without echo")
			}
		case "echoInterval":
			// Only of use with echoMode, which carries the note.
			var ms int
			err = o.decode(f, &ms)
		case "passiveMode":
			var passive bool
			if err = o.decode(f, &passive); err == nil && passive {
				m.note(o, f.line, true, "passiveMode is not converted: vigil's BFD sessions send from the start")
			}
		case "minimumTtl":
			var ttl int
			if err = o.decode(f, &ttl); err == nil && ttl < 254 {
				m.note(o, f.line, true, "minimumTtl %d is not converted: vigil's BFD is single-hop and takes only packets with TTL 255 (RFC 5881)", ttl)
			}
		default:
			m.unknown(o, f)
		}
		if err != nil {
			return err
		}
	}
	m.bfdProfiles[o.name] = p
	m.bfdOrder = append(m.bfdOrder, p)
	return nil
}

// bfdOf sets the neighbor's bfd from the BFDProfile its BGPPeer names.
func (m *mlConv) bfdOf(o *mlObject, line int, name string, p *mlPeer) {
	prof := m.bfdProfiles[name]
	if prof == nil {
		m.note(o, line, true, "bfdProfile %s is not in the input: set the neighbor's bfd (min_rx, min_tx, multiplier)", name)
		return
	}
	prof.used = true
	b := prof.bfd
	p.nb.BFD = &b
}

// unusedBFDProfiles notes the BFDProfiles no BGPPeer names.
func (m *mlConv) unusedBFDProfiles() {
	for _, p := range m.bfdOrder {
		if !p.used {
			m.note(p.o, 0, false, "named by no BGPPeer: not converted")
		}
	}
}
