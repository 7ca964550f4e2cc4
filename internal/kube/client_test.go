package kube

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
)

// writeKubeconfig writes a one-context kubeconfig for server and returns
// its path. caData is PEM, or nil for a relative certificate-authority
// path "ca.crt".
func writeKubeconfig(t *testing.T, dir, name, server string, caData []byte) string {
	t.Helper()
	ca := "certificate-authority: ca.crt"
	if caData != nil {
		ca = "certificate-authority-data: " + base64.StdEncoding.EncodeToString(caData)
	}
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: %s
    %s
users:
- name: u
  user:
    token: secret-token
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`, server, ca)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestRESTConfig(t *testing.T) {
	dir := t.TempDir()
	_, caPEM := selfSigned(t, "localhost")
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	a := writeKubeconfig(t, dir, "a.yaml", "https://10.0.0.1:6443", nil)
	b := writeKubeconfig(t, dir, "b.yaml", "https://10.0.0.2:6443", nil)
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("clusters: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.yaml")

	tests := []struct {
		name       string
		kubeconfig string
		env        map[string]string
		wantHost   string
		wantErr    []string // substrings of the error
	}{
		{name: "explicit file", kubeconfig: a, env: map[string]string{"KUBECONFIG": b}, wantHost: "https://10.0.0.1:6443"},
		{name: "explicit file wins over in-cluster", kubeconfig: a, env: map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, wantHost: "https://10.0.0.1:6443"},
		{name: "$KUBECONFIG", env: map[string]string{"KUBECONFIG": b}, wantHost: "https://10.0.0.2:6443"},
		{name: "$KUBECONFIG list, first wins", env: map[string]string{"KUBECONFIG": b + string(os.PathListSeparator) + a}, wantHost: "https://10.0.0.2:6443"},
		{name: "none", env: map[string]string{}, wantErr: []string{"kubernetes: no kubeconfig: set kubernetes.kubeconfig, run in a pod, or set $KUBECONFIG"}},
		{name: "explicit missing", kubeconfig: missing, wantErr: []string{"kubeconfig " + missing, "no such file"}},
		{name: "$KUBECONFIG missing", env: map[string]string{"KUBECONFIG": missing}, wantErr: []string{"kubeconfig " + missing}},
		{name: "explicit corrupt", kubeconfig: bad, wantErr: []string{"kubeconfig " + bad}},
		// rest.InClusterConfig reads the process environment and the
		// service account files; neither is there in a test.
		{name: "in-cluster without a service account", env: map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, wantErr: []string{"kubernetes: in-cluster config: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := restConfig(tt.kubeconfig, envOf(tt.env))
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("restConfig: got host %s, want an error", cfg.Host)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Host != tt.wantHost {
				t.Errorf("host %s, want %s", cfg.Host, tt.wantHost)
			}
			if cfg.BearerToken != "secret-token" {
				t.Errorf("token %q, want the kubeconfig's", cfg.BearerToken)
			}
			// A relative certificate-authority is the kubeconfig's directory's.
			if want := filepath.Join(dir, "ca.crt"); cfg.TLSClientConfig.CAFile != want {
				t.Errorf("CA file %s, want %s", cfg.TLSClientConfig.CAFile, want)
			}
		})
	}
}

func TestClientConfigBadFallback(t *testing.T) {
	_, caPEM := selfSigned(t, "localhost")
	k := writeKubeconfig(t, t.TempDir(), "k.yaml", "https://10.0.0.1:6443", caPEM)
	_, _, err := clientConfig(Options{Kubeconfig: k, FallbackServers: []string{"https://127.0.0.1:6443", "ftp://x"}}, envOf(nil))
	if err == nil || !strings.Contains(err.Error(), `fallback_servers[1] "ftp://x"`) {
		t.Fatalf("error %v, want one naming fallback_servers[1]", err)
	}
}

func TestHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"https://10.0.0.1:6443":     "10.0.0.1:6443",
		"https://api-int.example":   "api-int.example:443",
		"http://127.0.0.1":          "127.0.0.1:80",
		"https://[2001:db8::1]:443": "[2001:db8::1]:443",
		"10.0.0.1:6443":             "10.0.0.1:6443",
		"https://api:6443/prefix":   "api:6443",
	} {
		got, err := hostPort(in)
		if err != nil || got != want {
			t.Errorf("hostPort(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// listener returns a loopback listener that accepts one connection at a
// time into accepted.
func listener(t *testing.T) (string, <-chan net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			accepted <- c
		}
	}()
	return l.Addr().String(), accepted
}

func expectAccept(t *testing.T, accepted <-chan net.Conn, what string) {
	t.Helper()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s never saw the connection", what)
	}
}

func TestFallbackDialer(t *testing.T) {
	ctx := context.Background()
	t.Run("primary down, fallback used", func(t *testing.T) {
		primary := closedPort(t)
		dead := closedPort(t)
		fb, accepted := listener(t)
		d, err := newFallbackDialer("https://"+primary, []string{"https://" + dead, "https://" + fb}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := d.DialContext(ctx, "tcp", primary)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := c.RemoteAddr().String(); got != fb {
			t.Errorf("connected to %s, want the fallback %s", got, fb)
		}
		expectAccept(t, accepted, "the fallback")
		if got := d.Last(); got != fb {
			t.Errorf("Last() = %q, want %q", got, fb)
		}
	})
	t.Run("primary up, primary used", func(t *testing.T) {
		primary, accepted := listener(t)
		fb, fbAccepted := listener(t)
		d, err := newFallbackDialer("https://"+primary, []string{"https://" + fb}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := d.DialContext(ctx, "tcp", primary)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		expectAccept(t, accepted, "the primary")
		if got := d.Last(); got != primary {
			t.Errorf("Last() = %q, want %q", got, primary)
		}
		select {
		case <-fbAccepted:
			t.Error("the fallback was dialled although the primary answered")
		default:
		}
	})
	t.Run("all down, error names each", func(t *testing.T) {
		primary, fb := closedPort(t), closedPort(t)
		d, err := newFallbackDialer("https://"+primary, []string{"https://" + fb}, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.DialContext(ctx, "tcp", primary)
		if err == nil {
			t.Fatal("dial succeeded with nothing listening")
		}
		for _, w := range []string{"kubeconfig server " + primary, "fallback server " + fb} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not name %q", err, w)
			}
		}
		if d.Last() != "" {
			t.Errorf("Last() = %q with nothing answering", d.Last())
		}
	})
	t.Run("other destinations dialled as they are", func(t *testing.T) {
		other, accepted := listener(t)
		d, err := newFallbackDialer("https://"+closedPort(t), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, err := d.DialContext(ctx, "tcp", other)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		expectAccept(t, accepted, "the other address")
	})
}

// selfSigned returns a certificate for DNS name host only (no IP SAN)
// and its PEM.
func selfSigned(t *testing.T, host string) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestFallbackKeepsTLSIdentity runs a client built from a kubeconfig whose
// server (localhost, a closed port) is down against a fallback at
// 127.0.0.1 whose certificate names only "localhost": the request must
// succeed with SNI "localhost", as the api-int certificate does on
// OpenShift when reached at 127.0.0.1.
func TestFallbackKeepsTLSIdentity(t *testing.T) {
	cert, caPEM := selfSigned(t, "localhost")
	sni := make(chan string, 8)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sni <- r.TLS.ServerName
		if r.Header.Get("Authorization") != "Bearer secret-token" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"major":"1","minor":"37","gitVersion":"v1.37.2"}`)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()

	_, port, _ := net.SplitHostPort(closedPort(t))
	k := writeKubeconfig(t, t.TempDir(), "k.yaml", "https://localhost:"+port, caPEM)
	cfg, d, err := clientConfig(Options{Kubeconfig: k, FallbackServers: []string{srv.URL}}, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := client.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version through the fallback: %v", err)
	}
	if v.GitVersion != "v1.37.2" {
		t.Errorf("version %q", v.GitVersion)
	}
	if got := <-sni; got != "localhost" {
		t.Errorf("SNI %q, want the kubeconfig server's name localhost", got)
	}
	if want := strings.TrimPrefix(srv.URL, "https://"); d.Last() != want {
		t.Errorf("Last() = %q, want %q", d.Last(), want)
	}
}

// The exported RESTConfig is the Source's: the kubeconfig's server, the
// fallback dialer and vigil's user agent.
func TestRESTConfigExported(t *testing.T) {
	_, caPEM := selfSigned(t, "localhost")
	k := writeKubeconfig(t, t.TempDir(), "k.yaml", "https://10.0.0.1:6443", caPEM)
	cfg, err := RESTConfig(Options{Kubeconfig: k, FallbackServers: []string{"https://127.0.0.1:6443"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://10.0.0.1:6443" || cfg.Dial == nil || cfg.UserAgent != "vigil" {
		t.Fatalf("host %s, dial set %v, user agent %q", cfg.Host, cfg.Dial != nil, cfg.UserAgent)
	}
	if _, err := RESTConfig(Options{Kubeconfig: k, FallbackServers: []string{"ftp://x"}}); err == nil {
		t.Fatal("a bad fallback server is accepted")
	}
}
