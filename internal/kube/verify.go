package kube

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

// A watch can be up and still deliver nothing: after a kube-apiserver
// restart (etcd kept) a Service deletion once reached vigil 10 s late and
// once not within 30 s, although every watch had been re-established.
// Until the informer relisted, vigil announced the deleted Service's
// address. The verifier bounds that: every period it lists each watched
// kind with resourceVersion "" (a consistent read, served by the API
// server's watch cache once it has caught up with etcd) and compares the
// objects' keys, UIDs and resourceVersions with the informer's store. A
// difference can be a watch event still on its way, so it counts only
// when the same key differs again in a second list verifyGrace later;
// then the informer relists (through the watch it runs, see relistable)
// and the fact is logged once per relist.
//
// Cost: one list per watched kind per period, a second one only after a
// difference, and a relist only when a difference persisted.

// verifyGrace is how long a difference may be an event in flight.
const verifyGrace = 2 * time.Second

// lister is a consistent list of one watched kind.
type lister func(ctx context.Context) (runtime.Object, error)

// verifier checks one informer's store against the API.
type verifier struct {
	w    *watched
	list lister
}

// version identifies one object's state.
type version struct{ uid, rv string }

// differing lists the keys whose state differs between the API's list
// and the store.
func (v *verifier) differing(ctx context.Context) ([]string, error) {
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
	for _, it := range v.w.inf.GetStore().List() {
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
// differed both times (nil when the store is right or the API failed).
func (v *verifier) check(ctx context.Context, grace time.Duration) []string {
	if !v.w.inf.HasSynced() {
		return nil
	}
	first, err := v.differing(ctx)
	if err != nil || len(first) == 0 {
		return nil // an API failure shows in the watch's own status
	}
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(grace):
	}
	second, err := v.differing(ctx)
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

// verify runs the checks of every informer, each on its own, until ctx
// ends.
func (s *Source) verify(ctx context.Context, every, grace time.Duration) {
	for _, v := range s.verifiers {
		go v.loop(ctx, every, grace, s.log)
	}
}

// loop checks every period and makes the informer relist on a
// persistent difference.
func (v *verifier) loop(ctx context.Context, every, grace time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		stale := v.check(ctx, grace)
		if len(stale) == 0 {
			continue
		}
		shown := stale
		if len(shown) > 5 {
			shown = shown[:5]
		}
		log.Warn("kubernetes watch missed changes, relisting", "resource", v.w.what,
			"objects", len(stale), "first", shown)
		v.w.relist()
	}
}

// relistable passes a watch's events on and, on relist, ends the watch
// with a 410 Expired error: the reflector then lists again (a consistent
// list) and replaces its store, with delete events for what is gone.
type relistable struct {
	inner watch.Interface
	drop  func() bool // tests: drop events while it says so
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

// setWatch records the watch w's informer runs now.
func (w *watched) setWatch(r *relistable) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cur = r
}

// relist makes w's informer list again, through its current watch.
func (w *watched) relist() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cur != nil {
		w.cur.expire()
	}
}
