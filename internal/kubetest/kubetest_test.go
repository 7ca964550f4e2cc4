package kubetest

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vigil-lb/vigil/internal/netlab"
)

func TestMain(m *testing.M) { Main(m) }

// The Env serves the real API: a Node written as the kubelet does keeps
// its status, the user without rights is refused, and bound to a role
// may do what the role says and nothing more.
func TestEnvServesRBAC(t *testing.T) {
	e := Shared(t)
	admin := e.Admin(t)
	n := CreateNode(t, admin, Node("kt-node", map[string]string{"role": "cp"}, true, netip.MustParseAddr("192.0.2.7")))
	if len(n.Status.Addresses) != 2 || n.Status.Conditions[0].Status != "True" {
		t.Fatalf("node status not kept: %+v", n.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	user, err := kubernetes.NewForConfig(e.UserConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := user.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list nodes without rights: got %v, want forbidden", err)
	}
	e.Bind(t, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "kt-read-nodes"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list"}}},
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		list, err := user.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			if len(list.Items) == 0 {
				t.Fatal("the bound user lists no Node")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("list nodes after Bind: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // RBAC caches update asynchronously
	}
	if err := user.CoreV1().Nodes().Delete(ctx, "kt-node", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("delete with a list-only role: got %v, want forbidden", err)
	}
	DeleteNode(t, admin, "kt-node")
}

// A kubeconfig written by Env works, and an API server stopped and started
// again keeps its objects (etcd keeps running).
func TestEnvKubeconfigAndRestart(t *testing.T) {
	e := Shared(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", e.Kubeconfig(t, "", e.AdminToken))
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ApplySlice(t, c, Slice("default", "kt-web-1", "kt-web", "http", 8080,
		Endpoint{netip.MustParseAddr("10.1.0.5"), "n1", true}))
	e.StopAPI()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.DiscoveryV1().EndpointSlices("default").Get(ctx, "kt-web-1", metav1.GetOptions{}); err == nil {
		t.Fatal("the API answered while stopped")
	}
	if err := e.StartAPI(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.DiscoveryV1().EndpointSlices("default").Get(ctx, "kt-web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if s.Labels["kubernetes.io/service-name"] != "kt-web" || *s.Endpoints[0].NodeName != "n1" {
		t.Fatalf("slice changed over the restart: %+v", s)
	}
}

// The API server runs inside a lab host and answers over the lab switch
// at the host's address, with a certificate that holds it.
func TestEnvInLabHost(t *testing.T) {
	if !netlab.Root() {
		t.Skip("needs root for network namespaces")
	}
	if _, _, err := Binaries(); err != nil {
		Unavailable(t, err)
	}
	lab, err := netlab.New()
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	apiHost, err := lab.AddHost("api", netip.MustParsePrefix("10.77.0.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	client, err := lab.AddHost("c1", netip.MustParsePrefix("10.77.0.3/24"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Start(Options{Host: apiHost})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.URL != "https://10.77.0.2:6443" {
		t.Fatalf("URL %s", e.URL)
	}
	cfg := e.AdminConfig()
	cfg.Dial = client.Dial // sockets made in the client host's namespace
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("from the client host: %v", err)
	}
	if !strings.HasPrefix(v.GitVersion, "v1.37") {
		t.Fatalf("server version %q", v.GitVersion)
	}
}
