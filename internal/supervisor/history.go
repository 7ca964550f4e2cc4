package supervisor

import (
	"github.com/vigil-lb/vigil/internal/history"
)

// historyPoint is what the history samples at every step: connections
// accepted per balancer and backend and GARP sent per interface (counters:
// it keeps their rates), checks' latency and balancers' open sessions
// (gauges). Read from the components' counters, not from a full Snapshot:
// no BGP round trip every step.
func (s *Supervisor) historyPoint() history.Point {
	p := history.Point{Counters: map[history.SeriesKey]uint64{}, Gauges: map[history.SeriesKey]float64{}}
	for _, c := range s.checks.Statuses() {
		if !c.LastProbe.IsZero() {
			p.Gauges[history.SeriesKey{Kind: "check_latency_ms", Name: c.Name}] = float64(c.Latency.Microseconds()) / 1000
		}
	}
	for _, b := range s.fleet.Balancers() {
		st := b.Status()
		p.Counters[history.SeriesKey{Kind: "conn_rate", Name: st.Name}] = st.Accepted
		p.Gauges[history.SeriesKey{Kind: "active", Name: st.Name}] = float64(st.Active)
		for _, be := range st.Backends {
			p.Counters[history.SeriesKey{Kind: "conn_rate", Name: st.Name + "/" + be.Address}] = be.Total
		}
	}
	bals, _ := s.dsr.Status()
	for _, b := range bals {
		p.Counters[history.SeriesKey{Kind: "packet_rate", Name: b.Name}] = b.Packets
	}
	for name, a := range s.vrrp.announcers {
		p.Counters[history.SeriesKey{Kind: "garp_rate", Name: name}] = a.Sent()
	}
	return p
}
