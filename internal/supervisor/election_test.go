package supervisor

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/kube"
	"github.com/vigil-lb/vigil/internal/vrrp"
)

var (
	addrN1 = netip.MustParseAddr("10.0.0.1")
	addrN2 = netip.MustParseAddr("10.0.0.2")
	addrN3 = netip.MustParseAddr("10.0.0.3")
)

// Names come from this node's own addresses, then the Kubernetes Nodes,
// then pool masters whose advertised priority is one node's rank; an
// address with two candidate names, or none, stays unnamed.
func TestNamerLearnsNodeNames(t *testing.T) {
	ranks := map[string]poolRank{
		"p-a": {pool: "p", ranking: []string{"n2", "n1", "n3"}, exact: true},
		"p-b": {pool: "p", ranking: []string{"n3", "n2", "n1"}, exact: true},
		"q-a": {pool: "q", ranking: []string{"n1", "n3"}, exact: false}, // weighted: priorities say nothing
	}
	sts := []vrrp.Status{
		{Name: "api", Local: addrN1, Master: addrN1, MasterPriority: 150},
		{Name: "p-a", Local: addrN1, Master: addrN2, MasterPriority: 250}, // n2's first choice
		{Name: "p-b", Local: addrN1, Master: addrN3, MasterPriority: 250},
		{Name: "q-a", Local: addrN1, Master: netip.MustParseAddr("10.0.0.9"), MasterPriority: 250},
	}
	kube := func(a netip.Addr) string {
		if a == netip.MustParseAddr("10.0.0.8") {
			return "k8"
		}
		return ""
	}
	n := newNamer("n1", map[netip.Addr]string{netip.MustParseAddr("10.0.0.7"): "s7"}, kube, ranks, sts)
	for a, want := range map[string]string{"10.0.0.1": "n1", "10.0.0.2": "n2", "10.0.0.3": "n3", "10.0.0.7": "s7", "10.0.0.8": "k8", "10.0.0.9": ""} {
		if got := n.name(netip.MustParseAddr(a)); got != want {
			t.Errorf("name(%s) = %q, want %q", a, got, want)
		}
	}
	// Two VIPs whose rankings name the same address differently: unnamed.
	sts[2].Master, sts[2].MasterPriority = addrN2, 250
	if got := newNamer("n1", nil, nil, ranks, sts).name(addrN2); got != "" {
		t.Errorf("an address with two candidate names got %q", got)
	}
}

func TestPoolWhy(t *testing.T) {
	now := time.Unix(5000, 0)
	r := poolRank{pool: "web", ranking: []string{"n1", "n2", "n3"}, exact: true}
	n := newNamer("n1", nil, nil, nil, []vrrp.Status{{Local: addrN1}})
	other := newNamer("n2", nil, nil, nil, []vrrp.Status{{Local: addrN2}})
	for _, c := range []struct {
		name   string
		n      *namer
		st     vrrp.Status
		master string
		on     bool
		why    string
	}{
		{"preferred and here", n, vrrp.Status{State: vrrp.Master, Master: addrN1}, "n1", true, "here, its preferred node"},
		{"preferred, in fault", n, vrrp.Status{State: vrrp.Fault, Master: addrN2, MasterPriority: 249,
			Tracked: []vrrp.Tracked{{Kind: "interface", Name: "eth1"}}}, "n2", false,
			"not here: in fault: interface eth1 down (weight 0); held by n2"},
		{"preferred, resigned", n, vrrp.Status{State: vrrp.Backup, Resigned: true}, "", false,
			"not here: resigned by an operator (vigil instance resume takes it back)"},
		{"preferred, moving back", n, vrrp.Status{State: vrrp.Backup, PreemptFrom: now.Add(3200 * time.Millisecond),
			Master: addrN2, MasterPriority: 249}, "n2", false, "not here: moves back in 3.2s (move_back_delay); held by n2"},
		{"preferred, lowered", n, vrrp.Status{State: vrrp.Backup, Priority: 200, Configured: 250,
			Tracked: []vrrp.Tracked{{Kind: "check", Name: "web", Weight: -50}}, Master: addrN3, MasterPriority: 248}, "", false,
			"not here: tracking lowered its priority to 200: check web down (weight -50); held by 10.0.0.3 (priority 248)"},
		{"elsewhere, on the preferred", other, vrrp.Status{State: vrrp.Backup, Master: addrN1, MasterPriority: 250}, "n1", true,
			"on its preferred node"},
		{"here as second choice", other, vrrp.Status{State: vrrp.Master, Master: addrN2}, "n2", false,
			"here (choice 2 of 3): n1 is not advertising"},
		{"on a third node", other, vrrp.Status{State: vrrp.Backup, Master: addrN3, MasterPriority: 248}, "n3", false,
			"on n3 (choice 3 of 3): n1 is not advertising"},
		{"nobody", other, vrrp.Status{State: vrrp.Backup}, "", false, "no master heard"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := c.n.poolWhy(r, c.st, c.master, now)
			if got.Preferred != "n1" || got.OnPreferred != c.on || !strings.HasPrefix(got.Why, c.why) {
				t.Fatalf("poolWhy = %+v, want on %v, why %q", got, c.on, c.why)
			}
		})
	}
}

// explain turns an instance's status into the snapshot's election
// fields, peers by node name.
func TestExplainInstance(t *testing.T) {
	n := newNamer("n1", nil, nil, nil, []vrrp.Status{{Local: addrN1}})
	n.pools[addrN2] = "n2"
	st := vrrp.Status{Name: "api", Local: addrN1, State: vrrp.Master, Master: addrN1, MasterPriority: 150,
		Last: vrrp.Transition{From: vrrp.Backup, To: vrrp.Master, At: time.Unix(100, 0), Priority: 150,
			Reason: vrrp.Reason{Cause: vrrp.CauseHandover, Peer: addrN2}}}
	var out api.Instance
	n.explain(&out, st, time.Unix(200, 0))
	tr := out.LastTransition
	if out.MasterNode != "n1" || out.MasterPriority != 150 || tr == nil || tr.Cause != "handover" || tr.PeerNode != "n2" ||
		tr.Reason != "priority-0 hand-over from n2 (10.0.0.2)" || tr.PrevState != "BACKUP" || tr.State != "MASTER" {
		t.Fatalf("explain: %+v, transition %+v", out, tr)
	}
}

// Every address of every Node names it, for status.
func TestNodesByAddr(t *testing.T) {
	snap := &kube.Snapshot{Nodes: []kube.Node{
		{Name: "m1", Addresses: []kube.NodeAddress{{Type: "InternalIP", Address: addrN1}, {Type: "InternalIP", Address: netip.MustParseAddr("fd00::1")}}},
		{Name: "m2", Addresses: []kube.NodeAddress{{Type: "Hostname"}, {Type: "ExternalIP", Address: addrN2}}},
	}}
	got := nodesByAddr(snap)
	if len(got) != 3 || got[addrN1] != "m1" || got[netip.MustParseAddr("fd00::1")] != "m1" || got[addrN2] != "m2" {
		t.Fatalf("nodesByAddr = %v", got)
	}
	var m *members
	if m.nodeName(addrN1) != "" {
		t.Fatal("a config without Kubernetes names a node")
	}
}
