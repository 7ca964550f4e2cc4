package xdp

// The generated Go and objects are committed, so a build needs no clang;
// `make generate` rebuilds them and CI checks they did not change.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -I/usr/include/x86_64-linux-gnu" -target bpfel -type svc4_key -type svc6_key -type svc_val -type backend -type flow4 -type flow6 -type ct_val -type svc_stats dsr bpf/dsr.c
