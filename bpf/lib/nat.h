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

/* One's-complement update of a checksum for a 32-bit field changing from
 * `from` to `to` (RFC 1624, eqn. 3). Works on the values as stored. */
static __always_inline __u16 csum_replace4(__u16 check, __be32 from, __be32 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~from + (__u16)~(from >> 16);
	sum += (__u16)to + (__u16)(to >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/*
 * Rewrite the destination (dst = true) or source address and port of an IPv4
 * TCP/UDP packet, keeping the IPv4 header checksum and the L4 checksum right.
 * TCP and UDP keep source and destination ports at the same offsets (0 and 2).
 *
 * The address, port and IPv4 checksum are written in place (the IPv4 header
 * checksum is always complete). The L4 checksum goes through
 * bpf_l4_csum_replace, because only the kernel knows whether it is complete or
 * (CHECKSUM_PARTIAL) holds just the pseudo-header sum; a UDP checksum of zero
 * means "none" and stays zero (BPF_F_MARK_MANGLED_0). Those helpers invalidate
 * packet pointers, so every direct write comes first.
 *
 * Returns KBP_OK, KBP_STAT_DROP_MALFORMED if the headers are not where parsing
 * found them, or KBP_STAT_DROP_REWRITE if a helper failed (the packet may then
 * be half rewritten: the caller must drop it).
 */
static __always_inline int nat4_rewrite(struct __sk_buff *skb, const struct pkt4 *p, bool dst,
					__be32 old_ip, __be32 new_ip, __be16 old_port, __be16 new_port)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct udphdr *l4 = data + (p->l4_off & 0xff); /* l4_off <= 14 + 60 */
	__u32 csum_off = nat4_l4_csum_off(p);
	__u64 l4_flags = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if ((void *)(ip + 1) > end || (void *)(l4 + 1) > end)
		return KBP_STAT_DROP_MALFORMED;
	if (dst) {
		ip->daddr = new_ip;
		l4->dest = new_port;
	} else {
		ip->saddr = new_ip;
		l4->source = new_port;
	}
	ip->check = csum_replace4(ip->check, old_ip, new_ip);

	if (old_ip != new_ip &&
	    bpf_l4_csum_replace(skb, csum_off, old_ip, new_ip, l4_flags | BPF_F_PSEUDO_HDR | sizeof(new_ip)))
		return KBP_STAT_DROP_REWRITE;
	if (old_port != new_port &&
	    bpf_l4_csum_replace(skb, csum_off, old_port, new_port, l4_flags | sizeof(new_port)))
		return KBP_STAT_DROP_REWRITE;
	return KBP_OK;
}

#endif /* KBP_LIB_NAT_H */
