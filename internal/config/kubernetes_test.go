package config

import (
	"strings"
	"testing"
)

const goodKube = `cluster: ocp
node: master-0
kubernetes:
  kubeconfig: /var/lib/kubelet/kubeconfig
  fallback_servers: ["https://127.0.0.1:6443", "https://[::1]:6443"]
  state_file: /var/lib/vigil/kubernetes.json
vrrp:
  instances:
    - name: api
      interface: eth0
      vips: [192.0.2.10/24]
      unicast_peers: [192.0.2.99]
      unicast_peers_from: {nodes: {selector: "node-role.kubernetes.io/control-plane"}}
      track: {endpoints: [{service: openshift-ingress/router-default, weight: 50}]}
  pools:
    - name: ingress
      interface: eth0
      vips: [192.0.2.101/24, 192.0.2.102/24]
      nodes: [master-0, master-1]
      track: {endpoints: [{service: openshift-ingress/router-default}]}
balancers:
  - name: api
    listen: ["192.0.2.10:9445"]
    redirect_from: 6443
    backends_from: {nodes: {selector: "node-role.kubernetes.io/control-plane", port: 6443}}
    check: {http: {path: /readyz, tls: true, insecure_skip_verify: true}}
  - name: ingress
    listen: ["192.0.2.101:443"]
    backends: [{address: "192.0.2.50:443"}]
    backends_from: {endpoints: {service: openshift-ingress/router-default, port: https}}
  - name: ingress-http
    listen: ["192.0.2.101:80"]
    mode: dsr
    interface: eth0
    backends_from: {endpoints: {service: openshift-ingress/router-default, port: 80}}
`

func TestKubernetesKeys(t *testing.T) {
	c, err := Parse([]byte(goodKube))
	if err != nil {
		t.Fatal(err)
	}
	k := c.Kubernetes
	if k == nil || k.Kubeconfig != "/var/lib/kubelet/kubeconfig" || len(k.FallbackServers) != 2 || k.StateFile != "/var/lib/vigil/kubernetes.json" {
		t.Fatalf("kubernetes %+v", k)
	}
	in := c.VRRP.Instances[0]
	if in.UnicastPeersFrom == nil || in.UnicastPeersFrom.Nodes.Selector != "node-role.kubernetes.io/control-plane" ||
		len(in.Track.Endpoints) != 1 || in.Track.Endpoints[0] != (EndpointTrack{"openshift-ingress/router-default", 50}) {
		t.Fatalf("instance %+v", in)
	}
	for _, pi := range c.VRRP.PoolInstances {
		if len(pi.Track.Endpoints) != 1 || pi.Track.Endpoints[0].Weight != 0 {
			t.Fatalf("pool instance track %+v", pi.Track)
		}
	}
	api, ing, dsr := c.Balancers[0], c.Balancers[1], c.Balancers[2]
	if api.RedirectFrom != 6443 || api.BackendsFrom.Nodes.Port != 6443 || len(api.Backends) != 0 {
		t.Fatalf("api balancer %+v", api)
	}
	if e := ing.BackendsFrom.Endpoints; e.Service != "openshift-ingress/router-default" || e.Port != "https" || *ing.Backends[0].Weight != 1 {
		t.Fatalf("ingress balancer %+v", ing)
	}
	if dsr.BackendsFrom.Endpoints.Port != "80" { // a YAML number reads as a string
		t.Fatalf("dsr port %q", dsr.BackendsFrom.Endpoints.Port)
	}
	if !c.UsesKubernetes() {
		t.Fatal("UsesKubernetes = false")
	}
}

func TestUsesKubernetes(t *testing.T) {
	cases := map[string]struct {
		c    Config
		want bool
	}{
		"none":           {Config{Balancers: []Balancer{{Backends: []Backend{{Address: "10.0.0.1:80"}}}}}, false},
		"section":        {Config{Kubernetes: &Kubernetes{}}, true},
		"backends_from":  {Config{Balancers: []Balancer{{}, {BackendsFrom: &BackendsFrom{}}}}, true},
		"peers_from":     {Config{VRRP: VRRP{Instances: []Instance{{UnicastPeersFrom: &PeersFrom{}}}}}, true},
		"instance track": {Config{VRRP: VRRP{Instances: []Instance{{Track: Track{Endpoints: []EndpointTrack{{Service: "a/b"}}}}}}}, true},
		"pool track":     {Config{VRRP: VRRP{Pools: []Pool{{Track: Track{Endpoints: []EndpointTrack{{Service: "a/b"}}}}}}}, true},
		"other tracks":   {Config{VRRP: VRRP{Instances: []Instance{{Track: Track{Checks: []TrackRef{{Name: "x"}}}}}}}, false},
	}
	for name, tc := range cases {
		if got := tc.c.UsesKubernetes(); got != tc.want {
			t.Errorf("%s: UsesKubernetes() = %v, want %v", name, got, tc.want)
		}
	}
}

func TestKubernetesErrors(t *testing.T) {
	cases := []struct {
		name, from, to, want string
	}{
		{"relative kubeconfig", "kubeconfig: /var/lib/kubelet/kubeconfig", "kubeconfig: kubeconfig",
			`kubernetes.kubeconfig: "kubeconfig" is not an absolute path (line 4)`},
		{"relative state file", "state_file: /var/lib/vigil/kubernetes.json", "state_file: state.json",
			`kubernetes.state_file: "state.json" is not an absolute path (line 6)`},
		{"http fallback", `"https://127.0.0.1:6443", "https://[::1]:6443"`, `"http://127.0.0.1:6443"`,
			`kubernetes.fallback_servers[0]: "http://127.0.0.1:6443" is not an https:// URL with a host (line 5)`},
		{"fallback without port", `"https://[::1]:6443"`, `"https://api.example"`,
			`kubernetes.fallback_servers[1]: "https://api.example" needs a port 1..65535 (https://HOST:PORT) (line 5)`},
		{"fallback without host", `"https://[::1]:6443"`, `"https://:6443"`,
			`kubernetes.fallback_servers[1]: "https://:6443" is not an https:// URL with a host (line 5)`},
		{"fallback twice", `"https://[::1]:6443"`, `"https://127.0.0.1:6443"`,
			`kubernetes.fallback_servers[1]: "https://127.0.0.1:6443" is listed twice (line 5)`},
		{"unknown kubernetes key", "state_file:", "statefile:", `kubernetes.statefile: unknown key "statefile" (line 6)`},
		{"peer selector", `{nodes: {selector: "node-role.kubernetes.io/control-plane"}}`, `{nodes: {selector: "a in (b"}}`,
			`vrrp.instances[0].unicast_peers_from.nodes.selector: "a in (b" is not a label selector`},
		{"peers without nodes", `{nodes: {selector: "node-role.kubernetes.io/control-plane"}}`, `{}`,
			`vrrp.instances[0].unicast_peers_from: needs nodes (line 13)`},
		{"track service", "{service: openshift-ingress/router-default, weight: 50}", "{service: router-default, weight: 50}",
			`vrrp.instances[0].track.endpoints[0].service: "router-default" is not NAMESPACE/NAME of a Service (line 14)`},
		{"track weight", "{service: openshift-ingress/router-default, weight: 50}", "{service: openshift-ingress/router-default, weight: 300}",
			`vrrp.instances[0].track.endpoints[0].weight: 300 is out of range -254..254 (line 14)`},
		{"pool track service", "{endpoints: [{service: openshift-ingress/router-default}]}", "{endpoints: [{service: a/B}]}",
			`vrrp.pools[0].track.endpoints[0].service: "a/B" is not NAMESPACE/NAME of a Service (line 20)`},
		{"node selector", `selector: "node-role.kubernetes.io/control-plane", port: 6443`, `selector: "=x", port: 6443`,
			`balancers[0].backends_from.nodes.selector: "=x" is not a label selector`},
		{"node port missing", `selector: "node-role.kubernetes.io/control-plane", port: 6443`, `selector: "node-role.kubernetes.io/control-plane"`,
			`balancers[0].backends_from.nodes.port: is required (the port the Nodes serve on) (line 25)`},
		{"node port range", `port: 6443}}`, `port: 70000}}`,
			`balancers[0].backends_from.nodes.port: 70000 is out of range 1..65535 (line 25)`},
		{"empty backends_from", `{nodes: {selector: "node-role.kubernetes.io/control-plane", port: 6443}}`, `{}`,
			`balancers[0].backends_from: needs nodes or endpoints (line 25)`},
		{"endpoints service", "{service: openshift-ingress/router-default, port: https}", "{service: openshift-ingress/, port: https}",
			`balancers[1].backends_from.endpoints.service: "openshift-ingress/" is not NAMESPACE/NAME of a Service (line 30)`},
		{"endpoints port name", "port: https}", "port: HTTPS_1}",
			`balancers[1].backends_from.endpoints.port: "HTTPS_1" is not a port name or number (line 30)`},
		{"endpoints port missing", "router-default, port: https}", "router-default}",
			`balancers[1].backends_from.endpoints.port: is required (a port name or number) (line 30)`},
		{"endpoints port range", "router-default, port: https}", "router-default, port: 0}",
			`balancers[1].backends_from.endpoints.port: 0 is out of range 1..65535 (line 30)`},
		{"endpoints port list", "{endpoints: {service: openshift-ingress/router-default, port: https}}", "\n      endpoints:\n        service: a/b\n        port: [1]",
			`balancers[1].backends_from.endpoints.port: cannot unmarshal !!seq into string (line 33)`},
		{"dsr endpoints port", "router-default, port: 80}", "router-default, port: 8080}",
			`balancers[2].backends_from.endpoints.port: 8080: mode dsr does not change ports; the endpoints must serve on 80 (line 35)`},
		{"dsr nodes port", "router-default, port: 80}", "router-default, port: 80}, nodes: {port: 81}",
			`balancers[2].backends_from.nodes.port: 81: mode dsr does not change ports; the Nodes must serve on 80 (line 35)`},
		{"redirect range", "redirect_from: 6443", "redirect_from: 0",
			`balancers[0].redirect_from: 0 is out of range 1..65535 (line 24)`},
		{"redirect to itself", "redirect_from: 6443", "redirect_from: 9445",
			`balancers[0].redirect_from: 9445 is the port of listen address 192.0.2.10:9445: redirect from another port (line 24)`},
		{"redirect on every address", `listen: ["192.0.2.10:9445"]`, `listen: [":9445"]`,
			`balancers[0].listen[0]: :9445: redirect_from needs the VIP's address, not every address (line 23)`},
		{"redirect onto a listener", "router-default, port: 80}}\n", "router-default, port: 80}}\n  - {name: other, listen: [\"192.0.2.10:6443\"], backends: [{address: \"10.0.0.1:1\"}]}\n",
			`balancers[0].redirect_from: 192.0.2.10:6443 is already used by balancers[3].listen[0] (line 24)`},
		{"redirect in dsr", "    mode: dsr\n", "    mode: dsr\n    redirect_from: 8080\n",
			`balancers[2].redirect_from: applies to mode proxy only (mode is dsr) (line 34)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(goodKube, tc.from, tc.to, 1)
			if src == goodKube {
				t.Fatalf("replacement %q not found", tc.from)
			}
			_, err := Parse([]byte(src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error\n%v\nwant it to contain\n%s", err, tc.want)
			}
		})
	}
}

// An empty kubernetes section still says the API is used, with its
// defaults (the state file's path): Marshal keeps it; state_file: ""
// keeps no state file, also after a round trip.
func TestMarshalKeepsEmptyKubernetesSection(t *testing.T) {
	c, err := Parse([]byte("kubernetes: {}\nchecks: [{name: x, exec: {script: \"true\"}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	y := roundTrip(t, c)
	if !strings.Contains(string(y), "kubernetes:\n  state_file: "+DefaultStateFile) {
		t.Fatalf("the section with its default was lost:\n%s", y)
	}
	c2, _ := Parse(y)
	if !c2.UsesKubernetes() {
		t.Fatal("UsesKubernetes = false after the round trip")
	}
	none, err := Parse([]byte("kubernetes: {state_file: \"\"}\nchecks: [{name: x, exec: {script: \"true\"}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if none.Kubernetes.StateFile != "" {
		t.Fatalf("state_file: \"\" gave %q", none.Kubernetes.StateFile)
	}
	if c3, _ := Parse(roundTrip(t, none)); c3.Kubernetes.StateFile != "" {
		t.Fatalf("state_file: \"\" became %q after a round trip", c3.Kubernetes.StateFile)
	}
}
