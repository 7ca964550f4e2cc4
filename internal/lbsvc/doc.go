// Package lbsvc makes vigil the cluster's LoadBalancer implementation: it
// watches Services of type LoadBalancer of vigil's class, and one elected
// vigil (the allocator) writes their addresses, from vigil's pools, into
// status.loadBalancer.ingress. Every vigil, elected or not, reads the
// addresses back from that status and hands them to the dataplane
// (Latest, Updates): status is the only truth, so a restart or a new
// allocator keeps every address.
//
// The election (a coordination.k8s.io Lease) only decides who writes
// allocations. It never touches what is announced: losing the Lease, or
// the API, changes no address.
//
// lbsvc decides and records; it does not announce. The address
// arithmetic is lbipam's (a pure function); announcing and carrying the
// traffic are the dataplane's.
package lbsvc
