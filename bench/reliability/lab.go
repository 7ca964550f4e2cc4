package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"time"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/netlab"
	"github.com/vigil-lb/vigil/internal/vrrplab"
)

// The lab's virtual router: VRID 51, VRRPv3, 100 ms adverts.
var (
	labVIP  = netip.MustParsePrefix("10.77.0.10/32")
	labVRID = uint8(51)
)

// lab is a running cluster of vigil nodes and a host that forges packets.
type lab struct {
	*vrrplab.Cluster
	flooder *rawSender
	// floodHost sends the flood, from one socket per CPU.
	floodHost *netlab.Host
	dir       string
	bin       string // the vigil binary the nodes run
}

// newLab starts vigil on nodes lb1..lbN (priorities 200, 150, 100, ...)
// and waits until lb1 holds the VIP.
func newLab(ctx context.Context, vigil string, nodes int) (*lab, error) {
	dir, err := os.MkdirTemp("", "vigil-reliability-")
	if err != nil {
		return nil, err
	}
	spec := vrrplab.Spec{Version: 3, Interval: 100 * time.Millisecond, VRID: int(labVRID), VIP: labVIP}
	for i := range nodes {
		spec.Nodes = append(spec.Nodes, vrrplab.NodeSpec{Name: fmt.Sprintf("lb%d", i+1), Impl: vrrplab.Vigil, Priority: 200 - 50*i})
	}
	c, err := vrrplab.Build(spec, vigil, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	l := &lab{Cluster: c, dir: dir, bin: vigil}
	h, err := c.Lab.AddHost("flood", netip.MustParsePrefix("10.77.0.99/24"))
	if err == nil {
		l.floodHost = h
		l.flooder, err = newRawSender(h)
	}
	if err == nil {
		for _, n := range c.Nodes {
			if err = n.Start(); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = c.WaitOwner(ctx, "lb1", 10*time.Second)
	}
	if err == nil {
		// Every node running and following lb1 before a scenario starts.
		err = l.waitStates(ctx, 10*time.Second)
	}
	if err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// waitStates waits until lb1 is MASTER and the others BACKUP following it.
func (l *lab) waitStates(ctx context.Context, d time.Duration) error {
	var last string
	for end := time.Now().Add(d); time.Now().Before(end) && ctx.Err() == nil; time.Sleep(50 * time.Millisecond) {
		ok := true
		last = ""
		for i, n := range l.Nodes {
			s, err := l.status(n)
			want := "BACKUP"
			if i == 0 {
				want = "MASTER"
			}
			if err != nil || len(s.Instances) == 0 || s.Instances[0].State != want {
				ok = false
				last += fmt.Sprintf(" %s:%v", n.Name, stateOf(s, err))
			}
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("nodes not settled with lb1 master after %v:%s", d, last)
}

func stateOf(s api.Snapshot, err error) string {
	if err != nil {
		return err.Error()
	}
	if len(s.Instances) == 0 {
		return "no instance"
	}
	return s.Instances[0].State
}

func (l *lab) Close() {
	if l.flooder != nil {
		l.flooder.Close()
	}
	l.Cluster.Close()
	os.RemoveAll(l.dir)
}

// status reads a node's status over its control socket.
func (l *lab) status(n *vrrplab.Node) (api.Snapshot, error) {
	var s api.Snapshot
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, l.bin, "status", "--socket", n.Socket(), "-o", "json").Output()
	if err != nil {
		return s, fmt.Errorf("vigil status on %s: %w", n.Name, err)
	}
	if err := json.Unmarshal(out, &s); err != nil {
		return s, fmt.Errorf("vigil status on %s: %w", n.Name, err)
	}
	return s, nil
}

// instance is a node's one VRRP instance; the zero Instance if unreadable.
func (l *lab) instance(n *vrrplab.Node) api.Instance {
	s, err := l.status(n)
	if err != nil || len(s.Instances) == 0 {
		return api.Instance{}
	}
	return s.Instances[0]
}

// socketDrops is a node's kernel drops on its VRRP sockets.
func (l *lab) socketDrops(n *vrrplab.Node) uint64 {
	s, _ := l.status(n)
	var d uint64
	for _, i := range s.Interfaces {
		d += i.VRRPSocketDrops
	}
	return d
}

// transitions is every node's transition count.
func (l *lab) transitions() []uint64 {
	var out []uint64
	for _, n := range l.Nodes {
		out = append(out, l.instance(n).Transitions)
	}
	return out
}
