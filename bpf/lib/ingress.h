/* SPDX-License-Identifier: GPL-2.0 */
/* The tc ingress decision shared by the pod-facing and the node-facing
 * program: service traffic through lb.h, and what only an skb allows — ICMP
 * errors about translated flows translated back, and REJECT answers sent back
 * out of the device. */
#ifndef KBP_LIB_INGRESS_H
#define KBP_LIB_INGRESS_H

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "lb.h"
#include "icmp.h"
#include "stats.h"

/*
 * An ICMP error about a translated flow, travelling towards its client (from
 * the backend, or from a router on the way to it): the quote is the datagram
 * as it left this node, client (or its masquerade) -> backend. Restore it to
 * what the client sent, client -> frontend, and make the error come from the
 * frontend and go to the client, so the client's stack finds its socket (port
 * unreachable for UDP, fragmentation needed for path-MTU discovery).
 * Masqueraded flows are found through the SNAT map, the others through their
 * REPLY conntrack entry (which also gives a remapped client its own port).
 * Returns KBP_OK with *stat = ICMP_REVNAT, or KBP_OK with *stat untouched when
 * the packet is no such error, or a drop reason.
 */
static __always_inline int lb4_icmp_error_reverse(struct __sk_buff *skb, const struct pkt4 *p, __u32 *stat)
{
	struct icmp4_error e;
	struct kbp_ct_key key;
	struct kbp_ct_value *ct;
	__be32 client;

	if (!icmp4_parse_error(skb, p, &e))
		return KBP_OK;
	{
		struct kbp_snat_key skey = {
			.saddr = e.daddr,
			.daddr = e.saddr,
			.sport = e.dport,
			.dport = e.sport,
			.proto = e.proto,
		};
		struct kbp_snat_value *sn = bpf_map_lookup_elem(&kbp_snat4_v1, &skey);

		if (sn) {
			struct kbp_revnat_key rkey = { .svc_id = sn->svc_id };
			struct kbp_revnat *rn = bpf_map_lookup_elem(&kbp_revnat_v1, &rkey);

			if (!rn)
				return KBP_OK;
			*stat = KBP_STAT_ICMP_REVNAT;
			return icmp4_error_rewrite(skb, &e, rn->vip, sn->client_addr, sn->client_addr, sn->client_port,
						   rn->vip, rn->port);
		}
	}
	ct4_key(&key, e.daddr, e.saddr, e.dport, e.sport, e.proto, KBP_CT_REPLY);
	ct = bpf_map_lookup_elem(&kbp_ct4_v2, &key);
	if (!ct)
		return KBP_OK;
	/* A hairpinned client is the backend itself (the quote's destination). */
	client = e.saddr == bpf_htonl(KBP_HAIRPIN_ADDR) ? e.daddr : e.saddr;
	*stat = KBP_STAT_ICMP_REVNAT;
	return icmp4_error_rewrite(skb, &e, ct->nat_addr, p->daddr == e.saddr ? client : p->daddr, client,
				   (ct->flags & KBP_CT_F_PORT_REMAP) ? ct->client_port : e.sport, ct->nat_addr,
				   ct->nat_port);
}

/*
 * The whole ingress decision for one packet, shared by both attach points
 * (from_node: the node-facing program, which also masquerades new flows to
 * backends on other nodes). Counts the outcome.
 * Returns TC_ACT_OK (translated or untouched), TC_ACT_REDIRECT (a rejected
 * packet turned into ICMP port unreachable, sent back out) or TC_ACT_SHOT.
 */
static __always_inline int lb4_ingress(struct __sk_buff *skb, bool from_node)
{
	struct kbp_svc_value *svc;
	struct pkt4 p;
	__u32 stat = KBP_STAT_PASS;
	__u8 scope;
	int ret;

	if (!parse_ipv4(skb, &p))
		return TC_ACT_OK;

	if (p.proto == IPPROTO_ICMP) {
		ret = p.fragment ? KBP_OK : lb4_icmp_error_reverse(skb, &p, &stat);
	} else if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP) {
		ret = KBP_OK;
	} else if (p.fragment || !p.l4_ok) {
		/* Only the first fragment carries ports; without reassembly we
		 * cannot translate a fragmented datagram to a frontend. */
		ret = KBP_OK;
		if (lb4_vip_known(p.daddr))
			ret = p.fragment ? KBP_STAT_DROP_FRAGMENT : KBP_STAT_DROP_MALFORMED;
	} else if ((svc = lb4_lookup_service(&p, from_node, &scope))) {
		ret = lb4_forward(skb, &p, svc, scope, from_node, &stat);
	} else {
		/* Replies: masqueraded flows come back mostly from other nodes,
		 * the others mostly from local backends; look up the likelier
		 * table first. */
		if (from_node) {
			ret = lb4_reverse_snat(skb, &p, &stat);
			if (ret == KBP_OK && stat == KBP_STAT_PASS)
				ret = lb4_reverse(skb, &p, &stat);
		} else {
			ret = lb4_reverse(skb, &p, &stat);
			if (ret == KBP_OK && stat == KBP_STAT_PASS)
				ret = lb4_reverse_snat(skb, &p, &stat);
		}
		if (ret == KBP_OK && stat == KBP_STAT_PASS && lb4_vip_known(p.daddr))
			ret = KBP_STAT_DROP_UNKNOWN_PORT;
	}

	if (ret == KBP_STAT_REJECT) {
		__u32 len = skb->len;

		ret = icmp4_reject(skb, &p);
		if (ret == TC_ACT_REDIRECT) {
			stats_count(KBP_STAT_REJECT, len);
			return TC_ACT_REDIRECT;
		}
	}
	if (ret != KBP_OK) {
		stats_count(ret, skb->len);
		return TC_ACT_SHOT;
	}
	stats_count(stat, skb->len);
	return TC_ACT_OK;
}

#endif /* KBP_LIB_INGRESS_H */
