package kube

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Diff describes, one line each, what changed from old to x: backends
// added and removed per balancer (with where they came from) and unicast
// peers per instance, for the log line of a membership change.
func Diff(old, x Expanded) []string {
	var out []string
	for _, b := range sortedKeys(old.Origins, x.Origins) {
		was, now := old.Origins[b], x.Origins[b]
		var added, removed []string
		for _, a := range slices.Sorted(maps.Keys(now)) {
			if _, ok := was[a]; !ok {
				added = append(added, a+" ("+now[a]+")")
			}
		}
		for _, a := range slices.Sorted(maps.Keys(was)) {
			if _, ok := now[a]; !ok {
				removed = append(removed, a+" ("+was[a]+")")
			}
		}
		if len(added)+len(removed) > 0 {
			out = append(out, fmt.Sprintf("balancer %s: %s", b, plusMinus(added, removed)))
		}
	}
	for _, in := range sortedKeys(old.Peers, x.Peers) {
		var added, removed []string
		for _, p := range x.Peers[in] {
			if !slices.Contains(old.Peers[in], p) {
				added = append(added, p)
			}
		}
		for _, p := range old.Peers[in] {
			if !slices.Contains(x.Peers[in], p) {
				removed = append(removed, p)
			}
		}
		if len(added)+len(removed) > 0 {
			out = append(out, fmt.Sprintf("vrrp instance %s unicast peers: %s", in, plusMinus(added, removed)))
		}
	}
	return out
}

func plusMinus(added, removed []string) string {
	var parts []string
	if len(added) > 0 {
		parts = append(parts, "+"+strings.Join(added, ", +"))
	}
	if len(removed) > 0 {
		parts = append(parts, "-"+strings.Join(removed, ", -"))
	}
	return strings.Join(parts, ", ")
}

// sortedKeys is the sorted union of the keys of a and b.
func sortedKeys[V any](a, b map[string]V) []string {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
