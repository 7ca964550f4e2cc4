package api

import (
	"fmt"
	"slices"
	"strings"
)

// Filter kinds of vigil status KIND [NAME].
var filterKinds = map[string]string{
	"instance": "instance", "instances": "instance", "vrrp": "instance",
	"pool": "pool", "pools": "pool",
	"balancer": "balancer", "balancers": "balancer",
	"check": "check", "checks": "check",
	"service": "service", "services": "service",
}

// FilterKinds lists the kinds Filter takes, for help and errors.
const FilterKinds = "instance, pool, balancer, check, service"

// Filter keeps of s only one kind of thing (vigil status balancer), or one
// thing by name (vigil status instance api): the header stays, every
// other section goes. A balancer keeps its backends' checks; a pool is its
// VIPs' instances. It fails for an unknown kind, and for a name that
// matches nothing, naming what exists.
func Filter(s Snapshot, kind, name string) (Snapshot, error) {
	k, ok := filterKinds[kind]
	if !ok {
		return s, fmt.Errorf("status %q: want one of %s", kind, FilterKinds)
	}
	out := Snapshot{Node: s.Node, Cluster: s.Cluster, Version: s.Version, Started: s.Started, Taken: s.Taken,
		Config: s.Config, LastReload: s.LastReload}
	var names []string
	match := func(n string) bool { names = append(names, n); return name == "" || n == name }
	switch k {
	case "instance":
		for _, in := range s.Instances {
			if match(in.Name) {
				out.Instances = append(out.Instances, in)
			}
		}
	case "pool":
		for _, in := range s.Instances {
			if in.Pool != nil && match(in.Pool.Pool) {
				out.Instances = append(out.Instances, in)
			}
		}
	case "balancer":
		for _, b := range s.Balancers {
			if match(b.Name) {
				out.Balancers = append(out.Balancers, b)
				for _, c := range s.Checks {
					if strings.HasPrefix(c.Name, "balancer/"+b.Name+"/") {
						out.Checks = append(out.Checks, c)
					}
				}
			}
		}
	case "check":
		for _, c := range s.Checks {
			if match(c.Name) {
				out.Checks = append(out.Checks, c)
			}
		}
	case "service":
		for _, sv := range s.Services {
			if match(sv.Service) {
				out.Services = append(out.Services, sv)
			}
		}
	}
	if name != "" && len(out.Instances)+len(out.Balancers)+len(out.Checks)+len(out.Services) == 0 {
		slices.Sort(names)
		names = slices.Compact(names)
		known := strings.Join(names, ", ")
		if known == "" {
			known = "none"
		}
		return s, fmt.Errorf("no %s %q (known: %s)", k, name, known)
	}
	return out, nil
}
