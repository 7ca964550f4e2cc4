package lbsvc

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vigil-lb/vigil/internal/lbipam"
)

// Retry delays of a status write.
const (
	retryConflict = 100 * time.Millisecond // the cache is a little behind
	retryError    = time.Second
	maxWrites     = 16 // status writes in flight at once
)

// write is one status write the allocator decided.
type write struct {
	svc   *corev1.Service
	addrs []netip.Addr // the Service's addresses after it
	keep  []corev1.LoadBalancerIngress
	pool  string
	err   error // the allocation's failure, recorded after the write
	clear bool  // a Service vigil no longer serves: only its pool addresses go
}

// reconcile computes every matching Service's addresses and writes those
// that differ from the status. view is the cache with the overlay;
// assigned are the pool addresses in some status of view.
func (c *Controller) reconcile(lead *leadership, view []*corev1.Service, assigned map[netip.Addr]bool, now time.Time) {
	c.retryAt = time.Time{}
	var reqs []lbipam.Request
	objs := map[string]*corev1.Service{}
	reserved := map[netip.Addr]bool{}
	failures := map[Key]string{}
	var writes []write
	for _, s := range view {
		k := keyOf(s)
		if !matches(s, c.o.DefaultClass) {
			pa := poolAddrs(s, c.o.Pools)
			switch {
			case len(pa) == 0:
			case c.ours[s.UID]:
				// Ours once (class or type changed): give the pool
				// addresses back, keep whatever another writer put there.
				w := write{svc: s, clear: true}
				for _, in := range s.Status.LoadBalancer.Ingress {
					if a, err := netip.ParseAddr(in.IP); err != nil || lbipam.PoolOf(c.o.Pools, a.Unmap()) == "" {
						w.keep = append(w.keep, in)
					}
				}
				writes = append(writes, w)
				fallthrough // held until the write is seen
			default:
				// Another implementation's, from an overlapping range.
				for _, a := range pa {
					reserved[a] = true
				}
			}
			continue
		}
		req, err := request(s, c.poolNames)
		if err != nil {
			// No status change: its addresses stay its own.
			for _, a := range poolAddrs(s, c.o.Pools) {
				reserved[a] = true
			}
			failures[k] = err.Error()
			continue
		}
		reqs = append(reqs, req)
		objs[req.Service] = s
	}
	c.mu.Lock()
	for a, t := range c.freed {
		if now.Sub(t) < c.o.Hold && !assigned[a] {
			reserved[a] = true
		}
	}
	c.mu.Unlock()

	results, err := assign(c.o.Pools, reqs, sortedAddrs(reserved))
	if err != nil {
		c.log.Error("lb allocator", "error", err)
		c.retryAt = now.Add(retryError)
		return
	}
	// For Hold after this vigil first listed the Services, an address
	// no Service held then may have been freed just before by the last
	// allocator and still be announced somewhere: nothing new is given
	// out until then, only kept, shared or given back.
	window := now.Before(c.firstSync.Add(c.o.Hold))
	withheld := 0
	for _, req := range reqs {
		s := objs[req.Service]
		k := keyOf(s)
		res, ok := results[req.Service]
		if !ok {
			res.Err = fmt.Errorf("%s: no result from the allocator", req.Service)
		}
		if res.Err != nil {
			failures[k] = res.Err.Error()
		}
		if statusIs(s, res.Addrs, c.o.IPMode) {
			continue
		}
		if window && slices.ContainsFunc(res.Addrs, func(a netip.Addr) bool {
			return !assigned[a] && !c.atFirst[a]
		}) {
			withheld++
			continue
		}
		writes = append(writes, write{svc: s, addrs: res.Addrs, pool: res.Pool, err: res.Err})
	}
	c.heldUntil = time.Time{}
	if withheld > 0 {
		c.heldUntil = c.firstSync.Add(c.o.Hold)
		c.log.Info("lb allocator: new addresses wait for the takeover hold", "services", withheld, "until", c.heldUntil)
	}

	// Failures without a write are recorded now, the others after it.
	for k, msg := range failures {
		if !slices.ContainsFunc(writes, func(w write) bool { return keyOf(w.svc) == k }) {
			c.failed(c.find(view, k), msg)
		}
	}
	for k := range c.lastFail {
		if _, ok := failures[k]; !ok {
			delete(c.lastFail, k)
		}
	}
	c.run(lead, writes)
	c.mu.Lock()
	c.failures = c.failures[:0]
	for k, msg := range c.lastFail {
		c.failures = append(c.failures, Failure{Service: k, Reason: msg})
	}
	slices.SortFunc(c.failures, func(a, b Failure) int { return strings.Compare(a.Service.String(), b.Service.String()) })
	c.mu.Unlock()
}

func (c *Controller) find(view []*corev1.Service, k Key) *corev1.Service {
	for _, s := range view {
		if keyOf(s) == k {
			return s
		}
	}
	return nil
}

// failed records an AllocationFailed Event, once per distinct reason.
func (c *Controller) failed(s *corev1.Service, msg string) {
	if s == nil {
		return
	}
	k := keyOf(s)
	if c.lastFail[k] == msg {
		return
	}
	c.lastFail[k] = msg
	c.recorder.Event(s, corev1.EventTypeWarning, ReasonFailed, msg)
	c.log.Warn("lb allocation failed", "service", k.String(), "reason", msg)
}

// run performs the writes, at most maxWrites at once, each only while
// the term is fresh.
func (c *Controller) run(lead *leadership, writes []write) {
	type done struct {
		w       write
		updated *corev1.Service
		err     error
	}
	results := make([]done, len(writes))
	sem := make(chan struct{}, maxWrites)
	var wg sync.WaitGroup
	for i, w := range writes {
		if !c.mayWrite(lead) {
			results[i] = done{w: w, err: errNotFresh}
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s := w.svc.DeepCopy()
			s.Status.LoadBalancer.Ingress = append(w.keep, ingress(w.addrs, c.o.IPMode)...)
			ctx, cancel := context.WithTimeout(lead.ctx, c.writeTimeout)
			defer cancel()
			updated, err := c.client.CoreV1().Services(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{FieldManager: "vigil"})
			results[i] = done{w, updated, err}
		}()
	}
	wg.Wait()
	now := time.Now()
	for _, d := range results {
		k := keyOf(d.w.svc)
		switch {
		case d.err == nil:
		case apierrors.IsConflict(d.err):
			c.mu.Lock()
			c.conflicts++
			c.mu.Unlock()
			c.retry(now.Add(retryConflict))
			continue
		case apierrors.IsNotFound(d.err):
			continue // deleted: the cache will say so
		case errors.Is(d.err, errNotFresh):
			c.retry(now.Add(c.o.RetryPeriod))
			continue
		default:
			c.log.Warn("lb allocator: write status", "service", k.String(), "error", d.err)
			c.retry(now.Add(retryError))
			continue
		}
		c.overlay[k] = d.updated
		before := ingressAddrs(d.w.svc)
		after := ingressAddrs(d.updated)
		c.mu.Lock()
		c.writes++
		for _, a := range before {
			if !slices.Contains(after, a) && lbipam.PoolOf(c.o.Pools, a) != "" {
				c.freed[a] = now
			}
		}
		c.mu.Unlock()
		// In use from now on: should the Service go before the next
		// step, its address is freed, not forgotten.
		for _, a := range after {
			if lbipam.PoolOf(c.o.Pools, a) != "" {
				c.assigned[a] = true
			}
		}
		var added []string
		for _, a := range d.w.addrs {
			if !slices.Contains(before, a) {
				added = append(added, a.String())
			}
		}
		switch {
		case d.w.clear:
			msg := fmt.Sprintf("%s released: the Service is no longer of type LoadBalancer and class %s", join(before), Class)
			c.recorder.Event(d.updated, corev1.EventTypeNormal, ReasonReleased, msg)
			c.log.Info("lb address released", "service", k.String(), "addresses", join(before))
		case len(added) > 0:
			msg := fmt.Sprintf("%s from pool %s", strings.Join(added, ", "), d.w.pool)
			c.recorder.Event(d.updated, corev1.EventTypeNormal, ReasonAllocated, msg)
			c.log.Info("lb address allocated", "service", k.String(), "addresses", strings.Join(added, ","), "pool", d.w.pool)
		}
		if d.w.err != nil {
			c.failed(d.updated, d.w.err.Error())
		}
	}
}

var errNotFresh = errors.New("the allocator's term is not fresh")

func (c *Controller) retry(at time.Time) {
	if c.retryAt.IsZero() || at.Before(c.retryAt) {
		c.retryAt = at
	}
}

// assign calls lbipam.Assign, turning a panic into an error: a bug in
// the allocator must not take the node's dataplane down with it.
func assign(pools []lbipam.Pool, reqs []lbipam.Request, reserved []netip.Addr) (res map[string]lbipam.Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("lbipam.Assign panicked: %v", r)
		}
	}()
	return lbipam.Assign(pools, reqs, reserved), nil
}

func sortedAddrs(m map[netip.Addr]bool) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func join(addrs []netip.Addr) string {
	var s []string
	for _, a := range addrs {
		s = append(s, a.String())
	}
	return strings.Join(s, ", ")
}
