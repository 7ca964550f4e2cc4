// Package importer converts keepalived.conf and haproxy.cfg into a vigil
// config. Whatever it cannot carry over is listed with its line; nothing is
// dropped without a note.
package importer

import (
	"bytes"
	"fmt"
	"sort"

	"go.yaml.in/yaml/v3"
)

// Note is one line of the input that was not converted as written.
type Note struct {
	File string
	Line int
	Text string
	// Lost is true when behaviour of the old config is not carried over;
	// false when the directive has no meaning in vigil.
	Lost bool
}

func (n Note) String() string {
	kind := "ignored"
	if n.Lost {
		kind = "NOT CONVERTED"
	}
	return fmt.Sprintf("%s:%d: %s: %s", n.File, n.Line, kind, n.Text)
}

// Result is a converted config and its notes.
type Result struct {
	File  File
	Notes []Note
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

// Merge adds o's config and notes to r.
func (r *Result) Merge(o *Result) {
	if o.File.VRRP != nil {
		if r.File.VRRP == nil {
			r.File.VRRP = &VRRP{}
		}
		r.File.VRRP.Instances = append(r.File.VRRP.Instances, o.File.VRRP.Instances...)
		r.File.VRRP.SyncGroups = append(r.File.VRRP.SyncGroups, o.File.VRRP.SyncGroups...)
	}
	r.File.Checks = append(r.File.Checks, o.File.Checks...)
	r.File.Balancers = append(r.File.Balancers, o.File.Balancers...)
	if r.File.Cluster == "" {
		r.File.Cluster = o.File.Cluster
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

// YAML renders the config with a header listing the notes.
func (r *Result) YAML() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Converted by vigil import. Check it with: vigil check -c FILE\n")
	r.Sort()
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "# %s\n", n)
	}
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(r.File); err != nil {
		return nil, err
	}
	return b.Bytes(), enc.Close()
}

// File is the vigil config written, with only the keys the import sets.
type File struct {
	Cluster   string     `yaml:"cluster,omitempty"`
	VRRP      *VRRP      `yaml:"vrrp,omitempty"`
	Checks    []Check    `yaml:"checks,omitempty"`
	Balancers []Balancer `yaml:"balancers,omitempty"`
}

// VRRP is the vrrp section.
type VRRP struct {
	Instances  []Instance  `yaml:"instances,omitempty"`
	SyncGroups []SyncGroup `yaml:"sync_groups,omitempty"`
}

// Instance is a vrrp.instances entry.
type Instance struct {
	Name           string   `yaml:"name"`
	Interface      string   `yaml:"interface"`
	VRID           int      `yaml:"vrid"`
	Version        int      `yaml:"version"`
	Priority       int      `yaml:"priority"`
	AdvertInterval string   `yaml:"advert_interval"`
	Preempt        *bool    `yaml:"preempt,omitempty"`
	PreemptDelay   string   `yaml:"preempt_delay,omitempty"`
	UnicastPeers   []string `yaml:"unicast_peers,omitempty,flow"`
	AuthPass       string   `yaml:"auth_pass,omitempty"`
	VIPs           []string `yaml:"vips,flow"`
	Track          *Track   `yaml:"track,omitempty"`
	Notify         string   `yaml:"notify,omitempty"`
}

// Track is an instance's track section.
type Track struct {
	Interfaces []Ref `yaml:"interfaces,omitempty,flow"`
	Checks     []Ref `yaml:"checks,omitempty,flow"`
}

// Ref names a tracked interface or check.
type Ref struct {
	Name   string `yaml:"name"`
	Weight int    `yaml:"weight"`
}

// SyncGroup is a vrrp.sync_groups entry.
type SyncGroup struct {
	Name      string   `yaml:"name"`
	Instances []string `yaml:"instances,flow"`
	Notify    string   `yaml:"notify,omitempty"`
}

// Check is a checks entry.
type Check struct {
	Name     string `yaml:"name"`
	Exec     *Exec  `yaml:"exec,omitempty"`
	Interval string `yaml:"interval,omitempty"`
	Timeout  string `yaml:"timeout,omitempty"`
	Rise     int    `yaml:"rise,omitempty"`
	Fall     int    `yaml:"fall,omitempty"`
}

// Exec is an exec check.
type Exec struct {
	Script string `yaml:"script"`
}

// Balancer is a balancers entry.
type Balancer struct {
	Name           string        `yaml:"name"`
	Listen         []string      `yaml:"listen,flow"`
	Algorithm      string        `yaml:"algorithm,omitempty"`
	ProxyProtocol  string        `yaml:"proxy_protocol,omitempty"`
	AcceptProxy    bool          `yaml:"accept_proxy,omitempty"`
	Monitor        *Monitor      `yaml:"monitor,omitempty,flow"`
	Backends       []Backend     `yaml:"backends"`
	Check          *BackendCheck `yaml:"check,omitempty"`
	MaxConn        int           `yaml:"max_conn,omitempty"`
	ConnectTimeout string        `yaml:"connect_timeout,omitempty"`
	IdleTimeout    string        `yaml:"idle_timeout,omitempty"`
	Retries        *int          `yaml:"retries,omitempty"`
}

// Monitor is a balancer's monitor endpoint.
type Monitor struct {
	Listen string `yaml:"listen"`
	Path   string `yaml:"path"`
}

// Backend is one server.
type Backend struct {
	Address string `yaml:"address"`
	Weight  *int   `yaml:"weight,omitempty"`
	MaxConn int    `yaml:"max_conn,omitempty"`
}

// BackendCheck is a balancer's check.
type BackendCheck struct {
	HTTP     *HTTPCheck `yaml:"http,omitempty,flow"`
	Port     int        `yaml:"port,omitempty"`
	Interval string     `yaml:"interval,omitempty"`
	Timeout  string     `yaml:"timeout,omitempty"`
	Rise     int        `yaml:"rise,omitempty"`
	Fall     int        `yaml:"fall,omitempty"`
}

// HTTPCheck is the HTTP part of a balancer check.
type HTTPCheck struct {
	Path               string   `yaml:"path"`
	Method             string   `yaml:"method,omitempty"`
	Host               string   `yaml:"host,omitempty"`
	TLS                bool     `yaml:"tls,omitempty"`
	InsecureSkipVerify bool     `yaml:"insecure_skip_verify,omitempty"`
	ExpectStatus       []string `yaml:"expect_status,omitempty,flow"`
}
