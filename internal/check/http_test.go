package check

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-lb/vigil/internal/health"
)

func okRange() []StatusRange { return []StatusRange{{200, 399}} }

func TestHTTPStatusAndBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			w.Write([]byte("ok"))
		case "/host":
			w.Write([]byte(r.Host))
		case "/moved":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		case "/slow":
			time.Sleep(300 * time.Millisecond)
		default:
			http.Error(w, "nope", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	cases := []struct {
		name, path, host, body string
		expect                 []StatusRange
		wantErr                string
	}{
		{name: "ok", path: "/readyz", expect: okRange()},
		{name: "body found", path: "/readyz", body: "ok", expect: okRange()},
		{name: "body missing", path: "/readyz", body: "ready", expect: okRange(), wantErr: "does not contain"},
		{name: "503", path: "/x", expect: okRange(), wantErr: "status 503"},
		{name: "503 expected", path: "/x", expect: []StatusRange{{503, 503}}},
		{name: "redirect is a status", path: "/moved", expect: []StatusRange{{200, 299}}, wantErr: "status 302"},
		{name: "host header", path: "/host", host: "api.example", body: "api.example", expect: okRange()},
		{name: "timeout", path: "/slow", expect: okRange(), wantErr: "timed out"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := NewHTTP(srv.URL+c.path, "GET", c.host, c.expect, c.body, TLSOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
			defer cancel()
			err = h.Probe(ctx)
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
		})
	}
}

// selfSigned makes a CA-less self-signed certificate for 127.0.0.1 and
// writes it and its key as PEM files.
func selfSigned(t *testing.T, name string) (tls.Certificate, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{name},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert, certFile, keyFile
}

func TestHTTPS(t *testing.T) {
	serverCert, serverCA, _ := selfSigned(t, "api.internal")
	_, clientCert, clientKey := selfSigned(t, "client")
	clientPool := x509.NewCertPool()
	pemBytes, _ := os.ReadFile(clientCert)
	clientPool.AppendCertsFromPEM(pemBytes)

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client cert", http.StatusUnauthorized)
			return
		}
		w.Write([]byte("ok"))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: clientPool}
	srv.StartTLS()
	defer srv.Close()

	cases := []struct {
		name    string
		host    string
		opts    TLSOptions
		wantErr string
	}{
		{name: "unknown CA", opts: TLSOptions{}, wantErr: "certificate"},
		{name: "insecure, no client cert", opts: TLSOptions{InsecureSkipVerify: true}, wantErr: "status 401"},
		{name: "insecure with client cert", opts: TLSOptions{InsecureSkipVerify: true, ClientCert: clientCert, ClientKey: clientKey}},
		{name: "ca file and server name", host: "api.internal", opts: TLSOptions{CAFile: serverCA, ClientCert: clientCert, ClientKey: clientKey}},
		{name: "ca file, wrong name", host: "other.internal", opts: TLSOptions{CAFile: serverCA}, wantErr: "certificate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := NewHTTP(srv.URL+"/readyz", "GET", c.host, okRange(), "", c.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err = h.Probe(ctx)
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
		})
	}
	if _, err := NewHTTP(srv.URL, "GET", "", okRange(), "", TLSOptions{CAFile: "/nonexistent/ca.pem"}); err == nil {
		t.Fatal("missing ca_file accepted")
	}
}

func TestRunnerStatus(t *testing.T) {
	store := health.New()
	fails := make(chan error, 10)
	r := &Runner{Name: "s", Key: health.CheckKey("s"), Health: store, Prober: proberFunc(func(context.Context) error { return <-fails }),
		Interval: 10 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: 1, Fall: 2, Log: discard()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	fails <- errBad
	fails <- errBad
	if st := waitState(t, store, health.CheckKey("s"), false); st.Reason != errBad.Error() {
		t.Fatalf("down with reason %q", st.Reason)
	}
	st := r.Status()
	if st.Up || st.Probes != 2 || st.Failures != 2 || st.LastErr != errBad.Error() || st.LastProbe.IsZero() {
		t.Fatalf("status %+v", st)
	}
}

type proberFunc func(context.Context) error

func (f proberFunc) Probe(ctx context.Context) error { return f(ctx) }

var errBad = errors.New("bad")

// waitState waits until key has the given up state in store and returns it.
func waitState(t *testing.T, store *health.Store, key health.Key, up bool) health.State {
	t.Helper()
	sub := store.Subscribe()
	defer sub.Close()
	deadline := time.After(10 * time.Second)
	for {
		if st, ok := store.Get(key); ok && st.Up == up {
			return st
		}
		select {
		case <-sub.Wake():
			sub.Changes()
		case <-deadline:
			st, ok := store.Get(key)
			t.Fatalf("%v: state %+v (known %v), want up=%v", key, st, ok, up)
		}
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// After a first failure while up, the next probe comes after FastInterval,
// not Interval, so a real failure is confirmed quickly.
func TestFastIntervalConfirmsQuickly(t *testing.T) {
	store := health.New()
	var mu sync.Mutex
	var times []time.Time
	r := &Runner{Name: "f", Prober: proberFunc(func(context.Context) error {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		return errBad
	}), Interval: 2 * time.Second, FastInterval: 10 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 4,
		Key: health.CheckKey("f"), Health: store, Log: discard()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	waitState(t, store, health.CheckKey("f"), false)
	mu.Lock()
	defer mu.Unlock()
	if len(times) != 4 {
		t.Fatalf("%d probes before down, want 4", len(times))
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap >= r.Interval {
			t.Fatalf("probe %d came %v after the failure before it: the interval, not the fast interval", i, gap)
		}
	}
}
