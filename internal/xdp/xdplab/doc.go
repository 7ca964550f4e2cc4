// Package xdplab holds the XDP programs that tests and benchmarks put
// around vigil's dataplane (internal/xdp) in a namespace lab: a traffic
// generator that sends frames in live-frame mode (Generate), receivers
// that pass or drop everything (AttachPass, AttachDrop), and the MAC-swap
// baseline a benchmark compares xdp_dsr with (Swap).
//
// It is not part of the daemon: only _test.go files and bench/ drivers
// import it, so a daemon start never loads these programs and the vigil
// binary does not embed them. Their C source is bpf/lab.c, its bpf2go
// output (lab_bpfel.go, lab_bpfel.o) is committed like internal/xdp's.
package xdplab
