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
#define CT4_SIZE (1 << 18)
#define CT6_SIZE (1 << 16)

enum verdict { V_PASS, V_TX, V_REDIRECT, V_DROP, V_FRAGMENT, V_NO_BACKEND, V_MAX };

// IPv4 and IPv6 have their own service and connection-tracking maps: the
// shorter IPv4 keys hash faster, and IPv4 is most of the traffic.
struct svc4_key {
	__be32 addr;
	__u16 port; // network order
	__u8 proto;
	__u8 pad;
};

struct svc6_key {
	__u8 addr[16];
	__u16 port; // network order
	__u8 proto;
	__u8 pad;
};

struct svc_val {
	__u32 id; // index of the service's table and counters
	__u32 flags;
};

struct backend {
	__u8 mac[6];
	__u8 src[6];   // with ifindex: the MAC of that interface, the frame's new source
	__u32 ifindex; // 0: out of the interface the packet came in on
};

struct flow4 {
	__be32 src;
	__be32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow6 {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

// A tracked flow is valid while its service's generation is the one it
// was tracked under: the loader moves a service's generation on when the
// service goes or its id is given to another, so a tracked flow needs no
// lookup of the service map.
struct ct_val {
	__u32 backend;
	__u32 svc;
	__u32 gen;
};

struct svc_stats {
	__u64 packets;
	__u64 bytes;
};

// svc_filter has a bit set for every service's (address, port, protocol)
// hash, written by the loader before a service's key and cleared after it.
// Most packets an interface receives are not for a service: the filter
// turns them away with a load from global data, before any hash lookup.
// With at most MAX_SERVICES services in FILTER_BITS bits, a packet that is
// not for a service takes the hash lookup about once in 256.
#define FILTER_BITS 4096
__u64 svc_filter[FILTER_BITS / 64];

// filter_bit must match the loader's filterBit (xdp.go): the address word
// as read from the packet, the port in network order.
static __always_inline __u32 filter_bit(__u32 addr, __u16 port, __u8 proto)
{
	return ((addr ^ ((__u32)port << 8) ^ proto) * 0x9e3779b1u) >> 20;
}

// svc_gen is each service id's generation; 0 never tracks a flow.
__u32 svc_gen[MAX_SERVICES];

static __always_inline int tracked(const struct ct_val *ct)
{
	__u32 id = ct->svc;
	if (id >= MAX_SERVICES)
		return 0;
	return ct->gen && ct->gen == svc_gen[id];
}

static __always_inline int maybe_service(__u32 addr, __u16 port, __u8 proto)
{
	__u32 bit = filter_bit(addr, port, proto);
	return (svc_filter[bit >> 6] >> (bit & 63)) & 1;
}

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct svc4_key);
	__type(value, struct svc_val);
} services4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct svc6_key);
	__type(value, struct svc_val);
} services6 SEC(".maps");

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
	__uint(max_entries, CT4_SIZE);
	__type(key, struct flow4);
	__type(value, struct ct_val);
} conntrack4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, CT6_SIZE);
	__type(key, struct flow6);
	__type(value, struct ct_val);
} conntrack6 SEC(".maps");

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

// be_counters counts what went to each backend (index as in backends).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct svc_stats);
} be_counters SEC(".maps");

static __always_inline int count(enum verdict v, int action)
{
	__u32 k = v;
	__u64 *n = bpf_map_lookup_elem(&verdicts, &k);
	if (n)
		*n += 1;
	return action;
}

static __always_inline __u32 rol32(__u32 x, int k) { return (x << k) | (x >> (32 - k)); }

static __always_inline __u32 mix(__u32 h, __u32 w) { return rol32((h ^ w) * 0xcc9e2d51, 15) * 0x1b873593; }

static __always_inline __u32 finish(__u32 h, __u8 proto)
{
	h ^= proto;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

// flow hashes mix the 5-tuple; every balancer computes the same one, so
// they all pick the same backend for a flow.
static __always_inline __u32 flow4_hash(const struct flow4 *f)
{
	const __u32 *w = (const __u32 *)f;
	__u32 h = 0x9e3779b9;
	h = mix(h, w[0]); // src
	h = mix(h, w[1]); // dst
	h = mix(h, w[2]); // ports
	return finish(h, f->proto);
}

static __always_inline __u32 flow6_hash(const struct flow6 *f)
{
	const __u32 *w = (const __u32 *)f;
	__u32 h = 0x9e3779b9;
#pragma unroll
	for (int i = 0; i < 9; i++) // 36 bytes: src, dst, ports
		h = mix(h, w[i]);
	return finish(h, f->proto);
}

// pick returns a new flow's backend from the service's Maglev table, and
// tracks the flow; ~0 for none.
static __always_inline __u32 pick(void *conntrack, void *flow, __u32 id, int v6)
{
	__u32 hash = v6 ? flow6_hash(flow) : flow4_hash(flow);
	__u32 key = id * RING_SIZE + (__u32)(((__u64)hash * RING_SIZE) >> 32);
	__u32 *b = bpf_map_lookup_elem(&tables, &key);
	if (!b || *b == ~0u)
		return ~0u;
	struct ct_val nv = {.backend = *b, .svc = id, .gen = svc_gen[id & (MAX_SERVICES - 1)]};
	bpf_map_update_elem(conntrack, flow, &nv, BPF_ANY);
	return nv.backend;
}

// ports reads the TCP or UDP ports at l4; false when they are cut off.
static __always_inline int ports(void *l4, void *end, __u16 *sport, __u16 *dport)
{
	__u16 *p = l4;
	if ((void *)(p + 2) > end)
		return 0;
	*sport = p[0];
	*dport = p[1];
	return 1;
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

	struct svc_val *svc;
	struct ct_val *ct;
	__u32 be_idx, id;
	__u16 ip_len;
	if (proto == bpf_htons(ETH_P_IP)) {
		__u8 *ip = l3;
		if ((void *)(ip + 20) > end)
			return count(V_PASS, XDP_PASS);
		__u8 ihl = (ip[0] & 0x0f) * 4;
		if ((ip[0] >> 4) != 4 || ihl < 20)
			return count(V_PASS, XDP_PASS);
		if ((((ip[6] << 8) | ip[7]) & 0x3fff)) // more fragments, or not the first one
			return count(V_FRAGMENT, XDP_PASS);
		struct flow4 f = {.proto = ip[9]};
		if (f.proto != IPPROTO_TCP && f.proto != IPPROTO_UDP)
			return count(V_PASS, XDP_PASS);
		if (!ports(ip + ihl, end, &f.sport, &f.dport))
			return count(V_PASS, XDP_PASS);
		__builtin_memcpy(&f.dst, ip + 16, 4);
		if (!maybe_service(f.dst, f.dport, f.proto))
			return count(V_PASS, XDP_PASS);
		__builtin_memcpy(&f.src, ip + 12, 4);
		ct = bpf_map_lookup_elem(&conntrack4, &f);
		if (ct && tracked(ct)) {
			id = ct->svc;
			be_idx = ct->backend;
		} else {
			struct svc4_key sk = {.addr = f.dst, .port = f.dport, .proto = f.proto};
			svc = bpf_map_lookup_elem(&services4, &sk);
			if (!svc || svc->id >= MAX_SERVICES)
				return count(V_PASS, XDP_PASS);
			id = svc->id;
			be_idx = pick(&conntrack4, &f, id, 0);
		}
		ip_len = (ip[2] << 8) | ip[3];
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		__u8 *ip6 = l3;
		if ((void *)(ip6 + 40) > end)
			return count(V_PASS, XDP_PASS);
		if ((ip6[0] >> 4) != 6)
			return count(V_PASS, XDP_PASS);
		struct flow6 f = {.proto = ip6[6]}; // extension headers are not followed: they pass
		if (f.proto == 44) // fragment header
			return count(V_FRAGMENT, XDP_PASS);
		if (f.proto != IPPROTO_TCP && f.proto != IPPROTO_UDP)
			return count(V_PASS, XDP_PASS);
		if (!ports(ip6 + 40, end, &f.sport, &f.dport))
			return count(V_PASS, XDP_PASS);
		__builtin_memcpy(f.dst, ip6 + 24, 16);
		const __u32 *d = (const __u32 *)f.dst;
		if (!maybe_service(d[0] ^ d[1] ^ d[2] ^ d[3], f.dport, f.proto))
			return count(V_PASS, XDP_PASS);
		__builtin_memcpy(f.src, ip6 + 8, 16);
		ct = bpf_map_lookup_elem(&conntrack6, &f);
		if (ct && tracked(ct)) {
			id = ct->svc;
			be_idx = ct->backend;
		} else {
			struct svc6_key sk = {.port = f.dport, .proto = f.proto};
			__builtin_memcpy(sk.addr, f.dst, 16);
			svc = bpf_map_lookup_elem(&services6, &sk);
			if (!svc || svc->id >= MAX_SERVICES)
				return count(V_PASS, XDP_PASS);
			id = svc->id;
			be_idx = pick(&conntrack6, &f, id, 1);
		}
		ip_len = ((ip6[4] << 8) | ip6[5]) + 40;
	} else {
		return count(V_PASS, XDP_PASS);
	}
	if (be_idx == ~0u)
		return count(V_NO_BACKEND, XDP_DROP);
	struct backend *be = bpf_map_lookup_elem(&backends, &be_idx);
	if (!be)
		return count(V_NO_BACKEND, XDP_DROP);

	struct svc_stats *st = bpf_map_lookup_elem(&svc_counters, &id);
	if (st) {
		st->packets += 1;
		st->bytes += ip_len;
	}
	st = bpf_map_lookup_elem(&be_counters, &be_idx);
	if (st) {
		st->packets += 1;
		st->bytes += ip_len;
	}
	// The backend becomes the frame's destination and we its source: the
	// interface it came in on (we were its destination), or the one it
	// leaves by. The IP packet stays as the client sent it.
	if (be->ifindex && be->ifindex != ctx->ingress_ifindex) {
		__builtin_memcpy(eth->h_source, be->src, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, be->mac, ETH_ALEN);
		return count(V_REDIRECT, bpf_redirect(be->ifindex, 0));
	}
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, be->mac, ETH_ALEN);
	return count(V_TX, XDP_TX);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
