// Package history keeps the last hour of what the daemon did, for the status
// page: a bounded ring of health events (every change the health store
// holds: checks, backends, balancers, interfaces, VRRP mastership,
// Kubernetes endpoints), each key's last change and downtime, each VRRP
// instance's states over the hour, and one sample every ten seconds of the
// rates and gauges the daemon counts (connections per second, check
// latency, GARP sent).
//
// Events come from a health.Store subscription, never from polling; only
// the counters, which have no subscription, are read at each step. Memory is
// bounded: MaxEvents events, Window/Step samples per series, MaxSeries
// series, and what has not been seen for a window is forgotten. It is a view
// for people, not a log: a key that changes twice between two wake-ups of
// the subscription is recorded once, in its latest state, as the health
// store promises.
package history

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigil-lb/vigil/internal/clock"
	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
)

// Bounds of what a Recorder keeps.
const (
	// Step is the time between two samples.
	Step = 10 * time.Second
	// Window is how far back samples and timelines go.
	Window = time.Hour
	// MaxEvents is how many events the ring holds.
	MaxEvents = 200
	// MaxSeries is how many sampled series are kept; more are not
	// recorded (a config with thousands of backends keeps the first).
	MaxSeries = 1000
	// maxSpans bounds one instance's timeline (a flapping instance).
	maxSpans = 720
)

// samples is how many samples a series holds: a window's worth.
const samples = int(Window / Step)

// Event is one change of a health key.
type Event struct {
	At   time.Time `json:"at"`
	Kind string    `json:"kind"` // check, backend, balancer, interface, master, endpoint
	Name string    `json:"name"`
	Addr string    `json:"addr,omitempty"` // backend only
	// State is up, down or removed; for kind master the VRRP state
	// (MASTER, BACKUP, FAULT...).
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// DownFor is, on a recovery, how long the key was down.
	DownFor time.Duration `json:"down_for_ns,omitempty"`
}

// KeyState is a key's state now, when it last changed and how long it has
// been down since the daemon started.
type KeyState struct {
	Kind  string    `json:"kind"`
	Name  string    `json:"name"`
	Addr  string    `json:"addr,omitempty"`
	Up    bool      `json:"up"`
	Since time.Time `json:"since"`
	// Changes counts state changes since the key was first seen.
	Changes int `json:"changes"`
	// Downtime is the total time down since it was first seen, the current
	// outage included.
	Downtime time.Duration `json:"downtime_ns"`
}

// Span is a time an instance spent in one state; To is zero while it
// lasts.
type Span struct {
	State  string    `json:"state"`
	From   time.Time `json:"from"`
	To     time.Time `json:"to,omitzero"`
	Reason string    `json:"reason,omitempty"`
}

// Timeline is one VRRP instance's states over the window, oldest first.
type Timeline struct {
	Instance string `json:"instance"`
	Spans    []Span `json:"spans"`
}

// SeriesKey names a sampled series: what (Kind: conn_rate, check_latency_ms,
// garp_rate, active...) of what (Name: a balancer, BALANCER/ADDR, a check,
// an interface).
type SeriesKey struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// Series is one sampled series, aligned with View.Times. A null value is a
// step where it had no sample (not there yet, or a counter reset).
type Series struct {
	SeriesKey
	Values []*float64 `json:"values"`
}

// View is what the recorder holds, for /api/v1/history.
type View struct {
	Now time.Time `json:"now"`
	// Since is when recording began (the daemon's start): before it, and
	// more than a Window ago, nothing is known.
	Since     time.Time     `json:"since"`
	Step      time.Duration `json:"step_ns"`
	Window    time.Duration `json:"window_ns"`
	Events    []Event       `json:"events"` // newest first
	Keys      []KeyState    `json:"keys"`
	Timelines []Timeline    `json:"timelines"`
	Times     []time.Time   `json:"times"` // of the samples, oldest first
	Series    []Series      `json:"series"`
}

// Point is what the daemon counts at one step: counters, whose rate per
// second over the step is kept, and gauges, kept as read.
type Point struct {
	Counters map[SeriesKey]uint64
	Gauges   map[SeriesKey]float64
}

type keyState struct {
	up        bool
	since     time.Time
	changes   int
	downtime  time.Duration // closed outages
	downSince time.Time     // while down
}

type series struct {
	vals []float32 // ring aligned with Recorder.times; NaN: no sample
	seen int       // samples since it was last in a Point
}

// Recorder records. The zero value is not usable: call New.
type Recorder struct {
	store  *health.Store
	clock  clock.Clock
	sample func() Point
	log    *slog.Logger

	started time.Time

	mu        sync.Mutex
	events    []Event // ring of MaxEvents
	next      int     // where the next event goes
	keys      map[health.Key]*keyState
	timelines map[string][]Span
	times     []time.Time // ring of samples; head is the newest
	head      int
	n         int // samples taken, up to samples
	series    map[SeriesKey]*series
	counters  map[SeriesKey]uint64 // at the last sample
	lastAt    time.Time
}

// New returns a recorder of store's changes and of what sample returns at
// every Step (nil: no samples). Run starts it.
func New(store *health.Store, clk clock.Clock, sample func() Point, log *slog.Logger) *Recorder {
	return &Recorder{store: store, clock: clk, sample: sample, log: log, started: clk.Now(),
		events: make([]Event, 0, MaxEvents), keys: map[health.Key]*keyState{}, timelines: map[string][]Span{},
		times: make([]time.Time, samples), series: map[SeriesKey]*series{}, counters: map[SeriesKey]uint64{}}
}

// Name is the component's name.
func (r *Recorder) Name() string { return "history" }

// Plan changes nothing: the recorder follows whatever the components
// publish.
func (r *Recorder) Plan(*config.Config) (component.Change, error) { return component.None{}, nil }

// Run records until ctx ends.
func (r *Recorder) Run(ctx context.Context) error {
	sub := r.store.Subscribe()
	defer sub.Close()
	tick := r.clock.NewTicker(Step)
	defer tick.Stop()
	r.Observe(sub.Changes(), r.clock.Now())
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sub.Wake():
			r.Observe(sub.Changes(), r.clock.Now())
		case <-tick.C():
			if r.sample != nil {
				p := r.sample() // outside r.mu: the sampler may read anything
				r.Sample(p, r.clock.Now())
			}
		}
	}
}

// Observe records health changes read at now.
func (r *Recorder) Observe(changes []health.Change, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range changes {
		r.observe(c, now)
	}
	r.pruneTimelines(now)
}

func (r *Recorder) observe(c health.Change, now time.Time) {
	k := c.Key
	ev := Event{At: now, Kind: k.Kind.String(), Name: k.Name, State: upDown(c.State.Up), Reason: c.State.Reason}
	if k.Kind == health.Backend {
		ev.Addr = k.Addr.String()
	}
	if k.Kind == health.Master {
		ev.State, ev.Reason = masterState(c.State)
	}
	ks := r.keys[k]
	switch {
	case !c.Known:
		if ks == nil {
			return
		}
		delete(r.keys, k)
		if k.Kind == health.Master {
			r.closeSpan(k.Name, now)
		}
		ev.State, ev.Reason = "removed", ""
	case ks == nil:
		ks = &keyState{up: c.State.Up, since: now}
		if !c.State.Up {
			ks.downSince = now
		}
		r.keys[k] = ks
	case ks.up == c.State.Up && k.Kind != health.Master:
		if c.State.Reason == "" {
			return // the same state; nothing to show
		}
		// Down for another reason: worth a line, not a state change.
	default:
		if ks.up != c.State.Up {
			ks.changes++
			ks.since = now
			if c.State.Up {
				down := now.Sub(ks.downSince)
				ks.downtime += down
				if k.Kind != health.Master { // not master is no outage
					ev.DownFor = down
				}
				ks.downSince = time.Time{}
			} else {
				ks.downSince = now
			}
			ks.up = c.State.Up
		}
	}
	if k.Kind == health.Master && c.Known {
		r.openSpan(k.Name, Span{State: ev.State, From: now, Reason: ev.Reason})
	}
	r.add(ev)
}

// masterState reads a Master key's state: the VRRP state is its reason's
// first word when it names one (the supervisor writes the state there),
// else MASTER or BACKUP by Up.
func masterState(st health.State) (state, reason string) {
	word, rest, _ := strings.Cut(st.Reason, " ")
	switch strings.TrimSuffix(word, ":") {
	case "MASTER", "BACKUP", "FAULT", "INIT":
		return strings.TrimSuffix(word, ":"), strings.TrimLeft(rest, ":- ")
	}
	if st.Up {
		return "MASTER", st.Reason
	}
	return "BACKUP", st.Reason
}

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

func (r *Recorder) add(ev Event) {
	if len(r.events) < MaxEvents {
		r.events = append(r.events, ev)
		r.next = len(r.events) % MaxEvents // 0 once full: the oldest goes first
		return
	}
	r.events[r.next] = ev
	r.next = (r.next + 1) % MaxEvents
}

func (r *Recorder) openSpan(instance string, s Span) {
	spans := r.timelines[instance]
	if n := len(spans); n > 0 && spans[n-1].To.IsZero() {
		if spans[n-1].State == s.State {
			return // the same state again (a new reason): the span goes on
		}
		spans[n-1].To = s.From
	}
	if len(spans) >= maxSpans {
		spans = slices.Delete(spans, 0, len(spans)-maxSpans+1)
	}
	r.timelines[instance] = append(spans, s)
}

func (r *Recorder) closeSpan(instance string, now time.Time) {
	spans := r.timelines[instance]
	if n := len(spans); n > 0 && spans[n-1].To.IsZero() {
		spans[n-1].To = now
	}
}

// pruneTimelines drops spans that ended before the window, and instances
// whose last span did.
func (r *Recorder) pruneTimelines(now time.Time) {
	start := now.Add(-Window)
	for name, spans := range r.timelines {
		i := 0
		for i < len(spans) && !spans[i].To.IsZero() && spans[i].To.Before(start) {
			i++
		}
		if i == len(spans) {
			delete(r.timelines, name)
			continue
		}
		r.timelines[name] = slices.Delete(spans, 0, i)
	}
}

// Sample records one step's point, taken at now.
func (r *Recorder) Sample(p Point, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n > 0 {
		r.head = (r.head + 1) % samples
	}
	r.n = min(r.n+1, samples)
	r.times[r.head] = now
	elapsed := now.Sub(r.lastAt).Seconds()
	for _, s := range r.series {
		s.vals[r.head] = float32(math.NaN())
		s.seen++
	}
	for k, v := range p.Counters {
		last, ok := r.counters[k]
		r.counters[k] = v
		if ok && v >= last && elapsed > 0 {
			r.put(k, float64(v-last)/elapsed)
		} else {
			r.put(k, math.NaN()) // first sample or a reset: no rate yet
		}
	}
	for k, v := range p.Gauges {
		r.put(k, v)
	}
	for k, s := range r.series {
		if s.seen >= samples { // gone for a whole window
			delete(r.series, k)
			delete(r.counters, k)
		}
	}
	for k := range r.counters {
		if _, ok := p.Counters[k]; !ok && r.series[k] == nil {
			delete(r.counters, k)
		}
	}
	r.lastAt = now
	r.pruneTimelines(now)
}

func (r *Recorder) put(k SeriesKey, v float64) {
	s := r.series[k]
	if s == nil {
		if len(r.series) >= MaxSeries {
			return
		}
		s = &series{vals: make([]float32, samples)}
		for i := range s.vals {
			s.vals[i] = float32(math.NaN())
		}
		r.series[k] = s
	}
	s.vals[r.head] = float32(v)
	s.seen = 0
}

// View returns what is recorded, as of now.
func (r *Recorder) View() View {
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	v := View{Now: now, Since: r.started, Step: Step, Window: Window, Events: make([]Event, 0, len(r.events)),
		Keys: make([]KeyState, 0, len(r.keys)), Timelines: []Timeline{}, Times: make([]time.Time, 0, r.n), Series: []Series{}}
	for i := range len(r.events) { // newest first
		j := len(r.events) - 1 - i
		if len(r.events) == MaxEvents {
			j = (r.next - 1 - i + MaxEvents) % MaxEvents
		}
		v.Events = append(v.Events, r.events[j])
	}
	keys := make([]health.Key, 0, len(r.keys))
	for k := range r.keys {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, health.Key.Compare)
	for _, k := range keys {
		ks := r.keys[k]
		out := KeyState{Kind: k.Kind.String(), Name: k.Name, Up: ks.up, Since: ks.since, Changes: ks.changes, Downtime: ks.downtime}
		if k.Kind == health.Backend {
			out.Addr = k.Addr.String()
		}
		if !ks.up {
			out.Downtime += now.Sub(ks.downSince)
		}
		v.Keys = append(v.Keys, out)
	}
	names := make([]string, 0, len(r.timelines))
	for name := range r.timelines {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		v.Timelines = append(v.Timelines, Timeline{Instance: name, Spans: slices.Clone(r.timelines[name])})
	}
	first := (r.head - r.n + 1 + samples) % samples
	for i := range r.n {
		v.Times = append(v.Times, r.times[(first+i)%samples])
	}
	sks := make([]SeriesKey, 0, len(r.series))
	for k := range r.series {
		sks = append(sks, k)
	}
	slices.SortFunc(sks, func(a, b SeriesKey) int {
		if c := strings.Compare(a.Kind, b.Kind); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, k := range sks {
		s := Series{SeriesKey: k, Values: make([]*float64, r.n)}
		for i := range r.n {
			if f := r.series[k].vals[(first+i)%samples]; !math.IsNaN(float64(f)) {
				x := math.Round(float64(f)*1000) / 1000
				s.Values[i] = &x
			}
		}
		v.Series = append(v.Series, s)
	}
	return v
}
