package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
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
