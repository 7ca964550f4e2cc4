// Package importer converts keepalived.conf, haproxy.cfg and MetalLB's
// configuration objects into a vigil config. Whatever it cannot carry over is listed with its line; nothing is
// dropped without a note. It builds a config.Config, the one schema, and
// leaves writing it to config.Marshal.
package importer

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/vigil-lb/vigil/internal/config"
)

// Note is one line of the input that was not converted as written.
type Note struct {
	File string
	Line int
	Text string
	// Lost is true when behaviour of the old config is not carried over;
	// false when the directive has no meaning in vigil.
	Lost bool
	// Container: converted, but it will not work in vigil's container
	// image (distroless: no shell, no curl), such as an exec check.
	Container bool
	// Converted: carried over as something else that does the same (a
	// curl script as an http check); the note says what.
	Converted bool
}

func (n Note) String() string {
	kind := "ignored"
	switch {
	case n.Lost:
		kind = "NOT CONVERTED"
	case n.Container:
		kind = "NOT IN THE CONTAINER IMAGE"
	case n.Converted:
		kind = "converted"
	}
	return fmt.Sprintf("%s:%d: %s: %s", n.File, n.Line, kind, n.Text)
}

// Result is a converted config and its notes.
type Result struct {
	// Config holds what the input says and nothing else: it is not
	// validated, and what it leaves zero takes vigil's default when the
	// written file is parsed.
	Config config.Config
	Notes  []Note
}

// Lost reports whether any note lost behaviour.
func (r *Result) Lost() bool {
	for _, n := range r.Notes {
		if n.Lost {
			return true
		}
	}
	return false
}

func (r *Result) note(file string, line int, lost bool, format string, args ...any) {
	r.Notes = append(r.Notes, Note{File: file, Line: line, Text: fmt.Sprintf(format, args...), Lost: lost})
}

// Merge adds o's config and notes to r: the lists are appended, and r keeps
// its cluster name, BGP ASN and router ID, and kubernetes settings unless it
// has none.
func (r *Result) Merge(o *Result) {
	c, oc := &r.Config, &o.Config
	c.VRRP.Instances = append(c.VRRP.Instances, oc.VRRP.Instances...)
	c.VRRP.Pools = append(c.VRRP.Pools, oc.VRRP.Pools...)
	c.VRRP.SyncGroups = append(c.VRRP.SyncGroups, oc.VRRP.SyncGroups...)
	c.Checks = append(c.Checks, oc.Checks...)
	c.Balancers = append(c.Balancers, oc.Balancers...)
	if c.Cluster == "" {
		c.Cluster = oc.Cluster
	}
	if c.BGP.ASN == 0 {
		c.BGP.ASN = oc.BGP.ASN
	}
	if c.BGP.RouterID == "" {
		c.BGP.RouterID = oc.BGP.RouterID
	}
	c.BGP.Neighbors = append(c.BGP.Neighbors, oc.BGP.Neighbors...)
	c.BGP.Announce = append(c.BGP.Announce, oc.BGP.Announce...)
	switch {
	case c.Kubernetes == nil:
		c.Kubernetes = oc.Kubernetes
	case oc.Kubernetes != nil && oc.Kubernetes.Services != nil:
		if c.Kubernetes.Services == nil {
			c.Kubernetes.Services = &config.Services{}
		}
		c.Kubernetes.Services.Pools = append(c.Kubernetes.Services.Pools, oc.Kubernetes.Services.Pools...)
	}
	r.Notes = append(r.Notes, o.Notes...)
}

// Sort orders the notes by file and line.
func (r *Result) Sort() {
	sort.SliceStable(r.Notes, func(i, j int) bool {
		if r.Notes[i].File != r.Notes[j].File {
			return r.Notes[i].File < r.Notes[j].File
		}
		return r.Notes[i].Line < r.Notes[j].Line
	})
}

// YAML renders the config with config.Marshal under a header listing the
// notes, sorted, as comments.
func (r *Result) YAML() ([]byte, error) {
	body, err := config.Marshal(&r.Config)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	var b bytes.Buffer
	b.WriteString("# Converted by vigil import. Check it with: vigil check -c FILE\n")
	r.Sort()
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "# %s\n", n)
	}
	b.Write(body)
	return b.Bytes(), nil
}
