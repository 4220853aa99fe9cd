/* SPDX-License-Identifier: GPL-2.0 */
/* Address and port rewriting with incremental checksum updates.
 * At tc the kernel's helpers handle every skb checksum state: with
 * CHECKSUM_PARTIAL (what a veth peer hands us for locally generated TCP) the
 * L4 field holds only the pseudo-header sum, so the kernel adjusts it for
 * address changes (BPF_F_PSEUDO_HDR) and leaves port changes to the final
 * checksum pass. In XDP there is no skb and no helper: the L4 checksum is
 * updated in place, which is right only for a complete checksum — the XDP
 * entry hands packets that carry a pseudo-header sum to tc untouched
 * (xdp.h), so every packet that reaches the XDP rewrite has one. */
#ifndef KBP_LIB_NAT_H
#define KBP_LIB_NAT_H

#include <stddef.h>
#include <stdbool.h>
#include "common.h"
#include "parse.h"
#include "csum.h"

static __always_inline __u32 nat4_l4_csum_off(const struct pkt4 *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
						     : offsetof(struct udphdr, check));
}

/* The address, port and IPv4 checksum, written in place (the IPv4 header
 * checksum is always complete). */
static __always_inline int nat4_store(struct kbp_ctx *ctx, const struct pkt4 *p, bool dst,
				      __be32 old_ip, __be32 new_ip, __be16 new_port)
{
	void *end = ctx_data_end(ctx);
	struct iphdr *ip = ctx_data(ctx) + sizeof(struct ethhdr);
	struct udphdr *l4 = ctx_data(ctx) + (p->l4_off & 0xff); /* l4_off <= 14 + 60 */

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
	return KBP_OK;
}

#ifndef KBP_XDP
/* tc: the L4 checksum through bpf_l4_csum_replace, because only the kernel
 * knows whether it is complete or (CHECKSUM_PARTIAL) holds just the
 * pseudo-header sum; a UDP checksum of zero means "none" and stays zero
 * (BPF_F_MARK_MANGLED_0). The helpers invalidate packet pointers, so they
 * come after every direct write. */
static __always_inline int nat4_l4_update(struct kbp_ctx *skb, const struct pkt4 *p, __be32 old_ip, __be32 new_ip,
					  __be16 old_port, __be16 new_port)
{
	__u32 csum_off = nat4_l4_csum_off(p);
	__u64 l4_flags = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (old_ip != new_ip &&
	    bpf_l4_csum_replace(skb, csum_off, old_ip, new_ip, l4_flags | BPF_F_PSEUDO_HDR | sizeof(new_ip)))
		return KBP_STAT_DROP_REWRITE;
	if (old_port != new_port &&
	    bpf_l4_csum_replace(skb, csum_off, old_port, new_port, l4_flags | sizeof(new_port)))
		return KBP_STAT_DROP_REWRITE;
	return KBP_OK;
}
#else
/* The L4 checksum field of a TCP/UDP packet parse_ipv4 found whole, or NULL. */
static __always_inline __u16 *nat4_l4_check(struct kbp_ctx *ctx, const struct pkt4 *p)
{
	__u16 *check = ctx_data(ctx) + (nat4_l4_csum_off(p) & 0xff); /* <= 14 + 60 + 16 */

	if ((void *)(check + 1) > ctx_data_end(ctx))
		return NULL;
	return check;
}

/* XDP: the L4 checksum updated in place; it is complete here (see above). A
 * UDP checksum of zero means none was computed and stays zero; a computed one
 * that comes out as zero is sent as 0xffff (RFC 768). */
static __always_inline int nat4_l4_update(struct kbp_ctx *ctx, const struct pkt4 *p, __be32 old_ip, __be32 new_ip,
					  __be16 old_port, __be16 new_port)
{
	__u16 *check = nat4_l4_check(ctx, p);

	if (!check)
		return KBP_STAT_DROP_MALFORMED;
	if (p->proto == IPPROTO_UDP && *check == 0)
		return KBP_OK;
	*check = csum_replace2(csum_replace4(*check, old_ip, new_ip), old_port, new_port);
	if (p->proto == IPPROTO_UDP && *check == 0)
		*check = 0xffff;
	return KBP_OK;
}
#endif

/*
 * Rewrite the destination (dst = true) or source address and port of an IPv4
 * TCP/UDP packet, keeping the IPv4 header checksum and the L4 checksum right.
 * TCP and UDP keep source and destination ports at the same offsets (0 and 2).
 * Returns KBP_OK, KBP_STAT_DROP_MALFORMED if the headers are not where parsing
 * found them, or KBP_STAT_DROP_REWRITE if a helper failed (the packet may then
 * be half rewritten: the caller must drop it).
 */
static __always_inline int nat4_rewrite(struct kbp_ctx *ctx, const struct pkt4 *p, bool dst,
					__be32 old_ip, __be32 new_ip, __be16 old_port, __be16 new_port)
{
	int ret = nat4_store(ctx, p, dst, old_ip, new_ip, new_port);

	if (ret != KBP_OK)
		return ret;
	return nat4_l4_update(ctx, p, old_ip, new_ip, old_port, new_port);
}

#endif /* KBP_LIB_NAT_H */
