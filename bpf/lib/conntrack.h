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
#include "snat.h"

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

/* FORWARD entries whose packets leave with source nat_addr:nat_port. */
#define KBP_CT_F_REWRITES_SOURCE (KBP_CT_F_SNAT | KBP_CT_F_HAIRPIN | KBP_CT_F_PORT_REMAP)

/* Not a stat: the flow's FORWARD entry appeared while this packet was
 * creating it (another CPU handled the flow's first packets). */
#define KBP_CT_RACE (-1)

/* Whether an entry still describes a flow: seen within its idle lifetime, and
 * not a closed TCP flow whose tuple a new SYN is reusing (p may be NULL). */
static __always_inline bool ct4_live(const struct kbp_ct_value *ct, const struct pkt4 *p, __u8 proto,
				     __u64 now)
{
	__u64 life = KBP_CT_LIFETIME_OTHER_NS;

	if (proto == IPPROTO_TCP)
		life = (ct->flags & KBP_CT_F_CLOSING) ? KBP_CT_LIFETIME_CLOSING_NS : KBP_CT_LIFETIME_TCP_NS;
	if (now - ct->last_seen_ns > life)
		return false;
	if (p && (ct->flags & KBP_CT_F_CLOSING) && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
		return false;
	return true;
}

/* Note a packet of an existing flow. The timestamp is written at most once per
 * KBP_CT_REFRESH_NS so busy flows do not bounce the entry's cache line between
 * CPUs on every packet. Returns true when it refreshed the timestamp: the
 * caller's cue for once-a-second upkeep. */
static __always_inline bool ct4_touch(struct kbp_ct_value *ct, const struct pkt4 *p, __u64 now)
{
	bool refreshed = false;

	if (now - ct->last_seen_ns > KBP_CT_REFRESH_NS) {
		ct->last_seen_ns = now;
		refreshed = true;
	}
	if (p->tcp_flags & ~ct->tcp_flags)
		ct->tcp_flags |= p->tcp_flags;
	if ((p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) && !(ct->flags & KBP_CT_F_CLOSING))
		ct->flags |= KBP_CT_F_CLOSING;
	return refreshed;
}

/* The address the backend sees the client of a (not masqueraded) flow at:
 * its own, or KBP_HAIRPIN_ADDR when the client is the backend itself (a
 * remapped flow names it in nat_addr too). */
static __always_inline __be32 ct4_client_seen(const struct pkt4 *p, const struct kbp_ct_value *fwd_v)
{
	return (fwd_v->flags & (KBP_CT_F_HAIRPIN | KBP_CT_F_PORT_REMAP)) ? fwd_v->nat_addr : p->saddr;
}

/* The REPLY entry of a (not masqueraded) flow: keyed by what the backend
 * sends, naming the frontend the client addressed; for a remapped flow also
 * the client's own port. */
static __always_inline void ct4_reply_of(struct kbp_ct_key *rev, struct kbp_ct_value *rev_v,
					 const struct pkt4 *p, const struct kbp_ct_value *fwd_v, __be32 be_ip,
					 __be16 be_port, __u64 now)
{
	bool remap = fwd_v->flags & KBP_CT_F_PORT_REMAP;

	ct4_key(rev, be_ip, ct4_client_seen(p, fwd_v), be_port, remap ? fwd_v->nat_port : p->sport, p->proto,
		KBP_CT_REPLY);
	__builtin_memset(rev_v, 0, sizeof(*rev_v));
	rev_v->created_ns = now;
	rev_v->last_seen_ns = now;
	rev_v->backend_id = fwd_v->backend_id;
	rev_v->svc_id = fwd_v->svc_id;
	rev_v->nat_addr = p->daddr;
	rev_v->nat_port = p->dport;
	if (remap) {
		rev_v->flags = KBP_CT_F_PORT_REMAP;
		rev_v->client_port = p->sport;
	}
}

/* Whether the REPLY entry `old` on a new flow's reply tuple is this flow's own
 * (the same client port to the same frontend: a FORWARD entry re-created after
 * a close, an eviction or a frontend id change) or may be replaced (idle past
 * its lifetime). Otherwise the tuple belongs to another live flow, open or
 * closing: the same client port reaching the same backend through another
 * frontend, or another client port remapped onto it. Taking it over would hand
 * the new flow's replies to the wrong frontend, or its SYN to a backend that
 * still holds the old connection in TIME_WAIT. */
static __always_inline bool ct4_reply_reusable(const struct kbp_ct_value *old, const struct pkt4 *p, __u64 now)
{
	if (!ct4_live(old, NULL, p->proto, now))
		return true;
	if ((old->flags & KBP_CT_F_PORT_REMAP) && old->client_port != p->sport)
		return false;
	return old->nat_addr == p->daddr && old->nat_port == p->dport;
}

/*
 * Record the REPLY entry of a new flow whose own reply tuple another live flow
 * holds: the client's port is remapped to a random one of the SNAT range whose
 * tuple is free (BPF_NOEXIST reserves it atomically between CPUs), as
 * netfilter's NAT picks another source port on such a clash. Sets the FORWARD
 * value's KBP_CT_F_PORT_REMAP and nat_addr:nat_port, the source the packet
 * leaves with. Returns KBP_OK or KBP_STAT_DROP_CT_CLASH.
 */
static __always_inline int ct4_reply_remap(const struct pkt4 *p, struct kbp_ct_value *fwd_v, struct kbp_ct_key *rev,
					   struct kbp_ct_value *rev_v)
{
	int i;

	rev_v->flags = KBP_CT_F_PORT_REMAP;
	rev_v->client_port = p->sport;
	for (i = 0; i < KBP_SNAT_TRIES; i++) {
		rev->dport = snat4_random_port();
		if (!bpf_map_update_elem(&kbp_ct4_v2, rev, rev_v, BPF_NOEXIST)) {
			fwd_v->nat_addr = rev->daddr;
			fwd_v->nat_port = rev->dport;
			fwd_v->flags |= KBP_CT_F_PORT_REMAP;
			return KBP_OK;
		}
	}
	return KBP_STAT_DROP_CT_CLASH;
}

/*
 * Record a new translated flow: the REPLY entry the backend at be_ip:be_port
 * will answer with (unless the client is masqueraded: replies then come back
 * through the SNAT map), then the FORWARD entry as the client sent it.
 * `fwd_v` carries the backend, frontend and any SNAT fields. `replace` says the
 * FORWARD entry may exist (a stale or re-balanced flow); otherwise it is
 * inserted only if absent, so two CPUs racing on a flow's first packets agree
 * on one backend.
 * Never takes over the REPLY entry of another live flow (ct4_reply_reusable):
 * the client's port is remapped instead (ct4_reply_remap sets
 * KBP_CT_F_PORT_REMAP in `fwd_v`; the caller rewrites the source).
 * Returns KBP_OK; KBP_CT_RACE when the FORWARD entry appeared meanwhile (the
 * caller follows it); KBP_STAT_DROP_CT_CLASH; or KBP_STAT_DROP_CT_INSERT
 * (fail closed: a flow whose replies cannot be translated is broken anyway).
 */
static __always_inline int ct4_create(const struct pkt4 *p, const struct kbp_ct_key *fwd,
				      struct kbp_ct_value *fwd_v, __be32 be_ip, __be16 be_port, bool replace)
{
	struct kbp_ct_value rev_v;
	struct kbp_ct_key rev;
	bool created_reply = false;

	if (!(fwd_v->flags & KBP_CT_F_SNAT)) {
		ct4_reply_of(&rev, &rev_v, p, fwd_v, be_ip, be_port, fwd_v->created_ns);
		/* Reply entry first: once the forward entry exists, later packets
		 * of the flow take the established path and would not create it. */
		if (!bpf_map_update_elem(&kbp_ct4_v2, &rev, &rev_v, BPF_NOEXIST)) {
			created_reply = true;
		} else {
			struct kbp_ct_value *old = bpf_map_lookup_elem(&kbp_ct4_v2, &rev);

			if (old && !ct4_reply_reusable(old, p, fwd_v->created_ns)) {
				int ret = ct4_reply_remap(p, fwd_v, &rev, &rev_v);

				if (ret != KBP_OK)
					return ret;
				created_reply = true;
			} else if (bpf_map_update_elem(&kbp_ct4_v2, &rev, &rev_v, BPF_ANY)) {
				return KBP_STAT_DROP_CT_INSERT;
			}
		}
	}
	if (bpf_map_update_elem(&kbp_ct4_v2, fwd, fwd_v, replace ? BPF_ANY : BPF_NOEXIST)) {
		if (created_reply)
			bpf_map_delete_elem(&kbp_ct4_v2, &rev);
		return replace ? KBP_STAT_DROP_CT_INSERT : KBP_CT_RACE;
	}
	return KBP_OK;
}

/*
 * Once a second per active flow, put back the companion entry LRU pressure may
 * have evicted while the FORWARD entry lived on: the REPLY entry, or the SNAT
 * entry of a masqueraded flow (its port must still be free: a flow never shares
 * its tuple with another).
 * Returns KBP_OK or KBP_STAT_DROP_CT_CLASH.
 */
static __always_inline int ct4_repair(const struct pkt4 *p, const struct kbp_ct_value *ct, __be32 be_ip,
				      __be16 be_port, __u64 now)
{
	if (ct->flags & KBP_CT_F_SNAT) {
		struct kbp_snat_key key = {
			.saddr = be_ip,
			.daddr = ct->nat_addr,
			.sport = be_port,
			.dport = ct->nat_port,
			.proto = p->proto,
		};
		struct kbp_snat_value v = {
			.created_ns = now,
			.client_addr = p->saddr,
			.client_port = p->sport,
			.svc_id = ct->svc_id,
		};

		if (bpf_map_lookup_elem(&kbp_snat4_v1, &key))
			return KBP_OK;
		return bpf_map_update_elem(&kbp_snat4_v1, &key, &v, BPF_NOEXIST) ? KBP_STAT_DROP_CT_CLASH : KBP_OK;
	} else {
		struct kbp_ct_value rev_v;
		struct kbp_ct_key rev;

		ct4_reply_of(&rev, &rev_v, p, ct, be_ip, be_port, now);
		if (!bpf_map_lookup_elem(&kbp_ct4_v2, &rev))
			bpf_map_update_elem(&kbp_ct4_v2, &rev, &rev_v, BPF_NOEXIST);
		return KBP_OK;
	}
}

#endif /* KBP_LIB_CONNTRACK_H */
