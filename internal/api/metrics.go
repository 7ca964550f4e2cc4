package api

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// collector turns a snapshot into Prometheus metrics at scrape time, so the
// daemon keeps one set of counters and metrics can never disagree with status.
type collector struct{ src Source }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("vigil_"+name, help, labels, nil)
}

// Label names: a VRRP instance is vrrp_instance, since instance (and job)
// are the labels Prometheus gives every target it scrapes; a metric label of
// that name would be renamed exported_instance at ingestion.

// States a VRRP instance can be in, for the one-hot state gauge.
var vrrpStates = []string{"INIT", "BACKUP", "MASTER", "FAULT"}

// States a BFD session can be in, for its one-hot state gauge.
var bfdStates = []string{"AdminDown", "Down", "Init", "Up"}

var (
	dInfo          = desc("info", "Always 1; labels say which vigil this is.", "version", "node", "cluster")
	dStart         = desc("start_time_seconds", "When the daemon started, in Unix seconds.")
	dReloadOK      = desc("config_last_reload_successful", "1 when the last reload of the config file applied (or none was tried), 0 when it was refused.")
	dReloadOKAt    = desc("config_last_reload_success_timestamp_seconds", "When a reload of the config file last applied (the start if none), in Unix seconds.")
	dVRRPState     = desc("vrrp_state", "1 for the state the instance is in, 0 for the others.", "vrrp_instance", "state")
	dVRRPPriority  = desc("vrrp_priority", "Effective priority (configured plus tracking weights).", "vrrp_instance")
	dVRRPConfPrio  = desc("vrrp_configured_priority", "Configured priority.", "vrrp_instance")
	dVRRPTrans     = desc("vrrp_transitions_total", "State transitions.", "vrrp_instance")
	dVRRPSent      = desc("vrrp_adverts_sent_total", "Adverts sent.", "vrrp_instance")
	dVRRPRecv      = desc("vrrp_adverts_received_total", "Adverts accepted from the instance's group.", "vrrp_instance")
	dVRRPDrops     = desc("vrrp_adverts_dropped_total", "Adverts dropped, by reason.", "vrrp_instance", "reason")
	dVRRPForeign   = desc("vrrp_vrid_conflict_adverts_total", "Adverts for this VRID from another group (other VIPs, auth or peer): a VRID collision.", "vrrp_instance")
	dVRRPForeignAt = desc("vrrp_vrid_conflict_last_seen_seconds", "When another group's advert for this VRID was last seen, in Unix seconds; absent if never.", "vrrp_instance", "source")
	dVRRPARP       = desc("vrrp_arp_conflicts_total", "ARP audits (after a takeover's release window, and at each refresh) in which another host answered for a VIP.", "vrrp_instance")
	dVRRPARPNow    = desc("vrrp_arp_conflict", "VIPs another host answers ARP for now, by the last audit of each; 0 once an audit hears no one, or when not master.", "vrrp_instance")
	dGARPSent      = desc("garp_sent_total", "Gratuitous ARP and unsolicited NA frames sent.", "interface")
	dVRRPSockDrops = desc("vrrp_socket_drops_total", "VRRP messages the kernel dropped on the interface's raw sockets because the receive queue was full (SO_RXQ_OVFL); counted as of the last message read.", "interface")
	dGARPSupp      = desc("garp_suppressed_total", "Gratuitous ARP/NA frames not sent because of the per-interface rate limit.", "interface")
	dCheckUp       = desc("check_up", "1 when the check is up.", "check")
	dCheckLatency  = desc("check_latency_seconds", "Duration of the last probe.", "check")
	dCheckProbes   = desc("check_probes_total", "Probes run.", "check")
	dCheckFails    = desc("check_failures_total", "Probes that failed.", "check")
	dBalRunning    = desc("balancer_running", "1 while the balancer serves; 0 when it could not start (mode dsr without BPF rights: status says why).", "balancer")
	dBalActive     = desc("balancer_connections", "Client connections open now.", "balancer")
	dBalAccepted   = desc("balancer_connections_accepted_total", "Client connections accepted.", "balancer")
	dBalRefused    = desc("balancer_connections_refused_total", "Client connections reset at max_conn.", "balancer")
	dBalNoBackend  = desc("balancer_no_backend_total", "Client connections closed because no backend could take them.", "balancer")
	dBalBadProxy   = desc("balancer_proxy_header_errors_total", "Client connections closed for a missing or malformed PROXY header.", "balancer")
	dBalFDExhaust  = desc("balancer_fd_exhausted_total", "accept() (the connection waits) or the backend socket() (the client is closed) failed for want of descriptors or socket memory: the node's limit, not a backend's error.", "balancer", "op")
	dBalPackets    = desc("balancer_packets_total", "Packets the XDP program steered to a backend (mode dsr).", "balancer")
	dBalBytes      = desc("balancer_bytes_total", "IP bytes the XDP program steered to a backend (mode dsr).", "balancer")
	dXDPPackets    = desc("xdp_packets_total", "Packets the XDP program handled, by verdict.", "verdict")
	dBGPSession    = desc("bgp_session_established", "1 while the BGP session with the neighbor is established.", "neighbor")
	dBGPFailures   = desc("bgp_session_failures", "Failed attempts in a row with the neighbor (0 once established).", "neighbor")
	dBGPAnnounced  = desc("bgp_announced", "1 for each prefix announced now.", "prefix")
	dBGPReceived   = desc("bgp_routes_received", "Routes the neighbor sent, all rejected on import (vigil only announces).", "neighbor")
	dBFDState      = desc("bfd_session_state", "1 for the state the BFD session with the neighbor is in, 0 for the others.", "neighbor", "state")
	dBFDFlaps      = desc("bfd_session_flaps_total", "Transitions of the BFD session to Down.", "neighbor")
	dBFDTx         = desc("bfd_session_tx_interval_seconds", "Negotiated transmit interval of the BFD session (before jitter).", "neighbor")
	dBFDRx         = desc("bfd_session_rx_interval_seconds", "Negotiated receive interval of the BFD session.", "neighbor")
	dBFDDetect     = desc("bfd_session_detection_time_seconds", "Silence from the neighbor that takes the BFD session down.", "neighbor")
	dBFDSent       = desc("bfd_packets_sent_total", "BFD control packets sent to the neighbor.", "neighbor")
	dBFDReceived   = desc("bfd_packets_received_total", "BFD control packets from the neighbor that its session took.", "neighbor")
	dBFDDropped    = desc("bfd_packets_dropped_total", "BFD control packets dropped before a session took them, by reason.", "reason")
	dKubeWatchUp   = desc("kubernetes_watch_up", "1 while every watch of the Kubernetes API is up.")
	dKubeSynced    = desc("kubernetes_synced", "1 once the members in force come from a full read of the API (0: state file or none).")
	dKubeObjects   = desc("kubernetes_objects", "Objects the source holds, by kind.", "kind")
	dKubeLastSync  = desc("kubernetes_last_sync_timestamp_seconds", "When the source last read a change from the API, in Unix seconds; absent if never.")
	dKubeChanges   = desc("kubernetes_changes_applied_total", "Membership changes from the API applied to the components.")
	dSvcAnnounced  = desc("service_address_announced", "1 while this node announces the LoadBalancer Service's address (holds it, or advertises it over BGP).", "service", "address", "pool")
	dPoolSize      = desc("service_pool_addresses", "Addresses a LoadBalancer pool holds.", "pool")
	dPoolInUse     = desc("service_pool_addresses_in_use", "Addresses of the pool that Services hold (distinct addresses).", "pool")
	dAllocLeading  = desc("service_allocator_leading", "1 while this node is the elected allocator that writes Service addresses.")
	dAllocFailing  = desc("service_allocation_failures", "Services that got no address (or not every family) at the allocator's last pass, as the leader saw them.")
	dAllocHeld     = desc("service_addresses_held", "Freed addresses the allocator holds back before reuse.")
	dRedirect      = desc("redirect_installed", "1 while the DNAT of a balancer's redirect_from is installed.", "balancer", "from")
	dBackendUp     = desc("backend_up", "1 when the backend's checks pass (a drained one, weight 0, is up: see vigil_backend_state).", "balancer", "backend")
	dBackendState  = desc("backend_state", "1 for the state the backend is in (up, down, drain: weight 0 or vigil backend drain, disabled: vigil backend disable), 0 for the others.", "balancer", "backend", "state")
	dBackendWeight = desc("backend_weight", "Configured weight.", "balancer", "backend")
	dBackendActive = desc("backend_connections_active", "Connections to the backend open now.", "balancer", "backend")
	dBackendTotal  = desc("backend_connections_total", "Connections made to the backend.", "balancer", "backend")
	dBackendErrors = desc("backend_connect_errors_total", "Failed connects to the backend.", "balancer", "backend")
	dBackendPkts   = desc("backend_packets_total", "Packets the XDP program steered to the backend (mode dsr).", "balancer", "backend")
	dBackendBytes  = desc("backend_bytes_total", "Bytes proxied: in is client to backend, out is backend to client.", "balancer", "backend", "direction")
)

func (c collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src()
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge(dInfo, 1, s.Version, s.Node, s.Cluster)
	gauge(dStart, float64(s.Started.UnixNano())/1e9)
	if r := s.LastReload; r != nil {
		gauge(dReloadOK, b2f(r.Successful))
		gauge(dReloadOKAt, float64(r.LastSuccess.UnixNano())/1e9)
	}
	for _, in := range s.Instances {
		for _, st := range vrrpStates {
			gauge(dVRRPState, b2f(in.State == st), in.Name, st)
		}
		gauge(dVRRPPriority, float64(in.EffectivePriority), in.Name)
		gauge(dVRRPConfPrio, float64(in.Priority), in.Name)
		counter(dVRRPTrans, in.Transitions, in.Name)
		counter(dVRRPSent, in.AdvertsSent, in.Name)
		counter(dVRRPRecv, in.AdvertsReceived, in.Name)
		for reason, n := range in.Drops {
			counter(dVRRPDrops, n, in.Name, reason)
		}
		var foreign uint64
		if f := in.Foreign; f != nil {
			foreign = f.Count
			gauge(dVRRPForeignAt, float64(f.LastSeen.UnixNano())/1e9, in.Name, f.Source)
		}
		counter(dVRRPForeign, foreign, in.Name)
		counter(dVRRPARP, in.ARPConflicts, in.Name)
		gauge(dVRRPARPNow, float64(len(in.ARPConflictsNow)), in.Name)
	}
	for _, i := range s.Interfaces {
		counter(dGARPSent, i.GARPSent, i.Name)
		counter(dGARPSupp, i.GARPSuppressed, i.Name)
		counter(dVRRPSockDrops, i.VRRPSocketDrops, i.Name)
	}
	for _, k := range s.Checks {
		gauge(dCheckUp, b2f(k.Up), k.Name)
		gauge(dCheckLatency, k.Latency.Seconds(), k.Name)
		counter(dCheckProbes, k.Probes, k.Name)
		counter(dCheckFails, k.Failures, k.Name)
	}
	if s.BGP != nil {
		for _, ss := range s.BGP.Sessions {
			gauge(dBGPSession, b2f(ss.State == "established"), ss.Neighbor)
			gauge(dBGPFailures, float64(ss.Failures), ss.Neighbor)
			gauge(dBGPReceived, float64(ss.RoutesReceived), ss.Neighbor)
		}
		for _, p := range s.BGP.Announced {
			gauge(dBGPAnnounced, 1, p)
		}
	}
	if b := s.BFD; b != nil {
		for _, ss := range b.Sessions {
			for _, st := range bfdStates {
				gauge(dBFDState, b2f(ss.State == st), ss.Neighbor, st)
			}
			counter(dBFDFlaps, ss.Flaps, ss.Neighbor)
			gauge(dBFDTx, ss.TxInterval.Seconds(), ss.Neighbor)
			gauge(dBFDRx, ss.RxInterval.Seconds(), ss.Neighbor)
			gauge(dBFDDetect, ss.DetectionTime.Seconds(), ss.Neighbor)
			counter(dBFDSent, ss.Sent, ss.Neighbor)
			counter(dBFDReceived, ss.Received, ss.Neighbor)
		}
		for reason, n := range b.Dropped {
			counter(dBFDDropped, n, reason)
		}
	}
	if k := s.Kubernetes; k != nil {
		gauge(dKubeWatchUp, b2f(k.WatchUp))
		gauge(dKubeSynced, b2f(k.Synced))
		gauge(dKubeObjects, float64(k.Nodes), "node")
		gauge(dKubeObjects, float64(k.Slices), "endpointslice")
		if !k.LastSync.IsZero() {
			gauge(dKubeLastSync, float64(k.LastSync.UnixNano())/1e9)
		}
		counter(dKubeChanges, k.ChangesApplied)
	}
	for _, p := range s.Pools {
		gauge(dPoolSize, p.Size, p.Name)
		gauge(dPoolInUse, float64(p.InUse), p.Name)
	}
	if a := s.Allocator; a != nil {
		gauge(dAllocLeading, b2f(a.Leading))
		gauge(dAllocFailing, float64(len(a.Failures)))
		gauge(dAllocHeld, float64(a.Held))
	}
	for _, sv := range s.Services {
		gauge(dSvcAnnounced, b2f(sv.Here), sv.Service, sv.Address, sv.Pool)
	}
	for _, r := range s.Redirects {
		gauge(dRedirect, b2f(r.Installed), r.Balancer, r.From)
	}
	for v, n := range s.XDP {
		counter(dXDPPackets, n, v)
	}
	for _, b := range s.Balancers {
		gauge(dBalRunning, b2f(b.Error == ""), b.Name)
		if b.Mode == "dsr" {
			counter(dBalPackets, b.Packets, b.Name)
			counter(dBalBytes, b.Bytes, b.Name)
		}
		gauge(dBalActive, float64(b.Active), b.Name)
		counter(dBalAccepted, b.Accepted, b.Name)
		counter(dBalRefused, b.Refused, b.Name)
		counter(dBalNoBackend, b.NoBackend, b.Name)
		counter(dBalBadProxy, b.BadProxyHeader, b.Name)
		if b.Mode != "dsr" {
			counter(dBalFDExhaust, b.FDExhaustedAccept, b.Name, "accept")
			counter(dBalFDExhaust, b.FDExhaustedConnect, b.Name, "connect")
		}
		for _, be := range b.Backends {
			gauge(dBackendUp, b2f(be.Up), b.Name, be.Address)
			st := be.State
			if st == "" {
				st = BackendState(be.Up, be.Weight, be.Admin)
			}
			for _, s := range BackendStates {
				gauge(dBackendState, b2f(st == s), b.Name, be.Address, s)
			}
			gauge(dBackendWeight, float64(be.Weight), b.Name, be.Address)
			gauge(dBackendActive, float64(be.Active), b.Name, be.Address)
			counter(dBackendTotal, be.Connections, b.Name, be.Address)
			counter(dBackendErrors, be.ConnectErrors, b.Name, be.Address)
			if b.Mode == "dsr" {
				counter(dBackendPkts, be.Packets, b.Name, be.Address)
			}
			counter(dBackendBytes, be.BytesIn, b.Name, be.Address, "in")
			counter(dBackendBytes, be.BytesOut, b.Name, be.Address, "out")
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// NewRegistry returns a registry with vigil's metrics and the standard Go
// and process collectors.
func NewRegistry(src Source) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collector{src}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}
