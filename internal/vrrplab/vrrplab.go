// Package vrrplab builds VRRP clusters of vigil or keepalived nodes in a
// netlab, each node running a tiny "who am I" TCP server, and measures from a
// client namespace which node answers on the VIP. The demo, the integration
// tests and the failover benchmark share it, so all three measure the same way.
package vrrplab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
)

// Impl is a VRRP implementation.
type Impl string

// Implementations a node can run.
const (
	Vigil      Impl = "vigil"
	Keepalived Impl = "keepalived"
)

// WhoamiPort is where every node answers with its name.
const WhoamiPort = 8080

// NodeSpec is one router.
type NodeSpec struct {
	Name     string
	Impl     Impl
	Priority int
	// Vigil only: extra keys of the instance (indented 6 spaces) and extra
	// top-level YAML, such as checks.
	InstanceYAML string
	TopYAML      string
	// VIP overrides Spec.VIP for this node, to put two groups on one segment.
	VIP netip.Prefix
}

// vip is the node's VIP.
func (n *Node) vip() netip.Prefix {
	if n.VIP.IsValid() {
		return n.VIP
	}
	return n.c.Spec.VIP
}

// Spec is the shared settings of one virtual router.
type Spec struct {
	Version   int
	Interval  time.Duration
	VRID      int
	AuthPass  string // v2 only
	Unicast   bool
	NoPreempt bool
	VIP       netip.Prefix
	IPv6      bool // hosts get IPv6 addresses and the VIP is IPv6
	GARPCount int  // vigil only; 0 means vigil's default
	// PoolVIPs, when set, makes vigil nodes run one pool of these VIPs over
	// all nodes instead of one instance of VIP (vigil only).
	PoolVIPs      []netip.Prefix
	MoveBackDelay time.Duration
	// PeerNames: vigil nodes name the others by address (vrrp.peer_names),
	// so their status names masters by node.
	PeerNames bool
	Nodes     []NodeSpec
}

// Cluster is a running lab.
type Cluster struct {
	Spec   Spec
	Lab    *netlab.Lab
	Client *netlab.Host
	Nodes  []*Node
	probe  *netlab.Dialer // the client's probe threads
	dir    string
	vigil  string
}

// Node is one router host and the daemon on it.
type Node struct {
	NodeSpec
	Host    *netlab.Host
	Proc    *netlab.Proc
	Config  string
	LogPath string
	c       *Cluster
}

// Socket is a vigil node's control socket.
func (n *Node) Socket() string { return filepath.Join(n.c.dir, n.Name+".sock") }

// Build creates the lab: a client and one host per node, configs written to
// dir, whoami servers listening. Daemons are not started yet (Start).
// vigilBin is the vigil executable for vigil nodes.
func Build(spec Spec, vigilBin, dir string) (*Cluster, error) {
	lab, err := netlab.New()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Spec: spec, Lab: lab, dir: dir, vigil: vigilBin}
	if err := c.build(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) addr(i int) netip.Prefix {
	if c.Spec.IPv6 {
		return netip.MustParsePrefix(fmt.Sprintf("fd00:77::%x/64", i))
	}
	return netip.MustParsePrefix(fmt.Sprintf("10.77.0.%d/24", i))
}

func (c *Cluster) build() error {
	var err error
	if c.Client, err = c.Lab.AddHost("client", c.addr(100)); err != nil {
		return err
	}
	c.probe = c.Client.Dialer(64)
	for i, ns := range c.Spec.Nodes {
		h, err := c.Lab.AddHost(ns.Name, c.addr(11+i))
		if err != nil {
			return err
		}
		n := &Node{NodeSpec: ns, Host: h, c: c, LogPath: filepath.Join(c.dir, ns.Name+".log")}
		c.Nodes = append(c.Nodes, n)
		if err := serveWhoami(h); err != nil {
			return err
		}
	}
	for _, n := range c.Nodes {
		if err := n.writeConfig(); err != nil {
			return err
		}
	}
	return nil
}

func serveWhoami(h *netlab.Host) error {
	network, wildcard := "tcp4", "0.0.0.0"
	if h.Addr(false) == (netip.Addr{}) {
		network, wildcard = "tcp6", "::"
	}
	l, err := h.Listen(network, net.JoinHostPort(wildcard, fmt.Sprint(WhoamiPort)))
	if err != nil {
		return fmt.Errorf("whoami on %s: %w", h.Name, err)
	}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return // closed with the namespace
			}
			_, _ = conn.Write([]byte(h.Name + "\n"))
			conn.Close()
		}
	}()
	return nil
}

func (n *Node) peers() []netip.Addr {
	var out []netip.Addr
	for _, o := range n.c.Nodes {
		if o != n {
			out = append(out, o.Host.Addr(n.c.Spec.IPv6))
		}
	}
	return out
}

func (n *Node) writeConfig() error {
	s := n.c.Spec
	var b strings.Builder
	switch n.Impl {
	case Vigil:
		n.Config = filepath.Join(n.c.dir, n.Name+".yaml")
		if len(s.PoolVIPs) > 0 {
			n.writePool(&b)
			break
		}
		fmt.Fprintf(&b, "cluster: lab\nnode: %s\nvrrp:\n  instances:\n    - name: vip\n      interface: eth0\n", n.Name)
		fmt.Fprintf(&b, "      vrid: %d\n      version: %d\n      priority: %d\n      advert_interval: %v\n", s.VRID, s.Version, n.Priority, s.Interval)
		fmt.Fprintf(&b, "      preempt: %v\n      vips: [%q]\n", !s.NoPreempt, n.vip().String())
		if s.AuthPass != "" {
			fmt.Fprintf(&b, "      auth_pass: %q\n", s.AuthPass)
		}
		if s.GARPCount > 0 {
			fmt.Fprintf(&b, "      garp: {count: %d}\n", s.GARPCount)
		}
		if s.Unicast {
			fmt.Fprintf(&b, "      unicast_peers: [")
			for i, p := range n.peers() {
				if i > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "%q", p.String())
			}
			b.WriteString("]\n")
		}
		b.WriteString(n.InstanceYAML)
		n.writePeerNames(&b)
		b.WriteString("log: {level: debug}\n")
		b.WriteString(n.TopYAML)
	case Keepalived:
		n.Config = filepath.Join(n.c.dir, n.Name+".conf")
		fmt.Fprintf(&b, "global_defs {\n  router_id %s\n  vrrp_version %d\n  script_user root\n}\n", n.Name, s.Version)
		fmt.Fprintf(&b, "vrrp_instance VI {\n  state BACKUP\n  interface eth0\n  virtual_router_id %d\n  priority %d\n", s.VRID, n.Priority)
		fmt.Fprintf(&b, "  advert_int %g\n", s.Interval.Seconds())
		if s.NoPreempt {
			b.WriteString("  nopreempt\n")
		}
		if s.AuthPass != "" {
			fmt.Fprintf(&b, "  authentication {\n    auth_type PASS\n    auth_pass %s\n  }\n", s.AuthPass)
		}
		if s.Unicast {
			b.WriteString("  unicast_peer {\n")
			for _, p := range n.peers() {
				fmt.Fprintf(&b, "    %s\n", p)
			}
			b.WriteString("  }\n")
		}
		fmt.Fprintf(&b, "  virtual_ipaddress {\n    %s dev eth0\n  }\n}\n", n.vip())
	default:
		return fmt.Errorf("vrrplab: unknown implementation %q", n.Impl)
	}
	if n.Impl == Vigil { // one control socket per node: they share a file system
		fmt.Fprintf(&b, "api: {socket: %q}\n", n.Socket())
	}
	return os.WriteFile(n.Config, []byte(b.String()), 0o644)
}

// writePeerNames writes vrrp.peer_names, when the spec asks for it.
func (n *Node) writePeerNames(b *strings.Builder) {
	if !n.c.Spec.PeerNames {
		return
	}
	var names []string
	for _, o := range n.c.Nodes {
		if o != n {
			names = append(names, fmt.Sprintf("%q: %s", o.Host.Addr(n.c.Spec.IPv6).String(), o.Name))
		}
	}
	fmt.Fprintf(b, "  peer_names: {%s}\n", strings.Join(names, ", "))
}

func (n *Node) writePool(b *strings.Builder) {
	s := n.c.Spec
	var vips, nodes []string
	for _, v := range s.PoolVIPs {
		vips = append(vips, fmt.Sprintf("%q", v.String()))
	}
	for _, o := range n.c.Nodes {
		nodes = append(nodes, o.Name)
	}
	fmt.Fprintf(b, "cluster: lab\nnode: %s\nvrrp:\n  pools:\n    - name: pool\n      interface: eth0\n", n.Name)
	fmt.Fprintf(b, "      vrid_base: %d\n      version: %d\n      advert_interval: %v\n      move_back_delay: %v\n",
		max(s.VRID, 1), s.Version, s.Interval, s.MoveBackDelay)
	fmt.Fprintf(b, "      vips: [%s]\n      nodes: [%s]\n", strings.Join(vips, ", "), strings.Join(nodes, ", "))
	b.WriteString(n.InstanceYAML)
	b.WriteString("log: {level: debug}\n")
	b.WriteString(n.TopYAML)
}

// Start starts the node's daemon, appending its output to LogPath.
func (n *Node) Start() error {
	if n.Proc != nil && !n.Proc.Exited() {
		return fmt.Errorf("vrrplab: %s already running", n.Name)
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	var cmd *exec.Cmd
	switch n.Impl {
	case Vigil:
		cmd = exec.Command(n.c.vigil, "run", "-c", n.Config)
	case Keepalived:
		base := filepath.Join(n.c.dir, n.Name)
		// A killed keepalived leaves pid files that make the next start
		// refuse with "daemon is already running".
		for _, f := range []string{".pid", ".vrrp.pid", ".chk.pid"} {
			_ = os.Remove(base + f)
		}
		cmd = exec.Command("keepalived", "-f", n.Config, "-p", base+".pid", "-r", base+".vrrp.pid",
			"-c", base+".chk.pid", "-P", "-n", "-l", "-D", "-G")
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := n.Host.Start(cmd)
	if err != nil {
		return err
	}
	n.Proc = p
	return nil
}

// Kill sends sig to the daemon. SIGKILL simulates a crash: the VIP stays
// configured on the host, as after a real crash.
func (n *Node) Kill(sig syscall.Signal) error {
	if n.Proc == nil {
		return errors.New("vrrplab: not started")
	}
	if sig == syscall.SIGKILL {
		// keepalived forks a VRRP child: kill the whole group.
		return syscall.Kill(-n.Proc.Cmd.Process.Pid, sig)
	}
	return n.Proc.Signal(sig)
}

// Stop ends the daemon gracefully and waits up to 5s.
func (n *Node) Stop() error {
	if n.Proc == nil || n.Proc.Exited() {
		return nil
	}
	_ = n.Kill(syscall.SIGTERM)
	if ok, _ := n.Proc.Wait(5 * time.Second); !ok {
		n.Proc.Kill()
		return fmt.Errorf("vrrplab: %s ignored SIGTERM for 5s", n.Name)
	}
	return nil
}

// HasVIP reports whether the node's host holds the VIP.
func (n *Node) HasVIP() bool {
	ok, _ := n.Host.HasAddr(n.vip().Addr())
	return ok
}

// Log returns the tail of the node's log, for failure messages.
func (n *Node) Log() string {
	b, _ := os.ReadFile(n.LogPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Node returns the node with the given name.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Owners lists the nodes holding the VIP.
func (c *Cluster) Owners() []string {
	var out []string
	for _, n := range c.Nodes {
		if n.HasVIP() {
			out = append(out, n.Name)
		}
	}
	return out
}

// WaitOwner waits until exactly the named node holds the VIP.
func (c *Cluster) WaitOwner(ctx context.Context, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var got []string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		got = c.Owners()
		if len(got) == 1 && got[0] == name {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("vrrplab: after %v the VIP is on %v, want only %s", timeout, got, name)
}

// Ask connects from the client to the VIP and returns the name of the node
// that answered. Each attempt is bounded by timeout.
func (c *Cluster) Ask(ctx context.Context, timeout time.Duration) (string, error) {
	return c.AskAddr(ctx, c.Spec.VIP.Addr(), timeout)
}

// AskAddr is Ask for any address, such as one VIP of a pool.
func (c *Cluster) AskAddr(ctx context.Context, vip netip.Addr, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := c.probe.TryDial(ctx, "tcp", net.JoinHostPort(vip.String(), fmt.Sprint(WhoamiPort)))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// WaitAnswer asks the VIP every millisecond until want answers or timeout
// passes, and returns how long it took from start to that answer's arrival.
// Probes overlap (each may take 30ms; a tick with every probe thread busy is
// skipped), so one sent to a stale neighbour entry does not hold up the
// next: the resolution stays about 1ms. At most timeout/1ms probes.
func (c *Cluster) WaitAnswer(ctx context.Context, want string, start time.Time, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithDeadline(ctx, start.Add(timeout))
	defer cancel()
	type answer struct {
		name string
		at   time.Time
		err  error
	}
	answers := make(chan answer, int(timeout/time.Millisecond)+1)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	last := "no answer"
	for {
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("vrrplab: %s did not answer on the VIP within %v (last: %s)", want, timeout, last)
		case a := <-answers:
			switch {
			case a.err == nil && a.name == want:
				return a.at.Sub(start), nil
			case a.err != nil:
				last = a.err.Error()
			default:
				last = "answered by " + a.name
			}
		case <-tick.C:
			go func() {
				name, err := c.Ask(ctx, 30*time.Millisecond)
				if !errors.Is(err, netlab.ErrBusy) {
					answers <- answer{name, time.Now(), err}
				}
			}()
		}
	}
}

// Close stops every daemon and removes the lab.
func (c *Cluster) Close() error {
	if c.probe != nil {
		c.probe.Close()
	}
	for _, n := range c.Nodes {
		if n.Proc != nil && !n.Proc.Exited() {
			_ = n.Stop()
		}
	}
	return c.Lab.Close()
}
