/* SPDX-License-Identifier: GPL-2.0 */
/* The datapath's maps. Key/value types come from the shared ABI header; every
 * map is pinned by name under the agent's bpffs folder, so a restarted or
 * upgraded agent finds the same maps and traffic never stops. The variable
 * names are the KBP_MAP_* strings of abi.h. */
#ifndef KBP_LIB_MAPS_H
#define KBP_LIB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <kbp/abi.h>

/* Frontends: slot 0 is the service entry, slots 1..count the active backends. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct kbp_svc_key);
	__type(value, struct kbp_svc_value);
	__uint(max_entries, KBP_SERVICES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kbp_svc_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct kbp_backend_key);
	__type(value, struct kbp_backend);
	__uint(max_entries, KBP_BACKENDS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kbp_backend_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct kbp_revnat_key);
	__type(value, struct kbp_revnat);
	__uint(max_entries, KBP_REVNAT_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kbp_revnat_v1 SEC(".maps");

/* LRU: under pressure the least recently used flows go first, never a new one. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kbp_ct_key);
	__type(value, struct kbp_ct_value);
	__uint(max_entries, KBP_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kbp_ct4_v2 SEC(".maps");

/* ClientIP session affinity; LRU like conntrack, expired by timestamp on use. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kbp_affinity_key);
	__type(value, struct kbp_affinity_value);
	__uint(max_entries, KBP_AFFINITY_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kbp_affinity_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct kbp_stat_value);
	__uint(max_entries, KBP_STAT_SLOTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kbp_stats_v2 SEC(".maps");

/* Masqueraded flows (see struct kbp_snat_key). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kbp_snat_key);
	__type(value, struct kbp_snat_value);
	__uint(max_entries, KBP_SNAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kbp_snat4_v1 SEC(".maps");

/* loadBalancerSourceRanges (see struct kbp_src_range_key). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct kbp_src_range_key);
	__type(value, struct kbp_src_range);
	__uint(max_entries, KBP_SRC_RANGES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kbp_srcrange_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kbp_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kbp_config_v1 SEC(".maps");

/* Host services (bpf/kbp_sock.c): the node namespace's cookie, one entry. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kbp_host_ns);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kbp_hostns_v1 SEC(".maps");

/* Host sockets pointed at a backend -> the frontend they asked for (see
 * struct kbp_sock_rev_key). LRU: a closed socket's entry is never used again
 * (cookies are not reused) and ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kbp_sock_rev_key);
	__type(value, struct kbp_sock_rev);
	__uint(max_entries, KBP_SOCK_REVNAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kbp_sockrev_v1 SEC(".maps");

#endif /* KBP_LIB_MAPS_H */
