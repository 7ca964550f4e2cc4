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
// Freed addresses are held back for Options.Hold (30s) before another
// Service may get them, as a node with a slow watch may still announce
// one. Every vigil remembers, in memory, when each address left a status,
// so whichever is elected next knows. What it cannot know is what was
// freed before its own first list of the Services; so for Hold after that
// list it gives out no address that no Service held then: it keeps,
// shares and releases, and allocates new addresses when the Hold is over.
// A vigil started long enough before its election has no such delay.
//
// Writes are status updates carrying the resourceVersion the allocator
// saw (a conflict is retried on newer data, never overwritten), made only
// while the allocator's last Lease renewal is younger than RenewDeadline,
// each bounded by LeaseDuration-RenewDeadline, so that none lands after
// another vigil may have taken the Lease over. A new allocator first lists
// the Services from the API (not its cache) to see its predecessor's last
// writes.
//
// lbsvc decides and records; it does not announce. The address
// arithmetic is lbipam's (a pure function); announcing and carrying the
// traffic are the dataplane's.
package lbsvc
