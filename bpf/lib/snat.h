/* SPDX-License-Identifier: GPL-2.0 */
/* Masquerading of NodePort/LoadBalancer/externalIP clients whose backend runs
 * on another node, so the backend's reply returns through this node. */
#ifndef KBP_LIB_SNAT_H
#define KBP_LIB_SNAT_H

#include "common.h"
#include "maps.h"
#include "parse.h"

/* The address this node masquerades clients of the frontend to: the node
 * address the client targeted for a NodePort, else the configured node IP.
 * Returns 0 when the agent has written no config yet. */
static __always_inline __be32 snat4_node_addr(const struct pkt4 *p, const struct kbp_svc_value *svc)
{
	__u32 zero = 0;
	struct kbp_config *cfg;

	if (svc->flags & KBP_SVC_F_NODE_PORT)
		return p->daddr;
	cfg = bpf_map_lookup_elem(&kbp_config_v1, &zero);
	return cfg ? cfg->node_ip : 0;
}

/* A random port of KBP_SNAT_PORT_MIN..MAX, network order. */
static __always_inline __be16 snat4_random_port(void)
{
	return bpf_htons((__u16)(KBP_SNAT_PORT_MIN + bpf_get_prandom_u32() % (KBP_SNAT_PORT_MAX - KBP_SNAT_PORT_MIN + 1)));
}

/*
 * Reserve a SNAT port for the client of a new flow to be_ip:be_port: a random
 * port of the range whose reply tuple is free (BPF_NOEXIST makes the
 * reservation atomic between CPUs), tried KBP_SNAT_TRIES times.
 * Returns KBP_OK with *port_out (network order) or KBP_STAT_DROP_SNAT_PORTS.
 */
static __always_inline int snat4_reserve(const struct pkt4 *p, __be32 nat_addr, __be32 be_ip, __be16 be_port,
					 __u32 svc_id, __u64 now, __be16 *port_out)
{
	struct kbp_snat_key key = { .saddr = be_ip, .daddr = nat_addr, .sport = be_port, .proto = p->proto };
	struct kbp_snat_value v = {
		.created_ns = now,
		.client_addr = p->saddr,
		.client_port = p->sport,
		.svc_id = svc_id,
	};
	int i;

	for (i = 0; i < KBP_SNAT_TRIES; i++) {
		key.dport = snat4_random_port();
		if (!bpf_map_update_elem(&kbp_snat4_v1, &key, &v, BPF_NOEXIST)) {
			*port_out = key.dport;
			return KBP_OK;
		}
	}
	return KBP_STAT_DROP_SNAT_PORTS;
}

/* Give back a port snat4_reserve handed out for a flow that was not recorded. */
static __always_inline void snat4_release(const struct pkt4 *p, __be32 nat_addr, __be32 be_ip, __be16 be_port,
					  __be16 port)
{
	struct kbp_snat_key key = {
		.saddr = be_ip,
		.daddr = nat_addr,
		.sport = be_port,
		.dport = port,
		.proto = p->proto,
	};

	bpf_map_delete_elem(&kbp_snat4_v1, &key);
}

#endif /* KBP_LIB_SNAT_H */
