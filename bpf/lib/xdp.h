/* SPDX-License-Identifier: GPL-2.0 */
/* NodePort acceleration: the forward half of the node-facing datapath in XDP,
 * before the kernel allocates an skb. New and established flows to a frontend
 * (NodePort, LoadBalancer IP, externalIP, a ClusterIP routed to this node) are
 * balanced, recorded and translated exactly as kbp_from_node does it (the same
 * lb4_forward, the same pinned maps); the stack then forwards the rewritten
 * packet, and kbp_from_node at tc, which stays attached, finds nothing left to
 * do. With KBP_CONFIG_F_XDP_TX, a translated packet whose route leaves through
 * the uplink it came in on (a backend on another node) is sent straight back
 * out (XDP_TX) instead, as a router would forward it. Everything XDP cannot or need not do passes to tc unchanged: replies
 * (reverse NAT), ICMP, fragments, REJECT answers (they need an skb to grow),
 * and packets whose L4 checksum field holds only a pseudo-header sum. */
#ifndef KBP_LIB_XDP_H
#define KBP_LIB_XDP_H

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "csum.h"
#include "nat.h"
#include "lb.h"
#include "stats.h"

/*
 * Whether the packet's L4 checksum field holds the pseudo-header sum of a
 * locally generated packet with CHECKSUM_PARTIAL (the device or the stack
 * completes it on the way out) instead of a complete checksum. Such packets
 * come from a sender on this machine through a veth, never off a wire; XDP
 * cannot know the skb's checksum state, so it leaves them to tc, whose
 * helpers do. A complete checksum equals that value about once in 65,536
 * packets: those go to tc too, which translates them just as well.
 * Returns true also when the headers cannot be read (tc judges those).
 */
static __always_inline bool xdp4_pseudo_csum_only(struct kbp_ctx *ctx, const struct pkt4 *p)
{
	struct iphdr *ip = ctx_data(ctx) + sizeof(struct ethhdr);
	__u16 *check = nat4_l4_check(ctx, p);
	__u16 l4_len;

	if ((void *)(ip + 1) > ctx_data_end(ctx) || !check)
		return true;
	if (p->proto == IPPROTO_UDP && *check == 0)
		return false; /* no checksum at all */
	l4_len = bpf_ntohs(ip->tot_len) - (__u16)(p->l4_off - p->l3_off);
	return *check == csum_pseudo4(p->saddr, p->daddr, p->proto, l4_len);
}

/* The TTL byte shares a 16-bit checksum word with the protocol byte. */
static __always_inline void xdp4_dec_ttl(struct iphdr *ip)
{
	__u16 old = *(__u16 *)&ip->ttl;

	ip->ttl--;
	ip->check = csum_replace2(ip->check, old, *(__u16 *)&ip->ttl);
}

/*
 * For a packet lb4_forward translated: if the agent allowed it
 * (KBP_CONFIG_F_XDP_TX) and the kernel's FIB sends the packet's new
 * destination out of the device it arrived on through a resolved neighbour,
 * turn it around as the stack's forwarding would (TTL decremented, MACs of
 * the route) and return XDP_TX. Otherwise (no flag, another device, no
 * neighbour entry yet, TTL expiring: the stack answers those) XDP_PASS.
 */
static __always_inline int xdp4_forward(struct kbp_ctx *ctx, const struct pkt4 *p)
{
	struct ethhdr *eth = ctx_data(ctx);
	struct iphdr *ip = (void *)(eth + 1);
	struct bpf_fib_lookup fib = {};
	struct kbp_config *cfg;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&kbp_config_v1, &zero);
	if (!cfg || !(cfg->flags & KBP_CONFIG_F_XDP_TX))
		return XDP_PASS;
	if ((void *)(ip + 1) > ctx_data_end(ctx) || ip->ttl <= 1)
		return XDP_PASS;
	fib.family = 2; /* AF_INET */
	fib.tos = ip->tos;
	fib.l4_protocol = p->proto;
	fib.tot_len = bpf_ntohs(ip->tot_len);
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	fib.ifindex = ctx->ingress_ifindex;
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS || fib.ifindex != ctx->ingress_ifindex)
		return XDP_PASS;
	xdp4_dec_ttl(ip);
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	return XDP_TX;
}

/*
 * The whole XDP decision for one packet on an uplink. Counts what it did
 * (the outcome and KBP_STAT_XDP_FORWARD, or the drop reason).
 * Returns XDP_PASS (translated, or left to tc), XDP_TX (translated and sent
 * back out, see xdp4_forward) or XDP_DROP (a drop reason of lb4_forward, the
 * same packets kbp_from_node drops).
 */
static __always_inline int lb4_xdp(struct kbp_ctx *ctx)
{
	struct kbp_svc_value *svc;
	struct pkt4 p;
	__u32 stat = KBP_STAT_PASS;
	__u32 len = ctx_len(ctx);
	int ret;

	if (!parse_ipv4(ctx, &p))
		return XDP_PASS;
	if ((p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP) || p.fragment || !p.l4_ok)
		return XDP_PASS;
	/* Uplinks only ever use a frontend's external scope. */
	svc = lb4_lookup_scope(&p, KBP_SCOPE_EXTERNAL);
	if (!svc || xdp4_pseudo_csum_only(ctx, &p))
		return XDP_PASS;

	ret = lb4_forward(ctx, &p, svc, KBP_SCOPE_EXTERNAL, true, &stat);
	if (ret == KBP_STAT_REJECT)
		return XDP_PASS; /* nothing recorded: tc rejects it with ICMP */
	if (ret != KBP_OK) {
		stats_count(ret, len);
		return XDP_DROP;
	}
	stats_count(stat, len);
	stats_count(KBP_STAT_XDP_FORWARD, len);
	ret = xdp4_forward(ctx, &p);
	if (ret == XDP_TX)
		stats_count(KBP_STAT_XDP_TX, len);
	return ret;
}

#endif /* KBP_LIB_XDP_H */
