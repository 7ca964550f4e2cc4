package main

import (
	"fmt"
	"strings"
	"text/template"

	"github.com/spf13/cobra"
	"github.com/vigil-lb/vigil/internal/config"
)

// staticPod is a kubelet static pod: host network, only the capabilities
// VRRP, ARP and VIPs need, config from the host, liveness on /healthz.
var staticPod = template.Must(template.New("pod").Parse(`apiVersion: v1
kind: Pod
metadata:
  name: vigil
  namespace: {{.Namespace}}
  labels:
    app: vigil
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  terminationGracePeriodSeconds: 15
  containers:
    - name: vigil
      image: {{.Image}}
      command: ["/vigil", "run", "-c", "{{.ConfigDir}}/vigil.yaml", "--pid-file", "/run/vigil/vigil.pid"]
      securityContext:
        capabilities:
          drop: ["ALL"]
          add: ["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"]
      livenessProbe:
        httpGet:
          host: {{.HTTPHost}}
          port: {{.HTTPPort}}
          path: /healthz
        initialDelaySeconds: 5
        periodSeconds: 10
        timeoutSeconds: 3
        failureThreshold: 3
      resources:
        requests:
          cpu: 50m
          memory: 64Mi
      volumeMounts:
        - name: config
          mountPath: {{.ConfigDir}}
          readOnly: true
        - name: run
          mountPath: /run/vigil
  volumes:
    - name: config
      hostPath:
        path: {{.ConfigDir}}
        type: Directory
    - name: run
      hostPath:
        path: /run/vigil
        type: DirectoryOrCreate
`))

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
ExecReload=/usr/local/bin/vigil reload -c /etc/vigil/vigil.yaml --pid-file /run/vigil/vigil.pid
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
		Short: "Print deployment manifests (static pod, systemd unit)",
	}
	var image, namespace, configDir, httpAddr string
	pod := &cobra.Command{
		Use:   "static-pod",
		Short: "Print a Kubernetes static pod manifest for /etc/kubernetes/manifests",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ap, err := config.ParseListen(httpAddr)
			if err != nil {
				return &exitError{2, fmt.Errorf("--http: %w", err)}
			}
			host := ap.Addr().String()
			if ap.Addr().IsUnspecified() {
				host = "127.0.0.1"
			}
			return staticPod.Execute(cmd.OutOrStdout(), map[string]any{
				"Image": image, "Namespace": namespace, "ConfigDir": strings.TrimSuffix(configDir, "/"),
				"HTTPHost": host, "HTTPPort": ap.Port(),
			})
		},
	}
	pod.Flags().StringVar(&image, "image", "ghcr.io/vigil-lb/vigil:"+version(), "container image")
	pod.Flags().StringVar(&namespace, "namespace", "kube-system", "namespace of the static pod")
	pod.Flags().StringVar(&configDir, "config-dir", "/etc/vigil", "host directory holding vigil.yaml")
	pod.Flags().StringVar(&httpAddr, "http", config.DefaultHTTP, "the config's api.http, for the liveness probe")
	unit := &cobra.Command{
		Use:   "systemd",
		Short: "Print a systemd unit (Type=notify, watchdog, reload)",
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprint(cmd.OutOrStdout(), systemdUnit) },
	}
	cmd.AddCommand(pod, unit)
	return cmd
}
