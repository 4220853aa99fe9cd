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
 * Create (or replace) both entries of a translated flow: fwd as the client
 * sent it, and the reply the backend at be_ip:be_port will send.
 * Returns KBP_OK or KBP_STAT_DROP_CT_INSERT: the packet must then be dropped,
 * since a flow whose replies cannot be reverse-translated is broken anyway
 * (fail closed).
 */
static __always_inline int ct4_create(const struct kbp_ct_key *fwd, const struct pkt4 *p,
				      __be32 be_ip, __be16 be_port, __u32 backend_id,
				      __u32 svc_id, __u64 now)
{
	struct kbp_ct_value v = {
		.created_ns = now,
		.last_seen_ns = now,
		.backend_id = backend_id,
		.svc_id = svc_id,
		.tcp_flags = p->tcp_flags,
	};
	struct kbp_ct_key rev;

	ct4_key(&rev, be_ip, fwd->saddr, be_port, fwd->sport, fwd->proto, KBP_CT_REPLY);
	/* Reply entry first: once the forward entry exists, later packets of the
	 * flow take the established path and would never create it. */
	v.tcp_flags = 0;
	if (bpf_map_update_elem(&kbp_ct4_v1, &rev, &v, BPF_ANY))
		return KBP_STAT_DROP_CT_INSERT;
	v.tcp_flags = p->tcp_flags;
	if (bpf_map_update_elem(&kbp_ct4_v1, fwd, &v, BPF_ANY)) {
		bpf_map_delete_elem(&kbp_ct4_v1, &rev);
		return KBP_STAT_DROP_CT_INSERT;
	}
	return KBP_OK;
}

#endif /* KBP_LIB_CONNTRACK_H */
