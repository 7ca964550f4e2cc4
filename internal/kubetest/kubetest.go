// Package kubetest runs a real etcd and kube-apiserver for tests, built
// from Go modules by tools/k8s/build.sh (there is no Debian package), so
// that vigil's Kubernetes code is tested against the API server it meets
// in a cluster, with its RBAC, watch and error behaviour, not a fake.
package kubetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-lb/vigil/internal/netlab"
)

// Options say where the API server runs.
type Options struct {
	// Host runs etcd and the API server inside this lab host, listening on
	// its address, so that vigil nodes in other namespaces reach it over
	// the lab switch. Nil: this process's namespace, on 127.0.0.1.
	Host *netlab.Host
	// Port of the API server. Default: a free port (loopback) or 6443 (Host).
	Port int
	// SANs are extra addresses the serving certificate holds (an API VIP).
	SANs []netip.Addr
}

// Env is a running etcd and kube-apiserver.
type Env struct {
	// URL of the API server, https://ADDRESS:PORT.
	URL string
	// Addr is the API server's address and port.
	Addr netip.AddrPort
	// CAFile holds the CA that signed the serving certificate; CAData its PEM.
	CAFile string
	CAData []byte
	// AdminToken belongs to a system:masters user.
	AdminToken string
	// UserToken belongs to UserName, a user with no rights until Bind.
	UserToken string
	UserName  string
	// Dir holds the certificates, keys, data and logs.
	Dir string

	opts    Options
	apiArgs []string
	apiBin  string

	mu   sync.Mutex
	etcd *proc
	api  *proc
}

// UserName is the non-admin user of every Env.
const UserName = "vigil-test"

// Binaries returns the paths of kube-apiserver and etcd: in $VIGIL_K8S_BIN,
// else in tools/k8s/bin of the repository this package is in.
func Binaries() (apiserver, etcd string, err error) {
	dir := os.Getenv("VIGIL_K8S_BIN")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", "tools", "k8s", "bin")
	}
	apiserver, etcd = filepath.Join(dir, "kube-apiserver"), filepath.Join(dir, "etcd")
	for _, p := range []string{apiserver, etcd} {
		if _, err := os.Stat(p); err != nil {
			return "", "", fmt.Errorf("kubetest: %s missing: run tools/k8s/build.sh (make test does): %w", p, err)
		}
	}
	return apiserver, etcd, nil
}

// Start starts etcd and the API server and waits until /readyz answers.
// Close stops them and removes Dir.
func Start(o Options) (env *Env, err error) {
	apiBin, etcdBin, err := Binaries()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "vigil-kubetest-")
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	e := &Env{Dir: dir, opts: o, apiBin: apiBin, UserName: UserName}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	addr := netip.MustParseAddr("127.0.0.1")
	if o.Host != nil {
		addr = o.Host.Addr(false)
	}
	apiPort, etcdPort, peerPort := o.Port, 2379, 2380
	if o.Host == nil {
		ports, err := freePorts(3)
		if err != nil {
			return nil, err
		}
		if apiPort == 0 {
			apiPort = ports[0]
		}
		etcdPort, peerPort = ports[1], ports[2]
	} else if apiPort == 0 {
		apiPort = 6443
	}
	e.Addr = netip.AddrPortFrom(addr, uint16(apiPort))
	e.URL = "https://" + e.Addr.String()
	if err := e.writeSecrets(append([]netip.Addr{addr}, o.SANs...)); err != nil {
		return nil, err
	}

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	e.etcd, err = e.start(etcdBin, "etcd.log",
		"--data-dir", filepath.Join(dir, "etcd"), "--unsafe-no-fsync",
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL)
	if err != nil {
		return nil, err
	}
	e.apiArgs = []string{
		"--etcd-servers", etcdURL,
		"--bind-address", addr.String(), "--advertise-address", addr.String(),
		"--secure-port", strconv.Itoa(apiPort),
		"--tls-cert-file", filepath.Join(dir, "serving.crt"),
		"--tls-private-key-file", filepath.Join(dir, "serving.key"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		// Dual-stack, so that IPv6 and dual-stack Services can be created;
		// a Service that asks for nothing is still single-stack IPv4.
		"--service-cluster-ip-range", "10.96.0.0/16,fd00:10:96::/112",
		"--disable-admission-plugins", "ServiceAccount",
		"--endpoint-reconciler-type", "none",
		"--enable-priority-and-fairness=false", "--profiling=false",
	}
	if err := e.StartAPI(); err != nil {
		return nil, err
	}
	return e, nil
}

// StartAPI starts the API server (again, after StopAPI) on the same
// address and store, and waits until it is ready.
func (e *Env) StartAPI() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.api != nil && !e.api.exited() {
		return errors.New("kubetest: the API server is running")
	}
	p, err := e.start(e.apiBin, "apiserver.log", e.apiArgs...)
	if err != nil {
		return err
	}
	e.api = p
	return e.waitReady(90 * time.Second)
}

// StopAPI kills the API server (etcd keeps running): an API outage.
func (e *Env) StopAPI() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.api != nil {
		e.api.kill()
	}
}

// Close stops the API server and etcd and removes Dir.
func (e *Env) Close() {
	e.mu.Lock()
	for _, p := range []*proc{e.api, e.etcd} {
		if p != nil {
			p.kill()
		}
	}
	e.mu.Unlock()
	_ = os.RemoveAll(e.Dir)
}

// waitReady polls /readyz until it answers 200.
func (e *Env) waitReady(limit time.Duration) error {
	hc, err := e.httpClient()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		if e.api.exited() {
			return fmt.Errorf("kubetest: kube-apiserver exited: %s", e.tail("apiserver.log"))
		}
		req, _ := http.NewRequest(http.MethodGet, e.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+e.AdminToken)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kubetest: kube-apiserver not ready after %v (%s): %s", limit, last, e.tail("apiserver.log"))
}

// tail returns the end of a log file in Dir, for error messages.
func (e *Env) tail(name string) string {
	b, _ := os.ReadFile(filepath.Join(e.Dir, name))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// proc is a child process.
type proc struct {
	cmd  *exec.Cmd
	lab  *netlab.Proc
	done chan struct{}
}

func (p *proc) exited() bool {
	if p.lab != nil {
		return p.lab.Exited()
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) kill() {
	if p.lab != nil {
		p.lab.Kill()
		return
	}
	if !p.exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// start runs bin with args, its output in Dir/logName: in the lab host,
// or from a thread that never exits, so that Pdeathsig kills the child
// when the test binary dies, and only then.
func (e *Env) start(bin, logName string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(filepath.Join(e.Dir, logName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if e.opts.Host != nil {
		lp, err := e.opts.Host.Start(cmd)
		if err != nil {
			return nil, fmt.Errorf("kubetest: start %s: %w", filepath.Base(bin), err)
		}
		return &proc{cmd: cmd, lab: lp}, nil
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := spawn(cmd); err != nil {
		return nil, fmt.Errorf("kubetest: start %s: %w", filepath.Base(bin), err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

var (
	spawnOnce sync.Once
	spawnReq  chan spawnJob
)

type spawnJob struct {
	cmd *exec.Cmd
	err chan error
}

// spawn starts cmd from one locked thread that lives as long as the
// process: Pdeathsig follows the thread, not the process, and Go ends
// threads whose goroutine exits while locked (netlab does that).
func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReq = make(chan spawnJob)
		go func() {
			runtime.LockOSThread()
			for j := range spawnReq {
				j.err <- j.cmd.Start()
			}
		}()
	})
	j := spawnJob{cmd, make(chan error, 1)}
	spawnReq <- j
	return <-j.err
}

// freePorts returns n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("kubetest: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// writeSecrets writes a CA, the serving certificate for addrs (and
// localhost), the tokens and the service-account key pair.
func (e *Env) writeSecrets(addrs []netip.Addr) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("kubetest: CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vigil-kubetest-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("kubetest: CA: %w", err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("kubetest: serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, a := range addrs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("kubetest: serving certificate: %w", err)
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("kubetest: service-account key: %w", err)
	}
	e.CAData = pemBlock("CERTIFICATE", caDER)
	e.CAFile = filepath.Join(e.Dir, "ca.crt")
	e.AdminToken, e.UserToken = rand.Text(), rand.Text()
	keyDER, _ := x509.MarshalECPrivateKey(key)
	saDER, _ := x509.MarshalECPrivateKey(saKey)
	saPub, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	files := map[string][]byte{
		"ca.crt":      e.CAData,
		"serving.crt": pemBlock("CERTIFICATE", der),
		"serving.key": pemBlock("EC PRIVATE KEY", keyDER),
		"sa.key":      pemBlock("EC PRIVATE KEY", saDER),
		"sa.pub":      pemBlock("PUBLIC KEY", saPub),
		"tokens.csv": fmt.Appendf(nil, "%s,admin,admin-uid,\"system:masters\"\n%s,%s,%s-uid\n",
			e.AdminToken, e.UserToken, UserName, UserName),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(e.Dir, name), data, 0o600); err != nil {
			return fmt.Errorf("kubetest: %w", err)
		}
	}
	return nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// ctxTimeout is the bound of one API call made by a helper.
func ctxTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}
