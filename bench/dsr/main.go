// Command dsr measures packets per second through a balancer in the
// namespace lab, side by side in one run: vigil's XDP DSR program (generic
// mode on veth) and an nftables DNAT rule set doing the same job. UDP
// packets from a client over many flows to a VIP; the two real servers count
// what arrives. Every send is bounded by a packet count. Needs root.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-lb/vigil/internal/benchdoc"
	"github.com/vigil-lb/vigil/internal/netlab"
)

const (
	vip  = "10.81.0.10"
	port = 9000
)

func main() {
	packets := flag.Int("packets", 400000, "packets per run")
	flows := flag.Int("flows", 256, "distinct source ports")
	rounds := flag.Int("rounds", 3, "runs per mode (alternating)")
	out := flag.String("out", "docs/benchmarks.md", "markdown file to update")
	flag.Parse()
	if err := run(*packets, *flows, *rounds, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench/dsr:", err)
		os.Exit(1)
	}
}

type lab struct {
	lab        *netlab.Lab
	client, lb *netlab.Host
	rs         []*netlab.Host
	counts     []*atomic.Int64
	conns      []net.PacketConn
}

func run(packets, flows, rounds int, out string) error {
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
		var pc net.PacketConn
		if err := h.Do(func() (err error) { pc, err = net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", port)); return }); err != nil {
			return err
		}
		pc.(*net.UDPConn).SetReadBuffer(8 << 20)
		n := &atomic.Int64{}
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := pc.ReadFrom(buf); err != nil {
					return
				}
				n.Add(1)
			}
		}()
		l.rs, l.counts, l.conns = append(l.rs, h), append(l.counts, n), append(l.conns, pc)
	}
	defer func() {
		for _, c := range l.conns {
			c.Close()
		}
	}()
	results := map[string][]float64{}
	spread := map[string]string{}
	for r := range rounds {
		modes := []string{"xdp", "nftables"}
		if r%2 == 1 {
			modes = []string{"nftables", "xdp"}
		}
		for _, mode := range modes {
			stop, err := l.setup(mode, bin, dir)
			if err != nil {
				return fmt.Errorf("%s: %w", mode, err)
			}
			pps, sp, err := l.measure(packets, flows)
			stop()
			if err != nil {
				return fmt.Errorf("%s: %w", mode, err)
			}
			results[mode] = append(results[mode], pps)
			spread[mode] = sp
			fmt.Printf("round %d %-8s %.0f packets/s delivered (%s)\n", r+1, mode, pps, sp)
		}
	}
	x, n := benchdoc.Median(results["xdp"]), benchdoc.Median(results["nftables"])
	var b strings.Builder
	fmt.Fprintf(&b, "Written by `make bench-dsr` on %s. One namespace lab on a bridge (veth): a client sends %d UDP packets over %d flows to a VIP as fast as one "+
		"sender goroutine can; two real servers count what arrives. Medians of %d runs per mode, alternating. Everything shares 2 cores: the sender, "+
		"the bridge and the balancer's packet processing (softirq) compete, so this compares the balancer's per-packet cost in the same pipeline.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), packets, flows, rounds)
	b.WriteString("| balancer | packets/s delivered | vs nftables | goal |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| vigil XDP DSR (generic mode; Maglev + conntrack) | %.0f | %.2fx | >= 2x |\n", x, x/n)
	fmt.Fprintf(&b, "| nftables DNAT (numgen round robin, conntrack, forwarding) | %.0f | 1.00x | |\n", n)
	fmt.Fprintf(&b, "\nSpread over the two real servers in the last run: XDP %s, nftables %s. The userspace proxy is TCP only and is not in this UDP table; "+
		"see the L4 balancer table for it.\n", spread["xdp"], spread["nftables"])
	fmt.Print(b.String())
	return benchdoc.WriteSection(out, "dsr", "Packets per second through the balancer: XDP DSR vs nftables DNAT", b.String())
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
	case "xdp":
		cfg := filepath.Join(dir, "vigil.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf(`api: {socket: %q, http: ""}
vrrp:
  instances:
    - {name: vip, interface: eth0, vrid: 81, priority: 150, advert_interval: 100ms, vips: [%s]}
balancers:
  - {name: bench, mode: dsr, protocol: udp, interface: eth0, xdp_mode: generic, listen: ["%s:%d"],
     backends: [{address: "10.81.0.11:%d"}, {address: "10.81.0.12:%d"}]}
`, filepath.Join(dir, "vigil.sock"), vip, vip, port, port, port)), 0o644)
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

// measure sends packets over flows from the client and returns what the
// real servers received per second of sending.
func (l *lab) measure(packets, flows int) (float64, string, error) {
	var socks []*net.UDPConn
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	dst := &net.UDPAddr{IP: net.ParseIP(vip), Port: port}
	for i := range flows {
		var c *net.UDPConn
		err := l.client.Do(func() (err error) {
			c, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.81.0.100"), Port: 30000 + i}, dst)
			return
		})
		if err != nil {
			return 0, "", err
		}
		socks = append(socks, c)
	}
	// Warm up: every flow once, so ARP and conntrack are settled.
	payload := make([]byte, 64)
	for _, s := range socks {
		s.Write(payload)
	}
	time.Sleep(300 * time.Millisecond)
	before := make([]int64, len(l.counts))
	for i, c := range l.counts {
		before[i] = c.Load()
	}
	var wg sync.WaitGroup
	t0 := time.Now()
	wg.Go(func() {
		for i := range packets {
			socks[i%len(socks)].Write(payload)
		}
	})
	wg.Wait()
	took := time.Since(t0)
	time.Sleep(500 * time.Millisecond) // let queues drain
	var got []string
	total := int64(0)
	for i, c := range l.counts {
		n := c.Load() - before[i]
		total += n
		got = append(got, fmt.Sprintf("rs%d %d", i+1, n))
	}
	sort.Strings(got)
	if total == 0 {
		return 0, "", errors.New("nothing arrived")
	}
	return float64(total) / took.Seconds(), strings.Join(got, ", ") + fmt.Sprintf(" of %d", packets), nil
}
