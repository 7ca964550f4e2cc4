package lbsvc

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// fencedLock is the Lease lock, noting when this vigil last sent a
// renewal that succeeded: the allocator writes only while that is younger
// than RenewDeadline (mayWrite), which is stricter than the elector's own
// idea of leading, which ends only after the renewals have failed for
// RenewDeadline.
type fencedLock struct {
	resourcelock.Interface
	mu      sync.Mutex
	renewed time.Time
}

func (l *fencedLock) Create(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	return l.note(r, func() error { return l.Interface.Create(ctx, r) })
}

func (l *fencedLock) Update(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	return l.note(r, func() error { return l.Interface.Update(ctx, r) })
}

func (l *fencedLock) note(r resourcelock.LeaderElectionRecord, call func() error) error {
	sent := time.Now() // the Lease's term runs from no earlier than this
	err := call()
	if err == nil && r.HolderIdentity == l.Identity() {
		l.mu.Lock()
		l.renewed = sent
		l.mu.Unlock()
	}
	return err
}

func (l *fencedLock) lastRenewal() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewed
}

func newLock(c *Controller) *fencedLock {
	return &fencedLock{Interface: &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: c.o.LeaseNamespace, Name: LeaseName},
		Client:     c.client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: c.o.Node},
	}}
}

// elect runs the election until ctx ends, standing again after every
// lost term. Cancelling ctx releases the Lease if this vigil holds it.
func (c *Controller) elect(ctx context.Context) {
	cfg := leaderelection.LeaderElectionConfig{
		Lock:          c.lock,
		Name:          LeaseName,
		LeaseDuration: c.o.LeaseDuration,
		RenewDeadline: c.o.RenewDeadline,
		RetryPeriod:   c.o.RetryPeriod,
		// Run stops writing before it cancels the election, so the
		// next allocator need not wait for the Lease to expire.
		ReleaseOnCancel: !c.keepLease,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: c.takeOver,
			OnStoppedLeading: c.stepDown,
			OnNewLeader: func(id string) {
				c.mu.Lock()
				prev := c.leader
				c.leader = id
				c.mu.Unlock()
				if id != prev {
					c.log.Info("lb allocator", "leader", id, "from", prev, "lease", c.o.LeaseNamespace+"/"+LeaseName)
				}
			},
		},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(cfg)
		if err != nil { // New validated the timings
			c.log.Error("lb allocator election", "error", err)
			return
		}
		le.Run(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(c.o.RetryPeriod):
		}
	}
}

// takeOver starts a term: a consistent list of the Services (not the
// cache, which may not hold the previous allocator's last writes yet)
// seeds the view before the first allocation.
func (c *Controller) takeOver(ctx context.Context) {
	c.log.Info("lb allocator elected", "identity", c.o.Node)
	var list *corev1.ServiceList
	for {
		var err error
		lctx, cancel := context.WithTimeout(ctx, c.o.RenewDeadline)
		list, err = c.client.CoreV1().Services(c.o.Namespace).List(lctx, metav1.ListOptions{})
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("lb allocator: list services", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.o.RetryPeriod):
		}
	}
	c.mu.Lock()
	c.lead = &leadership{ctx: ctx, seed: list.Items}
	c.mu.Unlock()
	c.poke()
}

func (c *Controller) stepDown() {
	c.mu.Lock()
	was := c.lead != nil
	c.lead = nil
	c.failures = nil
	c.mu.Unlock()
	if was {
		c.log.Info("lb allocator stepped down", "identity", c.o.Node)
	}
	c.poke()
}

// mayWrite: this vigil's term is on, it is not stopping, and its last
// renewal is fresh (see writeTimeout).
func (c *Controller) mayWrite(lead *leadership) bool {
	return lead.ctx.Err() == nil && !c.stopping.Load() && time.Since(c.lock.lastRenewal()) < c.o.RenewDeadline
}

// merge puts s in the overlay when it is newer than the cache's copy.
func (c *Controller) merge(s *corev1.Service) {
	k := keyOf(s)
	if cached, ok := c.cached(k); ok && !newer(s, cached) {
		return
	}
	c.overlay[k] = s
}

// newer reports whether a's resourceVersion is after b's.
func newer(a, b *corev1.Service) bool {
	n, err := resourceversion.CompareResourceVersion(a.ResourceVersion, b.ResourceVersion)
	return err == nil && n > 0
}

func (c *Controller) cached(k Key) (*corev1.Service, bool) {
	obj, ok, err := c.inf.GetStore().GetByKey(k.String())
	if err != nil || !ok {
		return nil, false
	}
	s, ok := obj.(*corev1.Service)
	return s, ok
}

// view is the cache with the allocator's newer copies over it: its own
// writes, and the takeover list, until the cache has caught up.
func (c *Controller) view() []*corev1.Service {
	seen := map[Key]bool{}
	var out []*corev1.Service
	for _, obj := range c.inf.GetStore().List() {
		s, ok := obj.(*corev1.Service)
		if !ok {
			continue
		}
		k := keyOf(s)
		seen[k] = true
		if o, ok := c.overlay[k]; ok {
			if newer(o, s) {
				s = o
			} else {
				delete(c.overlay, k)
			}
		}
		out = append(out, s)
	}
	// A copy the cache does not hold: created after the cache's last
	// event, or deleted since. Keep it only in the first case.
	last := &corev1.Service{ObjectMeta: metav1.ObjectMeta{ResourceVersion: c.inf.LastSyncResourceVersion()}}
	for k, o := range c.overlay {
		if seen[k] {
			continue
		}
		if newer(o, last) {
			out = append(out, o)
		} else {
			delete(c.overlay, k)
		}
	}
	return out
}
