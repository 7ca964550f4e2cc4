package vrrp

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/clock/clocktest"
)

// fakeLink records what the machine asked for, in order.
type fakeLink struct{ calls []string }

func (l *fakeLink) Advertise(p uint8) { l.calls = append(l.calls, "advert:"+itoa(int(p))) }
func (l *fakeLink) TakeOver()         { l.calls = append(l.calls, "takeover") }
func (l *fakeLink) Release()          { l.calls = append(l.calls, "release") }
func (l *fakeLink) Reannounce()       { l.calls = append(l.calls, "reannounce") }
func (l *fakeLink) take() string {
	s := strings.Join(l.calls, ",")
	l.calls = nil
	return s
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	s := ""
	for ; i > 0; i /= 10 {
		s = string(rune('0'+i%10)) + s
	}
	return s
}

var (
	local = netip.MustParseAddr("10.0.0.2")
	lower = netip.MustParseAddr("10.0.0.1")
	upper = netip.MustParseAddr("10.0.0.3")
)

type rig struct {
	t     *testing.T
	clock *clocktest.Clock
	link  *fakeLink
	m     *Machine
	trans []Transition
}

func newRig(t *testing.T, p Params) *rig {
	t.Helper()
	if p.Version == 0 {
		p.Version = 3
	}
	if p.Interval == 0 {
		p.Interval = time.Second
	}
	if !p.LocalAddr.IsValid() {
		p.LocalAddr = local
	}
	r := &rig{t: t, clock: clocktest.New(time.Unix(1000, 0)), link: &fakeLink{}}
	r.m = NewMachine(p, r.clock, r.link)
	r.m.OnTransition = func(tr Transition) { r.trans = append(r.trans, tr) }
	return r
}

// runUntil advances the fake clock deadline by deadline until d has passed,
// as the instance loop does with a real timer.
func (r *rig) runFor(d time.Duration) {
	end := r.clock.Now().Add(d)
	for {
		next := r.m.NextDeadline()
		if next.IsZero() || next.After(end) {
			r.clock.AdvanceTo(end)
			return
		}
		r.clock.AdvanceTo(next)
		r.m.Tick()
	}
}

func (r *rig) expectState(s State) {
	r.t.Helper()
	if got := r.m.State(); got != s {
		r.t.Fatalf("state = %s, want %s (transitions %+v)", got, s, r.trans)
	}
}

func (r *rig) expectCalls(want string) {
	r.t.Helper()
	if got := r.link.take(); got != want {
		r.t.Fatalf("link calls = %q, want %q", got, want)
	}
}

func TestBackupTakesOverAfterMasterDownInterval(t *testing.T) {
	// v3, priority 100, interval 1s: Master_Down = 3s + (156/256)s = 3.609375s.
	r := newRig(t, Params{Priority: 100, Preempt: true})
	r.m.Start()
	r.expectState(Backup)
	want := 3*time.Second + 156*time.Second/256
	if got := r.m.NextDeadline().Sub(r.clock.Now()); got != want {
		t.Fatalf("master down interval = %v, want %v", got, want)
	}
	r.runFor(want - time.Nanosecond)
	r.expectState(Backup)
	r.runFor(time.Nanosecond)
	r.expectState(Master)
	r.expectCalls("advert:100,takeover")
	// Then one advert per interval, exactly.
	r.runFor(3 * time.Second)
	r.expectCalls("advert:100,advert:100,advert:100")
}

func TestMasterDownIntervalV2UsesSecondsSkew(t *testing.T) {
	r := newRig(t, Params{Version: 2, Priority: 200, Interval: 100 * time.Millisecond})
	r.m.Start()
	// v2 skew is (256-priority)/256 seconds whatever the interval.
	want := 300*time.Millisecond + 56*time.Second/256
	if got := r.m.NextDeadline().Sub(r.clock.Now()); got != want {
		t.Fatalf("v2 master down interval = %v, want %v", got, want)
	}
}

func TestOwnerBecomesMasterAtOnce(t *testing.T) {
	r := newRig(t, Params{Priority: 255})
	r.m.Start()
	r.expectState(Master)
	r.expectCalls("advert:255,takeover")
	r.m.SetPriority(10) // tracking never lowers the owner
	if r.m.Priority() != 255 {
		t.Fatalf("owner priority changed to %d", r.m.Priority())
	}
}

func TestBackupElection(t *testing.T) {
	cases := []struct {
		name      string
		preempt   bool
		delay     time.Duration
		advPrio   uint8
		wantState State // after 10 intervals of adverts every interval
	}{
		{"higher master keeps us backup", true, 0, 150, Backup},
		{"equal master keeps us backup", true, 0, 100, Backup},
		{"lower master is preempted", true, 0, 50, Master},
		{"nopreempt keeps lower master", false, 0, 50, Backup},
		{"preempt delay holds off preemption", true, 20 * time.Second, 50, Backup},
		{"preempt after delay", true, 5 * time.Second, 50, Master},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Params{Priority: 100, Preempt: tc.preempt, PreemptDelay: tc.delay})
			r.m.Start()
			for range 10 {
				r.m.Receive(Advert{Source: upper, Priority: tc.advPrio, Interval: time.Second})
				r.runFor(time.Second)
			}
			r.expectState(tc.wantState)
		})
	}
}

func TestBackupLearnsMasterIntervalV3(t *testing.T) {
	r := newRig(t, Params{Priority: 100, Interval: time.Second})
	r.m.Start()
	r.m.Receive(Advert{Source: upper, Priority: 200, Interval: 100 * time.Millisecond})
	want := 300*time.Millisecond + 156*100*time.Millisecond/256
	if got := r.m.NextDeadline().Sub(r.clock.Now()); got != want {
		t.Fatalf("master down interval after learning 100ms = %v, want %v", got, want)
	}
	if r.m.MasterAddr() != upper {
		t.Fatalf("master = %v, want %v", r.m.MasterAddr(), upper)
	}
}

func TestPriorityZeroMakesBackupTakeOverAfterSkew(t *testing.T) {
	r := newRig(t, Params{Priority: 100, Interval: time.Second})
	r.m.Start()
	r.m.Receive(Advert{Source: upper, Priority: 200, Interval: time.Second})
	r.m.Receive(Advert{Source: upper, Priority: 0, Interval: time.Second})
	skew := 156 * time.Second / 256
	if got := r.m.NextDeadline().Sub(r.clock.Now()); got != skew {
		t.Fatalf("after priority 0 the timer is %v, want skew %v", got, skew)
	}
	r.runFor(skew)
	r.expectState(Master)
}

func TestMasterYields(t *testing.T) {
	cases := []struct {
		name    string
		src     netip.Addr
		advPrio uint8
		want    State
		calls   string
	}{
		{"to higher priority", lower, 150, Backup, "release"},
		{"to equal priority with higher address", upper, 100, Backup, "release"},
		{"not to equal priority with lower address", lower, 100, Master, "advert:100,reannounce"},
		{"not to lower priority, and reasserts", upper, 50, Master, "advert:100,reannounce"},
		{"priority zero gets an advert at once", upper, 0, Master, "advert:100"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Params{Priority: 100, Preempt: true})
			r.m.Start()
			r.runFor(4 * time.Second)
			r.expectState(Master)
			r.link.take()
			r.m.Receive(Advert{Source: tc.src, Priority: tc.advPrio, Interval: time.Second})
			r.expectState(tc.want)
			r.expectCalls(tc.calls)
		})
	}
}

func TestReassertIsRateLimited(t *testing.T) {
	r := newRig(t, Params{Priority: 100, Interval: time.Second})
	r.m.Start()
	r.runFor(4 * time.Second)
	r.link.take()
	for range 5 {
		r.m.Receive(Advert{Source: lower, Priority: 50, Interval: time.Second})
	}
	r.expectCalls("advert:100,reannounce")
}

func TestStopSendsPriorityZeroAndReleases(t *testing.T) {
	r := newRig(t, Params{Priority: 100})
	r.m.Start()
	r.runFor(4 * time.Second)
	r.link.take()
	r.m.Stop()
	r.expectState(Stopped)
	r.expectCalls("advert:0,release")
	r.runFor(10 * time.Second)
	r.expectCalls("")
}

func TestStopFromBackupSendsNothing(t *testing.T) {
	r := newRig(t, Params{Priority: 100})
	r.m.Start()
	r.m.Stop()
	r.expectCalls("")
}

func TestFaultAndRecovery(t *testing.T) {
	r := newRig(t, Params{Priority: 100})
	r.m.Start()
	r.runFor(4 * time.Second)
	r.link.take()
	r.m.SetFault(true, Tracked{Kind: "interface", Name: "eth1"})
	r.expectState(Fault)
	r.expectCalls("advert:0,release")
	r.runFor(time.Minute)
	r.expectCalls("")
	r.m.SetFault(false)
	r.expectState(Backup)
	r.runFor(4 * time.Second)
	r.expectState(Master)
	got := []string{}
	for _, tr := range r.trans {
		got = append(got, tr.From.String()+">"+tr.To.String())
	}
	if s := strings.Join(got, " "); s != "INIT>BACKUP BACKUP>MASTER MASTER>FAULT FAULT>BACKUP BACKUP>MASTER" {
		t.Fatalf("transitions %s", s)
	}
}

func TestFaultBeforeStart(t *testing.T) {
	r := newRig(t, Params{Priority: 100})
	r.m.SetFault(true, Tracked{Kind: "interface", Name: "eth0"})
	r.m.Start()
	r.expectState(Fault)
	r.expectCalls("")
}

func TestLoweredPriorityIsAdvertisedAtOnce(t *testing.T) {
	r := newRig(t, Params{Priority: 150})
	r.m.Start()
	r.runFor(4 * time.Second)
	r.link.take()
	r.m.SetPriority(100)
	r.expectCalls("advert:100")
	r.m.Receive(Advert{Source: lower, Priority: 120, Interval: time.Second})
	r.expectState(Backup)
}

func TestRaisedPriorityPreempts(t *testing.T) {
	r := newRig(t, Params{Priority: 100, Preempt: true})
	r.m.Start()
	adv := Advert{Source: upper, Priority: 120, Interval: time.Second}
	r.m.Receive(adv)
	r.runFor(time.Second)
	r.m.SetPriority(150)
	for range 5 {
		r.m.Receive(adv)
		r.runFor(time.Second)
	}
	r.expectState(Master)
}

func TestResignAndClaim(t *testing.T) {
	r := newRig(t, Params{Priority: 100})
	r.m.Start()
	r.m.Claim("sync group")
	r.expectState(Master)
	r.expectCalls("advert:100,takeover")
	r.m.Resign("sync group")
	r.expectState(Backup)
	r.expectCalls("release")
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Initialize: "INIT", Backup: "BACKUP", Master: "MASTER", Fault: "FAULT", Stopped: "STOP", 42: "UNKNOWN"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}

// MasterAddr names the router that holds the VIPs now, in every state: not
// this node once it has left Master (FAULT, a resign, a shutdown), the peer
// a node in FAULT hears advertising, nobody while the master is leaving.
func TestMasterAddrFollowsWhoIsMaster(t *testing.T) {
	r := newRig(t, Params{Priority: 100, Preempt: true})
	r.m.Start()
	r.runFor(4 * time.Second)
	r.expectState(Master)
	if got := r.m.MasterAddr(); got != local {
		t.Fatalf("master = %v as master, want itself %v", got, local)
	}
	r.m.SetFault(true, Tracked{Kind: "interface", Name: "eth1"})
	if got := r.m.MasterAddr(); got.IsValid() {
		t.Fatalf("master = %v just after FAULT, want unknown", got)
	}
	// The peer takes over and advertises; the faulted node hears it.
	r.m.Receive(Advert{Source: lower, Priority: 90, Interval: time.Second})
	if got := r.m.MasterAddr(); got != lower {
		t.Fatalf("master = %v in FAULT with %v advertising, want %v", got, lower, lower)
	}
	r.m.Receive(Advert{Source: lower, Priority: 0, Interval: time.Second})
	if got := r.m.MasterAddr(); got.IsValid() {
		t.Fatalf("master = %v after its priority 0, want unknown", got)
	}
	r.m.Receive(Advert{Source: lower, Priority: 90, Interval: time.Second})
	// Back from FAULT: the lower master is the master until preempted.
	r.m.SetFault(false)
	r.expectState(Backup)
	r.m.Receive(Advert{Source: lower, Priority: 90, Interval: time.Second})
	if got := r.m.MasterAddr(); got != lower {
		t.Fatalf("master = %v as backup of a lower master, want %v", got, lower)
	}
	r.runFor(4 * time.Second)
	r.expectState(Master)
	r.m.Resign("sync group")
	if got := r.m.MasterAddr(); got == local {
		t.Fatal("master names itself after resigning")
	}
	r.m.Claim("sync group")
	r.m.Stop()
	if got := r.m.MasterAddr(); got.IsValid() {
		t.Fatalf("master = %v after shutdown, want unknown", got)
	}
}
