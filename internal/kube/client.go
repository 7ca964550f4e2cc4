package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options configure a Source.
type Options struct {
	// Kubeconfig is the kubeconfig file to use. Default: the in-cluster
	// service account when KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG.
	Kubeconfig string
	// FallbackServers are API server URLs (https://127.0.0.1:6443) dialled,
	// in order, when the kubeconfig's server does not answer within
	// PrimaryDialTimeout. Default: none.
	FallbackServers []string
	// StateFile keeps the last snapshot taken from the API, for a start
	// while the API is unreachable. Default: none (nothing written).
	StateFile string
	// Services are those whose EndpointSlices are watched. Default: none.
	Services []ServiceRef
	// WatchNodes watches Nodes cluster-wide. Default: false.
	WatchNodes bool
	// AllSlices watches the EndpointSlices of every Service, cluster-wide,
	// instead of those of Services (LoadBalancer Services come and go).
	AllSlices bool
	// WatchServices watches Services cluster-wide; the snapshot holds the
	// LoadBalancer ones.
	WatchServices bool
	// Coalesce is how long the first event of a burst waits for more
	// before the Source wakes its reader. Default: 50ms.
	Coalesce time.Duration
	// VerifyEvery is how often each informer's store is compared with a
	// consistent list from the API (package kubeverify); a persistent
	// difference makes the informer relist. Default (0):
	// kubeverify.DefaultEvery; negative disables.
	VerifyEvery time.Duration
	// Log receives one line per change of watch state. Default: discard.
	Log *slog.Logger

	// dropEvents, in tests, makes every watch drop its events while it
	// returns true: a watch that is up and delivers nothing.
	dropEvents func() bool
}

// DefaultCoalesce is Options.Coalesce when unset.
const DefaultCoalesce = 50 * time.Millisecond

// PrimaryDialTimeout bounds the dial of the kubeconfig's server when
// fallback servers are configured: long enough for a live server on a
// LAN, short enough that a dead VIP does not stall every reconnect.
const PrimaryDialTimeout = time.Second

// fallbackDialTimeout bounds the dial of each fallback server, and of the
// kubeconfig's server when there are none.
const fallbackDialTimeout = 5 * time.Second

// errNoKubeconfig is returned when no way to reach the API is configured.
var errNoKubeconfig = errors.New("kubernetes: no kubeconfig: set kubernetes.kubeconfig, run in a pod, or set $KUBECONFIG")

// restConfig resolves the REST config for o: the kubeconfig file if set;
// else in-cluster when KUBERNETES_SERVICE_HOST is set; else $KUBECONFIG.
// getenv is os.Getenv outside tests.
func restConfig(kubeconfig string, getenv func(string) string) (*rest.Config, error) {
	if kubeconfig != "" {
		return loadKubeconfig([]string{kubeconfig})
	}
	if getenv("KUBERNETES_SERVICE_HOST") != "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes: in-cluster config: %w", err)
		}
		return cfg, nil
	}
	if env := getenv("KUBECONFIG"); env != "" {
		var paths []string
		for _, p := range filepath.SplitList(env) {
			if p != "" {
				paths = append(paths, p)
			}
		}
		if len(paths) > 0 {
			return loadKubeconfig(paths)
		}
	}
	return nil, errNoKubeconfig
}

// loadKubeconfig loads and merges the kubeconfig files (kubectl's rules:
// the first file to set a value wins) and builds the current context's
// config. Relative paths inside a file are taken from the file's directory.
func loadKubeconfig(paths []string) (*rest.Config, error) {
	name := paths[0]
	if len(paths) > 1 {
		name = fmt.Sprintf("%v ($KUBECONFIG)", paths)
	}
	for _, p := range paths {
		// The loading rules skip missing files in a list; say which one
		// is missing rather than "no configuration has been provided".
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("kubernetes: kubeconfig %s: %w", p, err)
		}
	}
	rules := &clientcmd.ClientConfigLoadingRules{Precedence: paths}
	if len(paths) == 1 {
		rules = &clientcmd.ClientConfigLoadingRules{ExplicitPath: paths[0]}
	}
	raw, err := rules.Load()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: kubeconfig %s: %w", name, err)
	}
	cfg, err := clientcmd.NewDefaultClientConfig(*raw, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: kubeconfig %s: %w", name, err)
	}
	return cfg, nil
}

// hostPort returns the TCP destination of an API server URL.
func hostPort(server string) (string, error) {
	if !strings.Contains(server, "://") {
		server = "https://" + server // rest.Config.Host may be a bare host[:port]
	}
	u, err := url.Parse(server)
	if err != nil {
		return "", err
	}
	port := u.Port()
	switch {
	case port != "":
	case u.Scheme == "http":
		port = "80"
	case u.Scheme == "https" || u.Scheme == "":
		port = "443"
	default:
		return "", fmt.Errorf("scheme %q is not http or https", u.Scheme)
	}
	if u.Hostname() == "" {
		return "", errors.New("no host")
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// fallbackDialer dials the kubeconfig's server and, when it does not
// answer, the fallback servers in order.
//
// Only the TCP destination changes: TLS runs on top of the connection
// with the ServerName and CA of the kubeconfig's server, so the
// certificate is verified as if the kubeconfig's server had answered.
// This is what makes the bootstrap case work: the kubeconfig names the
// API VIP (api-int.<cluster>) that vigil itself serves, and a local
// apiserver reached at 127.0.0.1 still presents the api-int certificate
// because the apiserver (OpenShift's in particular) picks its serving
// certificate by SNI, which stays api-int. Rewriting rest.Config.Host
// instead would change the SNI and fail verification.
//
// Every new connection tries the kubeconfig's server first; a connection
// to a fallback server is kept (HTTP/2 multiplexes the watches over it)
// until it breaks, so vigil returns to the VIP on the next reconnect.
type fallbackDialer struct {
	primary   string   // host:port of the kubeconfig's server
	fallbacks []string // host:port of each fallback server, in order
	timeout   time.Duration
	log       *slog.Logger

	mu   sync.Mutex
	last string // the address that answered last
}

func newFallbackDialer(server string, fallbacks []string, log *slog.Logger) (*fallbackDialer, error) {
	primary, err := hostPort(server)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: kubeconfig server %q: %w", server, err)
	}
	d := &fallbackDialer{primary: primary, timeout: PrimaryDialTimeout, log: log}
	for i, f := range fallbacks {
		hp, err := hostPort(f)
		if err != nil {
			return nil, fmt.Errorf("kubernetes: fallback_servers[%d] %q: %w", i, f, err)
		}
		d.fallbacks = append(d.fallbacks, hp)
	}
	return d, nil
}

// DialContext is rest.Config.Dial.
func (d *fallbackDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if address != d.primary {
		// A proxy, or a redirect elsewhere: not ours to reroute.
		var nd net.Dialer
		return nd.DialContext(ctx, network, address)
	}
	try := func(addr string, timeout time.Duration) (net.Conn, error) {
		nd := net.Dialer{Timeout: timeout}
		c, err := nd.DialContext(ctx, network, addr)
		if err == nil {
			d.answered(addr)
		}
		return c, err
	}
	timeout := d.timeout
	if len(d.fallbacks) == 0 {
		timeout = fallbackDialTimeout // nothing to fall back to: no hurry
	}
	c, err := try(d.primary, timeout)
	if err == nil {
		return c, nil
	}
	errs := []error{fmt.Errorf("kubeconfig server %s: %w", d.primary, err)}
	for _, f := range d.fallbacks {
		if ctx.Err() != nil {
			break
		}
		c, ferr := try(f, fallbackDialTimeout)
		if ferr == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("fallback server %s: %w", f, ferr))
	}
	return nil, errors.Join(errs...)
}

func (d *fallbackDialer) answered(addr string) {
	d.mu.Lock()
	prev := d.last
	d.last = addr
	d.mu.Unlock()
	if prev != addr && d.log != nil {
		d.log.Info("kubernetes api server", "address", addr, "from", prev, "kubeconfig_server", d.primary)
	}
}

// Last returns the address that answered last, "" before any did.
func (d *fallbackDialer) Last() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}

// RESTConfig returns the REST config a Source built from o uses: the
// kubeconfig (or in-cluster config, or $KUBECONFIG) with its connections
// dialled through o's fallback servers. Other components that talk to the
// API (the LoadBalancer Service controller) reach it the same way.
func RESTConfig(o Options) (*rest.Config, error) {
	cfg, _, err := clientConfig(o, os.Getenv)
	return cfg, err
}

// clientConfig resolves o's REST config and routes its connections
// through a fallbackDialer, which it returns for status.
// ClientQPS and ClientBurst bound vigil's requests to the API server.
const (
	ClientQPS   = 100
	ClientBurst = 200
)

func clientConfig(o Options, getenv func(string) string) (*rest.Config, *fallbackDialer, error) {
	cfg, err := restConfig(o.Kubeconfig, getenv)
	if err != nil {
		return nil, nil, err
	}
	cfg.UserAgent = "vigil"
	// client-go's default of 5 requests/s (burst 10) holds 1,000 Services'
	// status writes back for minutes (docs/benchmarks.md); the API server's
	// own priority and fairness protects it.
	cfg.QPS, cfg.Burst = ClientQPS, ClientBurst
	if cfg.Dial != nil {
		// Nothing in a kubeconfig sets Dial; keep whatever did.
		return cfg, nil, nil
	}
	d, err := newFallbackDialer(cfg.Host, o.FallbackServers, o.Log)
	if err != nil {
		return nil, nil, err
	}
	cfg.Dial = d.DialContext
	return cfg, d, nil
}
