// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// vigil's direct-server-return dataplane: packets to a service (VIP, port,
// protocol) get a backend from the service's Maglev table (or from connection
// tracking, for a flow already seen), their Ethernet addresses rewritten, and
// go back out (XDP_TX) or to another interface (redirect). The IP packet is
// untouched, so the backend, which holds the VIP on its loopback, answers the
// client directly. Everything else passes to the kernel.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define RING_SIZE 65537      // Maglev table size M, a prime; Go uses the same
#define MAX_SERVICES 16
#define MAX_BACKENDS 4096
#define CT_SIZE (1 << 18)

enum verdict { V_PASS, V_TX, V_REDIRECT, V_DROP, V_FRAGMENT, V_NO_BACKEND, V_MAX };

struct svc_key {
	__u8 addr[16]; // IPv4 as ::ffff:a.b.c.d
	__u16 port;    // network order
	__u8 proto;
	__u8 pad;
};

struct svc_val {
	__u32 id; // index of the service's table and counters
	__u32 flags;
};

struct backend {
	__u8 mac[6];
	__u16 pad;
	__u32 ifindex; // 0: out of the interface the packet came in on
};

struct flow {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct ct_val {
	__u32 backend;
	__u32 svc;
};

struct svc_stats {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct svc_key);
	__type(value, struct svc_val);
} services SEC(".maps");

// tables holds every service's Maglev table: entry id*RING_SIZE+slot is a
// backend index, or ~0 when the service has no backend.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SERVICES * RING_SIZE);
	__type(key, __u32);
	__type(value, __u32);
} tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

// Per-CPU LRU lists: no lock shared between CPUs on the hot path.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, CT_SIZE);
	__type(key, struct flow);
	__type(value, struct ct_val);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, V_MAX);
	__type(key, __u32);
	__type(value, __u64);
} verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct svc_stats);
} svc_counters SEC(".maps");

static __always_inline int count(enum verdict v, int action)
{
	__u32 k = v;
	__u64 *n = bpf_map_lookup_elem(&verdicts, &k);
	if (n)
		*n += 1;
	return action;
}

static __always_inline __u32 rol32(__u32 x, int k) { return (x << k) | (x >> (32 - k)); }

// flow_hash mixes the 5-tuple (words of both addresses, ports, protocol).
static __always_inline __u32 flow_hash(const struct flow *f)
{
	const __u32 *w = (const __u32 *)f;
	__u32 h = 0x9e3779b9;
#pragma unroll
	for (int i = 0; i < 9; i++) { // 36 bytes: src, dst, ports
		h ^= w[i];
		h = rol32(h * 0xcc9e2d51, 15) * 0x1b873593;
	}
	h ^= f->proto;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

SEC("xdp")
int xdp_dsr(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return count(V_PASS, XDP_PASS);
	void *l3 = eth + 1;
	__u16 proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < 2; i++) { // 802.1Q, 802.1ad (QinQ)
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		struct vlan_hdr *vh = l3;
		if ((void *)(vh + 1) > end)
			return count(V_PASS, XDP_PASS);
		proto = vh->proto;
		l3 = vh + 1;
	}

	struct flow f = {};
	void *l4;
	__u16 ip_len;
	if (proto == bpf_htons(ETH_P_IP)) {
		__u8 *ip = l3;
		if ((void *)(ip + 20) > end)
			return count(V_PASS, XDP_PASS);
		__u8 ihl = (ip[0] & 0x0f) * 4;
		if ((ip[0] >> 4) != 4 || ihl < 20)
			return count(V_PASS, XDP_PASS);
		__u16 frag = (ip[6] << 8) | ip[7];
		f.proto = ip[9];
		f.src[10] = f.src[11] = f.dst[10] = f.dst[11] = 0xff;
		__builtin_memcpy(&f.src[12], ip + 12, 4);
		__builtin_memcpy(&f.dst[12], ip + 16, 4);
		ip_len = (ip[2] << 8) | ip[3];
		if (frag & 0x3fff) // more fragments, or not the first one
			goto fragment;
		l4 = ip + ihl;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		__u8 *ip6 = l3;
		if ((void *)(ip6 + 40) > end)
			return count(V_PASS, XDP_PASS);
		if ((ip6[0] >> 4) != 6)
			return count(V_PASS, XDP_PASS);
		f.proto = ip6[6]; // extension headers are not followed: they pass
		__builtin_memcpy(f.src, ip6 + 8, 16);
		__builtin_memcpy(f.dst, ip6 + 24, 16);
		ip_len = ((ip6[4] << 8) | ip6[5]) + 40;
		if (f.proto == 44) // fragment header
			goto fragment;
		l4 = ip6 + 40;
	} else {
		return count(V_PASS, XDP_PASS);
	}
	if (f.proto != IPPROTO_TCP && f.proto != IPPROTO_UDP)
		return count(V_PASS, XDP_PASS);
	__u16 *ports = l4;
	if ((void *)(ports + 2) > end)
		return count(V_PASS, XDP_PASS);
	f.sport = ports[0];
	f.dport = ports[1];

	struct svc_key sk = {.port = f.dport, .proto = f.proto};
	__builtin_memcpy(sk.addr, f.dst, 16);
	struct svc_val *svc = bpf_map_lookup_elem(&services, &sk);
	if (!svc)
		return count(V_PASS, XDP_PASS);
	__u32 id = svc->id;
	if (id >= MAX_SERVICES)
		return count(V_PASS, XDP_PASS);

	__u32 be_idx;
	struct ct_val *ct = bpf_map_lookup_elem(&conntrack, &f);
	if (ct && ct->svc == id) {
		be_idx = ct->backend;
	} else {
		__u32 slot = (__u32)(((__u64)flow_hash(&f) * RING_SIZE) >> 32);
		__u32 key = id * RING_SIZE + slot;
		__u32 *b = bpf_map_lookup_elem(&tables, &key);
		if (!b || *b == ~0u)
			return count(V_NO_BACKEND, XDP_DROP);
		be_idx = *b;
		struct ct_val nv = {.backend = be_idx, .svc = id};
		bpf_map_update_elem(&conntrack, &f, &nv, BPF_ANY);
	}
	struct backend *be = bpf_map_lookup_elem(&backends, &be_idx);
	if (!be)
		return count(V_NO_BACKEND, XDP_DROP);

	struct svc_stats *st = bpf_map_lookup_elem(&svc_counters, &id);
	if (st) {
		st->packets += 1;
		st->bytes += ip_len;
	}
	// We are the frame's destination: we become its source, the backend its
	// destination. The IP packet stays as the client sent it.
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, be->mac, ETH_ALEN);
	if (be->ifindex && be->ifindex != ctx->ingress_ifindex)
		return count(V_REDIRECT, bpf_redirect(be->ifindex, 0));
	return count(V_TX, XDP_TX);

fragment:
	return count(V_FRAGMENT, XDP_PASS);
}

// xdp_pass lets everything through: on veth, native XDP_TX needs a program
// on the peer too.
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
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
