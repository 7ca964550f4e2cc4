package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/kubetest"
	"github.com/vigil-lb/vigil/internal/netlab"
)

// dsrSvcAddr is the address the dsr Service asks for (vigil.io/address),
// so that its endpoints' hosts can hold it before it is allocated.
const dsrSvcAddr = "10.80.0.200"

// macOf is the MAC of h's eth0.
func macOf(t *testing.T, h *netlab.Host) string {
	t.Helper()
	nh, err := h.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	lk, err := nh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	return lk.Attrs().HardwareAddr.String()
}

// captureFrom runs tshark on h's eth0 for d, keeping the source MAC of every
// TCP segment from dsrSvcAddr; done returns them.
func captureFrom(t *testing.T, h *netlab.Host, d time.Duration) (done func() []string) {
	t.Helper()
	dir := t.TempDir()
	file, errFile := filepath.Join(dir, h.Name+".pcapng"), filepath.Join(dir, h.Name+".err")
	stderr, err := os.Create(errFile)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd := exec.Command("tshark", "-i", "eth0", "-f", "tcp and src host "+dsrSvcAddr,
		"-a", fmt.Sprintf("duration:%d", int(d.Seconds())), "-w", file)
	cmd.Stderr = stderr
	p, err := h.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	// Capturing once it says so (it starts slowly on a loaded machine).
	for deadline := time.Now().Add(d); ; time.Sleep(50 * time.Millisecond) {
		if b, _ := os.ReadFile(errFile); strings.Contains(string(b), "Capturing on") {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(errFile)
			t.Fatalf("tshark on %s did not start capturing within %v: %s", h.Name, d, b)
		}
	}
	return func() []string {
		t.Helper()
		if exited, err := p.Wait(d + 15*time.Second); !exited || err != nil {
			t.Fatalf("tshark on %s: %v %v", h.Name, exited, err)
		}
		out, err := exec.Command("tshark", "-r", file, "-T", "fields", "-e", "eth.src").Output()
		if err != nil {
			t.Fatalf("tshark -r: %v", err)
		}
		return strings.Fields(string(out))
	}
}

// dsrBackends are the addresses of the backends up in the status of the
// Service's dsr balancer at socket, and the XDP program's tx verdicts.
func dsrBackends(t *testing.T, socket, balancer string) (up []string, tx uint64, b api.Balancer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := api.Fetch(ctx, socket)
	if err != nil {
		return nil, 0, b
	}
	for _, x := range st.Balancers {
		if x.Name == balancer {
			b = x
			for _, be := range x.Backends {
				if be.Up {
					up = append(up, be.Address)
				}
			}
		}
	}
	return up, st.XDP["tx"], b
}

// dsrEndpoints starts hosts ep1 (10.80.0.21) and ep2 (.22) on sl's LAN,
// prepared by vigil realserver for vip, answering with greetThenEcho on
// TCP :80 and with their name and the client's address on UDP vip:53. It
// returns them, their MACs, and slice, which makes the named ones the
// ready endpoints of web/dsr (ports http, 80/TCP, and dns, 53/UDP).
func dsrEndpoints(t *testing.T, sl *svcLab, vip string) (eps map[string]*netlab.Host, macs []string, slice func(names ...string)) {
	t.Helper()
	eps = map[string]*netlab.Host{}
	for i, name := range []string{"ep1", "ep2"} {
		h, err := sl.lab.AddHost(name, mustPrefix(fmt.Sprintf("10.80.0.%d/24", 21+i)))
		if err != nil {
			t.Fatal(err)
		}
		eps[name] = h
		startRealServer(t, h, vip, greetThenEcho)
		macs = append(macs, macOf(t, h))
		// Bound to the address itself, so that answers come from it.
		var pc net.PacketConn
		if err := h.Do(func() (err error) { pc, err = net.ListenPacket("udp4", vip+":53"); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		go func() {
			buf := make([]byte, 512)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo([]byte(name+" "+from.String()), from)
			}
		}()
	}
	slice = func(names ...string) {
		var list []kubetest.Endpoint
		for _, n := range names {
			list = append(list, kubetest.Endpoint{Address: eps[n].Addr(false), Node: n, Ready: true})
		}
		s := kubetest.Slice("web", "dsr-1", "dsr", "http", 80, list...)
		dns, port, udp := "dns", int32(53), corev1.ProtocolUDP
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: &dns, Port: &port, Protocol: &udp})
		kubetest.ApplySlice(t, sl.admin, s)
	}
	slice("ep1", "ep2")
	return eps, macs, slice
}

// dsrService creates the LoadBalancer Service web/NAME of class vigil.io/lb
// asking for addr, ports 80/TCP (http) and 53/UDP (dns), each to the same
// port: direct return changes no port.
func dsrService(t *testing.T, sl *svcLab, name, addr string) {
	t.Helper()
	class := "vigil.io/lb"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := sl.admin.CoreV1().Services("web").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name, Annotations: map[string]string{"vigil.io/address": addr}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &class, Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(80), Protocol: corev1.ProtocolTCP},
				{Name: "dns", Port: 53, TargetPort: intstr.FromInt(53), Protocol: corev1.ProtocolUDP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// A LoadBalancer Service with dataplane dsr: two vigil nodes (n1, n2)
// announce its address from an l2 pool, and the holder's XDP program
// steers each flow to one of two endpoints on other hosts (ep1, ep2),
// prepared as `vigil realserver --vip` prepares them. The endpoints see
// the client's own address and answer it directly: the client gets every
// answer from their MACs, and neither node sends one. An endpoint taken
// out of the EndpointSlice gets no new flow while its established one goes
// on, and when the holder is killed the other node takes the address over
// and steers it.
func TestKubeServiceDSR(t *testing.T) {
	sl := newSvcLab(t)
	sl.dataplane = "dsr"
	_, macs, slice := dsrEndpoints(t, sl, dsrSvcAddr)
	sl.start(t, "n1")
	sl.start(t, "n2")
	// Past the elected allocator's start-up hold (hold: 1s), which would
	// count in the figures below otherwise.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		leading := false
		for _, n := range []string{"n1", "n2"} {
			if st, err := api.Fetch(context.Background(), filepath.Join(sl.dir, n+".sock")); err == nil && st.Allocator != nil {
				leading = leading || st.Allocator.Leading && st.Allocator.Synced
			}
		}
		if leading {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no allocator leading within 30s")
		}
	}
	time.Sleep(1500 * time.Millisecond)

	t0 := time.Now()
	dsrService(t, sl, "dsr", dsrSvcAddr)
	addr, mode := sl.waitAddress(t, "dsr")
	inStatus := time.Since(t0)
	if addr != dsrSvcAddr || mode != "Proxy" {
		t.Fatalf("allocated %s with ipMode %q, want %s with Proxy (kube-proxy must leave it to vigil's dataplane)", addr, mode, dsrSvcAddr)
	}
	ask := func(port int) (string, error) { return askVIP(sl.client, "10.80.0.100", dsrSvcAddr+":80", port) }
	// A client that tries again after 100 ms when its SYN is lost (no
	// backend yet), rather than after TCP's 1 s.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := askVIPWithin(sl.client, "10.80.0.100", dsrSvcAddr+":80", 0, 100*time.Millisecond); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no answer through the Service's address within 20s")
		}
	}
	t.Logf("Service created -> address in status %v, -> first answer through XDP %v", inStatus.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	waitRealServers(t, ask, 2)

	holders := sl.holders(t, dsrSvcAddr)
	if len(holders) != 1 {
		t.Fatalf("%s held by %v, want one node", dsrSvcAddr, holders)
	}
	holder := holders[0]
	other := map[string]string{"n1": "n2", "n2": "n1"}[holder]
	const balancer = "service/web/dsr/http/" + dsrSvcAddr
	socket := func(n string) string { return filepath.Join(sl.dir, n+".sock") }
	up, _, b := dsrBackends(t, socket(holder), balancer)
	if b.Mode != "dsr" || b.XDPMode != "generic" || !slices.Equal(up, []string{"10.80.0.21:80", "10.80.0.22:80"}) ||
		b.Backends[0].Source != "endpoints web/dsr (node ep1)" {
		t.Fatalf("%s's balancer %+v", holder, b)
	}

	// Every answer comes from an endpoint's MAC, none from a node.
	const window = 15 * time.Second
	atClient, atHolder := captureFrom(t, sl.client, window), captureFrom(t, sl.nodes[holder], window)
	want := func(port int) string { return "10.80.0.100:" + strconv.Itoa(port) }
	got := spreadOverRealServers(t, ask, 30, 20000, want)
	if got["ep1"] < 3 || got["ep2"] < 3 {
		t.Fatalf("30 flows spread %v over the two endpoints", got)
	}
	seen, fromHolder := atClient(), atHolder()
	if len(seen) == 0 || slices.ContainsFunc(seen, func(m string) bool { return !slices.Contains(macs, m) }) {
		t.Fatalf("answers at the client came from %v, want only the endpoints' MACs %v", slices.Compact(slices.Sorted(slices.Values(seen))), macs)
	}
	if len(fromHolder) > 0 {
		t.Fatalf("the holder %s sent %d segments from the Service's address", holder, len(fromHolder))
	}
	t.Logf("30 flows over %v; %d answer segments at the client, all from the endpoints' MACs, none through %s", got, len(seen), holder)

	// UDP: each endpoint sees the client's own address and answers from
	// the Service's.
	udp := map[string]int{}
	for i := range 20 {
		port := 21000 + i
		var answer string
		err := sl.client.Do(func() error {
			c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.80.0.100"), Port: port}, &net.UDPAddr{IP: net.ParseIP(dsrSvcAddr), Port: 53})
			if err != nil {
				return err
			}
			defer c.Close()
			buf := make([]byte, 512)
			for try := 0; try < 5; try++ { // a datagram may be lost
				c.SetDeadline(time.Now().Add(time.Second))
				c.Write([]byte("q"))
				if n, err := c.Read(buf); err == nil {
					answer = string(buf[:n])
					return nil
				}
			}
			return fmt.Errorf("no answer to 5 datagrams")
		})
		f := strings.Fields(answer)
		if err != nil || len(f) != 2 || f[1] != want(port) {
			t.Fatalf("UDP query %d: %q, %v: the endpoint should see the client's own address %s", i, answer, err, want(port))
		}
		udp[f[0]]++
	}
	if udp["ep1"] < 2 || udp["ep2"] < 2 {
		t.Fatalf("20 UDP flows spread %v over the two endpoints", udp)
	}
	if _, _, b := dsrBackends(t, socket(holder), "service/web/dsr/dns/"+dsrSvcAddr); b.Packets < 20 {
		t.Fatalf("the holder's UDP balancer: %+v", b)
	}
	t.Logf("20 UDP flows over %v", udp)

	// A stream on ep2; then ep2 leaves the slice.
	stream := openStream(t, sl.client, "10.80.0.100", dsrSvcAddr+":80", "ep2", 25000)
	defer stream.Close()
	say := func(i int) { t.Helper(); stream.say(t, i) }
	say(0)
	t1 := time.Now()
	slice("ep1")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if up, _, _ := dsrBackends(t, socket(holder), balancer); slices.Equal(up, []string{"10.80.0.21:80"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ep2 still in the holder's table 10s after it left the slice")
		}
	}
	t.Logf("ep2 left the slice -> out of the holder's table after %v", time.Since(t1).Round(time.Millisecond))
	if got := spreadOverRealServers(t, ask, 16, 26000, want); got["ep1"] != 16 {
		t.Fatalf("16 new flows after ep2 left went %v, want ep1 only", got)
	}
	say(1) // tracked: it goes on to ep2

	// The holder dies without a word; the other node takes the address
	// over and steers it.
	stream.Close()
	_, txBefore, _ := dsrBackends(t, socket(other), balancer)
	t2 := time.Now()
	sl.procs[holder].Cmd.Process.Signal(syscall.SIGKILL)
	sl.procs[holder].Wait(5 * time.Second)
	var answered time.Duration
	for port, deadline := 28000, time.Now().Add(15*time.Second); ; port++ {
		if line, err := ask(port); err == nil {
			if !strings.HasPrefix(line, "ep1 10.80.0.100:") {
				t.Fatalf("after the failover: %q", line)
			}
			answered = time.Since(t2)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer within 15s of %s's death", holder)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !slices.Contains(sl.holders(t, dsrSvcAddr), other) {
		t.Fatalf("%s does not hold %s after the failover", other, dsrSvcAddr)
	}
	if got := spreadOverRealServers(t, ask, 10, 29000, want); got["ep1"] != 10 {
		t.Fatalf("after the failover: %v", got)
	}
	if _, tx, _ := dsrBackends(t, socket(other), balancer); tx <= txBefore {
		t.Fatalf("%s's XDP program steered nothing after the failover (tx %d -> %d)", other, txBefore, tx)
	}
	t.Logf("%s killed -> first answer through %s %v", holder, other, answered.Round(time.Millisecond))
}

// A Service of a bgp pool with dataplane dsr: both nodes announce its
// address to the router, which spreads flows over them (ECMP on the
// 5-tuple), and each node's XDP program steers its share to the endpoints,
// which answer the client behind the router directly.
func TestKubeServiceDSRBGP(t *testing.T) {
	const addr = "10.85.0.1"
	sl := newSvcLab(t)
	sl.dataplane = "dsr"
	eps, _, _ := dsrEndpoints(t, sl, addr)
	router, err := sl.lab.AddHost("router", mustPrefix(svcBGPRouter+"/24"))
	if err != nil {
		t.Fatal(err)
	}
	wan := newLab(t)
	client, err := wan.AddHost("client", mustPrefix("10.86.0.100/24"))
	if err != nil {
		t.Fatal(err)
	}
	if err := wan.Plug(router, "eth1", mustPrefix("10.86.0.254/24")); err != nil {
		t.Fatal(err)
	}
	for _, sc := range [][2]string{{"net/ipv4/ip_forward", "1"}, {"net/ipv4/fib_multipath_hash_policy", "1"}} {
		if err := router.Sysctl(sc[0], sc[1]); err != nil {
			t.Fatal(err)
		}
	}
	routes := map[*netlab.Host][]string{client: {"default", "via", "10.86.0.254"}}
	for _, h := range []*netlab.Host{sl.nodes["n1"], sl.nodes["n2"], eps["ep1"], eps["ep2"]} {
		routes[h] = []string{"10.86.0.0/24", "via", svcBGPRouter}
	}
	for h, route := range routes {
		if out, code := execIn(t, h, 5*time.Second, "ip", slices.Concat([]string{"route", "add"}, route)...); code != 0 {
			t.Fatalf("ip route add %v in %s: %s", route, h.Name, out)
		}
	}
	n1, n2 := sl.nodes["n1"].Addr(false).String(), sl.nodes["n2"].Addr(false).String()
	vty := startFRRIn(t, router, []string{n1, n2}, "", nil)
	sl.startBGP(t, "n1")
	sl.startBGP(t, "n2")
	dsrService(t, sl, "dsr", addr)
	if got, mode := sl.waitAddress(t, "dsr"); got != addr || mode != "Proxy" {
		t.Fatalf("allocated %s with ipMode %q, want %s with Proxy", got, mode, addr)
	}
	waitPaths(t, router, vty, addr+"/32", "dataplane dsr", n1, n2)

	ask := func(port int) (string, error) { return askVIP(client, "10.86.0.100", addr+":80", port) }
	waitVIP(t, ask)
	waitRealServers(t, ask, 2)
	got := spreadOverRealServers(t, ask, 40, 20000, func(port int) string { return "10.86.0.100:" + strconv.Itoa(port) })
	if got["ep1"] < 4 || got["ep2"] < 4 {
		t.Fatalf("40 flows spread %v over the two endpoints", got)
	}
	const balancer = "service/web/dsr/http/" + addr
	var steered []uint64
	for _, n := range []string{"n1", "n2"} {
		_, _, b := dsrBackends(t, filepath.Join(sl.dir, n+".sock"), balancer)
		steered = append(steered, b.Packets)
	}
	if steered[0] == 0 || steered[1] == 0 {
		t.Fatalf("packets steered by n1 and n2: %v; with ECMP both should steer", steered)
	}
	t.Logf("40 flows from behind the router over %v; packets steered by n1 %d, n2 %d", got, steered[0], steered[1])
}
