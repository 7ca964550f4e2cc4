package kubeverify

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

func svc(name, uid, rv string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(uid), ResourceVersion: rv}}
}

// lists returns a List that answers each call with the next of answers
// (the last one repeated).
func lists(answers ...[]*corev1.Service) List {
	var mu sync.Mutex
	n := 0
	return func(context.Context) (runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		a := answers[min(n, len(answers)-1)]
		n++
		out := &corev1.ServiceList{}
		for _, s := range a {
			out.Items = append(out.Items, *s)
		}
		return out, nil
	}
}

func TestCheck(t *testing.T) {
	a1, b1, b2, c1 := svc("a", "ua", "1"), svc("b", "ub", "2"), svc("b", "ub", "5"), svc("c", "uc", "3")
	bNew := svc("b", "ub2", "6") // deleted and made again
	for _, tc := range []struct {
		name  string
		store []*corev1.Service
		list  List
		want  []string
	}{
		{"equal", []*corev1.Service{a1, b1}, lists([]*corev1.Service{a1, b1}), nil},
		{"deletion missed", []*corev1.Service{a1, b1}, lists([]*corev1.Service{a1}), []string{"ns/b"}},
		{"creation missed", []*corev1.Service{a1}, lists([]*corev1.Service{a1, c1}), []string{"ns/c"}},
		{"update missed", []*corev1.Service{a1, b1}, lists([]*corev1.Service{a1, b2}), []string{"ns/b"}},
		{"recreation missed", []*corev1.Service{b1}, lists([]*corev1.Service{bNew}), []string{"ns/b"}},
		// A difference the second list no longer shows was an event in
		// flight (here the store is behind only at the first list).
		{"in flight", []*corev1.Service{a1, b1}, lists([]*corev1.Service{a1, b2}, []*corev1.Service{a1, b1}), nil},
		{"several", []*corev1.Service{a1, b1}, lists([]*corev1.Service{c1}), []string{"ns/a", "ns/b", "ns/c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := cache.NewStore(cache.MetaNamespaceKeyFunc)
			for _, s := range tc.store {
				if err := store.Add(s); err != nil {
					t.Fatal(err)
				}
			}
			got := New("services", tc.list).check(context.Background(), store, time.Millisecond)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("check: %v, want %v", got, tc.want)
			}
		})
	}
}

// A failing list is no difference: the watch's own status reports the API.
func TestCheckListFails(t *testing.T) {
	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	_ = store.Add(svc("a", "ua", "1"))
	v := New("services", func(context.Context) (runtime.Object, error) { return nil, errors.New("connection refused") })
	if got := v.check(context.Background(), store, time.Millisecond); got != nil {
		t.Fatalf("check: %v, want nothing", got)
	}
}

func recv(t *testing.T, ch <-chan watch.Event) (watch.Event, bool) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		return ev, ok
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
		return watch.Event{}, false
	}
}

// The wrapped watch passes events on; relist ends it with 410 Expired,
// which the reflector answers with a list.
func TestRelist(t *testing.T) {
	fake := watch.NewFake()
	v := New("services", lists(nil))
	w := v.Watch(fake, metav1.ListOptions{})
	go fake.Add(svc("a", "ua", "1"))
	if ev, _ := recv(t, w.ResultChan()); ev.Type != watch.Added {
		t.Fatalf("event %v, want Added", ev.Type)
	}
	v.relist()
	ev, ok := recv(t, w.ResultChan())
	if !ok || ev.Type != watch.Error || !apierrors.IsResourceExpired(apierrors.FromObject(ev.Object)) {
		t.Fatalf("after relist: %v %+v, want a 410 Expired error", ev.Type, ev.Object)
	}
	if _, ok := recv(t, w.ResultChan()); ok {
		t.Fatal("the watch goes on after the 410")
	}
	if !fake.IsStopped() {
		t.Error("the API's watch is not stopped")
	}
	w.Stop() // after the end: no panic
}

// Drop silences a watch but not the initial events of a streaming list.
func TestDropSparesStreamingList(t *testing.T) {
	fake := watch.NewFake()
	v := New("services", lists(nil))
	v.Drop = func() bool { return true }
	yes := true
	w := v.Watch(fake, metav1.ListOptions{SendInitialEvents: &yes})
	end := svc("", "", "9")
	end.Annotations = map[string]string{metav1.InitialEventsAnnotationKey: "true"}
	go func() {
		fake.Add(svc("a", "ua", "1"))
		fake.Action(watch.Bookmark, end)
		fake.Delete(svc("a", "ua", "2")) // dropped
		fake.Stop()
	}()
	var got []watch.EventType
	for ev := range w.ResultChan() {
		got = append(got, ev.Type)
	}
	if want := []watch.EventType{watch.Added, watch.Bookmark}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	w.Stop()
}
