package kubetest

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// AdminConfig is a client configuration of the system:masters user.
func (e *Env) AdminConfig() *rest.Config { return e.config(e.AdminToken) }

// UserConfig is a client configuration of UserName (rights only by Bind).
func (e *Env) UserConfig() *rest.Config { return e.config(e.UserToken) }

// config is a client configuration with token. For an API server in a lab
// host, it dials from inside that host: the test process's namespace has
// no route into the lab.
func (e *Env) config(token string) *rest.Config {
	c := &rest.Config{
		Host:            e.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.CAData},
		QPS:             -1, // tests create objects in bursts; no client-side throttling
	}
	if e.opts.Host != nil {
		c.Dial = e.opts.Host.Dial
	}
	return c
}

func (e *Env) httpClient() (*http.Client, error) {
	hc, err := rest.HTTPClientFor(e.AdminConfig())
	if err != nil {
		return nil, fmt.Errorf("kubetest: client: %w", err)
	}
	return hc, nil
}

// AdminClient returns a clientset of the system:masters user, for
// programs that are not tests (the bench drivers).
func (e *Env) AdminClient() (kubernetes.Interface, error) {
	c, err := kubernetes.NewForConfig(e.AdminConfig())
	if err != nil {
		return nil, fmt.Errorf("kubetest: clientset: %w", err)
	}
	return c, nil
}

// Admin returns a clientset of the system:masters user.
func (e *Env) Admin(t testing.TB) kubernetes.Interface {
	t.Helper()
	c, err := e.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// WriteKubeconfig writes a kubeconfig for server (e.URL if empty) and
// token, with the CA embedded, to path (mode 0600).
func (e *Env) WriteKubeconfig(path, server, token string) error {
	if server == "" {
		server = e.URL
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: e.CAData}
	cfg.AuthInfos["test"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	cfg.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("kubetest: write kubeconfig: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	return nil
}

// Kubeconfig writes a kubeconfig for server (e.URL if empty) and token,
// with the CA embedded, into the test's temp dir and returns its path.
func (e *Env) Kubeconfig(t testing.TB, server, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := e.WriteKubeconfig(path, server, token); err != nil {
		t.Fatal(err)
	}
	return path
}

// Bind creates role and binds it to UserName, as a deployment binds the
// ClusterRole vigil's manifest ships to vigil's service account; both are
// deleted when the test ends.
func (e *Env) Bind(t testing.TB, role *rbacv1.ClusterRole) {
	t.Helper()
	c := e.Admin(t)
	ctx, cancel := ctxTimeout()
	defer cancel()
	r := role.DeepCopy()
	r.ResourceVersion = ""
	if _, err := c.RbacV1().ClusterRoles().Create(ctx, r, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kubetest: create ClusterRole %s: %v", r.Name, err)
	}
	b := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: r.Name + "-" + UserName},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: r.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: UserName}},
	}
	if _, err := c.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kubetest: bind ClusterRole %s: %v", r.Name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := ctxTimeout()
		defer cancel()
		_ = c.RbacV1().ClusterRoleBindings().Delete(ctx, b.Name, metav1.DeleteOptions{})
		_ = c.RbacV1().ClusterRoles().Delete(ctx, r.Name, metav1.DeleteOptions{})
	})
}

var shared struct {
	sync.Mutex
	env *Env
	err error
}

// Shared returns the package's one loopback Env, started on first use
// (about 3 s). Packages that use it call Main from TestMain so that it
// stops at the end. Without the binaries the test is skipped, unless
// $VIGIL_REQUIRE_K8S is set (make test sets it): then it fails.
func Shared(t testing.TB) *Env {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.env == nil && shared.err == nil {
		shared.env, shared.err = Start(Options{})
	}
	if shared.err != nil {
		Unavailable(t, shared.err)
	}
	return shared.env
}

// Unavailable skips or, when the API server is required, fails t.
func Unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("VIGIL_REQUIRE_K8S") == "" {
		t.Skipf("no test API server (set VIGIL_REQUIRE_K8S=1 to make this an error): %v", err)
	}
	t.Fatal(err)
}

// Main runs the tests and then stops the Shared Env.
func Main(m *testing.M) {
	code := m.Run()
	shared.Lock()
	if shared.env != nil {
		shared.env.Close()
	}
	shared.Unlock()
	os.Exit(code)
}
