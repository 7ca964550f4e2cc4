package lbsvc

import (
	"strings"
	"testing"

	"github.com/vigil-lb/vigil/internal/badinput"
	"github.com/vigil-lb/vigil/internal/lbipam"
	corev1 "k8s.io/api/core/v1"
)

// TestBrokenKubeCorpus runs every Service of the bad-input corpus that has
// a "# want: lbsvc" line through the allocator's two steps, as reconcile
// does: request (the annotations and fields) and assign (the pools, with
// the file's Services competing). A Service that fails gets a reason that
// names the field, which reconcile records as an AllocationFailed Event on
// that Service; one that must not fail ("ok") gets its addresses. No
// panic. The conversion's half is internal/kube's TestBrokenKubeCorpus.
func TestBrokenKubeCorpus(t *testing.T) {
	cases, err := badinput.KubeObjects()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		wants := c.Expectations("lbsvc")
		if len(wants) == 0 {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			objs, err := c.Objects()
			if err != nil {
				t.Fatal(err)
			}
			var svcs []*corev1.Service
			for _, o := range objs {
				if s, ok := o.(*corev1.Service); ok {
					svcs = append(svcs, s)
				}
			}
			failures := allocate(t, svcs)
			for _, w := range wants {
				msg, failed := failures[w.Object]
				switch {
				case w.Want == "ok" && failed:
					t.Errorf("%s: refused: %s", w.Object, msg)
				case w.Want != "ok" && !failed:
					t.Errorf("%s: not refused, want a reason with %q", w.Object, w.Want)
				case w.Want != "ok" && !strings.Contains(msg, w.Want):
					t.Errorf("%s: reason %q, want it to contain %q", w.Object, msg, w.Want)
				}
			}
		})
	}
}

// allocate runs svcs through request and assign over testPools and
// returns each failed Service's reason by NAMESPACE/NAME.
func allocate(t *testing.T, svcs []*corev1.Service) map[string]string {
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("the allocator panicked: %v", r)
		}
	}()
	failures := map[string]string{}
	var names []string
	for _, p := range testPools {
		names = append(names, p.Name)
	}
	var reqs = make([]lbipam.Request, 0, len(svcs))
	for _, s := range svcs {
		req, err := request(s, names)
		if err != nil {
			failures[keyOf(s).String()] = err.Error()
			continue
		}
		reqs = append(reqs, req)
	}
	res, err := assign(testPools, reqs, nil)
	if err != nil {
		t.Fatalf("assign: %v", err)
	}
	for _, req := range reqs {
		r, ok := res[req.Service]
		switch {
		case !ok:
			failures[req.Service] = "no result from the allocator"
		case r.Err != nil:
			failures[req.Service] = r.Err.Error()
		case len(r.Addrs) == 0:
			failures[req.Service] = "no address and no error"
		}
	}
	return failures
}
