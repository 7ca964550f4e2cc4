package manifest

// Example is the config a DaemonSet's ConfigMap holds when none is given:
// a valid starting point whose comments say what to change. Every node
// runs the same file, so node names come from the hostname.
const Example = `# vigil config for the DaemonSet: every node runs this file (node: defaults
# to the hostname). Change the interface, the VIP and the backends, then
# check it with "vigil check -c vigil.yaml". Keys: docs/config.md.
cluster: my-cluster            # VRIDs derive from it; unique per L2 segment
vrrp:
  instances:
    - name: api
      interface: eth0          # the node's interface on the VIP's subnet
      priority: 100
      vips: [192.0.2.10/32]    # the API VIP
      track:
        checks: [{name: api-lb, weight: -50}]
checks:
  - name: api-lb               # this node's balancer answers
    tcp: {address: "127.0.0.1:9445"}
    interval: 2s
    timeout: 1s
balancers:
  - name: api
    listen: [":9445"]          # :6443 belongs to the node's kube-apiserver
    backends:                  # the control-plane nodes' API servers
      - {address: "192.0.2.11:6443"}
      - {address: "192.0.2.12:6443"}
      - {address: "192.0.2.13:6443"}
    check: {http: {path: /readyz, tls: true}, interval: 3s, fall: 2, rise: 3}
api:
  http: 127.0.0.1:9110         # the liveness probe asks /healthz here
`
