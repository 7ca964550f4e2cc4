// Package xdp is vigil's direct-server-return dataplane: an XDP program
// (bpf/dsr.c) that sends packets for a service to a backend chosen by the
// service's Maglev table or by connection tracking, and the Go side that
// loads it and keeps its maps in step with the config and health checks.
//
// The collection Load puts into the kernel holds the daemon's program,
// xdp_dsr, and its maps, nothing else. The programs the lab needs around
// it (a traffic generator, pass and drop receivers, the MAC-swap baseline
// of the benchmark) are not part of this package: they live in
// internal/xdp/xdplab, which only tests and bench drivers import, so the
// daemon neither loads nor embeds them.
package xdp
