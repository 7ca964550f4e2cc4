// Package bfd is Bidirectional Forwarding Detection (RFC 5880) for vigil's
// BGP neighbors: the control packet codec, a session state machine in
// asynchronous mode over a clock and a transport it is given, the RFC 5881
// single-hop UDP transport (port 3784, TTL 255 sent and required), and the
// component that runs one session per configured neighbor and publishes
// each session's state to the health store, where the BGP speaker reads it
// to close a neighbor's session the moment its BFD session goes down.
//
// It is not a general BFD daemon: no echo function, no demand mode, no
// authentication (packets that carry an authentication section are
// dropped, as RFC 5880 6.8.6 asks of a session without it), no multihop.
// vigil always takes the active role.
package bfd
