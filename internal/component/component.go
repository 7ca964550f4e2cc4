// Package component is the contract between the supervisor and what it
// runs: every component runs until its context ends, and plans a reload
// itself, so that the supervisor only keeps the order (plan all, then commit
// all or abort all; start in order, stop in reverse).
package component

import (
	"context"

	"github.com/vigil-lb/vigil/internal/config"
)

// Component is one running part of the daemon.
type Component interface {
	// Name names the component in logs and errors ("vrrp", "balancers").
	Name() string
	// Run runs until ctx ends, then shuts down cleanly before it returns
	// (VIPs removed, connections drained, routes withdrawn). An error
	// before ctx ends stops the daemon.
	Run(ctx context.Context) error
	// Plan prepares cfg without changing what runs: everything that can
	// fail (an address in use, a backend off every subnet, a setting that
	// needs a restart) fails here, with the config key and the reason.
	Plan(cfg *config.Config) (Change, error)
}

// Change is a planned reload of one component. Exactly one of Commit and
// Abort is called, once.
type Change interface {
	// Commit applies the change; it cannot fail.
	Commit()
	// Abort releases what Plan prepared and leaves the component as it was.
	Abort()
}

// None is a Change that changes nothing.
type None struct{}

// Commit does nothing.
func (None) Commit() {}

// Abort does nothing.
func (None) Abort() {}

// Func is a Change from two functions; either may be nil.
type Func struct{ OnCommit, OnAbort func() }

// Commit calls OnCommit.
func (f Func) Commit() {
	if f.OnCommit != nil {
		f.OnCommit()
	}
}

// Abort calls OnAbort.
func (f Func) Abort() {
	if f.OnAbort != nil {
		f.OnAbort()
	}
}
