/* SPDX-License-Identifier: GPL-2.0 */
/* Address and port rewriting with incremental checksum updates. The helpers
 * handle every skb checksum state: with CHECKSUM_PARTIAL (what a veth peer
 * hands us for locally generated TCP) the L4 field holds only the pseudo-header
 * sum, so the kernel adjusts it for address changes (BPF_F_PSEUDO_HDR) and
 * leaves port changes to the final checksum pass. */
#ifndef KBP_LIB_NAT_H
#define KBP_LIB_NAT_H

#include <stddef.h>
#include <stdbool.h>
#include "common.h"
#include "parse.h"

static __always_inline __u32 nat4_l4_csum_off(const struct pkt4 *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
						     : offsetof(struct udphdr, check));
}

/*
 * Rewrite the destination (dst = true) or source address and port of an IPv4
 * TCP/UDP packet, keeping the IPv4 header checksum and the L4 checksum right.
 * A UDP checksum of zero means "none" and stays zero (BPF_F_MARK_MANGLED_0).
 * TCP and UDP keep source and destination ports at the same offsets (0 and 2).
 *
 * Returns KBP_OK, or KBP_STAT_DROP_REWRITE if a helper failed (the packet may
 * then be half rewritten: the caller must drop it).
 */
static __always_inline int nat4_rewrite(struct __sk_buff *skb, const struct pkt4 *p, bool dst,
					__be32 old_ip, __be32 new_ip, __be16 old_port, __be16 new_port)
{
	__u32 ip_off = p->l3_off + (dst ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr));
	__u32 port_off = p->l4_off + (dst ? offsetof(struct udphdr, dest) : offsetof(struct udphdr, source));
	__u32 csum_off = nat4_l4_csum_off(p);
	__u64 l4_flags = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (old_ip != new_ip) {
		if (bpf_l4_csum_replace(skb, csum_off, old_ip, new_ip,
					l4_flags | BPF_F_PSEUDO_HDR | sizeof(new_ip)))
			return KBP_STAT_DROP_REWRITE;
		if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check),
					old_ip, new_ip, sizeof(new_ip)))
			return KBP_STAT_DROP_REWRITE;
		if (bpf_skb_store_bytes(skb, ip_off, &new_ip, sizeof(new_ip), 0))
			return KBP_STAT_DROP_REWRITE;
	}
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, l4_flags | sizeof(new_port)))
			return KBP_STAT_DROP_REWRITE;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0))
			return KBP_STAT_DROP_REWRITE;
	}
	return KBP_OK;
}

#endif /* KBP_LIB_NAT_H */
