package lbsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/vigil-lb/vigil/internal/kubeverify"
	"github.com/vigil-lb/vigil/internal/lbipam"
)

// LeaseName is the coordination.k8s.io Lease that elects the allocator.
const LeaseName = "vigil-lb-allocator"

// Defaults of Options.
const (
	// DefaultLeaseNamespace is the namespace vigil's manifests deploy to.
	DefaultLeaseNamespace = "vigil-system"
	// DefaultHold: an address freed less than this ago is given to no
	// other Service, so that a node still announcing it for the old
	// Service (a slow watch) does not draw the new Service's traffic.
	DefaultHold = 30 * time.Second
	// DefaultCoalesce: a burst of Service changes is handled once.
	DefaultCoalesce = 50 * time.Millisecond
	// The election's timings are client-go's (and kube-controller-
	// manager's) defaults. Nothing is gained by faster ones: the Lease
	// only decides who writes allocations, so a slow failover delays new
	// Services' addresses and moves no traffic; slower renewals put less
	// load on the API and tolerate a slow API server.
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Events the allocator records on Services.
const (
	ReasonAllocated = "AddressAllocated" // Normal: "192.0.2.10 from pool default"
	ReasonFailed    = "AllocationFailed" // Warning: why, naming the annotation, pool or Service
	ReasonReleased  = "AddressReleased"  // Normal: a Service vigil no longer serves gave its addresses back
)

// Options configure a Controller.
type Options struct {
	// Pools are the address pools (config kubernetes.services.pools).
	Pools []lbipam.Pool
	// DefaultClass: Services with no spec.loadBalancerClass are vigil's
	// too. Default: false (only class vigil.io/lb).
	DefaultClass bool
	// Node is this vigil's node name, its identity in the election.
	// Required.
	Node string
	// LeaseNamespace holds the Lease (it must exist; it is vigil's own
	// namespace). Default: DefaultLeaseNamespace.
	LeaseNamespace string
	// Namespace limits the Services to one namespace. Default: "" (all).
	Namespace string
	// IPMode is the ipMode written with every address: Proxy when vigil's
	// dataplane carries the traffic (kube-proxy must then send in-cluster
	// clients to the address, not straight to the pods), VIP otherwise.
	// Default: VIP (Kubernetes' meaning of an unset ipMode).
	IPMode corev1.LoadBalancerIPMode
	// Hold: a freed address is not reused for this long. Default:
	// DefaultHold.
	Hold time.Duration
	// Coalesce is how long the first change of a burst waits for more.
	// Default: DefaultCoalesce.
	Coalesce time.Duration
	// VerifyEvery is how often the Services informer's store is compared
	// with a consistent list (package kubeverify): a watch that is up but
	// silent would keep a deleted Service's address announced. Default
	// (0): kubeverify.DefaultEvery; negative disables.
	VerifyEvery time.Duration
	// LeaseDuration, RenewDeadline and RetryPeriod time the election
	// (client-go leaderelection). Defaults: DefaultLeaseDuration,
	// DefaultRenewDeadline, DefaultRetryPeriod.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Log receives one line per change of state. Default: discard.
	Log *slog.Logger
}

// Status is what a Controller reports about itself.
type Status struct {
	// Identity is this vigil's identity in the election (Options.Node).
	Identity string
	// Leader is the allocator's identity as last seen ("" before any).
	Leader string
	// Leading: this vigil is the allocator and may write now.
	Leading bool
	// Synced: the Services have been listed at least once.
	Synced bool
	// WatchError is the error of the Services watch now, "" when up.
	WatchError string
	// Services are Latest's: the Services served and their addresses.
	Services []Service
	// Failures are the Services the allocator could not (fully) serve,
	// and why. Only the allocator knows them.
	Failures []Failure
	// Held are addresses freed less than Hold ago, not given out again yet.
	Held int
	// Writes and Conflicts count status writes and those refused for a
	// stale resourceVersion (retried).
	Writes, Conflicts uint64
}

// Failure is why a Service has no (or not every) address.
type Failure struct {
	Service Key
	Reason  string
}

// Controller watches LoadBalancer Services, serves their addresses on
// every node, and, while elected, allocates them.
type Controller struct {
	o            Options
	log          *slog.Logger
	client       kubernetes.Interface
	inf          cache.SharedIndexInformer
	poolNames    []string
	writeTimeout time.Duration
	kick         chan struct{} // informer events and the election, one slot
	updates      chan struct{} // wakes for the reader, one slot
	started      atomic.Bool
	stopping     atomic.Bool
	lock         *fencedLock
	keepLease    bool // tests: stop as a crash would, the Lease left to expire
	verify       *kubeverify.Verifier
	broadcaster  record.EventBroadcaster
	recorder     record.EventRecorder

	// The loop's own state: only the loop goroutine touches it.
	synced    bool
	firstSync time.Time               // when the loop first saw the synced Services
	atFirst   map[netip.Addr]bool     // pool addresses in some status then
	assigned  map[netip.Addr]bool     // pool addresses in some status at the last step
	ours      map[types.UID]bool      // Services seen matching
	overlay   map[Key]*corev1.Service // the allocator's writes the cache has not caught up with
	lastFail  map[Key]string          // the last failure recorded per Service
	retryAt   time.Time               // a write to retry (zero: none)
	heldUntil time.Time               // new addresses withheld until then (zero: none)

	mu        sync.Mutex
	latest    []Service
	leader    string
	lead      *leadership // non-nil while elected
	freed     map[netip.Addr]time.Time
	failures  []Failure
	watchErr  string
	writes    uint64
	conflicts uint64
}

// leadership is one term as allocator.
type leadership struct {
	ctx  context.Context  // ends with the term
	seed []corev1.Service // the takeover list, merged into the overlay once
}

// New builds a Controller on client; nothing starts before Run.
func New(client kubernetes.Interface, o Options) (*Controller, error) {
	if o.Node == "" {
		return nil, errors.New("lbsvc: no node name (the election identity)")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.LeaseNamespace == "" {
		o.LeaseNamespace = DefaultLeaseNamespace
	}
	if o.IPMode == "" {
		o.IPMode = corev1.LoadBalancerIPModeVIP
	}
	if o.IPMode != corev1.LoadBalancerIPModeVIP && o.IPMode != corev1.LoadBalancerIPModeProxy {
		return nil, fmt.Errorf("lbsvc: ipMode %q: want VIP or Proxy", o.IPMode)
	}
	if o.Hold <= 0 {
		o.Hold = DefaultHold
	}
	if o.Coalesce <= 0 {
		o.Coalesce = DefaultCoalesce
	}
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	if o.RenewDeadline <= 0 {
		o.RenewDeadline = DefaultRenewDeadline
	}
	if o.RetryPeriod <= 0 {
		o.RetryPeriod = DefaultRetryPeriod
	}
	if o.LeaseDuration <= o.RenewDeadline || float64(o.RenewDeadline) <= 1.2*float64(o.RetryPeriod) {
		return nil, fmt.Errorf("lbsvc: lease %v, renew deadline %v, retry %v: want lease > renew deadline > 1.2 × retry",
			o.LeaseDuration, o.RenewDeadline, o.RetryPeriod)
	}
	c := &Controller{
		o:      o,
		log:    o.Log,
		client: client,
		// A write that starts while the last renewal is younger than
		// RenewDeadline ends before LeaseDuration has passed since it,
		// which is the earliest another vigil can take the Lease over.
		writeTimeout: o.LeaseDuration - o.RenewDeadline,
		kick:         make(chan struct{}, 1),
		updates:      make(chan struct{}, 1),
		atFirst:      map[netip.Addr]bool{},
		assigned:     map[netip.Addr]bool{},
		ours:         map[types.UID]bool{},
		overlay:      map[Key]*corev1.Service{},
		lastFail:     map[Key]string{},
		freed:        map[netip.Addr]time.Time{},
	}
	c.lock = newLock(c)
	for _, p := range o.Pools {
		c.poolNames = append(c.poolNames, p.Name)
	}
	svcs := client.CoreV1().Services(o.Namespace)
	c.verify = kubeverify.New("services", func(ctx context.Context) (runtime.Object, error) {
		return svcs.List(ctx, metav1.ListOptions{ResourceVersion: ""}) // consistent
	})
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			obj, err := svcs.List(ctx, opts)
			c.watchResult(ctx, "list", err)
			return obj, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := svcs.Watch(ctx, opts)
			c.watchResult(ctx, "watch", err)
			if err == nil {
				w = c.verify.Watch(w, opts)
			}
			return w, err
		},
	}
	c.inf = cache.NewSharedIndexInformerWithOptions(lw, &corev1.Service{},
		cache.SharedIndexInformerOptions{ObjectDescription: "services"})
	// None of these can fail before Run.
	_ = c.inf.SetTransform(func(obj any) (any, error) {
		if m, ok := obj.(metav1.Object); ok {
			m.SetManagedFields(nil)
		}
		return obj, nil
	})
	_ = c.inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
		// 410 is a routine relist (also the verifier's cue), not a failure.
		if ctx.Err() == nil && !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
			c.watchResult(ctx, "watch", err)
		}
	})
	_, _ = c.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.poke() },
		UpdateFunc: func(any, any) { c.poke() },
		DeleteFunc: func(any) { c.poke() },
	})
	c.broadcaster = record.NewBroadcaster()
	c.recorder = c.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "vigil", Host: o.Node})
	return c, nil
}

// watchResult records how a call of the Services informer went.
func (c *Controller) watchResult(ctx context.Context, verb string, err error) {
	if err != nil && ctx.Err() != nil {
		return
	}
	text := ""
	if err != nil {
		text = verb + " services: " + err.Error()
	}
	c.mu.Lock()
	prev := c.watchErr
	c.watchErr = text
	c.mu.Unlock()
	switch {
	case text != "" && text != prev:
		c.log.Warn("kubernetes watch failing", "resource", "services", "error", text)
	case text == "" && prev != "":
		c.log.Info("kubernetes watch up", "resource", "services", "after", prev)
	}
}

func (c *Controller) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run watches Services, takes part in the election and, while elected,
// allocates, until ctx ends. It returns once it has stopped writing and
// given the Lease up. Run is called once.
func (c *Controller) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("lbsvc: Run called twice")
	}
	ictx := klog.NewContext(ctx, logr.FromSlogHandler(c.log.Handler()).WithValues("component", "client-go"))
	sink := c.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer func() {
		sink.Stop()
		c.broadcaster.Shutdown()
	}()
	go c.inf.RunWithContext(ictx)
	if c.o.VerifyEvery >= 0 {
		go c.verify.Run(ictx, c.inf, c.o.VerifyEvery, kubeverify.Grace, c.log)
	}
	if !cache.WaitForCacheSync(ctx.Done(), c.inf.HasSynced) {
		return nil
	}
	c.poke()

	// The election outlives ctx until the loop has returned, so that no
	// write is in flight when the Lease is released.
	ectx, stopElection := context.WithCancel(context.WithoutCancel(ictx))
	elected := make(chan struct{})
	go func() {
		defer close(elected)
		c.elect(ectx)
	}()
	c.loop(ctx)
	c.stopping.Store(true)
	stopElection()
	<-elected
	return nil
}

// loop handles each burst of changes once, and the timers the allocator
// asks for (a retry, the end of a hold).
func (c *Controller) loop(ctx context.Context) {
	for {
		var timer <-chan time.Time
		stop := func() bool { return false }
		if wake := c.nextWake(); !wake.IsZero() {
			t := time.NewTimer(time.Until(wake))
			timer, stop = t.C, t.Stop
		}
		select {
		case <-ctx.Done():
			stop()
			return
		case <-timer:
		case <-c.kick:
			stop()
			t := time.NewTimer(c.o.Coalesce)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			select {
			case <-c.kick:
			default:
			}
		}
		c.step(ctx)
	}
}

// nextWake is when the allocator wants to run again without a change.
func (c *Controller) nextWake() time.Time {
	c.mu.Lock()
	leading := c.lead != nil
	var wake time.Time
	for _, t := range c.freed {
		if end := t.Add(c.o.Hold); wake.IsZero() || end.Before(wake) {
			wake = end
		}
	}
	c.mu.Unlock()
	if !leading {
		return time.Time{}
	}
	for _, t := range []time.Time{c.retryAt, c.heldUntil} {
		if !t.IsZero() && (wake.IsZero() || t.Before(wake)) {
			wake = t
		}
	}
	return wake
}

// Updates wakes the reader after Latest changed: one slot, level
// triggered, so a slow reader sees one wake for many changes.
func (c *Controller) Updates() <-chan struct{} { return c.updates }

// Latest returns the Services served now, sorted by namespace and name.
// The slice is shared: do not modify it.
func (c *Controller) Latest() []Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.latest
}

// Status reports the Controller's state.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{
		Identity:   c.o.Node,
		Leader:     c.leader,
		Leading:    c.lead != nil && c.lead.ctx.Err() == nil,
		Synced:     c.inf.HasSynced(),
		WatchError: c.watchErr,
		Services:   c.latest,
		Failures:   slices.Clone(c.failures),
		Writes:     c.writes,
		Conflicts:  c.conflicts,
	}
	now := time.Now()
	for _, t := range c.freed {
		if now.Sub(t) < c.o.Hold {
			st.Held++
		}
	}
	return st
}

// step takes the Services as they are, publishes what is served and, on
// the allocator, reconciles.
func (c *Controller) step(ctx context.Context) {
	now := time.Now()
	c.mu.Lock()
	lead := c.lead
	if lead != nil && lead.ctx.Err() != nil {
		lead, c.lead = nil, nil
	}
	var seed []corev1.Service
	if lead != nil {
		seed, lead.seed = lead.seed, nil
	}
	c.mu.Unlock()
	for i := range seed {
		c.merge(&seed[i])
	}
	view := c.view()

	// What is served and which addresses are in use: on every node, so
	// that any of them can take over the allocation knowing what was
	// freed recently.
	assigned := map[netip.Addr]bool{}
	var latest []Service
	for _, s := range view {
		if matches(s, c.o.DefaultClass) {
			c.ours[s.UID] = true
			if sv, ok := served(s, c.o.Pools); ok {
				latest = append(latest, sv)
			}
		}
		for _, a := range poolAddrs(s, c.o.Pools) {
			assigned[a] = true
		}
	}
	slices.SortFunc(latest, func(a, b Service) int {
		if a.Namespace != b.Namespace {
			return strings.Compare(a.Namespace, b.Namespace)
		}
		return strings.Compare(a.Name, b.Name)
	})
	if !c.synced {
		c.synced, c.firstSync, c.atFirst = true, now, maps.Clone(assigned)
	}
	c.mu.Lock()
	for a := range c.assigned {
		if !assigned[a] {
			c.freed[a] = now
		}
	}
	for a, t := range c.freed {
		if now.Sub(t) >= c.o.Hold {
			delete(c.freed, a)
		}
	}
	changed := !reflect.DeepEqual(latest, c.latest)
	if changed {
		c.latest = latest
	}
	c.mu.Unlock()
	c.assigned = assigned
	if changed {
		select {
		case c.updates <- struct{}{}:
		default:
		}
	}
	if lead != nil {
		c.reconcile(lead, view, assigned, now)
	}
}
