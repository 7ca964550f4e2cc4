// Package redirect is OpenShift's API port redirect as a vigil component. On
// OpenShift on-prem the node's own kube-apiserver listens on :6443 of every
// address, so vigil's API balancer listens on VIP:9445 instead, and a DNAT
// rule (VIP:6443 -> VIP:9445, for traffic that arrives and for traffic the
// node sends itself) exists only while the local balancer is healthy. When
// the balancer goes down the rule goes, and clients of VIP:6443 reach the
// node's API server directly.
//
// The package decides which rules should exist from the balancers' health
// (health.BalancerKey) and keeps one nftables table of its own holding
// exactly those; it does not balance, check or own the VIP.
package redirect

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vigil-lb/vigil/internal/clock"
	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/health"
)

// Rule redirects TCP to VIP:From to VIP:To while the balancer named
// Balancer is up.
type Rule struct {
	// Balancer names the balancer whose health.BalancerKey decides.
	Balancer string
	// VIP is the destination matched and kept; IPv4 or IPv6, no zone.
	VIP netip.Addr
	// From is the port clients use (6443), To the balancer's (9445).
	From, To uint16
}

// String is "VIP:From -> VIP:To (balancer NAME)".
func (r Rule) String() string {
	return fmt.Sprintf("%s -> %s (balancer %s)", netip.AddrPortFrom(r.VIP, r.From), netip.AddrPortFrom(r.VIP, r.To), r.Balancer)
}

func (r Rule) compare(o Rule) int {
	if c := r.VIP.Compare(o.VIP); c != 0 {
		return c
	}
	return cmp.Compare(r.From, o.From)
}

// Validate reports the first rule that cannot be installed: an address that
// is not a plain IPv4 or IPv6 one, a zero port, a rule onto its own port,
// or two rules for one VIP and port (the kernel would obey only the first).
func Validate(rules []Rule) error {
	seen := map[netip.AddrPort]int{}
	for i, r := range rules {
		switch {
		case r.Balancer == "":
			return fmt.Errorf("redirect %d: no balancer named", i)
		case !r.VIP.IsValid() || r.VIP.IsUnspecified():
			return fmt.Errorf("redirect %d (balancer %s): VIP %v is not an address", i, r.Balancer, r.VIP)
		case r.VIP.Zone() != "":
			return fmt.Errorf("redirect %d (balancer %s): VIP %v has a zone", i, r.Balancer, r.VIP)
		case r.VIP.Is4In6():
			return fmt.Errorf("redirect %d (balancer %s): VIP %v is IPv4-mapped: write %v", i, r.Balancer, r.VIP, r.VIP.Unmap())
		case r.From == 0 || r.To == 0:
			return fmt.Errorf("redirect %d (balancer %s): port 0 in %d -> %d", i, r.Balancer, r.From, r.To)
		case r.From == r.To:
			return fmt.Errorf("redirect %d (balancer %s): %d redirected onto itself", i, r.Balancer, r.From)
		}
		ap := netip.AddrPortFrom(r.VIP, r.From)
		if j, dup := seen[ap]; dup {
			return fmt.Errorf("redirect %d (balancer %s): %v is already redirected by redirect %d (balancer %s)",
				i, r.Balancer, ap, j, rules[j].Balancer)
		}
		seen[ap] = i
	}
	return nil
}

// kernel holds the redirect rules. Both calls are idempotent.
type kernel interface {
	// Sync makes the kernel hold exactly rules, in one atomic change.
	Sync(rules []Rule) error
	// Remove deletes everything vigil installed; nothing installed is fine.
	Remove() error
}

// How often the table is rebuilt although nothing changed, to put back
// what someone else removed (an `nft flush ruleset`), and how soon a failed
// change is retried.
const (
	resyncInterval = 30 * time.Second
	retryInterval  = time.Second
)

// Redirect is the component that keeps the DNAT rules of the healthy
// balancers installed. Its zero value is not usable: call New.
type Redirect struct {
	store   *health.Store
	log     *slog.Logger
	rulesOf func(*config.Config) []Rule
	k       kernel
	clk     clock.Clock
	wake    chan struct{} // one slot: the rule set changed

	mu        sync.Mutex
	rules     []Rule
	installed []Rule // what the kernel holds, sorted
	reasons   map[Rule]string
}

// New returns the component for rules, installed in the namespace vigil
// runs in. rulesOf gives Plan the rules of a reloaded config (the
// balancers' redirect keys); nil keeps the rules New was given, so that a
// reload changes nothing until the config carries them. Rules are checked
// by Validate when Run starts.
func New(rules []Rule, store *health.Store, log *slog.Logger, rulesOf func(*config.Config) []Rule) *Redirect {
	return newWith(rules, store, log, rulesOf, newNFT(-1), clock.Real{})
}

func newWith(rules []Rule, store *health.Store, log *slog.Logger, rulesOf func(*config.Config) []Rule, k kernel, clk clock.Clock) *Redirect {
	return &Redirect{store: store, log: log, rulesOf: rulesOf, k: k, clk: clk, wake: make(chan struct{}, 1),
		rules: slices.Clone(rules), reasons: map[Rule]string{}}
}

// Name names the component.
func (r *Redirect) Name() string { return "redirect" }

// Plan plans the rules rulesOf (see New) finds in cfg.
func (r *Redirect) Plan(cfg *config.Config) (component.Change, error) {
	if r.rulesOf == nil {
		return component.None{}, nil
	}
	return r.PlanRules(r.rulesOf(cfg))
}

// PlanRules checks rules and returns the change that makes them the rule
// set: Commit swaps it in and the running component installs and removes
// rules to match; Abort does nothing.
func (r *Redirect) PlanRules(rules []Rule) (component.Change, error) {
	if err := Validate(rules); err != nil {
		return nil, fmt.Errorf("redirect: %w", err)
	}
	rules = slices.Clone(rules)
	return component.Func{OnCommit: func() {
		r.mu.Lock()
		r.rules = rules
		r.mu.Unlock()
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}}, nil
}

// Run removes a table a crashed vigil left, installs the rules of the
// balancers that are up, follows their health until ctx ends and then
// removes every rule. A first installation that fails (no CAP_NET_ADMIN, no
// nat support in the kernel) is an error; later failures are logged and
// retried, the kernel keeping its last complete rule set meanwhile.
func (r *Redirect) Run(ctx context.Context) error {
	r.mu.Lock()
	err := Validate(r.rules)
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("redirect: %w", err)
	}
	sub := r.store.Subscribe()
	defer sub.Close()
	if err := r.k.Remove(); err != nil {
		return fmt.Errorf("redirect: remove a stale table: %w", err)
	}
	if err := r.reconcile(true); err != nil {
		return err
	}
	defer r.shutdown()
	resync := r.clk.NewTicker(resyncInterval)
	defer resync.Stop()
	var retry clock.Timer
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	var retryC <-chan time.Time
	failing := "" // the error being retried
	for {
		force := false
		select {
		case <-ctx.Done():
			return nil
		case <-sub.Wake():
			sub.Changes() // the states are read from the store as they are now
		case <-r.wake:
		case <-retryC:
			retryC, force = nil, true
		case <-resync.C():
			force = true
		}
		err := r.reconcile(force)
		switch {
		case err == nil && failing != "":
			r.log.Info("redirect: nftables change succeeded after failures", "reason", failing)
			failing = ""
		case err != nil && err.Error() != failing:
			// One line per distinct failure, not one per retry.
			r.log.Warn("redirect: nftables change failed: retrying", "err", err, "retry", retryInterval)
			failing = err.Error()
		}
		if err != nil {
			if retryC == nil {
				if retry == nil {
					retry = r.clk.NewTimer(retryInterval)
				} else {
					retry.Reset(retryInterval)
				}
				retryC = retry.C()
			}
		}
	}
}

// reconcile installs the rules whose balancer is up and removes the
// others. It calls the kernel only when that changes what is installed,
// or when force says to rebuild anyway.
func (r *Redirect) reconcile(force bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := make([]Rule, 0, len(r.rules))
	reasons := make(map[Rule]string, len(r.rules))
	for _, rule := range r.rules {
		st, known := r.store.Get(health.BalancerKey(rule.Balancer))
		switch {
		case !known:
			reasons[rule] = "balancer state unknown"
		case !st.Up:
			reasons[rule] = "balancer down"
			if st.Reason != "" {
				reasons[rule] += ": " + st.Reason
			}
		default:
			want = append(want, rule)
		}
	}
	slices.SortFunc(want, Rule.compare)
	if !force && slices.Equal(want, r.installed) {
		r.reasons = reasons
		return nil
	}
	if err := r.k.Sync(want); err != nil {
		err = fmt.Errorf("redirect: install %d rules: %w", len(want), err)
		for _, rule := range want {
			if !slices.Contains(r.installed, rule) {
				reasons[rule] = err.Error()
			}
		}
		for _, rule := range r.installed {
			if !slices.Contains(want, rule) {
				reasons[rule] += " (still installed: " + err.Error() + ")"
			}
		}
		r.reasons = reasons
		return err
	}
	for _, rule := range r.installed {
		if !slices.Contains(want, rule) {
			r.log.Info("redirect removed", r.attrs(rule, reasons[rule])...)
		}
	}
	for _, rule := range want {
		if !slices.Contains(r.installed, rule) {
			r.log.Info("redirect installed", r.attrs(rule, "balancer up")...)
		}
	}
	r.installed, r.reasons = want, reasons
	return nil
}

func (r *Redirect) attrs(rule Rule, reason string) []any {
	return []any{"balancer", rule.Balancer, "vip", rule.VIP, "from", rule.From, "to", rule.To, "reason", reason}
}

// shutdown removes every rule: without a balancer behind VIP:To, clients
// of VIP:From belong to the local API server.
func (r *Redirect) shutdown() {
	err := r.k.Remove()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.log.Error("redirect: remove the table at shutdown", "err", err)
		return
	}
	for _, rule := range r.installed {
		r.log.Info("redirect removed", r.attrs(rule, "shutdown")...)
	}
	r.installed = nil
	clear(r.reasons)
}

// RuleStatus is one rule and whether the kernel holds it.
type RuleStatus struct {
	Rule
	Installed bool
	// Reason says why the rule is not installed ("balancer down: ...", an
	// nftables error), or why an installed one should not be; "" when the
	// kernel holds what the balancer's health asks for.
	Reason string
}

// Status lists every rule in (VIP, From) order.
func (r *Redirect) Status() []RuleStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]RuleStatus, 0, len(r.rules))
	for _, rule := range r.rules {
		out = append(out, RuleStatus{Rule: rule, Installed: slices.Contains(r.installed, rule), Reason: r.reasons[rule]})
	}
	slices.SortFunc(out, func(a, b RuleStatus) int { return a.compare(b.Rule) })
	return out
}
