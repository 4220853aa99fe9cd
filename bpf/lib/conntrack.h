/* SPDX-License-Identifier: GPL-2.0 */
/* Service conntrack. A translated flow has two entries: FORWARD keyed by the
 * tuple the client sends (to the frontend) and REPLY keyed by the tuple the
 * backend answers with. Both name the backend id and the frontend id; the
 * backend id, not the slot, so resizing a service never moves a flow. */
#ifndef KBP_LIB_CONNTRACK_H
#define KBP_LIB_CONNTRACK_H

#include "common.h"
#include "maps.h"
#include "parse.h"

static __always_inline void ct4_key(struct kbp_ct_key *k, __be32 saddr, __be32 daddr,
				    __be16 sport, __be16 dport, __u8 proto, __u8 dir)
{
	k->saddr = saddr;
	k->daddr = daddr;
	k->sport = sport;
	k->dport = dport;
	k->proto = proto;
	k->dir = dir;
	k->pad = 0;
}

/* Note a packet of an existing flow. The timestamp is written at most once per
 * KBP_CT_REFRESH_NS so busy flows do not bounce the entry's cache line between
 * CPUs on every packet. */
static __always_inline void ct4_touch(struct kbp_ct_value *ct, const struct pkt4 *p, __u64 now)
{
	if (now - ct->last_seen_ns > KBP_CT_REFRESH_NS)
		ct->last_seen_ns = now;
	if (p->tcp_flags & ~ct->tcp_flags)
		ct->tcp_flags |= p->tcp_flags;
	if ((p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) && !(ct->flags & KBP_CT_F_CLOSING))
		ct->flags |= KBP_CT_F_CLOSING;
}

/*
 * Record a new translated flow: the FORWARD entry as the client sent it and,
 * unless the client is masqueraded (replies then come back through the SNAT
 * map), the REPLY entry the backend at be_ip:be_port will answer with.
 * `fwd_v` carries the backend, frontend and any SNAT fields.
 * Returns KBP_OK or KBP_STAT_DROP_CT_INSERT: the packet must then be dropped,
 * since a flow whose replies cannot be reverse-translated is broken anyway
 * (fail closed).
 */
static __always_inline int ct4_create(const struct kbp_ct_key *fwd, struct kbp_ct_value *fwd_v,
				      __be32 be_ip, __be16 be_port)
{
	struct kbp_ct_key rev;

	if (!(fwd_v->flags & KBP_CT_F_SNAT)) {
		struct kbp_ct_value rev_v = {
			.created_ns = fwd_v->created_ns,
			.last_seen_ns = fwd_v->last_seen_ns,
			.backend_id = fwd_v->backend_id,
			.svc_id = fwd_v->svc_id,
		};

		ct4_key(&rev, be_ip, fwd->saddr, be_port, fwd->sport, fwd->proto, KBP_CT_REPLY);
		/* Reply entry first: once the forward entry exists, later packets
		 * of the flow take the established path and would never create it. */
		if (bpf_map_update_elem(&kbp_ct4_v2, &rev, &rev_v, BPF_ANY))
			return KBP_STAT_DROP_CT_INSERT;
	}
	if (bpf_map_update_elem(&kbp_ct4_v2, fwd, fwd_v, BPF_ANY)) {
		if (!(fwd_v->flags & KBP_CT_F_SNAT))
			bpf_map_delete_elem(&kbp_ct4_v2, &rev);
		return KBP_STAT_DROP_CT_INSERT;
	}
	return KBP_OK;
}

#endif /* KBP_LIB_CONNTRACK_H */
