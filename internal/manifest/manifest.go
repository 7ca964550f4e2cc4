// Package manifest builds the Kubernetes objects that deploy vigil (a
// static pod, or a DaemonSet with its ServiceAccount, RBAC and ConfigMap)
// as typed k8s.io/api objects, and writes them as YAML that decodes back
// into the same objects. It grants and mounts only what the daemon uses
// today; it does not talk to a cluster.
package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// Name names every object vigil's manifests create.
const Name = "vigil"

// Paths inside the container.
const (
	ConfigDir  = "/etc/vigil"
	ConfigFile = "vigil.yaml"
	RunDir     = "/run/vigil"
	// StateDir holds the Kubernetes state file (config.DefaultStateFile),
	// on the host so that a restarted pod still has it.
	StateDir = "/var/lib/vigil"
	// Kubeconfig is where OpenShift's static pods find the node's
	// kubeconfig.
	Kubeconfig = "/var/lib/kubelet/kubeconfig"
	// ControlPlane is the label (and taint) of control-plane nodes.
	ControlPlane = "node-role.kubernetes.io/control-plane"
)

// Container is what the static pod and the DaemonSet share.
type Container struct {
	// Image is the container image.
	Image string
	// Namespace of every namespaced object.
	Namespace string
	// ProbeHost and ProbePort are the config's api.http, where the liveness
	// probe asks /healthz.
	ProbeHost string
	ProbePort int
	// XDP adds CAP_BPF, which loading the dsr XDP program needs beside
	// CAP_NET_ADMIN (dsr balancers, Services with dataplane dsr).
	XDP bool
}

// PodOptions configure StaticPod.
type PodOptions struct {
	Container
	// HostConfigDir is the host directory holding vigil.yaml.
	HostConfigDir string
	// Kubeconfig is a host file mounted read-only at the same path (default
	// in the command: Kubeconfig); "" mounts none.
	Kubeconfig string
}

// DaemonSetOptions configure DaemonSet.
type DaemonSetOptions struct {
	Container
	// NodeSelector is "KEY" or "KEY=VALUE"; the pods run on nodes with that
	// label and tolerate a NoSchedule taint of that key. "" runs them on
	// every node and tolerates nothing.
	NodeSelector string
}

// LBLease is the Lease that elects the LoadBalancer allocator
// (lbsvc.LeaseName; manifest does not import lbsvc).
const LBLease = "vigil-lb-allocator"

// ClusterRole is the least vigil needs of the API: reading Nodes (backends
// and peers from node labels) and EndpointSlices (backends and tracked
// endpoints of Services); for the LoadBalancer Services it serves, reading
// Services, writing their status, recording Events (core/v1, as client-go's
// tools/record does: create, and patch to count repeats) and holding the
// allocator's Lease. No secret is read.
//
// The Lease rule is cluster-wide (a namespaced Role would be tighter but is
// more to deploy): get and update only the allocator's Lease by name,
// create any (RBAC cannot limit create by name).
//
// Without services (vigil as the control plane's front door only), the
// role is read-only: Nodes and EndpointSlices.
func ClusterRole(services bool) *rbacv1.ClusterRole {
	read := []string{"get", "list", "watch"}
	role := &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
		ObjectMeta: meta(Name, ""),
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: read},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read},
		},
	}
	if !services {
		return role
	}
	role.Rules = append(role.Rules, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: read},
		{APIGroups: []string{""}, Resources: []string{"services/status"}, Verbs: []string{"update"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{LBLease},
			Verbs: []string{"get", "update"}},
	}...)
	return role
}

// ServiceAccount is the identity of the DaemonSet's pods.
func ServiceAccount(namespace string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: meta(Name, namespace),
	}
}

// ClusterRoleBinding grants ClusterRole to the ServiceAccount.
func ClusterRoleBinding(namespace string) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: meta(Name, ""),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: Name, Namespace: namespace}},
	}
}

// ConfigMap holds the config file the DaemonSet's pods run with.
func ConfigMap(namespace string, config []byte) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: meta(Name, namespace),
		Data:       map[string]string{ConfigFile: string(config)},
	}
}

// StaticPod is a kubelet static pod: host network, the capabilities VRRP,
// ARP and VIPs need, the config from a host directory, liveness on
// /healthz, and the node's kubeconfig when o.Kubeconfig names it.
func StaticPod(o PodOptions) *corev1.Pod {
	spec := podSpec(o.Container, hostPath("config", strings.TrimSuffix(o.HostConfigDir, "/"), corev1.HostPathDirectory))
	if o.Kubeconfig != "" {
		spec.Volumes = append(spec.Volumes, hostPath("kubeconfig", o.Kubeconfig, corev1.HostPathFile))
		c := &spec.Containers[0]
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "kubeconfig", MountPath: o.Kubeconfig, ReadOnly: true})
	}
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: meta(Name, o.Namespace),
		Spec:       spec,
	}
}

// DaemonSet runs vigil on the selected nodes with the ServiceAccount's
// in-cluster credentials and the ConfigMap's config. A changed ConfigMap
// reaches the pods' files after a while; vigil applies it on `vigil reload`
// or a restart of the pod, never by itself.
func DaemonSet(o DaemonSetOptions) *appsv1.DaemonSet {
	spec := podSpec(o.Container, corev1.Volume{Name: "config", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: Name}}}})
	spec.ServiceAccountName = Name
	spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	if o.NodeSelector != "" {
		k, v, _ := strings.Cut(o.NodeSelector, "=")
		spec.NodeSelector = map[string]string{k: v}
		spec.Tolerations = []corev1.Toleration{{Key: k, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	}
	labels := map[string]string{"app": Name}
	m := meta(Name, o.Namespace)
	return &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: m,
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
}

// podSpec is the pod both deployments run; config is the volume holding
// vigil.yaml.
func podSpec(o Container, config corev1.Volume) corev1.PodSpec {
	grace := int64(15)
	caps := []corev1.Capability{"NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"}
	if o.XDP {
		caps = append(caps, "BPF")
	}
	return corev1.PodSpec{
		HostNetwork:                   true,
		PriorityClassName:             "system-node-critical",
		TerminationGracePeriodSeconds: &grace,
		Containers: []corev1.Container{{
			Name:    Name,
			Image:   o.Image,
			Command: []string{"/vigil", "run", "-c", ConfigDir + "/" + ConfigFile, "--pid-file", RunDir + "/vigil.pid"},
			SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{
				Drop: []corev1.Capability{"ALL"},
				Add:  caps,
			}},
			LivenessProbe: &corev1.Probe{
				ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Host: o.ProbeHost, Port: intstr.FromInt(o.ProbePort), Path: "/healthz"}},
				InitialDelaySeconds: 5, PeriodSeconds: 10, TimeoutSeconds: 3, FailureThreshold: 3,
			},
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "config", MountPath: ConfigDir, ReadOnly: true},
				{Name: "run", MountPath: RunDir},
				{Name: "state", MountPath: StateDir},
			},
		}},
		Volumes: []corev1.Volume{config, hostPath("run", RunDir, corev1.HostPathDirectoryOrCreate),
			hostPath("state", StateDir, corev1.HostPathDirectoryOrCreate)},
	}
}

func hostPath(name, path string, t corev1.HostPathType) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &t}}}
}

func meta(name, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": Name}}
}

// Write writes objs as one YAML stream, "---" between documents. An
// object's status is left out: it is the cluster's to fill in.
func Write(w io.Writer, objs ...any) error {
	var buf bytes.Buffer
	for i, o := range objs {
		js, err := json.Marshal(o)
		if err != nil {
			return fmt.Errorf("manifest: object %d (%T): %w", i, o, err)
		}
		var m map[string]any
		if err := json.Unmarshal(js, &m); err != nil {
			return fmt.Errorf("manifest: object %d (%T): %w", i, o, err)
		}
		delete(m, "status")
		y, err := yaml.Marshal(m)
		if err != nil {
			return fmt.Errorf("manifest: object %d (%T): %w", i, o, err)
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(y)
	}
	_, err := w.Write(buf.Bytes())
	return err
}
