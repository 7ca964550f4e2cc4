package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/manifest"
)

// systemdUnit runs vigil under systemd with sd_notify and the watchdog.
const systemdUnit = `[Unit]
Description=vigil: virtual IPs, health checks and L4 load balancing
Documentation=https://github.com/vigil-lb/vigil
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
ExecStartPre=/usr/local/bin/vigil check -c /etc/vigil/vigil.yaml
ExecStart=/usr/local/bin/vigil run -c /etc/vigil/vigil.yaml --pid-file /run/vigil/vigil.pid
ExecReload=/usr/local/bin/vigil reload -c /etc/vigil/vigil.yaml
Restart=always
RestartSec=1s
WatchdogSec=10s
TimeoutStopSec=15s
RuntimeDirectory=vigil
RuntimeDirectoryMode=0755
AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_SYS_RESOURCE
LimitNOFILE=1048576
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true

[Install]
WantedBy=multi-user.target
`

func manifestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "manifest",
		Short: "Print deployment manifests (static pod, DaemonSet, systemd unit)",
	}
	var image, namespace, httpAddr string
	common := func(c *cobra.Command) {
		c.Flags().StringVar(&image, "image", "ghcr.io/vigil-lb/vigil:"+version(), "container image")
		c.Flags().StringVar(&namespace, "namespace", "kube-system", "namespace of the pods")
		c.Flags().StringVar(&httpAddr, "http", config.DefaultHTTP, "the config's api.http, for the liveness probe")
	}
	container := func() (manifest.Container, error) {
		ap, err := config.ParseListen(httpAddr)
		if err != nil {
			return manifest.Container{}, &exitError{2, fmt.Errorf("--http: %w", err)}
		}
		host := ap.Addr().String()
		if ap.Addr().IsUnspecified() {
			host = "127.0.0.1"
		}
		return manifest.Container{Image: image, Namespace: namespace, ProbeHost: host, ProbePort: int(ap.Port())}, nil
	}

	var configDir, kubeconfig string
	pod := &cobra.Command{
		Use:   "static-pod",
		Short: "Print a Kubernetes static pod manifest for /etc/kubernetes/manifests",
		Long: `Print a static pod manifest that runs vigil with host networking from the
config in --config-dir. Run on the node, it reads that directory's
vigil.yaml, when there is one, for the liveness probe's address (its
api.http) unless --http is given.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := filepath.Join(configDir, "vigil.yaml")
			if !cmd.Flags().Changed("http") {
				if err := httpFromConfig(path, &httpAddr); err != nil {
					return err
				}
			}
			cfg, err := loadIfThere(path)
			if err != nil {
				return err
			}
			c, err := container()
			if err != nil {
				return err
			}
			c.XDP = usesXDP(cfg)
			return manifest.Write(cmd.OutOrStdout(), manifest.StaticPod(manifest.PodOptions{
				Container: c, HostConfigDir: configDir, Kubeconfig: kubeconfig}))
		},
	}
	common(pod)
	pod.Flags().StringVar(&configDir, "config-dir", manifest.ConfigDir, "host directory holding vigil.yaml")
	pod.Flags().StringVar(&kubeconfig, "kubeconfig", manifest.Kubeconfig,
		`host kubeconfig mounted read-only at the same path (OpenShift's); "" mounts none`)

	var configFile, selector string
	ds := &cobra.Command{
		Use:   "daemonset",
		Short: "Print a DaemonSet with its ServiceAccount, read-only ClusterRole and binding, and config in a ConfigMap",
		Long: `Print a DaemonSet with its ServiceAccount, ClusterRole (get, list and watch of
Nodes and EndpointSlices, nothing else; with kubernetes.services in the -c
file also Services, their status, Events and the allocator's Lease),
ClusterRoleBinding and a ConfigMap
holding the config: the file -c names (validated first, its api.http used for
the liveness probe unless --http is given), else a commented example.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data := []byte(manifest.Example)
			services, xdp := false, false
			if configFile != "" {
				cfg, err := config.Load(configFile)
				if err != nil {
					return &exitError{2, err}
				}
				services = cfg.Kubernetes != nil && cfg.Kubernetes.Services != nil
				xdp = usesXDP(cfg)
				if data, err = os.ReadFile(configFile); err != nil {
					return &exitError{2, fmt.Errorf("config: %w", err)}
				}
				if !cmd.Flags().Changed("http") {
					if err := httpFromConfig(configFile, &httpAddr); err != nil {
						return err
					}
				}
			}
			c, err := container()
			if err != nil {
				return err
			}
			c.XDP = xdp
			return manifest.Write(cmd.OutOrStdout(),
				manifest.ServiceAccount(namespace), manifest.ClusterRole(services), manifest.ClusterRoleBinding(namespace),
				manifest.ConfigMap(namespace, data),
				manifest.DaemonSet(manifest.DaemonSetOptions{Container: c, NodeSelector: selector}))
		},
	}
	common(ds)
	ds.Flags().StringVarP(&configFile, "config", "c", "", "config file to put in the ConfigMap (default: a commented example)")
	ds.Flags().StringVar(&selector, "node-selector", manifest.ControlPlane,
		`node label KEY or KEY=VALUE the pods run on (a NoSchedule taint of KEY is tolerated); "" for every node`)

	unit := &cobra.Command{
		Use:   "systemd",
		Short: "Print a systemd unit (Type=notify, watchdog, reload)",
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprint(cmd.OutOrStdout(), systemdUnit) },
	}
	cmd.AddCommand(pod, ds, unit)
	return cmd
}

// httpFromConfig sets addr to the api.http of the config file at path, the
// address the liveness probe asks. A file that does not exist changes
// nothing (the manifest may be written on another host than the node's);
// one that does not validate, or turns api.http off, is an error: the pod
// would not run, or its probe would fail.
func httpFromConfig(path string, addr *string) error {
	cfg, err := loadIfThere(path)
	if err != nil || cfg == nil {
		return err
	}
	if cfg.API.HTTP == "" {
		return &exitError{2, fmt.Errorf("%s: api.http is off, and the liveness probe asks its /healthz", path)}
	}
	*addr = cfg.API.HTTP
	return nil
}

// loadIfThere loads the config at path; nil when there is no file.
func loadIfThere(path string) (*config.Config, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, &exitError{2, err}
	}
	return cfg, nil
}

// usesXDP tells a config that steers packets with XDP: dsr balancers, or
// LoadBalancer Services with dataplane dsr. Its container needs CAP_BPF.
func usesXDP(cfg *config.Config) bool {
	if cfg == nil {
		return false
	}
	if s := cfg.Kubernetes; s != nil && s.Services != nil && s.Services.Dataplane == "dsr" {
		return true
	}
	for _, b := range cfg.Balancers {
		if b.Mode == "dsr" {
			return true
		}
	}
	return false
}
