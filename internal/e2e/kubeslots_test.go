package e2e

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vigil-lb/vigil/internal/garp"
	"github.com/vigil-lb/vigil/internal/kubetest"
)

// setPoolLabel puts the label the pool selects (vigil=yes) on Node name,
// or takes it off.
func (sl *svcLab) setPoolLabel(t *testing.T, name string, on bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := sl.admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if on {
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels["vigil"] = "yes"
	} else {
		delete(n.Labels, "vigil")
	}
	if _, err := sl.admin.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// perHolder counts the addresses each node holds; the second result lists
// the addresses held by none or by several.
func (sl *svcLab) perHolder(t *testing.T, addrs []string) (map[string]int, []string) {
	t.Helper()
	per := map[string]int{}
	var bad []string
	for _, a := range addrs {
		h := sl.holders(t, a)
		if len(h) != 1 {
			bad = append(bad, fmt.Sprintf("%s: %v", a, h))
			continue
		}
		per[h[0]]++
	}
	return per, bad
}

// answeredByOne asks from the client who answers ARP for each address and
// returns those not answered by exactly one MAC, or not by want's.
func (sl *svcLab) answeredByOne(t *testing.T, want map[string]string) []string {
	t.Helper()
	macOf := map[string]string{}
	for _, n := range sl.names {
		macOf[sl.nodes[n].MAC.String()] = n
	}
	var bad []string
	for a, node := range want {
		var res garp.ProbeResult
		err := sl.client.Do(func() error {
			var err error
			res, err = garp.Probe(context.Background(), "eth0", netip.MustParseAddr(a), 300*time.Millisecond)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.MACs) != 1 || macOf[res.MACs[0].String()] != node {
			bad = append(bad, fmt.Sprintf("%s: %v, want %s", a, res.MACs, node))
		}
	}
	return bad
}

// slotsOf lists the L2 slot instances in a node's status.
func (sl *svcLab) slotsOf(t *testing.T, node string) []string {
	t.Helper()
	var out []string
	for _, in := range statusAt(t, filepath.Join(sl.dir, node+".sock")).Instances {
		if strings.HasPrefix(in.Name, "slot/") {
			out = append(out, in.Name)
		}
	}
	return out
}

// The L2 slots follow the Nodes the API lists, with no restart: a Node
// that comes to match the pool's selector gets its slots on every vigil
// and takes its share of the addresses; one deleted takes its slots away
// and its addresses go back to the others. Every address is answered by
// exactly one node before and after.
func TestKubeServiceSlotsFollowNodes(t *testing.T) {
	sl := newSvcLabOf(t, "n1", "n2", "n3")
	sl.setPoolLabel(t, "n3", false) // n3 runs vigil but may not announce yet
	for _, n := range sl.names {
		sl.start(t, n)
	}
	var addrs []string
	for i := range 6 {
		sl.service(t, fmt.Sprintf("s%d", i))
	}
	for i := range 6 {
		a, _ := sl.waitAddress(t, fmt.Sprintf("s%d", i))
		addrs = append(addrs, a)
	}
	waitPer := func(what string, want map[string]int) map[string]string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			per, bad := sl.perHolder(t, addrs)
			if len(bad) == 0 && fmt.Sprint(per) == fmt.Sprint(want) {
				holder := map[string]string{}
				for _, a := range addrs {
					holder[a] = sl.holders(t, a)[0]
				}
				return holder
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: addresses per node %v (held by none or several: %v), want %v", what, per, bad, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	holder := waitPer("n1 and n2 eligible", map[string]int{"n1": 3, "n2": 3})
	if got := sl.slotsOf(t, "n1"); !slices.Equal(got, []string{"slot/lan/n1/n2", "slot/lan/n2/n1"}) {
		t.Fatalf("n1 runs slots %v", got)
	}
	if bad := sl.answeredByOne(t, holder); len(bad) > 0 {
		t.Fatalf("with two nodes: %v", bad)
	}

	// n3 joins: every node adds its slots live; n3 takes two addresses.
	// Sampled while it happens: how many samples found an address held by
	// no node (the moved ones stay where they were until n3's slots have
	// had time to win).
	t0 := time.Now()
	sl.setPoolLabel(t, "n3", true)
	gaps, samples := 0, 0
	for time.Since(t0) < 30*time.Second {
		per, bad := sl.perHolder(t, addrs)
		samples++
		for _, b := range bad {
			if strings.HasSuffix(b, ": []") {
				gaps++
			}
		}
		if len(bad) == 0 && per["n3"] == 2 && per["n1"] == 2 && per["n2"] == 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	holder = waitPer("n3 joined", map[string]int{"n1": 2, "n2": 2, "n3": 2})
	t.Logf("n3 joined: addresses 2/2/2 %v after its label; %d of %d samples found an address held by no node", time.Since(t0).Round(time.Millisecond), gaps, samples)
	for _, n := range sl.names {
		if got := sl.slotsOf(t, n); len(got) != 6 {
			t.Fatalf("%s runs slots %v, want the 6 of three nodes", n, got)
		}
	}
	if bad := sl.answeredByOne(t, holder); len(bad) > 0 {
		t.Fatalf("after n3 joined: %v", bad)
	}

	// n1's Node is deleted: its slots go everywhere, its addresses to n2
	// and n3.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 = time.Now()
	if err := sl.admin.CoreV1().Nodes().Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	holder = waitPer("n1 deleted", map[string]int{"n2": 3, "n3": 3})
	t.Logf("n1 deleted: addresses 3/3 on n2 and n3 %v after", time.Since(t0).Round(time.Millisecond))
	for _, n := range sl.names {
		want := []string{"slot/lan/n2/n3", "slot/lan/n3/n2"}
		if n == "n1" {
			want = nil
		}
		if got := sl.slotsOf(t, n); !slices.Equal(got, want) {
			t.Fatalf("%s runs slots %v, want %v", n, got, want)
		}
	}
	if bad := sl.answeredByOne(t, holder); len(bad) > 0 {
		t.Fatalf("after n1's deletion: %v", bad)
	}
}

// externalTrafficPolicy Local with endpoints on n1 and n3: the address's
// slot has its backup on the other node with an endpoint, so when the
// holder dies, the address lands on an endpoint, not on n2 (the ring's
// next node), and without the API.
func TestKubeServiceLocalFailsOverToAnEndpoint(t *testing.T) {
	sl := newSvcLabOf(t, "n1", "n2", "n3")
	for _, n := range sl.names {
		sl.start(t, n)
	}
	sl.service(t, "local", func(svc *corev1.Service) {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	})
	var eps []kubetest.Endpoint
	for _, n := range sl.names {
		eps = append(eps, kubetest.Endpoint{Address: sl.nodes[n].Addr(false), Node: n, Ready: n != "n2"})
	}
	kubetest.ApplySlice(t, sl.admin, kubetest.Slice("web", "local-1", "local", "http", 8080, eps...))
	addr, _ := sl.waitAddress(t, "local")
	var holder string
	deadline := time.Now().Add(30 * time.Second)
	for {
		if h := sl.holders(t, addr); len(h) == 1 && h[0] != "n2" {
			holder = h[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s held by %v, want one of n1 and n3 (the ready endpoints)", addr, sl.holders(t, addr))
		}
		time.Sleep(50 * time.Millisecond)
	}
	fl := &frontLab{client: sl.client}
	fl.waitAnswers(t, addr+":80", 10, "pod-n1", "pod-n3")
	heir := map[string]string{"n1": "n3", "n3": "n1"}[holder]

	t0 := time.Now()
	sl.procs[holder].Cmd.Process.Signal(syscall.SIGKILL)
	sl.procs[holder].Wait(5 * time.Second)
	deadline = time.Now().Add(10 * time.Second)
	for {
		h := sl.holders(t, addr)
		if slices.Contains(h, "n2") {
			t.Fatalf("%s went to n2, which has no ready endpoint (held by %v)", addr, h)
		}
		if slices.Contains(h, heir) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not taken over by %s within 10s of %s's death (held by %v)", addr, heir, holder, h)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s killed: %s, its other ready endpoint, took %s over %v later", holder, heir, addr, time.Since(t0).Round(time.Millisecond))
	// n2 stays out of it after the failover too.
	for range 10 {
		if slices.Contains(sl.holders(t, addr), "n2") {
			t.Fatalf("%s went to n2 after the failover", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An IPv6 LoadBalancer address over L2: the Service (SingleStack IPv6)
// gets an address of the IPv6 pool, which one node holds (its slot6/
// instance master) and answers through the proxy; the client's neighbour
// entry names that node. When it dies, the other node takes the address
// and its unsolicited NA moves the client's neighbour entry, with no
// traffic from the client.
func TestKubeServiceIPv6OverL2(t *testing.T) {
	sl := newSvcLabWith(t, true, "n1", "n2")
	sl.start(t, "n1")
	sl.start(t, "n2")
	sl.service(t, "v6", func(svc *corev1.Service) {
		single := corev1.IPFamilyPolicySingleStack
		svc.Spec.IPFamilies, svc.Spec.IPFamilyPolicy = []corev1.IPFamily{corev1.IPv6Protocol}, &single
	})
	kubetest.ApplySlice(t, sl.admin, kubetest.Slice("web", "v6-1", "v6", "http", 8080,
		kubetest.Endpoint{Address: sl.nodes["n1"].Addr(true), Node: "n1", Ready: true},
		kubetest.Endpoint{Address: sl.nodes["n2"].Addr(true), Node: "n2", Ready: true}))
	addr, _ := sl.waitAddress(t, "v6")
	a := netip.MustParseAddr(addr)
	if !a.Is6() || !strings.HasPrefix(addr, "fd00:80::2") {
		t.Fatalf("allocated %s, want an address of %s", addr, svcPoolRange6)
	}
	var holder string
	deadline := time.Now().Add(30 * time.Second)
	for {
		if h := sl.holders(t, addr); len(h) == 1 {
			holder = h[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s held by %v, want exactly one node", addr, sl.holders(t, addr))
		}
		time.Sleep(50 * time.Millisecond)
	}
	ask := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := sl.client.Dial(ctx, "tcp6", netip.AddrPortFrom(a, 80).String())
		if err != nil {
			return "error: " + err.Error()
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			return "error: " + err.Error()
		}
		return string(b)
	}
	deadline = time.Now().Add(20 * time.Second)
	for got := ask(); got != "pod-n1" && got != "pod-n2"; got = ask() {
		if time.Now().After(deadline) {
			t.Fatalf("[%s]:80 answered %q, want a pod", addr, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	macOf := func(n string) string { return sl.nodes[n].MAC.String() }
	neighbour := func() string {
		m, _ := sl.client.Neighbor(a)
		return m.String()
	}
	if got := neighbour(); got != macOf(holder) {
		t.Fatalf("client's neighbour entry for %s: %s, want %s's %s", addr, got, holder, macOf(holder))
	}
	st := statusAt(t, filepath.Join(sl.dir, holder+".sock"))
	if len(st.Services) != 1 || !st.Services[0].Here || !strings.HasPrefix(st.Services[0].Slot, "slot6/lan/"+holder+"/") {
		t.Fatalf("%s's status lists %+v", holder, st.Services)
	}

	other := map[string]string{"n1": "n2", "n2": "n1"}[holder]
	t0 := time.Now()
	sl.procs[holder].Cmd.Process.Signal(syscall.SIGKILL)
	sl.procs[holder].Wait(5 * time.Second)
	deadline = time.Now().Add(10 * time.Second)
	for neighbour() != macOf(other) {
		if time.Now().After(deadline) {
			t.Fatalf("10s after %s's death the client's neighbour entry for %s names %s, want %s's %s (unsolicited NA)",
				holder, addr, neighbour(), other, macOf(other))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s killed: the client's neighbour entry for %s named %s %v later", holder, addr, other, time.Since(t0).Round(time.Millisecond))
	if !slices.Contains(sl.holders(t, addr), other) {
		t.Fatalf("%s not on %s", addr, other)
	}
	if got := ask(); got != "pod-n1" && got != "pod-n2" {
		t.Fatalf("after the takeover [%s]:80 answered %q", addr, got)
	}
}
