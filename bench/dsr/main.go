// Command dsr measures packets per second through a balancer in the
// namespace lab, side by side in one run: vigil's XDP DSR program (native
// and generic mode on veth) and an nftables DNAT rule set doing the same
// job. The client sends UDP frames over 256 flows to a VIP with an XDP
// program in live-frame mode (BPF_PROG_RUN), far faster than a socket, so
// the pipeline behind it is what limits; the two real servers count what
// arrives at their interface and drop it there. Every run is bounded by a
// frame count. Needs root.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-lb/vigil/internal/benchdoc"
	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/xdp"
	"golang.org/x/sys/unix"
)

const (
	vip  = "10.81.0.10"
	port = 9000
)

func main() {
	packets := flag.Int("packets", 300_000, "frames per trial")
	rounds := flag.Int("rounds", 3, "runs per mode (rotating the order)")
	out := flag.String("out", "docs/benchmarks.md", "markdown file to update")
	flag.Parse()
	if err := run(uint32(*packets), *rounds, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench/dsr:", err)
		os.Exit(1)
	}
}

type lab struct {
	lab        *netlab.Lab
	client, lb *netlab.Host
	rs         []*netlab.Host
	gen        *xdp.Dataplane // xdp_gen on the client, xdp_pass on the switch ports
}

// modes are the balancers compared, in table order.
var modes = []struct{ name, row string }{
	{"native", "vigil XDP DSR, native mode (Maglev + conntrack, XDP_TX)"},
	{"generic", "vigil XDP DSR, generic mode"},
	{"nftables", "nftables DNAT (numgen round robin, conntrack, forwarding)"},
}

func run(packets uint32, rounds int, out string) error {
	if !netlab.Root() {
		return errors.New("needs root")
	}
	dir, bin, cleanup, err := benchdoc.BuildVigil("vigil-bench-dsr-")
	if err != nil {
		return err
	}
	defer cleanup()
	netlab.CleanupStale()
	l := &lab{}
	if l.lab, err = netlab.New(); err != nil {
		return err
	}
	defer l.lab.Close()
	if l.client, err = l.lab.AddHost("client", netip.MustParsePrefix("10.81.0.100/24")); err != nil {
		return err
	}
	if l.lb, err = l.lab.AddHost("lb", netip.MustParsePrefix("10.81.0.1/24")); err != nil {
		return err
	}
	for i := range 2 {
		h, err := l.lab.AddHost(fmt.Sprintf("rs%d", i+1), netip.MustParsePrefix(fmt.Sprintf("10.81.0.%d/24", 11+i)))
		if err != nil {
			return err
		}
		// The VIP on lo for DSR; harmless for DNAT, which rewrites the address.
		if b, err := inHost(h, bin, "realserver", "--vip", vip); err != nil {
			return fmt.Errorf("realserver: %v\n%s", err, b)
		}
		// Count at the interface and drop there: the real servers' own
		// cost stays small and the same for every mode.
		drop := fmt.Sprintf("table netdev bench { chain in { type filter hook ingress device eth0 priority 0; udp dport %d drop; }; }", port)
		if b, err := inHost(h, "nft", drop); err != nil {
			return fmt.Errorf("real server drop rule: %v\n%s", err, b)
		}
		l.rs = append(l.rs, h)
	}
	if l.gen, err = xdp.Load(); err != nil {
		return err
	}
	defer l.gen.Close()
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	// Frames sent with XDP_TX into a veth are taken by its peer only when
	// the peer runs an XDP program: the client's and the balancer's ports.
	err = l.lab.SwitchDo(func() error {
		for _, h := range []*netlab.Host{l.client, l.lb} {
			ifc, err := net.InterfaceByName(h.SwitchPort())
			if err != nil {
				return err
			}
			pass, err := l.gen.AttachPass(ifc.Index)
			if err != nil {
				return err
			}
			closers = append(closers, pass)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The client's port hands every frame on in its own NAPI thread, pinned
	// to the core the generator does not use: that core does all the work
	// behind the generator (bridge, balancer, real servers), so the
	// packets per second it delivers compare the balancers' costs.
	if err := threaded(l.lab.Prefix+"sw", l.client.SwitchPort()); err != nil {
		return err
	}
	results := map[string][]result{}
	for r := range rounds {
		for i := range modes {
			mode := modes[(i+r)%len(modes)].name
			res, err := l.round(mode, bin, dir, packets)
			if err != nil {
				return fmt.Errorf("%s: %w", mode, err)
			}
			results[mode] = append(results[mode], res)
			fmt.Printf("round %d %-8s throughput %.0f packets/s; flat out %.0f sent, %.0f delivered\n",
				r+1, mode, res.throughput, res.sentFlat, res.overload)
		}
	}
	median := func(mode string, f func(result) float64) float64 {
		var xs []float64
		for _, r := range results[mode] {
			xs = append(xs, f(r))
		}
		return benchdoc.Median(xs)
	}
	nft := median("nftables", func(r result) float64 { return r.throughput })
	nftOver := median("nftables", func(r result) float64 { return r.overload })
	var b strings.Builder
	fmt.Fprintf(&b, "Written by `make bench-dsr` on %s. One namespace lab on a bridge (veth). The client generates UDP frames (64 bytes, 256 flows) "+
		"to a VIP with an XDP program in live-frame mode (BPF_PROG_RUN) on core 0; everything behind it (the bridge, the balancer, the real "+
		"servers, which count the frames reaching their interface and drop them there) runs on core 1, in the client port's NAPI thread. "+
		"Throughput is RFC 2544 style: the highest paced rate that arrives with at most %.1f%% lost (%d frames per trial; the generator "+
		"sends one frame in k, k doubling until a rate is carried, then bisected); it is core 1's capacity for bridge + balancer + real servers, so the balancer's own share of the gap is larger "+
		"than the ratio shows. Flat out: the generator sends as fast as it can (far above any capacity) and the table gives what arrives. "+
		"On veth both XDP modes pay a copy per packet that a NIC driver with native XDP does not: XDP wants 256 bytes of headroom and an "+
		"skb coming from the bridge has less, so native mode converts it to an XDP frame and generic mode reallocates it. "+
		"Medians of %d runs per mode, order rotating; runs vary by up to ±30%% on this shared machine.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), maxLoss*100, packets, rounds)
	b.WriteString("| balancer | throughput, packets/s | vs nftables | goal | flat out: sent/s | flat out: delivered/s | vs nftables |\n|---|---|---|---|---|---|---|\n")
	for _, m := range modes {
		x := median(m.name, func(r result) float64 { return r.throughput })
		over := median(m.name, func(r result) float64 { return r.overload })
		goal := ""
		if m.name != "nftables" {
			goal = ">= 2x"
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.2fx | %s | %.0f | %.0f | %.2fx |\n", m.row, x, x/nft, goal,
			median(m.name, func(r result) float64 { return r.sentFlat }), over, over/nftOver)
	}
	last := func(mode string) string { return results[mode][len(results[mode])-1].spread }
	fmt.Fprintf(&b, "\nSpread over the two real servers at the throughput rate in the last run: native %s; generic %s; nftables %s. "+
		"The userspace proxy is TCP only and is not in this UDP table; see the L4 balancer table for it.\n", last("native"), last("generic"), last("nftables"))
	fmt.Print(b.String())
	return benchdoc.WriteSection(out, "dsr", "Packets per second through the balancer: XDP DSR vs nftables DNAT", b.String())
}

// round measures one mode.
func (l *lab) round(mode, bin, dir string, packets uint32) (result, error) {
	stop, err := l.setup(mode, bin, dir)
	if err != nil {
		return result{}, err
	}
	defer stop()
	return l.measure(packets)
}

// threaded turns on threaded NAPI for an interface of a namespace.
func threaded(ns, ifname string) error {
	if b, err := exec.Command("ip", "netns", "exec", ns, "sh", "-c", "echo 1 > /sys/class/net/"+ifname+"/threaded").CombinedOutput(); err != nil {
		return fmt.Errorf("threaded NAPI on %s in %s: %v\n%s", ifname, ns, err, b)
	}
	return nil
}

func inHost(h *netlab.Host, name string, args ...string) (string, error) {
	var out strings.Builder
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	p, err := h.Start(cmd)
	if err != nil {
		return "", err
	}
	if exited, err := p.Wait(20 * time.Second); !exited || err != nil {
		p.Kill()
		return out.String(), fmt.Errorf("%s %v: exited=%v err=%v", name, args, exited, err)
	}
	return out.String(), nil
}

// setup makes the balancer do its job in mode and returns how to undo it.
func (l *lab) setup(mode, bin, dir string) (func(), error) {
	switch mode {
	case "native", "generic":
		cfg := filepath.Join(dir, "vigil.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf(`api: {socket: %q, http: ""}
vrrp:
  instances:
    - {name: vip, interface: eth0, vrid: 81, priority: 150, advert_interval: 100ms, vips: [%s]}
balancers:
  - {name: bench, mode: dsr, protocol: udp, interface: eth0, xdp_mode: %s, listen: ["%s:%d"],
     backends: [{address: "10.81.0.11:%d"}, {address: "10.81.0.12:%d"}]}
`, filepath.Join(dir, "vigil.sock"), vip, mode, vip, port, port, port)), 0o644)
		logf, _ := os.Create(filepath.Join(dir, "vigil.log"))
		cmd := exec.Command(bin, "run", "-c", cfg, "--pid-file", "")
		cmd.Stdout, cmd.Stderr = logf, logf
		p, err := l.lb.Start(cmd)
		if err != nil {
			return nil, err
		}
		stop := func() { p.Signal(os.Interrupt); p.Wait(5 * time.Second); p.Kill(); logf.Close() }
		// Ready when both backends are resolved and the VIP is up.
		deadline := time.Now().Add(15 * time.Second)
		for {
			out, _ := exec.Command(bin, "status", "--socket", filepath.Join(dir, "vigil.sock"), "-o", "json").Output()
			ok, _ := l.lb.HasAddr(netip.MustParseAddr(vip))
			if ok && strings.Count(string(out), `"up": true`) == 2 {
				return stop, nil
			}
			if time.Now().After(deadline) {
				stop()
				b, _ := os.ReadFile(filepath.Join(dir, "vigil.log"))
				return nil, fmt.Errorf("vigil did not get ready:\n%s", b)
			}
			time.Sleep(100 * time.Millisecond)
		}
	case "nftables":
		rules := fmt.Sprintf(`table ip vigil_bench {
	chain pre {
		type nat hook prerouting priority -100;
		ip daddr %s udp dport %d dnat to numgen inc mod 2 map { 0 : 10.81.0.11, 1 : 10.81.0.12 }
	}
}
`, vip, port)
		f := filepath.Join(dir, "rules.nft")
		os.WriteFile(f, []byte(rules), 0o644)
		for _, c := range [][]string{
			{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
			{"sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0"},
			{"sysctl", "-qw", "net.ipv4.conf.eth0.send_redirects=0"},
			{"ip", "addr", "add", vip + "/32", "dev", "eth0"},
			{"nft", "-f", f},
		} {
			if b, err := inHost(l.lb, c[0], c[1:]...); err != nil {
				return nil, fmt.Errorf("%v: %v\n%s", c, err, b)
			}
		}
		// The client learns the VIP's MAC afresh from the lb.
		inHost(l.client, "ip", "neigh", "flush", "dev", "eth0")
		return func() {
			inHost(l.lb, "nft", "delete", "table", "ip", "vigil_bench")
			inHost(l.lb, "ip", "addr", "del", vip+"/32", "dev", "eth0")
			inHost(l.lb, "conntrack", "-F")
			inHost(l.client, "ip", "neigh", "flush", "dev", "eth0")
		}, nil
	}
	return nil, fmt.Errorf("unknown mode %s", mode)
}

// result is one mode's run.
type result struct {
	throughput float64 // highest rate (packets/s) delivered with at most maxLoss lost
	overload   float64 // packets/s delivered while the generator sends flat out
	sentFlat   float64 // the generator's flat-out rate
	spread     string  // per real server, at the throughput rate
}

// maxLoss is the loss a rate may have and still count as carried (RFC 2544
// asks for none; veth and the bridge drop a few frames at any rate).
const maxLoss = 0.005

// measure finds the balancer's throughput, the highest rate carried with
// at most maxLoss lost: the generator sends one frame in every k, k
// doubling until a rate is carried, then a bisection between that k and
// the last one not carried. Then it measures what gets through when the
// generator sends every frame, flat out.
func (l *lab) measure(packets uint32) (r result, err error) {
	g, err := l.generator()
	if err != nil {
		return r, err
	}
	loss, _, err := g.trial(1, packets)
	if err != nil {
		return r, err
	}
	r.sentFlat, r.overload = g.lastRate, g.lastRate*(1-loss)
	fail, pass := uint32(1), uint32(0)
	if loss <= maxLoss {
		fail, pass, r.throughput = 0, 1, g.lastRate
	}
	// try sends one frame in k and moves pass or fail to k.
	try := func(k uint32) error {
		loss, spread, err := g.trial(k, packets)
		if err != nil {
			return err
		}
		if loss <= maxLoss {
			pass, r.throughput, r.spread = k, g.lastRate, spread
		} else {
			fail = k
		}
		return nil
	}
	for k := uint32(2); pass == 0; k *= 2 {
		if err := try(k); err != nil {
			return r, err
		}
		if pass == 0 && k >= 1<<12 {
			return r, fmt.Errorf("even %.0f packets/s lose more than %.1f%%", g.lastRate, maxLoss*100)
		}
	}
	for pass-fail > 1 && fail > 0 {
		if err := try((pass + fail) / 2); err != nil {
			return r, err
		}
	}
	return r, nil
}

// generator sends the benchmark's frames from the client.
type generator struct {
	l        *lab
	ifindex  int
	frame    []byte
	lastRate float64 // packets/s the last trial sent at
}

func (l *lab) generator() (*generator, error) {
	g := &generator{l: l}
	// A packet from a socket first, so the client resolves the VIP's MAC
	// (and the balancer its backends').
	var mac net.HardwareAddr
	err := l.client.Do(func() error {
		c, err := net.Dial("udp4", net.JoinHostPort(vip, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		defer c.Close()
		for range 3 {
			c.Write(make([]byte, 22))
			time.Sleep(100 * time.Millisecond)
		}
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		g.ifindex, mac = ifc.Index, ifc.HardwareAddr
		return nil
	})
	if err != nil {
		return nil, err
	}
	vipMAC, err := l.client.Neighbor(netip.MustParseAddr(vip))
	if err != nil {
		return nil, fmt.Errorf("the client did not resolve the VIP: %w", err)
	}
	g.frame = udpFrame(mac, vipMAC)
	// Everything behind the generator runs in the client port's NAPI
	// thread, on the other core.
	if err := pinNAPI("napi/"+l.client.SwitchPort()+"-", 1); err != nil {
		return nil, err
	}
	return g, nil
}

// trial has the generator send packets frames, one in every oneIn of those
// it makes, from core 0, and returns the share lost on the way to the real
// servers.
func (g *generator) trial(oneIn, packets uint32) (loss float64, spread string, err error) {
	before, err := g.l.received()
	if err != nil {
		return 0, "", err
	}
	var sent uint32
	var took time.Duration
	err = g.l.client.Do(func() (err error) {
		var cpus unix.CPUSet
		cpus.Set(0)
		if err := unix.SchedSetaffinity(0, &cpus); err != nil {
			return err
		}
		sent, took, err = g.l.gen.Generate(g.ifindex, g.frame, packets*oneIn, oneIn)
		return err
	})
	if err != nil {
		return 0, "", err
	}
	time.Sleep(200 * time.Millisecond) // let queues drain
	after, err := g.l.received()
	if err != nil {
		return 0, "", err
	}
	var got []string
	total := uint64(0)
	for i := range after {
		n := after[i] - before[i]
		total += n
		got = append(got, fmt.Sprintf("rs%d %d", i+1, n))
	}
	g.lastRate = float64(sent) / took.Seconds()
	spread = strings.Join(got, ", ") + fmt.Sprintf(" of %d", sent)
	fmt.Printf("    one in %d: %.0f/s sent: %s\n", oneIn, g.lastRate, spread)
	return 1 - min(1, float64(total)/float64(sent)), spread, nil
}

// pinNAPI pins the NAPI thread whose name starts with prefix to a core.
func pinNAPI(prefix string, core int) error {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join("/proc", d.Name(), "comm"))
		if err != nil || !strings.HasPrefix(string(comm), prefix) {
			continue
		}
		pid, _ := strconv.Atoi(d.Name())
		var cpus unix.CPUSet
		cpus.Set(core)
		if err := unix.SchedSetaffinity(pid, &cpus); err != nil {
			return fmt.Errorf("pin %s: %w", strings.TrimSpace(string(comm)), err)
		}
		return nil
	}
	return fmt.Errorf("no thread named %s*: threaded NAPI is off", prefix)
}

// received reads each real server's eth0 receive counter.
func (l *lab) received() ([]uint64, error) {
	var out []uint64
	for _, h := range l.rs {
		hh, err := h.Netlink()
		if err != nil {
			return nil, err
		}
		lk, err := hh.LinkByName("eth0")
		hh.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, lk.Attrs().Statistics.RxPackets)
	}
	return out, nil
}

// udpFrame is a 64-byte Ethernet frame from the client to the VIP's port,
// UDP source port 30000 (xdp_gen steps it), no UDP checksum.
func udpFrame(src, dst net.HardwareAddr) []byte {
	f := make([]byte, 64)
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-14))
	copy(ip[12:16], net.ParseIP("10.81.0.100").To4())
	copy(ip[16:20], net.ParseIP(vip).To4())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:], 30000)
	binary.BigEndian.PutUint16(udp[2:], port)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(f)-34))
	return f
}
