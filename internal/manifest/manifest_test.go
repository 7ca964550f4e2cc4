package manifest

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"

	"github.com/vigil-lb/vigil/internal/config"
)

var container = Container{Image: "registry.local/vigil:1.0", Namespace: "vigil-system", ProbeHost: "127.0.0.1", ProbePort: 9110}

// Documents splits a YAML stream written by Write.
func documents(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for _, d := range strings.Split(string(b), "\n---\n") {
		out = append(out, []byte(d))
	}
	return out
}

// decode decodes one document into obj, refusing fields obj's type lacks.
func decode(t *testing.T, doc []byte, obj any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		t.Fatalf("%T: %v\n%s", obj, err, doc)
	}
}

// Every object survives Write and a strict decode unchanged.
func TestRoundTrip(t *testing.T) {
	ds := DaemonSet(DaemonSetOptions{Container: container, NodeSelector: ControlPlane})
	pod := StaticPod(PodOptions{Container: container, HostConfigDir: "/etc/vigil/", Kubeconfig: Kubeconfig})
	objs := []any{ServiceAccount("vigil-system"), ClusterRole(true), ClusterRoleBinding("vigil-system"),
		ConfigMap("vigil-system", []byte(Example)), ds, pod}
	var buf bytes.Buffer
	if err := Write(&buf, objs...); err != nil {
		t.Fatal(err)
	}
	docs := documents(t, buf.Bytes())
	if len(docs) != len(objs) {
		t.Fatalf("%d documents, want %d:\n%s", len(docs), len(objs), buf.String())
	}
	back := []any{&corev1.ServiceAccount{}, &rbacv1.ClusterRole{}, &rbacv1.ClusterRoleBinding{}, &corev1.ConfigMap{},
		&appsv1.DaemonSet{}, &corev1.Pod{}}
	for i, doc := range docs {
		if bytes.Contains(doc, []byte("status:")) || bytes.Contains(doc, []byte("creationTimestamp")) {
			t.Errorf("document %d carries server-side fields:\n%s", i, doc)
		}
		decode(t, doc, back[i])
		if !equality.Semantic.DeepEqual(objs[i], back[i]) {
			t.Errorf("%T changed in the round trip:\n%s", objs[i], doc)
		}
	}
}

// The role reads Nodes, EndpointSlices and Services, writes Service
// status and Events, holds the allocator's Lease, and nothing else.
func TestClusterRoleIsLeast(t *testing.T) {
	r := ClusterRole(true)
	if r.Name != "vigil" || r.Namespace != "" {
		t.Fatalf("role %s/%s", r.Namespace, r.Name)
	}
	type grant struct{ group, resource, name, verb string }
	var got []grant
	for _, rule := range r.Rules {
		if len(rule.NonResourceURLs) > 0 {
			t.Errorf("rule %+v names URLs", rule)
		}
		names := rule.ResourceNames
		if len(names) == 0 {
			names = []string{"*"}
		}
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				for _, n := range names {
					for _, v := range rule.Verbs {
						got = append(got, grant{g, res, n, v})
					}
				}
			}
		}
	}
	var want []grant
	for _, gr := range [][2]string{{"", "nodes"}, {"discovery.k8s.io", "endpointslices"}, {"", "services"}} {
		for _, v := range []string{"get", "list", "watch"} {
			want = append(want, grant{gr[0], gr[1], "*", v})
		}
	}
	want = append(want,
		grant{"", "services/status", "*", "update"},
		grant{"", "events", "*", "create"},
		grant{"", "events", "*", "patch"},
		grant{"coordination.k8s.io", "leases", "*", "create"},
		grant{"coordination.k8s.io", "leases", "vigil-lb-allocator", "get"},
		grant{"coordination.k8s.io", "leases", "vigil-lb-allocator", "update"},
	)
	cmp := func(a, b grant) int {
		return strings.Compare(a.group+" "+a.resource+" "+a.name+" "+a.verb, b.group+" "+b.resource+" "+b.name+" "+b.verb)
	}
	slices.SortFunc(got, cmp)
	slices.SortFunc(want, cmp)
	if !slices.Equal(got, want) {
		t.Fatalf("grants %v\nwant %v", got, want)
	}
	b := ClusterRoleBinding("ns")
	if b.RoleRef.Name != r.Name || b.RoleRef.Kind != "ClusterRole" || len(b.Subjects) != 1 ||
		b.Subjects[0] != (rbacv1.Subject{Kind: "ServiceAccount", Name: ServiceAccount("ns").Name, Namespace: "ns"}) {
		t.Fatalf("binding %+v", b)
	}
}

func TestDaemonSet(t *testing.T) {
	ds := DaemonSet(DaemonSetOptions{Container: container, NodeSelector: ControlPlane})
	s := ds.Spec.Template.Spec
	c := s.Containers[0]
	switch {
	case !s.HostNetwork || s.DNSPolicy != corev1.DNSClusterFirstWithHostNet || s.PriorityClassName != "system-node-critical":
		t.Fatalf("network %v dns %v priority %q", s.HostNetwork, s.DNSPolicy, s.PriorityClassName)
	case s.ServiceAccountName != "vigil":
		t.Fatalf("service account %q", s.ServiceAccountName)
	case len(s.NodeSelector) != 1 || s.NodeSelector[ControlPlane] != "":
		t.Fatalf("node selector %v", s.NodeSelector)
	case len(s.Tolerations) != 1 || s.Tolerations[0].Key != ControlPlane || s.Tolerations[0].Operator != corev1.TolerationOpExists:
		t.Fatalf("tolerations %+v", s.Tolerations)
	case !slices.Equal(c.SecurityContext.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"}):
		t.Fatalf("capabilities %v", c.SecurityContext.Capabilities)
	case c.LivenessProbe.HTTPGet.Path != "/healthz" || c.LivenessProbe.HTTPGet.Port.IntValue() != 9110:
		t.Fatalf("liveness %+v", c.LivenessProbe.HTTPGet)
	case s.Volumes[0].ConfigMap == nil || s.Volumes[0].ConfigMap.Name != ConfigMap("", nil).Name:
		t.Fatalf("config volume %+v", s.Volumes[0])
	case ds.Spec.Selector.MatchLabels["app"] != ds.Spec.Template.Labels["app"]:
		t.Fatal("the selector does not select the template")
	case !slices.ContainsFunc(s.Volumes, func(v corev1.Volume) bool {
		return v.HostPath != nil && v.HostPath.Path == StateDir && StateDir == filepath.Dir(config.DefaultStateFile)
	}) || !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == StateDir && !m.ReadOnly }):
		t.Fatalf("the state file's directory is not a writable host mount: %+v %+v", s.Volumes, c.VolumeMounts)
	}
	ds = DaemonSet(DaemonSetOptions{Container: container, NodeSelector: "vigil=yes"})
	if s := ds.Spec.Template.Spec; s.NodeSelector["vigil"] != "yes" || s.Tolerations[0].Key != "vigil" {
		t.Fatalf("KEY=VALUE selector: %v %v", s.NodeSelector, s.Tolerations)
	}
	if s := DaemonSet(DaemonSetOptions{Container: container}).Spec.Template.Spec; s.NodeSelector != nil || s.Tolerations != nil {
		t.Fatalf("no selector: %v %v", s.NodeSelector, s.Tolerations)
	}
}

// The static pod mounts the node's kubeconfig read-only at its own path,
// unless told not to.
func TestStaticPodKubeconfig(t *testing.T) {
	find := func(p *corev1.Pod) (*corev1.Volume, *corev1.VolumeMount) {
		var v *corev1.Volume
		var m *corev1.VolumeMount
		for i := range p.Spec.Volumes {
			if p.Spec.Volumes[i].Name == "kubeconfig" {
				v = &p.Spec.Volumes[i]
			}
		}
		for i, vm := range p.Spec.Containers[0].VolumeMounts {
			if vm.Name == "kubeconfig" {
				m = &p.Spec.Containers[0].VolumeMounts[i]
			}
		}
		return v, m
	}
	v, m := find(StaticPod(PodOptions{Container: container, HostConfigDir: "/etc/vigil", Kubeconfig: Kubeconfig}))
	if v == nil || m == nil || v.HostPath.Path != Kubeconfig || *v.HostPath.Type != corev1.HostPathFile ||
		m.MountPath != Kubeconfig || !m.ReadOnly {
		t.Fatalf("kubeconfig volume %+v mount %+v", v, m)
	}
	if v, m := find(StaticPod(PodOptions{Container: container, HostConfigDir: "/etc/vigil"})); v != nil || m != nil {
		t.Fatalf("kubeconfig mounted although not asked: %+v %+v", v, m)
	}
}

// The example a ConfigMap holds when no config is given is one vigil runs.
func TestExampleIsValid(t *testing.T) {
	c, err := config.Parse([]byte(Example))
	if err != nil {
		t.Fatal(err)
	}
	if c.API.HTTP != "127.0.0.1:9110" || len(c.Balancers) != 1 {
		t.Fatalf("example: api.http %q, %d balancers", c.API.HTTP, len(c.Balancers))
	}
}
