package config

import (
	"os"
	"strings"
	"testing"
)

// kubeDocExample returns the config between the example markers of
// docs/kubernetes.md.
func kubeDocExample(t testing.TB) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- kubernetes-example:begin -->\n```yaml\n")
	example, _, ok2 := strings.Cut(rest, "```\n<!-- kubernetes-example:end -->")
	if !ok || !ok2 {
		t.Fatal("docs/kubernetes.md has no ```yaml block between the kubernetes-example markers")
	}
	return example
}

// The OpenShift example in docs/kubernetes.md stays a valid config, and
// says what the page around it says it does.
func TestKubernetesDocExample(t *testing.T) {
	c, err := Parse([]byte(kubeDocExample(t)))
	if err != nil {
		t.Fatalf("docs/kubernetes.md example does not validate:\n%v", err)
	}
	roundTrip(t, c)
	if !c.UsesKubernetes() || c.Kubernetes == nil || c.Kubernetes.Kubeconfig != "/var/lib/kubelet/kubeconfig" ||
		len(c.Kubernetes.FallbackServers) == 0 || c.Kubernetes.StateFile == "" {
		t.Fatalf("kubernetes section %+v", c.Kubernetes)
	}
	if c.Node == "" {
		t.Fatal("node is not defaulted")
	}

	inst := map[string]Instance{}
	for _, in := range c.VRRP.Instances {
		inst[in.Name] = in
	}
	api, ingress := inst["api"], inst["ingress"]
	if api.UnicastPeersFrom == nil || api.UnicastPeersFrom.Nodes == nil || len(api.Track.Checks) != 2 {
		t.Fatalf("api instance %+v", api)
	}
	if ingress.UnicastPeersFrom == nil || len(ingress.Track.Endpoints) != 1 ||
		ingress.Track.Endpoints[0].Service != "openshift-ingress/router-internal-default" || ingress.Track.Endpoints[0].Weight == 0 {
		t.Fatalf("ingress instance %+v", ingress)
	}

	bal := map[string]Balancer{}
	for _, b := range c.Balancers {
		bal[b.Name] = b
	}
	b := bal["api"]
	if b.RedirectFrom != 6443 || b.BackendsFrom == nil || b.BackendsFrom.Nodes == nil || b.BackendsFrom.Nodes.Port != 6443 ||
		!strings.HasSuffix(b.Listen[0], ":9445") || b.Check == nil || b.Check.HTTP == nil || b.Check.HTTP.Path != "/readyz" ||
		!b.Check.HTTP.TLS || b.Monitor == nil {
		t.Fatalf("api balancer %+v", b)
	}
	for name, port := range map[string]string{"ingress-https": "https", "ingress-http": "http"} {
		b := bal[name]
		if b.BackendsFrom == nil || b.BackendsFrom.Endpoints == nil || b.BackendsFrom.Endpoints.Port != port ||
			b.BackendsFrom.Endpoints.Service != "openshift-ingress/router-internal-default" || b.RedirectFrom == 0 {
			t.Fatalf("%s balancer %+v", name, b)
		}
	}
}
