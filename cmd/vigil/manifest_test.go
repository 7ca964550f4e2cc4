package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/vigil-lb/vigil/internal/manifest"
)

func TestStaticPodParsesAsAKubernetesPod(t *testing.T) {
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"manifest", "static-pod", "--image", "registry.local/vigil:1.0", "--http", "127.0.0.1:9110"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	var generic any
	if err := yaml.Unmarshal(out.Bytes(), &generic); err != nil {
		t.Fatalf("not YAML: %v\n%s", err, out.String())
	}
	js, err := json.Marshal(generic)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields() // every key must be a real Pod field
	var pod corev1.Pod
	if err := dec.Decode(&pod); err != nil {
		t.Fatalf("not a Pod: %v", err)
	}
	c := pod.Spec.Containers[0]
	caps := map[corev1.Capability]bool{}
	for _, c := range c.SecurityContext.Capabilities.Add {
		caps[c] = true
	}
	switch {
	case pod.Kind != "Pod" || !pod.Spec.HostNetwork:
		t.Fatalf("kind %q hostNetwork %v", pod.Kind, pod.Spec.HostNetwork)
	case !caps["NET_ADMIN"] || !caps["NET_RAW"] || c.SecurityContext.Privileged != nil:
		t.Fatalf("capabilities %v", c.SecurityContext.Capabilities)
	case c.Image != "registry.local/vigil:1.0" || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.LivenessProbe.HTTPGet.Port.IntValue() != 9110:
		t.Fatalf("container %+v", c)
	case pod.Spec.Volumes[0].HostPath.Path != "/etc/vigil" || c.Command[len(c.Command)-3] != "/etc/vigil/vigil.yaml":
		t.Fatalf("config from the host: %+v %v", pod.Spec.Volumes[0], c.Command)
	}
	// The command the pod runs is one vigil understands.
	checkCommandLine(t, strings.Join(c.Command[1:], " "))
	// OpenShift's kubeconfig is mounted read-only at its own path, unless
	// --kubeconfig= says not to.
	last := c.VolumeMounts[len(c.VolumeMounts)-1]
	vol := pod.Spec.Volumes[len(pod.Spec.Volumes)-1]
	if last.MountPath != "/var/lib/kubelet/kubeconfig" || !last.ReadOnly || vol.Name != last.Name ||
		vol.HostPath.Path != "/var/lib/kubelet/kubeconfig" {
		t.Fatalf("kubeconfig mount %+v volume %+v", last, vol)
	}
	out.Reset()
	root = newRoot()
	root.SetOut(&out)
	root.SetArgs([]string{"manifest", "static-pod", "--kubeconfig="})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "kubeconfig") {
		t.Fatalf("--kubeconfig= still mounts one:\n%s", out.String())
	}
}

// The DaemonSet's documents decode into their types with no field unknown;
// the ConfigMap holds the -c file and the probe asks that file's api.http.
func TestDaemonSetManifest(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "vigil.yaml")
	cfg := strings.Replace(manifest.Example, "http: 127.0.0.1:9110", "http: 127.0.0.1:9200", 1)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"manifest", "daemonset", "-c", cfgFile, "--namespace", "vigil", "--image", "registry.local/vigil:1.0"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(out.String(), "\n---\n")
	if len(docs) != 5 {
		t.Fatalf("%d documents:\n%s", len(docs), out.String())
	}
	var (
		sa   corev1.ServiceAccount
		role rbacv1.ClusterRole
		bind rbacv1.ClusterRoleBinding
		cm   corev1.ConfigMap
		ds   appsv1.DaemonSet
	)
	for i, obj := range []any{&sa, &role, &bind, &cm, &ds} {
		if err := sigsyaml.UnmarshalStrict([]byte(docs[i]), obj); err != nil {
			t.Fatalf("document %d is not a %T: %v\n%s", i, obj, err, docs[i])
		}
	}
	if !equality.Semantic.DeepEqual(role.Rules, manifest.ClusterRole(false).Rules) {
		t.Fatalf("role rules %+v", role.Rules)
	}
	for _, r := range role.Rules {
		for _, v := range r.Verbs {
			if v != "get" && v != "list" && v != "watch" {
				t.Fatalf("role may %s %v", v, r.Resources)
			}
		}
	}
	s := ds.Spec.Template.Spec
	c := s.Containers[0]
	switch {
	case sa.Namespace != "vigil" || bind.Subjects[0].Namespace != "vigil" || ds.Namespace != "vigil" || cm.Namespace != "vigil":
		t.Fatalf("namespaces %q %q %q %q", sa.Namespace, bind.Subjects[0].Namespace, ds.Namespace, cm.Namespace)
	case cm.Data["vigil.yaml"] != cfg:
		t.Fatalf("config map holds %q", cm.Data["vigil.yaml"])
	case !s.HostNetwork || s.DNSPolicy != corev1.DNSClusterFirstWithHostNet || s.PriorityClassName != "system-node-critical" ||
		s.ServiceAccountName != sa.Name:
		t.Fatalf("pod spec %+v", s)
	case s.NodeSelector["node-role.kubernetes.io/control-plane"] != "" || len(s.NodeSelector) != 1 ||
		s.Tolerations[0].Key != "node-role.kubernetes.io/control-plane":
		t.Fatalf("selector %v tolerations %v", s.NodeSelector, s.Tolerations)
	case c.Image != "registry.local/vigil:1.0" || c.LivenessProbe.HTTPGet.Port.IntValue() != 9200:
		t.Fatalf("container %+v", c)
	case c.VolumeMounts[0].MountPath+"/vigil.yaml" != c.Command[3] || s.Volumes[0].ConfigMap.Name != cm.Name:
		t.Fatalf("config mount %+v volume %+v command %v", c.VolumeMounts[0], s.Volumes[0], c.Command)
	}
	checkCommandLine(t, strings.Join(c.Command[1:], " "))

	// Without -c the ConfigMap holds the example; a config that does not
	// validate is refused.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"manifest", "daemonset"}, "my-cluster"},
		{[]string{"manifest", "daemonset", "--node-selector", ""}, ""},
	} {
		out.Reset()
		root = newRoot()
		root.SetOut(&out)
		root.SetArgs(tt.args)
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), tt.want) {
			t.Fatalf("%v: no %q in\n%s", tt.args, tt.want, out.String())
		}
		if len(tt.args) > 2 && (strings.Contains(out.String(), "nodeSelector") || strings.Contains(out.String(), "tolerations")) {
			t.Fatalf("--node-selector \"\" still selects:\n%s", out.String())
		}
	}
	if err := os.WriteFile(cfgFile, []byte("vrrp: {instances: [{name: x}]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	root = newRoot()
	root.SetOut(&out)
	root.SetArgs([]string{"manifest", "daemonset", "-c", cfgFile})
	var ee *exitError
	if err := root.Execute(); !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("invalid config: %v", err)
	}
}

func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("../../dist/vigil.service")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != systemdUnit {
		t.Fatal("dist/vigil.service differs from `vigil manifest systemd`: regenerate it")
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "ExecReload="} {
		if !strings.Contains(systemdUnit, want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	for _, line := range strings.Split(systemdUnit, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "Exec") {
			checkCommandLine(t, strings.TrimPrefix(v, "/usr/local/bin/vigil "))
		}
	}
}

// checkCommandLine fails unless args name a vigil subcommand and flags it has.
func checkCommandLine(t *testing.T, args string) {
	t.Helper()
	cmd, rest, err := newRoot().Find(strings.Fields(args))
	if err != nil || cmd.Name() == "vigil" {
		t.Fatalf("%q: no such subcommand: %v", args, err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatalf("%q: %v", args, err)
	}
}

// A config that steers with XDP (a dsr balancer) gets CAP_BPF in both
// manifests; one that does not keeps the three capabilities.
func TestManifestsAddBPFForXDP(t *testing.T) {
	dir := t.TempDir()
	dsr := `cluster: lab
balancers:
  - {name: fast, mode: dsr, interface: eth0, listen: ["192.0.2.10:80"], backends: [{address: "192.0.2.21:80"}]}
`
	for _, tt := range []struct {
		name, cfg string
		bpf       bool
	}{{"example", manifest.Example, false}, {"dsr", dsr, true}} {
		sub := filepath.Join(dir, tt.name)
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(sub, "vigil.yaml")
		if err := os.WriteFile(file, []byte(tt.cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{"manifest", "daemonset", "-c", file},
			{"manifest", "static-pod", "--config-dir", sub},
		} {
			root := newRoot()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetArgs(args)
			if err := root.Execute(); err != nil {
				t.Fatalf("%s %v: %v", tt.name, args, err)
			}
			if got := strings.Contains(out.String(), "- BPF\n"); got != tt.bpf {
				t.Fatalf("%s %v: CAP_BPF %v, want %v:\n%s", tt.name, args, got, tt.bpf, out.String())
			}
		}
	}
}
