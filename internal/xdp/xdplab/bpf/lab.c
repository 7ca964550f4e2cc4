// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The lab's XDP programs, for tests and benchmarks only: the daemon never
// loads them (it loads bpf/dsr.c of internal/xdp, xdp_dsr alone). A
// receiver that passes everything, one that drops everything, the MAC-swap
// baseline the benchmark compares xdp_dsr with, and the traffic generator.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// xdp_pass lets everything through: on veth, native XDP_TX needs a program
// on the peer too.
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

// xdp_drop drops everything: the lab's cheapest receiver, a real server
// that costs the benchmark's core next to nothing.
SEC("xdp")
int xdp_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

// xdp_swap only swaps the MACs and sends the frame back: the baseline the
// benchmark compares xdp_dsr with.
SEC("xdp")
int xdp_swap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	__u8 tmp[ETH_ALEN];
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
	return XDP_TX;
}

// xdp_gen is the benchmark's traffic generator: BPF_PROG_RUN in live-frame
// mode sends every frame it returns XDP_TX for out of the interface, at a
// rate no socket reaches. Frames are pages the kernel reuses without
// resetting them, and whoever handled a frame last (a balancer rewriting
// MACs, a router's TTL, NAT) may have changed it: so each run writes the
// whole GEN_LEN-byte frame from gen_frame, then the next of GEN_FLOWS UDP
// source ports from GEN_PORT (many flows). It sends one frame in every
// gen_state[GEN_ONE_IN] and drops the others, which paces it: a
// BPF_PROG_RUN call costs too much to pace by calls. The UDP checksum in
// the template must be 0 (none).
#define GEN_PORT 30000
#define GEN_FLOWS 256
#define GEN_LEN 64
enum { GEN_SEQ, GEN_ONE_IN, GEN_MAX };

struct gen_tmpl {
	__u8 data[GEN_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GEN_MAX);
	__type(key, __u32);
	__type(value, __u32);
} gen_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_tmpl);
} gen_frame SEC(".maps");

SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + GEN_LEN > end)
		return XDP_ABORTED;
	__u32 k = GEN_SEQ;
	__u32 *seq = bpf_map_lookup_elem(&gen_state, &k);
	k = GEN_ONE_IN;
	__u32 *one_in = bpf_map_lookup_elem(&gen_state, &k);
	k = 0;
	struct gen_tmpl *tmpl = bpf_map_lookup_elem(&gen_frame, &k);
	if (!seq || !one_in || !tmpl)
		return XDP_ABORTED;
	__u32 n = *seq;
	*seq = n + 1;
	if (*one_in > 1) {
		if (n % *one_in)
			return XDP_DROP;
		n /= *one_in;
	}
	__builtin_memcpy(data, tmpl->data, GEN_LEN);
	__u16 *sport = data + 14 + 20;
	*sport = bpf_htons(GEN_PORT + n % GEN_FLOWS);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
