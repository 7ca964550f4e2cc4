// Package kubeverify catches an informer whose watch is up but delivers
// nothing, and makes it relist.
//
// Seen after a kube-apiserver restart (etcd kept): a Service deletion
// reached vigil 10 s late in one run and not within 30 s in another,
// although every watch had been re-established; until the informer
// relisted, vigil announced the deleted Service's address. A Verifier
// bounds that: every period it lists its kind with resourceVersion "" (a
// consistent read: the API server answers it from its watch cache only
// once that has caught up with etcd) and compares the objects' keys, UIDs
// and resourceVersions with the informer's store. A difference can be a
// watch event still on its way, so it counts only when the same key
// differs again in a second list Grace later. Then the informer relists:
// the Verifier ends its watch with 410 Expired, the reflector's own cue
// to list again, and logs that once per relist.
//
// Cost: one list per period per informer, a second one only after a
// difference, and a relist only when a difference persisted.
package kubeverify

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// DefaultEvery is the period vigil's informers are verified at: a watch
// that went silent is caught within it (plus Grace and a relist).
const DefaultEvery = 20 * time.Second

// Grace is how long a difference may be an event in flight.
const Grace = 2 * time.Second

// List is a consistent list (resourceVersion "") of the informer's kind,
// with the informer's selectors.
type List func(ctx context.Context) (runtime.Object, error)

// Verifier checks one informer's store against the API.
type Verifier struct {
	what string // "services", for the log
	list List
	// Drop, in tests, makes the watches drop their events (not those of a
	// streaming list) while it returns true: a watch up and silent.
	Drop func() bool

	mu  sync.Mutex
	cur *relistable // the watch the informer runs now
}

// New returns a Verifier of what (named in its log line) using list.
func New(what string, list List) *Verifier { return &Verifier{what: what, list: list} }

// Watch wraps a watch the informer's ListWatch opened with opts, so that
// the Verifier can end it; the informer must run the wrapped one.
func (v *Verifier) Watch(wi watch.Interface, opts metav1.ListOptions) watch.Interface {
	streaming := opts.SendInitialEvents != nil && *opts.SendInitialEvents
	r := newRelistable(wi, v.Drop, streaming)
	v.mu.Lock()
	v.cur = r
	v.mu.Unlock()
	return r
}

// Run verifies inf every period (DefaultEvery when 0) until ctx ends.
func (v *Verifier) Run(ctx context.Context, inf cache.SharedIndexInformer, every, grace time.Duration, log *slog.Logger) {
	if every <= 0 {
		every = DefaultEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !inf.HasSynced() {
			continue
		}
		stale := v.check(ctx, inf.GetStore(), grace)
		if len(stale) == 0 {
			continue
		}
		shown := stale
		if len(shown) > 5 {
			shown = shown[:5]
		}
		log.Warn("kubernetes watch missed changes, relisting", "resource", v.what,
			"objects", len(stale), "first", shown)
		v.relist()
	}
}

// version identifies one object's state.
type version struct{ uid, rv string }

// differing lists the keys whose state differs between the API's list
// and store, sorted.
func (v *Verifier) differing(ctx context.Context, store cache.Store) ([]string, error) {
	obj, err := v.list(ctx)
	if err != nil {
		return nil, err
	}
	items, err := meta.ExtractList(obj)
	if err != nil {
		return nil, err
	}
	api := make(map[string]version, len(items))
	for _, it := range items {
		m, err := meta.Accessor(it)
		if err != nil {
			return nil, err
		}
		key, _ := cache.MetaNamespaceKeyFunc(m)
		api[key] = version{string(m.GetUID()), m.GetResourceVersion()}
	}
	var diff []string
	for _, it := range store.List() {
		m, err := meta.Accessor(it)
		if err != nil {
			continue
		}
		key, _ := cache.MetaNamespaceKeyFunc(m)
		if got, ok := api[key]; !ok || got != (version{string(m.GetUID()), m.GetResourceVersion()}) {
			diff = append(diff, key)
		}
		delete(api, key)
	}
	for key := range api {
		diff = append(diff, key)
	}
	slices.Sort(diff)
	return diff, nil
}

// check compares once, and again after grace; it reports the keys that
// differed both times (nil when the store is right or the API failed:
// a failing API shows in the watch's own status).
func (v *Verifier) check(ctx context.Context, store cache.Store, grace time.Duration) []string {
	first, err := v.differing(ctx, store)
	if err != nil || len(first) == 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(grace):
	}
	second, err := v.differing(ctx, store)
	if err != nil {
		return nil
	}
	var both []string
	for _, k := range second {
		if _, ok := slices.BinarySearch(first, k); ok {
			both = append(both, k)
		}
	}
	return both
}

// relist makes the informer list again, through its current watch.
func (v *Verifier) relist() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cur != nil {
		v.cur.expire()
	}
}

// relistable passes a watch's events on and, on expire, ends the watch
// with a 410 Expired error: the reflector then lists again (a consistent
// list) and replaces its store, with delete events for what is gone.
type relistable struct {
	inner watch.Interface
	drop  func() bool
	// listing: a streaming list whose initial events are still coming;
	// drop leaves them alone (they are the relist).
	listing bool
	out     chan watch.Event
	gone    chan struct{}
	stop    chan struct{}
	once    sync.Once // closes gone
	halt    sync.Once // closes stop
}

func newRelistable(inner watch.Interface, drop func() bool, streaming bool) *relistable {
	r := &relistable{inner: inner, drop: drop, listing: streaming, out: make(chan watch.Event),
		gone: make(chan struct{}), stop: make(chan struct{})}
	go r.run()
	return r
}

func (r *relistable) run() {
	defer close(r.out)
	defer r.inner.Stop()
	in := r.inner.ResultChan()
	for {
		select {
		case ev, ok := <-in:
			if !ok {
				return
			}
			if r.listing && ev.Type == watch.Bookmark {
				if m, err := meta.Accessor(ev.Object); err == nil &&
					m.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
					r.listing = false
				}
			} else if !r.listing && r.drop != nil && r.drop() {
				continue
			}
			select {
			case r.out <- ev:
				continue
			case <-r.stop:
				return
			case <-r.gone:
			}
		case <-r.stop:
			return
		case <-r.gone:
		}
		expired := apierrors.NewResourceExpired("vigil: the watch missed changes, relist")
		select {
		case r.out <- watch.Event{Type: watch.Error, Object: &expired.ErrStatus}:
		case <-r.stop:
		}
		return
	}
}

// ResultChan implements watch.Interface.
func (r *relistable) ResultChan() <-chan watch.Event { return r.out }

// Stop implements watch.Interface.
func (r *relistable) Stop() { r.halt.Do(func() { close(r.stop) }) }

// expire ends the watch with 410 Expired.
func (r *relistable) expire() { r.once.Do(func() { close(r.gone) }) }
