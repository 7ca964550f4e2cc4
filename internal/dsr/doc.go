// Package dsr is the control plane of the XDP direct-server-return
// dataplane: for every balancer of mode dsr it decides which interface
// reaches each backend, whether the program may run in native mode there,
// which MAC each backend has (neighbour table, else an ARP probe), and
// which backends are in each service's Maglev table, and keeps the
// program's maps (internal/xdp) in step. It follows the health store for
// its backends and publishes each balancer's health there.
//
// It decides; it does not touch the kernel itself. Links, addresses,
// neighbours, ARP probes and the program are behind Kernel and Dataplane,
// so that its logic is tested with fakes and without root; Linux returns
// the real ones. It is not the dataplane: internal/xdp holds the program
// and the code that loads it.
package dsr
