package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Kubernetes is how vigil reaches the cluster's API. The API is a source of
// membership (backends, peers, tracked endpoints), never of liveness: while
// it is unreachable vigil keeps what it last saw.
type Kubernetes struct {
	// Kubeconfig is the file to read. Default: the in-cluster service
	// account, else $KUBECONFIG.
	Kubeconfig string `yaml:"kubeconfig"`
	// FallbackServers are tried in order when the kubeconfig's server (often
	// the API VIP that vigil itself holds) does not answer: https:// URLs with
	// host and port, e.g. https://127.0.0.1:6443.
	FallbackServers []string `yaml:"fallback_servers,flow"`
	// StateFile keeps the last objects seen, so a vigil started while the API
	// is down serves the same members as before. Default
	// DefaultStateFile; "" keeps none.
	StateFile string `yaml:"state_file"`
	// Services makes vigil the implementation of LoadBalancer Services;
	// nil: vigil leaves them alone.
	Services *Services `yaml:"services"`
}

// DefaultStateFile is where the last objects seen are kept unless
// kubernetes.state_file says otherwise: on the host, so that it outlives
// the container.
const DefaultStateFile = "/var/lib/vigil/kubernetes.json"

// BackendsFrom generates a balancer's backends from the cluster, in addition
// to its static backends.
type BackendsFrom struct {
	// Nodes: one backend per Node matching the selector.
	Nodes *NodesSource `yaml:"nodes,flow"`
	// Endpoints: one backend per ready endpoint of a Service.
	Endpoints *EndpointsSource `yaml:"endpoints,flow"`
}

// NodesSource selects Nodes by label and gives the port their backend
// serves on.
type NodesSource struct {
	// Selector is a Kubernetes label selector ("node-role.kubernetes.io/master",
	// "zone in (a,b)"); "" matches every Node.
	Selector string `yaml:"selector"`
	// Port 1..65535, required.
	Port int `yaml:"port"`
}

// EndpointsSource names a Service whose ready endpoints are backends.
type EndpointsSource struct {
	// Service is NAMESPACE/NAME.
	Service string `yaml:"service"`
	// Port is a port name of the Service's EndpointSlices or a number; in
	// YAML a number or a string.
	Port string `yaml:"port"`
}

// PeersFrom generates an instance's unicast peers from the cluster.
type PeersFrom struct {
	Nodes *NodesSelector `yaml:"nodes,flow"`
}

// NodesSelector selects Nodes by label.
type NodesSelector struct {
	// Selector is a Kubernetes label selector; "" matches every Node.
	Selector string `yaml:"selector"`
}

// EndpointTrack tracks whether a Service has a ready endpoint on this node.
// Weight as for TrackRef: 0 means none ready is FAULT.
type EndpointTrack struct {
	// Service is NAMESPACE/NAME.
	Service string `yaml:"service"`
	Weight  int    `yaml:"weight"`
}

// UsesKubernetes reports whether c needs the Kubernetes API: a kubernetes
// section (kubernetes.services included), a balancer's backends_from, an instance's unicast_peers_from or
// a track.endpoints.
func (c *Config) UsesKubernetes() bool {
	if c.Kubernetes != nil {
		return true
	}
	for _, b := range c.Balancers {
		if b.BackendsFrom != nil {
			return true
		}
	}
	for _, in := range c.VRRP.Instances {
		if in.UnicastPeersFrom != nil || len(in.Track.Endpoints) > 0 {
			return true
		}
	}
	for _, pl := range c.VRRP.Pools {
		if len(pl.Track.Endpoints) > 0 {
			return true
		}
	}
	return false
}

// kubernetes validates the kubernetes section.
func (v *validator) kubernetes() {
	if v.c.Kubernetes == nil && v.c.UsesKubernetes() {
		v.c.Kubernetes = &Kubernetes{}
	}
	k := v.c.Kubernetes
	if k == nil {
		return
	}
	if k.StateFile == "" && v.c.lines.byPath["kubernetes.state_file"] == 0 {
		k.StateFile = DefaultStateFile
	}
	if k.Kubeconfig != "" && !filepath.IsAbs(k.Kubeconfig) {
		v.add("kubernetes.kubeconfig", "%q is not an absolute path", k.Kubeconfig)
	}
	if k.StateFile != "" && !filepath.IsAbs(k.StateFile) {
		v.add("kubernetes.state_file", "%q is not an absolute path", k.StateFile)
	}
	seen := map[string]bool{}
	for i, s := range k.FallbackServers {
		p := fmt.Sprintf("kubernetes.fallback_servers[%d]", i)
		if err := apiServerURL(s); err != nil {
			v.add(p, "%q %v", s, err)
		} else if seen[s] {
			v.add(p, "%q is listed twice", s)
		}
		seen[s] = true
	}
	if k.Services != nil {
		v.services(k.Services)
	}
}

// apiServerURL checks that s is an https:// URL with a host and a port.
func apiServerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.Opaque != "" {
		return fmt.Errorf("is not an https:// URL with a host")
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil || port < 1 || port > 65535 {
		return fmt.Errorf("needs a port 1..65535 (https://HOST:PORT)")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("has a user, query or fragment; give https://HOST:PORT")
	}
	return nil
}

// selector checks a Kubernetes label selector.
func (v *validator) selector(p, s string) {
	if _, err := labels.Parse(s); err != nil {
		v.add(p, "%q is not a label selector: %v", s, err)
	}
}

// serviceRef checks NAMESPACE/NAME as the API would name a Service.
func (v *validator) serviceRef(p, s string) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1035Label(name)) > 0 {
		v.add(p, "%q is not NAMESPACE/NAME of a Service", s)
	}
}

// backendsFrom validates a balancer's backends_from; port is the listen
// port of a dsr balancer (which must not change ports), else -1.
func (v *validator) backendsFrom(p string, bf *BackendsFrom, port int) {
	if bf.Nodes == nil && bf.Endpoints == nil {
		v.add(p, "needs nodes or endpoints")
	}
	if n := bf.Nodes; n != nil {
		v.selector(p+".nodes.selector", n.Selector)
		switch {
		case n.Port == 0 && v.c.lines.byPath[p+".nodes.port"] == 0:
			v.add(p+".nodes.port", "is required (the port the Nodes serve on)")
		case n.Port < 1 || n.Port > 65535:
			v.add(p+".nodes.port", "%d is out of range 1..65535", n.Port)
		case port >= 0 && n.Port != port:
			v.add(p+".nodes.port", "%d: mode dsr does not change ports; the Nodes must serve on %d", n.Port, port)
		}
	}
	if e := bf.Endpoints; e != nil {
		v.serviceRef(p+".endpoints.service", e.Service)
		pp := p + ".endpoints.port"
		if num, err := strconv.Atoi(e.Port); err == nil {
			switch {
			case num < 1 || num > 65535:
				v.add(pp, "%d is out of range 1..65535", num)
			case port >= 0 && num != port:
				v.add(pp, "%d: mode dsr does not change ports; the endpoints must serve on %d", num, port)
			}
		} else if e.Port == "" {
			v.add(pp, "is required (a port name or number)")
		} else if len(validation.IsDNS1123Label(e.Port)) > 0 {
			v.add(pp, "%q is not a port name or number", e.Port)
		}
	}
}

// peersFrom validates an instance's unicast_peers_from.
func (v *validator) peersFrom(p string, pf *PeersFrom) {
	if pf.Nodes == nil {
		v.add(p, "needs nodes")
		return
	}
	v.selector(p+".nodes.selector", pf.Nodes.Selector)
}
