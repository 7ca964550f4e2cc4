package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vigil-lb/vigil/internal/pool"
)

// pools validates vrrp.pools and generates this node's instances from them.
// vrids and vips hold what vrrp.instances already use, so a pool cannot
// reuse a VRID or a VIP of an instance or of another pool.
func (v *validator) pools(checks map[string]bool, vrids map[string]string, vips map[netip.Addr]string) {
	names := map[string]bool{}
	for _, in := range v.c.VRRP.Instances {
		names[in.Name] = true
	}
	for i := range v.c.VRRP.Pools {
		pl := &v.c.VRRP.Pools[i]
		p := fmt.Sprintf("vrrp.pools[%d]", i)
		v.uniqueName(p+".name", pl.Name, names)
		v.vrrpCommon(p, pl.Interface, &pl.Version, &pl.AdvertInterval, &pl.NotifyTimeout)
		if pl.MoveBackDelay == nil {
			d := DefaultMoveBackDelay
			pl.MoveBackDelay = &d
		}
		if d := *pl.MoveBackDelay; d < 0 || d > time.Hour {
			v.add(p+".move_back_delay", "%v is out of range 0..1h", d)
		}
		v.track(p, pl.Track, checks)
		v.garp(p+".garp", &pl.GARP)
		v.executable(p+".notify", pl.Notify)

		// The VIPs: parsed, one family, unique across the whole config.
		family := v.vips(p, &Instance{VIPs: pl.VIPs, Version: pl.Version}, vips)
		var parsed []netip.Prefix
		index := map[netip.Addr]int{}
		for j, s := range pl.VIPs {
			if pfx, err := ParseVIP(s); err == nil {
				parsed = append(parsed, pfx)
				index[pfx.Addr()] = j
			}
		}
		for j, n := range pl.Nodes {
			if !nameRE.MatchString(n) {
				v.add(fmt.Sprintf("%s.nodes[%d]", p, j), "%q is not a valid node name", n)
			}
		}
		if !slices.Contains(pl.Nodes, v.c.Node) {
			v.add(p+".nodes", "this node %q is not in the pool %v: set node, or list it", v.c.Node, pl.Nodes)
		}
		as, err := pool.Assign(parsed, pl.Nodes)
		if err != nil {
			if len(parsed) == len(pl.VIPs) {
				v.add(p, "%s", strings.TrimPrefix(err.Error(), "pool: "))
			}
			continue
		}

		base := pl.VRIDBase
		if base == 0 && v.c.lines.byPath[p+".vrid_base"] == 0 {
			if v.c.Cluster == "" {
				v.add(p+".vrid_base", "is omitted, so it derives from the cluster name: set cluster or vrid_base")
			}
			base = DeriveVRID(v.c.Cluster, pl.Name)
		}
		if base < 1 || base > 255 {
			v.add(p+".vrid_base", "%d is out of range 1..255", base)
			continue
		}
		if len(as) > 255 {
			v.add(p+".vips", "%d VIPs need %d VRIDs, only 255 exist", len(as), len(as))
			continue
		}
		for k, a := range as {
			vrid := (base-1+k)%255 + 1
			vp := fmt.Sprintf("%s.vips[%d]", p, index[a.VIP.Addr()])
			key := fmt.Sprintf("%s/%s/%d", pl.Interface, family, vrid)
			if other, ok := vrids[key]; ok {
				v.add(vp, "gets VRID %d (vrid_base %d + %d), already used by %s: set vrid_base", vrid, base, k, other)
			}
			vrids[key] = vp
			prio := a.Priority(v.c.Node)
			if prio == 0 {
				continue // this node is not in the pool: reported above
			}
			preempt, accept := true, true
			v.c.VRRP.PoolInstances = append(v.c.VRRP.PoolInstances, Instance{
				Name: pl.Name + "-" + a.VIP.Addr().String(), Interface: pl.Interface, VRID: vrid,
				Version: pl.Version, Priority: prio, AdvertInterval: pl.AdvertInterval,
				Preempt: &preempt, PreemptDelay: *pl.MoveBackDelay, Accept: &accept,
				VIPs: []string{a.VIP.String()}, Track: pl.Track, GARP: pl.GARP,
				Notify: pl.Notify, NotifyTimeout: pl.NotifyTimeout, Path: p,
			})
		}
	}
}
