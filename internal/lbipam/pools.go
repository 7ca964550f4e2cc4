package lbipam

import (
	"fmt"

	"github.com/vigil-lb/vigil/internal/config"
)

// PoolsFrom returns the pools of a validated kubernetes.services section,
// in config order. With avoid_buggy_ips (the default) the network and
// broadcast addresses of an IPv4 CIDR shorter than /31 are left out; a
// FIRST-LAST range is taken as written. The error is for a section that
// did not pass validation.
func PoolsFrom(s *config.Services) ([]Pool, error) {
	if s == nil {
		return nil, nil
	}
	pools := make([]Pool, 0, len(s.Pools))
	for i, p := range s.Pools {
		pool := Pool{Name: p.Name, AutoAssign: p.AutoAssign == nil || *p.AutoAssign}
		avoid := p.AvoidBuggyIPs == nil || *p.AvoidBuggyIPs
		for j, a := range p.Addresses {
			r, err := config.ParseAddressRange(a)
			if err != nil {
				return nil, fmt.Errorf("lbipam: kubernetes.services.pools[%d].addresses[%d]: %w", i, j, err)
			}
			if avoid && r.First.Is4() && r.Bits >= 0 && r.Bits < 31 {
				r.First, r.Last = r.First.Next(), r.Last.Prev()
			}
			pool.Ranges = append(pool.Ranges, Range{First: r.First, Last: r.Last})
		}
		pools = append(pools, pool)
	}
	return pools, nil
}
