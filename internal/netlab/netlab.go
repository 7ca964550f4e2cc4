// Package netlab builds small networks in network namespaces for tests and
// the demo: one namespace holds a bridge (the switch), each host is a
// namespace with an eth0 veth plugged into it. Everything it creates carries
// a unique prefix and is removed by Close, including processes it started;
// CleanupStale removes what a killed run left behind.
package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Base starts every namespace name netlab creates; the pid of the creating
// process follows, so CleanupStale can tell live labs from dead ones.
const Base = "vigil-lab-"

// Lab is one switch and its hosts.
type Lab struct {
	Prefix string
	sw     netns.NsHandle
	swName string

	mu    sync.Mutex
	hosts []*Host
	plugs []string // switch ports of hosts from other labs
	procs []*Proc
}

// Host is a namespace with eth0 on the lab's switch.
type Host struct {
	Name   string // short name, e.g. "n1"
	NSName string // full namespace name
	MAC    net.HardwareAddr
	Addrs  []netip.Prefix
	ns     netns.NsHandle
	port   string // the switch-side veth
	lab    *Lab
}

// Root reports whether the process can build labs.
func Root() bool { return os.Geteuid() == 0 }

// New creates the switch. Call Close when done, also on failure.
func New() (*Lab, error) {
	if !Root() {
		return nil, errors.New("netlab: needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces")
	}
	CleanupStale()
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	l := &Lab{Prefix: fmt.Sprintf("%s%d-%s-", Base, os.Getpid(), hex.EncodeToString(rnd[:]))}
	l.swName = l.Prefix + "sw"
	sw, err := newNamed(l.swName)
	if err != nil {
		return nil, err
	}
	l.sw = sw
	err = l.inSwitch(func(h *netlink.Handle) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		if err := h.LinkAdd(br); err != nil {
			return fmt.Errorf("netlab: add bridge: %w", err)
		}
		// STP stays off (the default), so new ports forward at once.
		return h.LinkSetUp(br)
	})
	if err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *Lab) inSwitch(f func(h *netlink.Handle) error) error {
	h, err := netlink.NewHandleAt(l.sw)
	if err != nil {
		return fmt.Errorf("netlab: netlink in switch: %w", err)
	}
	defer h.Close()
	return f(h)
}

// AddHost creates a host namespace with eth0 holding addrs, plugged into the
// switch and up. IPv6 duplicate address detection is off so addresses work at once.
func (l *Lab) AddHost(name string, addrs ...netip.Prefix) (*Host, error) {
	l.mu.Lock()
	idx := len(l.hosts)
	l.mu.Unlock()
	h := &Host{Name: name, NSName: l.Prefix + name, Addrs: addrs, lab: l, port: fmt.Sprintf("p%d", idx)}
	ns, err := newNamed(h.NSName)
	if err != nil {
		return nil, err
	}
	h.ns = ns
	l.mu.Lock()
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	for _, kv := range [][2]string{
		{"net/ipv6/conf/default/accept_dad", "0"},
		{"net/ipv6/conf/all/accept_dad", "0"},
	} {
		if err := writeSysctlIn(ns, "/proc/sys/"+kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	err = l.inSwitch(func(sh *netlink.Handle) error {
		br, err := sh.LinkByName("br0")
		if err != nil {
			return err
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: h.port, MasterIndex: br.Attrs().Index},
			PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}
		if err := sh.LinkAdd(veth); err != nil {
			return fmt.Errorf("netlab: add veth for %s: %w", name, err)
		}
		p, err := sh.LinkByName(h.port)
		if err != nil {
			return err
		}
		return sh.LinkSetUp(p)
	})
	if err != nil {
		return nil, err
	}
	hh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, err
	}
	defer hh.Close()
	for _, ifname := range []string{"lo", "eth0"} {
		lk, err := hh.LinkByName(ifname)
		if err != nil {
			return nil, fmt.Errorf("netlab: %s in %s: %w", ifname, name, err)
		}
		if ifname == "eth0" {
			h.MAC = lk.Attrs().HardwareAddr
			for _, a := range addrs {
				if err := hh.AddrAdd(lk, toAddr(a)); err != nil {
					return nil, fmt.Errorf("netlab: address %s on %s: %w", a, name, err)
				}
			}
		}
		if err := hh.LinkSetUp(lk); err != nil {
			return nil, err
		}
	}
	if err := waitNotTentative(hh); err != nil {
		return nil, fmt.Errorf("netlab: %s: %w", name, err)
	}
	return h, nil
}

// waitNotTentative waits until no IPv6 address is tentative: without DAD
// an address still is, briefly, after its link comes up, and cannot be
// bound until the kernel's work queue has run.
func waitNotTentative(hh *netlink.Handle) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		addrs, err := hh.AddrList(nil, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("list addresses: %w", err)
		}
		tentative := ""
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				tentative = a.IPNet.String()
			}
		}
		if tentative == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("address %s still tentative after 5s", tentative)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Plug gives a host of another lab a second interface, ifname, on this
// lab's switch, holding addrs and up: a router between two segments.
func (l *Lab) Plug(h *Host, ifname string, addrs ...netip.Prefix) error {
	l.mu.Lock()
	port := fmt.Sprintf("x%d", len(l.hosts)+len(l.plugs))
	l.plugs = append(l.plugs, port)
	l.mu.Unlock()
	err := l.inSwitch(func(sh *netlink.Handle) error {
		br, err := sh.LinkByName("br0")
		if err != nil {
			return err
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port, MasterIndex: br.Attrs().Index},
			PeerName: ifname, PeerNamespace: netlink.NsFd(h.ns)}
		if err := sh.LinkAdd(veth); err != nil {
			return fmt.Errorf("netlab: add veth %s for %s: %w", ifname, h.Name, err)
		}
		p, err := sh.LinkByName(port)
		if err != nil {
			return err
		}
		return sh.LinkSetUp(p)
	})
	if err != nil {
		return err
	}
	return h.bringUp(ifname, addrs)
}

// Cable joins two hosts with a veth pair and no switch between them: aIf in
// a, bIf in b, each up and holding its addresses. A point-to-point link, as
// between a router's port and a balancer's NIC. The pair goes with the
// hosts' namespaces.
func Cable(a *Host, aIf string, aAddrs []netip.Prefix, b *Host, bIf string, bAddrs []netip.Prefix) error {
	ah, err := a.Netlink()
	if err != nil {
		return err
	}
	defer ah.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aIf}, PeerName: bIf, PeerNamespace: netlink.NsFd(b.ns)}
	if err := ah.LinkAdd(veth); err != nil {
		return fmt.Errorf("netlab: cable %s %s - %s %s: %w", a.Name, aIf, b.Name, bIf, err)
	}
	if err := a.bringUp(aIf, aAddrs); err != nil {
		return err
	}
	return b.bringUp(bIf, bAddrs)
}

// bringUp gives the host's interface ifname its addresses and sets it up.
func (h *Host) bringUp(ifname string, addrs []netip.Prefix) error {
	return h.withLink(ifname, func(hh *netlink.Handle, lk netlink.Link) error {
		for _, a := range addrs {
			if err := hh.AddrAdd(lk, toAddr(a)); err != nil {
				return fmt.Errorf("netlab: address %s on %s %s: %w", a, h.Name, ifname, err)
			}
		}
		if err := hh.LinkSetUp(lk); err != nil {
			return err
		}
		return waitNotTentative(hh)
	})
}

// SwitchDo runs f in the switch's namespace, where the hosts' ports are.
func (l *Lab) SwitchDo(f func() error) error { return doIn(l.sw, f) }

// SwitchPort names the host's port (its veth peer) in the switch's namespace.
func (h *Host) SwitchPort() string { return h.port }

// Sysctl writes a sysctl (path under /proc/sys, e.g. "net/ipv4/ip_forward")
// inside the host.
func (h *Host) Sysctl(path, value string) error {
	return writeSysctlIn(h.ns, "/proc/sys/"+path, value)
}

func toAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
}

// Addr returns the host's first address of the given family.
func (h *Host) Addr(v6 bool) netip.Addr {
	for _, p := range h.Addrs {
		if p.Addr().Is6() == v6 {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

// Do runs f with the calling thread inside the host's namespace. The thread
// is thrown away afterwards, so no goroutine ever runs in the wrong namespace.
func (h *Host) Do(f func() error) error { return doIn(h.ns, f) }

func doIn(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("netlab: enter namespace: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

func newNamed(name string) (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // NewNamed moves the thread into the new namespace: never unlocked
		ns, err := netns.NewNamed(name)
		res <- result{ns, err}
	}()
	r := <-res
	ns, err := r.ns, r.err
	if err != nil {
		return ns, fmt.Errorf("netlab: create namespace %s: %w", name, err)
	}
	return ns, nil
}

func writeSysctlIn(ns netns.NsHandle, path, value string) error {
	return doIn(ns, func() error {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("netlab: %s: %w", path, err)
		}
		return nil
	})
}

// Netlink returns a netlink handle bound to the host's namespace.
func (h *Host) Netlink() (*netlink.Handle, error) { return netlink.NewHandleAt(h.ns) }

// Listen opens a listener inside the host: sockets keep the namespace they
// were made in, so the caller can use it from any goroutine.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := h.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// Serve accepts connections on l until it is closed, each handled by
// handle in its own goroutine and closed after it: the small servers of
// tests and benchmarks.
func Serve(l net.Listener, handle func(c net.Conn)) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

// Dial connects from inside the host.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var err error
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// withLink runs f with a netlink handle in the host and its interface ifname.
func (h *Host) withLink(ifname string, f func(hh *netlink.Handle, lk netlink.Link) error) error {
	hh, err := h.Netlink()
	if err != nil {
		return err
	}
	defer hh.Close()
	lk, err := hh.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("netlab: %s of %s: %w", ifname, h.Name, err)
	}
	return f(hh, lk)
}

// SetLink sets the host's eth0 up or down from inside the host.
func (h *Host) SetLink(up bool) error {
	return h.withLink("eth0", func(hh *netlink.Handle, lk netlink.Link) error {
		if up {
			return hh.LinkSetUp(lk)
		}
		return hh.LinkSetDown(lk)
	})
}

// SetCable plugs or unplugs the host's cable: the switch side goes down, so
// the host sees carrier loss while its own interface stays administratively up.
func (h *Host) SetCable(up bool) error {
	return h.lab.inSwitch(func(sh *netlink.Handle) error {
		lk, err := sh.LinkByName(h.port)
		if err != nil {
			return err
		}
		if up {
			return sh.LinkSetUp(lk)
		}
		return sh.LinkSetDown(lk)
	})
}

// findAddr returns eth0's address a, or nil.
func findAddr(hh *netlink.Handle, lk netlink.Link, a netip.Addr) (*netlink.Addr, error) {
	list, err := hh.AddrList(lk, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	for _, x := range list {
		if ip, ok := netip.AddrFromSlice(x.IP); ok && ip.Unmap() == a {
			return &x, nil
		}
	}
	return nil, nil
}

// HasAddr reports whether eth0 holds a.
func (h *Host) HasAddr(a netip.Addr) (bool, error) { return h.HasAddrOn("eth0", a) }

// HasAddrOn reports whether the interface ifname holds a.
func (h *Host) HasAddrOn(ifname string, a netip.Addr) (bool, error) {
	var found bool
	err := h.withLink(ifname, func(hh *netlink.Handle, lk netlink.Link) error {
		x, err := findAddr(hh, lk, a)
		found = x != nil
		return err
	})
	return found, err
}

// Neighbor returns the link-layer address the host's neighbour table holds
// for ip, on whichever interface it was learnt.
func (h *Host) Neighbor(ip netip.Addr) (net.HardwareAddr, error) {
	hh, err := h.Netlink()
	if err != nil {
		return nil, err
	}
	defer hh.Close()
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	list, err := hh.NeighList(0, fam)
	var mac net.HardwareAddr
	for _, n := range list {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip && len(n.HardwareAddr) > 0 {
			mac = n.HardwareAddr
		}
	}
	return mac, err
}

// Proc is a process started inside a host.
type Proc struct {
	Cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts cmd inside the host, in its own process group. The lab kills
// it on Close if it is still running.
func (h *Host) Start(cmd *exec.Cmd) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// Start forks from the locked thread, so the child inherits its namespace.
	if err := h.Do(cmd.Start); err != nil {
		return nil, fmt.Errorf("netlab: start %s in %s: %w", cmd.Path, h.Name, err)
	}
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	h.lab.mu.Lock()
	h.lab.procs = append(h.lab.procs, p)
	h.lab.mu.Unlock()
	return p, nil
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Wait waits at most d for the process to exit and returns its error.
func (p *Proc) Wait(d time.Duration) (exited bool, err error) {
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(d):
		return false, nil
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill kills the process group and waits for the process.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Close kills processes, then removes the hosts and the switch.
func (l *Lab) Close() error {
	l.mu.Lock()
	procs, hosts := l.procs, l.hosts
	l.procs, l.hosts = nil, nil
	l.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
	var errs []error
	for _, h := range hosts {
		_ = h.ns.Close()
		errs = append(errs, deleteNamed(h.NSName))
	}
	if l.sw.IsOpen() {
		_ = l.sw.Close()
		errs = append(errs, deleteNamed(l.swName))
	}
	return errors.Join(errs...)
}

func deleteNamed(name string) error {
	// Processes left inside (not started through the lab) would keep it alive.
	killIn(name)
	if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netlab: delete namespace %s: %w", name, err)
	}
	return nil
}

// killIn kills every process whose network namespace is the named one.
func killIn(name string) {
	target, err := os.Stat(filepath.Join("/run/netns", name))
	if err != nil {
		return
	}
	tst, ok := target.Sys().(*syscall.Stat_t)
	if !ok {
		return
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		st, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			continue
		}
		if s, ok := st.Sys().(*syscall.Stat_t); ok && s.Ino == tst.Ino && s.Dev == tst.Dev {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// CleanupStale removes namespaces of labs whose creating process is gone.
func CleanupStale() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), Base)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil {
			continue
		}
		if syscall.Kill(pid, 0) == nil && pid != 0 {
			continue // alive
		}
		_ = deleteNamed(e.Name())
	}
}

// Dialer dials from inside a host with a fixed pool of threads that stay in
// its namespace, so frequent probes do not each start a thread.
type Dialer struct {
	jobs chan dialJob
	stop chan struct{}
	wg   sync.WaitGroup
}

type dialJob struct {
	ctx           context.Context
	network, addr string
	done          chan dialResult
}

type dialResult struct {
	c   net.Conn
	err error
}

// ErrBusy is returned by TryDial when every worker is busy.
var ErrBusy = errors.New("netlab: all dialer workers busy")

// Dialer starts workers threads inside the host. Close stops them.
func (h *Host) Dialer(workers int) *Dialer {
	d := &Dialer{jobs: make(chan dialJob), stop: make(chan struct{})}
	for range workers {
		d.wg.Go(func() {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			if err := netns.Set(h.ns); err != nil {
				return
			}
			var nd net.Dialer
			for {
				select {
				case <-d.stop:
					return
				case j := <-d.jobs:
					c, err := nd.DialContext(j.ctx, j.network, j.addr)
					j.done <- dialResult{c, err}
				}
			}
		})
	}
	return d
}

// TryDial dials on a free worker, or returns ErrBusy at once if none is free.
func (d *Dialer) TryDial(ctx context.Context, network, addr string) (net.Conn, error) {
	j := dialJob{ctx: ctx, network: network, addr: addr, done: make(chan dialResult, 1)}
	select {
	case d.jobs <- j:
	default:
		return nil, ErrBusy
	}
	r := <-j.done
	return r.c, r.err
}

// Close stops the workers after their current dial.
func (d *Dialer) Close() {
	close(d.stop)
	d.wg.Wait()
}

// HTTPClient is a client whose connections the dialer makes, one per
// request (no keep-alive), waiting for a free worker rather than failing.
func (d *Dialer) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			for ctx.Err() == nil {
				c, err := d.TryDial(ctx, network, addr)
				if !errors.Is(err, ErrBusy) {
					return c, err
				}
				time.Sleep(time.Millisecond)
			}
			return nil, ctx.Err()
		}}}
}
