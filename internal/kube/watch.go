package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/vigil-lb/vigil/internal/kubeverify"
)

// Origin says where a snapshot came from.
type Origin string

const (
	// OriginAPI: informers that had synced with the API.
	OriginAPI Origin = "api"
	// OriginStateFile: the state file, because the API had not answered
	// in time.
	OriginStateFile Origin = "state-file"
	// OriginNone: nothing; the API had not answered and there was no
	// usable state file.
	OriginNone Origin = "none"
)

// Status is what a Source reports about itself.
type Status struct {
	// Server is the host:port that answered last ("" before any did).
	Server string
	// WatchUp: every watch's last list or watch call succeeded.
	WatchUp bool
	// Synced: Latest holds a snapshot taken from synced informers.
	Synced bool
	// Origin of the snapshot Latest returns.
	Origin Origin
	// Nodes and Slices count what Latest holds.
	Nodes, Slices int
	// LastSync is when a snapshot was last taken from synced informers
	// with a change from the one before (the first sync counts).
	LastSync time.Time
	// LastError is the error of a watch that is failing now, such as
	// "list nodes: forbidden: ..."; "" when every watch is up.
	LastError string
	// StateFileError is the last failure to write the state file; ""
	// after a write succeeds.
	StateFileError string
	// Changes counts the wakes sent on Updates.
	Changes uint64
}

// Source watches Nodes and EndpointSlices with client-go shared informers
// and hands out reduced, sorted snapshots of them.
//
// A snapshot is only ever taken from informers that have all synced: an
// API outage or a 403 leaves the last snapshot (or the state file's) in
// place, it never looks like "no nodes".
type Source struct {
	opts    Options
	log     *slog.Logger
	client  kubernetes.Interface
	dialer  *fallbackDialer // nil when the config came with its own Dial
	watches []*watched
	kick    chan struct{} // informer events, one slot
	updates chan struct{} // wakes for the reader, one slot
	started atomic.Bool
	pubMu   sync.Mutex // serialises publish (and the state file writes)

	mu       sync.Mutex
	latest   Snapshot
	synced   bool
	origin   Origin
	lastSync time.Time
	changes  uint64
	stateErr string // written under pubMu and mu
}

// watched is one informer and the health of its calls to the API.
type watched struct {
	what string // "nodes", "endpointslices in namespace NS"
	inf  cache.SharedIndexInformer
	log  *slog.Logger

	mu      sync.Mutex
	up      bool
	text    string // the current error, "" when up
	lastErr error  // the error the calls saw last, to skip it in the handler
	// verify compares the store with the API and relists a silent watch.
	verify *kubeverify.Verifier
}

// NewSource builds a Source for o; nothing is started before Start.
func NewSource(o Options) (*Source, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	cfg, dialer, err := clientConfig(o, os.Getenv)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client for %s: %w", cfg.Host, err)
	}
	return newSource(o, client, dialer)
}

// newSource builds a Source on client (a fake one in tests).
func newSource(o Options, client kubernetes.Interface, dialer *fallbackDialer) (*Source, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Coalesce <= 0 {
		o.Coalesce = DefaultCoalesce
	}
	if !o.WatchNodes && len(o.Services) == 0 && !o.AllSlices && !o.WatchServices {
		return nil, errors.New("kubernetes: nothing to watch: no services and nodes not watched")
	}
	s := &Source{
		opts:    o,
		log:     o.Log,
		client:  client,
		dialer:  dialer,
		kick:    make(chan struct{}, 1),
		updates: make(chan struct{}, 1),
		origin:  OriginNone,
	}
	if o.WatchNodes {
		nodes := client.CoreV1().Nodes()
		s.add("nodes", &corev1.Node{},
			func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
				return nodes.List(ctx, opts)
			},
			func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
				return nodes.Watch(ctx, opts)
			})
	}
	if o.WatchServices {
		svcs := client.CoreV1().Services(metav1.NamespaceAll)
		s.add("services", &corev1.Service{},
			func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
				return svcs.List(ctx, opts)
			},
			func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
				return svcs.Watch(ctx, opts)
			})
	}
	if o.AllSlices {
		// Every Service's slices (LoadBalancer Services come and go): one
		// cluster-wide informer, of the slices that belong to a Service.
		selector := discoveryv1.LabelServiceName
		eps := client.DiscoveryV1().EndpointSlices(metav1.NamespaceAll)
		s.add("endpointslices", &discoveryv1.EndpointSlice{},
			func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
				opts.LabelSelector = selector
				return eps.List(ctx, opts)
			},
			func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
				opts.LabelSelector = selector
				return eps.Watch(ctx, opts)
			})
		return s, nil
	}
	byNS := make(map[string][]string)
	for _, svc := range o.Services {
		if svc.Namespace == "" || svc.Name == "" {
			return nil, fmt.Errorf("kubernetes: service %q: want namespace/name", svc)
		}
		if !slices.Contains(byNS[svc.Namespace], svc.Name) {
			byNS[svc.Namespace] = append(byNS[svc.Namespace], svc.Name)
		}
	}
	for _, ns := range slices.Sorted(maps.Keys(byNS)) {
		names := byNS[ns]
		slices.Sort(names)
		req, err := labels.NewRequirement(discoveryv1.LabelServiceName, selection.In, names)
		if err != nil {
			return nil, fmt.Errorf("kubernetes: services %s/%v: %w", ns, names, err)
		}
		selector := labels.NewSelector().Add(*req).String()
		eps := client.DiscoveryV1().EndpointSlices(ns)
		s.add("endpointslices in namespace "+ns, &discoveryv1.EndpointSlice{},
			func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
				opts.LabelSelector = selector
				return eps.List(ctx, opts)
			},
			func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
				opts.LabelSelector = selector
				return eps.Watch(ctx, opts)
			})
	}
	return s, nil
}

// add sets up an informer over list and watch that records how each call
// went, so that Status can tell a 403 or an outage apart from "nothing".
func (s *Source) add(what string, example runtime.Object,
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error),
) {
	w := &watched{what: what, log: s.log}
	w.verify = kubeverify.New(what, func(ctx context.Context) (runtime.Object, error) {
		return list(ctx, metav1.ListOptions{ResourceVersion: ""}) // consistent
	})
	w.verify.Drop = s.opts.dropEvents
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			obj, err := list(ctx, opts)
			w.result(ctx, "list", err, false)
			return obj, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			wi, err := watchFn(ctx, opts)
			if err == nil {
				wi = w.verify.Watch(wi, opts)
			}
			if opts.SendInitialEvents != nil && *opts.SendInitialEvents {
				// A streaming list. The reflector retries it when the
				// server is unreachable or busy, and otherwise falls back
				// to a plain list at once, whose result is the one to
				// report (reporting both would log two texts per retry).
				if err == nil || utilnet.IsConnectionRefused(err) || apierrors.IsTooManyRequests(err) {
					w.result(ctx, "list", err, true)
				}
				return wi, err
			}
			w.result(ctx, "watch", err, true)
			return wi, err
		},
	}
	w.inf = cache.NewSharedIndexInformerWithOptions(
		cache.ToListWatcherWithWatchListSemantics(lw, s.client),
		example,
		cache.SharedIndexInformerOptions{ObjectDescription: what},
	)
	// Neither can fail before Run.
	_ = w.inf.SetWatchErrorHandlerWithContext(w.handleWatchError)
	_ = w.inf.SetTransform(stripManagedFields)
	_, _ = w.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.poke() },
		UpdateFunc: func(any, any) { s.poke() },
		DeleteFunc: func(any) { s.poke() },
	})
	s.watches = append(s.watches, w)
}

// stripManagedFields drops what vigil never reads and the informer would
// otherwise keep for every object.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// result records how a list or watch call went. Only an open watch
// (watching says the call opens one) marks w up: were a plain list enough,
// rights to list without rights to watch would log twice per retry.
func (w *watched) result(ctx context.Context, verb string, err error, watching bool) {
	if err != nil && ctx.Err() != nil {
		return // shutting down
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastErr = err
	if err == nil {
		if !watching {
			return
		}
		if w.text != "" {
			w.log.Info("kubernetes watch up", "resource", w.what, "after", w.text)
		}
		w.up, w.text = true, ""
		return
	}
	w.setError(verb + " " + w.what + ": " + describe(err))
}

// handleWatchError sees what ListAndWatch returned. Errors of the calls
// are recorded already; what is left comes from a watch stream.
func (w *watched) handleWatchError(ctx context.Context, _ *cache.Reflector, err error) {
	if ctx.Err() != nil || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		return // shutting down, or a routine relist
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lastErr != nil && errors.Is(err, w.lastErr) {
		return
	}
	w.setError("watch " + w.what + ": " + describe(err))
}

// setError marks w down with text, logging only a change of text so
// that a retry loop logs once. w.mu is held.
func (w *watched) setError(text string) {
	w.up = false
	if text != w.text {
		w.log.Warn("kubernetes watch failing", "resource", w.what, "error", text)
	}
	w.text = text
}

func (w *watched) state() (up bool, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.up, w.text
}

// describe says what went wrong in a call, the API's reason first:
// "forbidden: nodes is forbidden: User ...", or the transport's error.
func describe(err error) string {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		s := st.Status()
		reason := strings.ToLower(string(s.Reason))
		if reason == "" {
			reason = fmt.Sprintf("status %d", s.Code)
		}
		if s.Message == "" {
			return reason
		}
		return reason + ": " + s.Message
	}
	// The URL names the resource again and carries a random watch
	// timeout, which would make every retry a new text (and log line).
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// poke notes that an informer's store changed.
func (s *Source) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Start runs the informers until ctx ends and returns the first snapshot:
// from the API once every informer has synced; when they have not within
// wait, the state file's (OriginStateFile) or an empty one (OriginNone).
// In that case the API's snapshot follows on Updates once they sync.
// Start is called once; a second call returns Latest's snapshot.
func (s *Source) Start(ctx context.Context, wait time.Duration) (Snapshot, Origin) {
	if !s.started.CompareAndSwap(false, true) {
		snap, _ := s.Latest()
		return snap, s.Status().Origin
	}
	// client-go's contextual logs go to our logger.
	ictx := klog.NewContext(ctx, logr.FromSlogHandler(s.log.Handler()).WithValues("component", "client-go"))
	for _, w := range s.watches {
		go w.inf.RunWithContext(ictx)
	}
	synced := make(chan struct{})
	go func() {
		for _, w := range s.watches {
			select {
			case <-w.inf.HasSyncedChecker().Done():
			case <-ctx.Done():
				return
			}
		}
		close(synced)
		s.poke() // a sync with no objects has no events
	}()
	go s.run(ctx)
	if s.opts.VerifyEvery >= 0 {
		for _, w := range s.watches {
			go w.verify.Run(ctx, w.inf, s.opts.VerifyEvery, kubeverify.Grace, s.log)
		}
	}

	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-synced:
		s.publish()
		if snap, ok := s.Latest(); ok {
			return snap, OriginAPI
		}
	case <-timer.C:
	case <-ctx.Done():
	}

	snap, origin := Snapshot{}, OriginNone
	if s.opts.StateFile != "" {
		st, err := loadState(s.opts.StateFile)
		switch {
		case err == nil:
			snap, origin = st, OriginStateFile
		case errors.Is(err, os.ErrNotExist):
			s.log.Info("kubernetes api not synced and no state file", "state_file", s.opts.StateFile)
		default:
			s.log.Warn("kubernetes state file unusable", "error", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.synced {
		// The informers synced meanwhile; their snapshot is on Updates.
		return snap, origin
	}
	s.latest, s.origin = snap, origin
	s.log.Info("kubernetes api not synced, starting without it", "wait", wait, "origin", string(origin),
		"nodes", len(snap.Nodes), "slices", len(snap.Slices))
	return snap, origin
}

// run turns bursts of informer events into at most one wake per
// Coalesce window.
func (s *Source) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		t := time.NewTimer(s.opts.Coalesce)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		// Events of the window are in the stores already.
		select {
		case <-s.kick:
		default:
		}
		if _, changed := s.publish(); changed {
			s.mu.Lock()
			s.changes++
			s.mu.Unlock()
			select {
			case s.updates <- struct{}{}:
			default:
			}
		}
	}
}

// publish takes a snapshot when every informer has synced and keeps it
// when it differs from the last (or is the first); it reports whether it
// kept one.
func (s *Source) publish() (Snapshot, bool) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	for _, w := range s.watches {
		if !w.inf.HasSynced() {
			return Snapshot{}, false
		}
	}
	snap := s.build()
	s.mu.Lock()
	if s.synced && reflect.DeepEqual(snap, s.latest) {
		s.mu.Unlock()
		return snap, false
	}
	first := !s.synced
	s.latest, s.synced, s.origin, s.lastSync = snap, true, OriginAPI, time.Now()
	s.mu.Unlock()
	if first {
		s.log.Info("kubernetes api synced", "nodes", len(snap.Nodes), "slices", len(snap.Slices))
	}
	if s.opts.StateFile != "" {
		text := ""
		if err := writeState(s.opts.StateFile, snap); err != nil {
			text = err.Error()
		}
		if text != s.stateErr {
			if text != "" {
				s.log.Warn("kubernetes state file not written", "error", text)
			} else {
				s.log.Info("kubernetes state file written again", "state_file", s.opts.StateFile)
			}
		}
		s.mu.Lock()
		s.stateErr = text
		s.mu.Unlock()
	}
	return snap, true
}

// build reduces the informers' stores to a sorted snapshot.
func (s *Source) build() Snapshot {
	var snap Snapshot
	for _, w := range s.watches {
		for _, obj := range w.inf.GetStore().List() {
			switch o := obj.(type) {
			case *corev1.Node:
				snap.Nodes = append(snap.Nodes, nodeFromAPI(o))
			case *discoveryv1.EndpointSlice:
				if sl, ok := sliceFromAPI(o); ok {
					snap.Slices = append(snap.Slices, sl)
				}
			case *corev1.Service:
				if svc, ok := serviceFromAPI(o); ok {
					snap.Services = append(snap.Services, svc)
				}
			}
		}
	}
	snap.sort()
	return snap
}

// Updates wakes the reader after Latest changed: one slot, level
// triggered, so a slow reader sees one wake for many changes and reads
// the newest with Latest.
func (s *Source) Updates() <-chan struct{} { return s.updates }

// Latest returns the newest snapshot; ok is false while it does not come
// from synced informers (it is then Start's: the state file's or empty).
// The snapshot is shared: do not modify it.
func (s *Source) Latest() (snap Snapshot, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latest, s.synced
}

// Status reports the Source's state.
func (s *Source) Status() Status {
	st := Status{WatchUp: true}
	for _, w := range s.watches {
		up, text := w.state()
		st.WatchUp = st.WatchUp && up
		if st.LastError == "" {
			st.LastError = text
		}
	}
	if s.dialer != nil {
		st.Server = s.dialer.Last()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Synced = s.synced
	st.Origin = s.origin
	st.Nodes, st.Slices = len(s.latest.Nodes), len(s.latest.Slices)
	st.LastSync = s.lastSync
	st.StateFileError = s.stateErr
	st.Changes = s.changes
	return st
}
