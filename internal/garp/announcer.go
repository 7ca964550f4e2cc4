package garp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

var allNodes = net.ParseIP("ff02::1")

// Announcer sends gratuitous ARP and unsolicited neighbour advertisements on
// one interface. Sockets open on first use, so an IPv4-only instance never
// needs an ICMPv6 socket. Safe for concurrent use.
type Announcer struct {
	ifname string

	mu         sync.Mutex
	ifi        *net.Interface
	arp        *packet.Conn
	icmp       *icmp.PacketConn
	sent       uint64
	suppressed uint64
	tokens     float64
	refilled   time.Time
}

// The per-interface limit on announcement frames. A full pool of 255 VIPs
// announcing at once fits in the burst; a runaway loop cannot flood the
// segment, which is how a VRID collision turns into a GARP storm elsewhere.
const (
	FramesPerSecond = 1000
	FrameBurst      = 2000
)

// ErrRateLimited means frames were left out to respect the interface's limit.
var ErrRateLimited = errors.New("garp: interface announcement rate limit reached")

// NewAnnouncer returns an announcer for ifname.
func NewAnnouncer(ifname string) *Announcer {
	return &Announcer{ifname: ifname, tokens: FrameBurst, refilled: time.Now()}
}

// take spends one frame from the bucket.
func (a *Announcer) take() bool {
	now := time.Now()
	a.tokens = min(FrameBurst, a.tokens+now.Sub(a.refilled).Seconds()*FramesPerSecond)
	a.refilled = now
	if a.tokens < 1 {
		a.suppressed++
		return false
	}
	a.tokens--
	return true
}

// Suppressed is the number of frames the rate limit left out.
func (a *Announcer) Suppressed() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.suppressed
}

// Sent is the number of frames sent so far.
func (a *Announcer) Sent() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sent
}

// Announce sends one round for every address: an ARP request and reply for
// IPv4, one neighbour advertisement to all nodes for IPv6.
func (a *Announcer) Announce(addrs []netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for _, ip := range addrs {
		if err := a.announce(ip); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Open opens the sockets for the given families now, so the first takeover
// does not wait for them and a missing capability shows at start-up.
func (a *Announcer) Open(v4, v6 bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if v4 {
		if err := a.openARP(); err != nil {
			return err
		}
	}
	if v6 {
		return a.openICMP()
	}
	return nil
}

func (a *Announcer) openARP() error {
	if err := a.lookup(); err != nil || a.arp != nil {
		return err
	}
	c, err := packet.Listen(a.ifi, packet.Raw, etherTypeARP, nil)
	if err != nil {
		return fmt.Errorf("garp: open ARP socket on %s: %w", a.ifname, permission(err))
	}
	// This socket only sends: a filter that accepts nothing keeps the kernel
	// from queueing every ARP frame of the segment for it.
	if drop, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}}); err == nil {
		_ = c.SetBPF(drop)
	}
	a.arp = c
	return nil
}

func (a *Announcer) openICMP() error {
	if err := a.lookup(); err != nil || a.icmp != nil {
		return err
	}
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return fmt.Errorf("garp: open ICMPv6 socket for %s: %w", a.ifname, permission(err))
	}
	// Receiving nothing on this socket: drop everything at the kernel.
	var f ipv6.ICMPFilter
	f.SetAll(true)
	_ = c.IPv6PacketConn().SetICMPFilter(&f)
	a.icmp = c
	return nil
}

func (a *Announcer) lookup() error {
	if a.ifi != nil {
		return nil
	}
	ifi, err := net.InterfaceByName(a.ifname)
	if err != nil {
		return fmt.Errorf("garp: interface %s: %w", a.ifname, err)
	}
	a.ifi = ifi
	return nil
}

func (a *Announcer) announce(ip netip.Addr) error {
	if ip.Is4() {
		if err := a.openARP(); err != nil {
			return err
		}
		frames, err := gratuitousFrames(ip, a.ifi.HardwareAddr)
		if err != nil {
			return fmt.Errorf("garp %s on %s: %w", ip, a.ifname, err)
		}
		for _, f := range frames {
			if !a.take() {
				return ErrRateLimited
			}
			if _, err := a.arp.WriteTo(f, &packet.Addr{HardwareAddr: broadcast}); err != nil {
				return fmt.Errorf("garp %s on %s: %w", ip, a.ifname, err)
			}
			a.sent++
		}
		return nil
	}
	if err := a.openICMP(); err != nil {
		return err
	}
	if !a.take() {
		return ErrRateLimited
	}
	cm := &ipv6.ControlMessage{HopLimit: 255, IfIndex: a.ifi.Index}
	msg := neighborAdvert(ip, a.ifi.HardwareAddr)
	if _, err := a.icmp.IPv6PacketConn().WriteTo(msg, cm, &net.IPAddr{IP: allNodes, Zone: a.ifname}); err != nil {
		return fmt.Errorf("unsolicited NA %s on %s: %w", ip, a.ifname, err)
	}
	a.sent++
	return nil
}

// Close closes the sockets.
func (a *Announcer) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	if a.arp != nil {
		errs = append(errs, a.arp.Close())
		a.arp = nil
	}
	if a.icmp != nil {
		errs = append(errs, a.icmp.Close())
		a.icmp = nil
	}
	return errors.Join(errs...)
}

// Burst announces addrs count times, interval apart, the first at once,
// until ctx ends. Linux ignores a second update of one neighbour entry within
// its locktime (1s by default), so a burst spread over more than a second
// reaches caches that missed the first frame.
func (a *Announcer) Burst(ctx context.Context, addrs []netip.Addr, count int, interval time.Duration) error {
	var errs []error
	for i := range count {
		if i > 0 {
			select {
			case <-ctx.Done():
				return errors.Join(errs...)
			case <-time.After(interval):
			}
		}
		if err := a.Announce(addrs); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ProbeResult is what a probe heard.
type ProbeResult struct {
	MACs      []net.HardwareAddr // hosts that answered for the address
	Malformed int                // ARP frames that did not decode, ignored
}

// Probe asks who answers ARP for ip on ifname (an RFC 5227 probe: sender
// address 0.0.0.0, so no cache learns from it) and returns the hardware
// addresses of every reply within wait, own replies excluded.
func Probe(ctx context.Context, ifname string, ip netip.Addr, wait time.Duration) (ProbeResult, error) {
	return probe(ctx, ifname, ip, wait, false)
}

// ProbeFirst is Probe that returns at the first reply, for a caller that
// wants a MAC to send to (the dsr plane's backends), not every host that
// claims the address.
func ProbeFirst(ctx context.Context, ifname string, ip netip.Addr, wait time.Duration) (ProbeResult, error) {
	return probe(ctx, ifname, ip, wait, true)
}

func probe(ctx context.Context, ifname string, ip netip.Addr, wait time.Duration, first bool) (ProbeResult, error) {
	var res ProbeResult
	if !ip.Is4() {
		return res, fmt.Errorf("arp probe: %s is not IPv4", ip)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return res, fmt.Errorf("arp probe: interface %s: %w", ifname, err)
	}
	c, err := packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
	if err != nil {
		return res, fmt.Errorf("arp probe: open socket on %s: %w", ifname, permission(err))
	}
	defer c.Close()
	req := ARP{Op: OpRequest, SenderMAC: ifi.HardwareAddr, SenderIP: netip.IPv4Unspecified(),
		TargetMAC: make(net.HardwareAddr, 6), TargetIP: ip}
	f, err := req.Frame(broadcast, ifi.HardwareAddr)
	if err != nil {
		return res, err
	}
	send := func() error {
		if _, err := c.WriteTo(f, &packet.Addr{HardwareAddr: broadcast}); err != nil {
			return fmt.Errorf("arp probe %s on %s: %w", ip, ifname, err)
		}
		return nil
	}
	if err := send(); err != nil {
		return res, err
	}
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// A lost request is sent again (as arping sends one a second), so one
	// dropped frame does not cost the whole window.
	readUntil := func(resend time.Time) {
		if resend.After(deadline) {
			resend = deadline
		}
		_ = c.SetReadDeadline(resend)
	}
	readUntil(time.Now().Add(probeResend))
	// Cancellation ends the wait at once.
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()
	seen := map[string]net.HardwareAddr{}
	buf := make([]byte, 1500)
	for ctx.Err() == nil {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if now := time.Now(); errors.Is(err, os.ErrDeadlineExceeded) && now.Before(deadline) && ctx.Err() == nil {
				if err := send(); err != nil {
					return res, err
				}
				readUntil(now.Add(probeResend))
				continue
			}
			break // the window is over, or cancelled
		}
		rep, err := ParseFrame(buf[:n])
		if err != nil {
			res.Malformed++
			continue
		}
		// Only replies addressed to us answer the probe: a gratuitous reply
		// (to broadcast) is an announcement, not an answer.
		if rep.Op != OpReply || rep.SenderIP != ip ||
			rep.SenderMAC.String() == ifi.HardwareAddr.String() || rep.TargetMAC.String() != ifi.HardwareAddr.String() {
			continue
		}
		seen[rep.SenderMAC.String()] = rep.SenderMAC
		if first {
			break
		}
	}
	for _, m := range seen {
		res.MACs = append(res.MACs, m)
	}
	return res, nil
}

// probeResend is how often a probe sends its request again while it waits.
const probeResend = time.Second

func permission(err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w (vigil needs CAP_NET_RAW)", err)
	}
	return err
}
