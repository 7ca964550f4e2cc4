package supervisor

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/kube"
	"github.com/vigil-lb/vigil/internal/redirect"
)

const kubeYAML = `cluster: lab
node: n1
kubernetes: {state_file: ""}
vrrp:
  instances:
    - name: api
      interface: eth0
      vips: ["10.0.0.10/24"]
      unicast_peers_from: {nodes: {selector: "role=cp"}}
      track: {endpoints: [{service: ingress/router, weight: 0}]}
balancers:
  - name: api
    listen: ["10.0.0.10:9445", "[2001:db8::10]:9445"]
    redirect_from: 6443
    backends_from: {nodes: {selector: "role=cp", port: 6443}}
  - name: ingress
    listen: ["10.0.0.20:443"]
    backends_from: {endpoints: {service: ingress/router, port: https}}
  - name: static
    listen: ["10.0.0.30:80"]
    backends: [{address: "10.0.0.5:80"}]
`

func parseKube(t *testing.T, edits ...string) *config.Config {
	t.Helper()
	return parseEdited(t, kubeYAML, edits...)
}

// What the config reads decides the informers; a reload may change the
// members' rules but not what is watched.
func TestMembersCheckRefusesNewWatches(t *testing.T) {
	m := &members{static: parseKube(t)}
	if got := watchedServices(m.static); !slices.Equal(got, []kube.ServiceRef{{Namespace: "ingress", Name: "router"}}) {
		t.Fatalf("watched services %v", got)
	}
	if !watchesNodes(m.static) || !readsCluster(m.static) {
		t.Fatal("the config reads Nodes")
	}
	cases := []struct {
		name  string
		edits []string
		want  string // "" accepted
	}{
		{"selector and port change", []string{`port: 6443}}`, `port: 6444}}`, `"role=cp", port`, `"role=master", port`}, ""},
		{"kubernetes section", []string{`state_file: ""`, `state_file: /tmp/x.json`}, "kubernetes section changed"},
		{"another Service", []string{"service: ingress/router, port", "service: ingress/other, port"}, "Services"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := m.check(parseKube(t, tc.edits...))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one about %q", err, tc.want)
			}
		})
	}
	static := parseKube(t, "backends_from: {nodes: {selector: \"role=cp\", port: 6443}}", "backends: [{address: \"10.0.0.6:6443\"}]",
		"unicast_peers_from: {nodes: {selector: \"role=cp\"}}", "unicast_peers: [10.0.0.2]")
	if watchesNodes(static) {
		t.Fatal("no Node source left, yet watchesNodes")
	}
	if err := (&members{static: static}).check(parseKube(t)); err == nil || !strings.Contains(err.Error(), "Nodes") {
		t.Fatalf("a new Node watch: %v", err)
	}
	section := parseKube(t, "backends_from: {endpoints: {service: ingress/router, port: https}}", "backends: [{address: \"10.0.0.7:443\"}]",
		"backends_from: {nodes: {selector: \"role=cp\", port: 6443}}", "backends: [{address: \"10.0.0.6:6443\"}]",
		"      unicast_peers_from: {nodes: {selector: \"role=cp\"}}\n", "",
		"      track: {endpoints: [{service: ingress/router, weight: 0}]}\n", "")
	if readsCluster(section) {
		t.Fatal("a kubernetes section alone reads nothing")
	}
}

// redirect_from gives one DNAT per listen address, both families.
func TestRedirectRules(t *testing.T) {
	got := redirectRules(parseKube(t))
	want := []redirect.Rule{
		{Balancer: "api", VIP: netip.MustParseAddr("10.0.0.10"), From: 6443, To: 9445},
		{Balancer: "api", VIP: netip.MustParseAddr("2001:db8::10"), From: 6443, To: 9445},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("rules %v, want %v", got, want)
	}
	if err := redirect.Validate(got); err != nil {
		t.Fatal(err)
	}
}
