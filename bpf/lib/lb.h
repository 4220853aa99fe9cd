/* SPDX-License-Identifier: GPL-2.0 */
/* Service (frontend) lookup, backend selection and the forward/reverse
 * translation of service traffic. */
#ifndef KBP_LIB_LB_H
#define KBP_LIB_LB_H

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "nat.h"
#include "conntrack.h"
#include "snat.h"
#include "stats.h"

/* The service entry (slot 0) of a frontend in a scope, or NULL. */
static __always_inline struct kbp_svc_value *lb4_lookup_scope(const struct pkt4 *p, __u8 scope)
{
	struct kbp_svc_key key = {
		.vip = p->daddr,
		.port = p->dport,
		.proto = p->proto,
		.scope = scope,
		.slot = 0,
	};

	return bpf_map_lookup_elem(&kbp_svc_v1, &key);
}

/* The service entry the packet's frontend gives this side: the external one,
 * or for a pod (from_node false) its internal one when the frontend has it
 * (externalTrafficPolicy Local: pods use every endpoint). NULL if no frontend. */
static __always_inline struct kbp_svc_value *lb4_lookup_service(const struct pkt4 *p, bool from_node, __u8 *scope)
{
	struct kbp_svc_value *svc = lb4_lookup_scope(p, KBP_SCOPE_EXTERNAL);
	struct kbp_svc_value *internal;

	*scope = KBP_SCOPE_EXTERNAL;
	if (!svc || from_node || !(svc->flags & KBP_SVC_F_INTERNAL_SCOPE))
		return svc;
	internal = lb4_lookup_scope(p, KBP_SCOPE_INTERNAL);
	if (!internal)
		return svc;
	*scope = KBP_SCOPE_INTERNAL;
	return internal;
}

/* True if some frontend lives on vip (the syncer writes a VIP marker, port 0
 * and protocol 0, for every frontend address). */
static __always_inline bool lb4_vip_known(__be32 vip)
{
	struct kbp_svc_key key = { .vip = vip, .scope = KBP_SCOPE_EXTERNAL };
	struct kbp_svc_value *v = bpf_map_lookup_elem(&kbp_svc_v1, &key);

	return v && (v->flags & KBP_SVC_F_VIP_MARKER);
}

/* loadBalancerSourceRanges: whether the client lies in one of the frontend's ranges. */
static __always_inline bool lb4_source_allowed(__be32 client, __u32 svc_id)
{
	struct kbp_src_range_key key = { .prefixlen = 64, .svc_id = svc_id, .addr = client };

	return bpf_map_lookup_elem(&kbp_srcrange_v1, &key) != NULL;
}

/* A random active backend of the frontend: slots 1..count are dense (the
 * syncer writes them before raising count). Returns the backend id and its
 * slot, or 0 if the slot is missing. The caller has checked count > 0. */
static __always_inline __u32 lb4_select_backend(const struct pkt4 *p, const struct kbp_svc_value *svc,
						__u8 scope, __u16 *slot_out)
{
	struct kbp_svc_key key = {
		.vip = p->daddr,
		.port = p->dport,
		.proto = p->proto,
		.scope = scope,
		.slot = (bpf_get_prandom_u32() % svc->count) + 1,
	};
	struct kbp_svc_value *slot = bpf_map_lookup_elem(&kbp_svc_v1, &key);

	*slot_out = key.slot;
	return slot ? slot->backend_id : 0;
}

/*
 * sessionAffinity ClientIP: the backend this client used for the frontend
 * within the timeout, if the frontend still has it in the same active slot;
 * else 0. A hit refreshes the timer: each new flow of the client does, as
 * kube-proxy's `recent` match does.
 */
static __always_inline __u32 lb4_affinity_backend(const struct pkt4 *p, const struct kbp_svc_value *svc,
						  __u8 scope, __u64 now)
{
	struct kbp_affinity_key key = { .client = p->saddr, .svc_id = svc->svc_id };
	struct kbp_affinity_value *aff = bpf_map_lookup_elem(&kbp_affinity_v1, &key);
	struct kbp_svc_key skey = {
		.vip = p->daddr,
		.port = p->dport,
		.proto = p->proto,
		.scope = scope,
	};
	struct kbp_svc_value *slot;

	if (!aff || now - aff->last_used_ns > (__u64)svc->affinity_timeout * 1000000000ull)
		return 0;
	if (aff->slot == 0 || aff->slot > svc->count)
		return 0;
	skey.slot = aff->slot;
	slot = bpf_map_lookup_elem(&kbp_svc_v1, &skey);
	if (!slot || slot->backend_id != aff->backend_id)
		return 0;
	aff->last_used_ns = now;
	return aff->backend_id;
}

/* Remember the client's backend for the frontend. A failed update only costs
 * stickiness for the client's next flow, so it does not fail the packet. */
static __always_inline void lb4_affinity_record(const struct pkt4 *p, const struct kbp_svc_value *svc,
						__u32 backend_id, __u16 slot, __u64 now)
{
	struct kbp_affinity_key key = { .client = p->saddr, .svc_id = svc->svc_id };
	struct kbp_affinity_value v = { .last_used_ns = now, .backend_id = backend_id, .slot = slot };

	bpf_map_update_elem(&kbp_affinity_v1, &key, &v, BPF_ANY);
}

/*
 * Client -> frontend: follow the flow's conntrack entry while its backend
 * exists (even if terminating), otherwise choose an active backend and record
 * the flow; then DNAT to the backend.
 * On node-facing devices (from_node), a new flow to a backend on another node
 * also masquerades the client to this node (SNAT), so the reply comes back
 * here. Frontends flagged KBP_SVC_F_MASQUERADE (externalTrafficPolicy Cluster)
 * masquerade every new flow, from either side and to any backend, as
 * kube-proxy's KUBE-EXT chain does. Frontends with externalTrafficPolicy: Local
 * only ever hold local backends and carry no flag: clients keep their address.
 * A client that gets itself as backend (hairpin) is given KBP_HAIRPIN_ADDR as
 * source, so the backend's reply leaves it and comes back through here.
 * A new flow whose reply tuple another live flow holds gets another client
 * port (ct4_create, KBP_CT_F_PORT_REMAP).
 * Returns KBP_OK with *stat set to NEW_FLOW, SNAT, HAIRPIN, PORT_REMAP or ESTABLISHED;
 * KBP_STAT_REJECT for a frontend without endpoints that rejects; or a drop reason
 * (KBP_STAT_DROP_SOURCE_RANGE: a new flow from outside loadBalancerSourceRanges).
 */
static __always_inline int lb4_forward(struct kbp_ctx *ctx, const struct pkt4 *p,
				       const struct kbp_svc_value *svc, __u8 scope, bool from_node, __u32 *stat)
{
	struct kbp_ct_key key;
	struct kbp_ct_value *ct;
	struct kbp_backend_key bkey;
	struct kbp_backend *be = NULL;
	__u64 now = bpf_ktime_get_coarse_ns();
	__be32 remap_addr = 0;
	__be16 remap_port = 0;
	bool replace;
	int ret;

	ct4_key(&key, p->saddr, p->daddr, p->sport, p->dport, p->proto, KBP_CT_FORWARD);
	ct = bpf_map_lookup_elem(&kbp_ct4_v2, &key);
	replace = ct != NULL;
	if (ct && ct4_live(ct, p, p->proto, now)) {
		bkey.id = ct->backend_id;
		be = bpf_map_lookup_elem(&kbp_backend_v2, &bkey);
		if (be && ct->svc_id == svc->svc_id)
			goto established;
		/* The frontend was replaced (new id): keep the backend if it is
		 * still there and re-record the flow under the new frontend, with
		 * the client port the backend knows it by. */
		if (be && (ct->flags & KBP_CT_F_PORT_REMAP)) {
			remap_addr = ct->nat_addr;
			remap_port = ct->nat_port;
		}
	}

	if (!be) {
		bool affinity = svc->flags & KBP_SVC_F_AFFINITY;

		/* Before the endpoint check: kube-proxy's firewall comes first too. */
		if ((svc->flags & KBP_SVC_F_SOURCE_RANGES) && !lb4_source_allowed(p->saddr, svc->svc_id))
			return KBP_STAT_DROP_SOURCE_RANGE;
		if (svc->count == 0)
			return (svc->flags & KBP_SVC_F_REJECT) ? KBP_STAT_REJECT : KBP_STAT_DROP_NO_BACKEND;
		bkey.id = affinity ? lb4_affinity_backend(p, svc, scope, now) : 0;
		if (!bkey.id) {
			__u16 slot;

			bkey.id = lb4_select_backend(p, svc, scope, &slot);
			if (affinity && bkey.id)
				lb4_affinity_record(p, svc, bkey.id, slot, now);
		}
		be = bkey.id ? bpf_map_lookup_elem(&kbp_backend_v2, &bkey) : NULL;
		if (!be)
			return KBP_STAT_DROP_BACKEND_MISSING;
	}

	struct kbp_ct_value v = {
		.created_ns = now,
		.last_seen_ns = now,
		.backend_id = bkey.id,
		.svc_id = svc->svc_id,
		.tcp_flags = p->tcp_flags,
	};
	__be32 be_ip = be->ip;
	__be16 be_port = be->port;

	*stat = KBP_STAT_NEW_FLOW;
	if ((from_node && !(be->flags & KBP_BACKEND_F_LOCAL)) || (svc->flags & KBP_SVC_F_MASQUERADE)) {
		v.nat_addr = snat4_node_addr(p, svc);
		if (!v.nat_addr)
			return KBP_STAT_DROP_NO_CONFIG;
		ret = snat4_reserve(p, v.nat_addr, be_ip, be_port, svc->svc_id, now, &v.nat_port);
		if (ret != KBP_OK)
			return ret;
		v.flags |= KBP_CT_F_SNAT;
		*stat = KBP_STAT_SNAT;
	} else if (be_ip == p->saddr) {
		v.nat_addr = bpf_htonl(KBP_HAIRPIN_ADDR);
		v.nat_port = p->sport;
		v.flags |= KBP_CT_F_HAIRPIN;
		*stat = KBP_STAT_HAIRPIN;
	}
	if (remap_port && !(v.flags & KBP_CT_F_SNAT)) {
		v.nat_addr = remap_addr;
		v.nat_port = remap_port;
		v.flags |= KBP_CT_F_PORT_REMAP;
	}
	ret = ct4_create(p, &key, &v, be_ip, be_port, replace);
	if (ret == KBP_CT_RACE) {
		/* Another CPU recorded the flow first: give back the SNAT port
		 * reserved here and follow its choice. */
		if (v.flags & KBP_CT_F_SNAT)
			snat4_release(p, v.nat_addr, be_ip, be_port, v.nat_port);
		ct = bpf_map_lookup_elem(&kbp_ct4_v2, &key);
		if (!ct)
			return KBP_STAT_DROP_CT_INSERT;
		bkey.id = ct->backend_id;
		be = bpf_map_lookup_elem(&kbp_backend_v2, &bkey);
		if (!be)
			return KBP_STAT_DROP_BACKEND_MISSING;
		goto established;
	}
	if (ret != KBP_OK) {
		if (v.flags & KBP_CT_F_SNAT)
			snat4_release(p, v.nat_addr, be_ip, be_port, v.nat_port);
		return ret;
	}
	if (v.flags & KBP_CT_F_PORT_REMAP)
		*stat = KBP_STAT_PORT_REMAP;
	ret = nat4_rewrite(ctx, p, true, p->daddr, be_ip, p->dport, be_port);
	if (ret == KBP_OK && (v.flags & KBP_CT_F_REWRITES_SOURCE))
		ret = nat4_rewrite(ctx, p, false, p->saddr, v.nat_addr, p->sport, v.nat_port);
	return ret;

established:
	{
		__be32 nat_addr = ct->nat_addr;
		__be16 nat_port = ct->nat_port;
		bool snat = ct->flags & KBP_CT_F_REWRITES_SOURCE;

		if (ct4_touch(ct, p, now)) {
			ret = ct4_repair(p, ct, be->ip, be->port, now);
			if (ret != KBP_OK)
				return ret;
		}
		*stat = KBP_STAT_ESTABLISHED;
		ret = nat4_rewrite(ctx, p, true, p->daddr, be->ip, p->dport, be->port);
		if (ret == KBP_OK && snat)
			ret = nat4_rewrite(ctx, p, false, p->saddr, nat_addr, p->sport, nat_port);
		return ret;
	}
}

/*
 * Backend -> masqueraded client (arriving on a node-facing device from a
 * backend on another node, or on a pod-facing one from a local backend):
 * restore the client as destination and the frontend as source.
 * Returns KBP_OK with *stat = REVNAT, or KBP_OK with *stat untouched when the
 * packet is no reply of a masqueraded flow, or a drop reason.
 */
static __always_inline int lb4_reverse_snat(struct kbp_ctx *ctx, const struct pkt4 *p, __u32 *stat)
{
	struct kbp_snat_key key = {
		.saddr = p->saddr,
		.daddr = p->daddr,
		.sport = p->sport,
		.dport = p->dport,
		.proto = p->proto,
	};
	struct kbp_snat_value *sn = bpf_map_lookup_elem(&kbp_snat4_v1, &key);
	struct kbp_revnat_key rkey;
	struct kbp_revnat *rn;
	__be32 client_addr;
	__be16 client_port;
	int ret;

	if (!sn)
		return KBP_OK;
	rkey.svc_id = sn->svc_id;
	rn = bpf_map_lookup_elem(&kbp_revnat_v1, &rkey);
	if (!rn)
		return KBP_OK; /* frontend removed: nothing to translate back to */
	client_addr = sn->client_addr;
	client_port = sn->client_port;
	*stat = KBP_STAT_REVNAT;
	ret = nat4_rewrite(ctx, p, true, p->daddr, client_addr, p->dport, client_port);
	if (ret == KBP_OK)
		ret = nat4_rewrite(ctx, p, false, p->saddr, rn->vip, p->sport, rn->port);
	return ret;
}

/*
 * Backend -> client: if the packet is the reply of a translated flow, rewrite
 * its source back to the frontend the client addressed (and, for a hairpin
 * flow, its destination KBP_HAIRPIN_ADDR back to the client: the backend
 * itself; for a remapped flow, its destination port back to the client's).
 * Returns KBP_OK with *stat = REVNAT, or KBP_OK with *stat untouched when the
 * packet is not a reply we know (it passes as it is), or a drop reason.
 */
static __always_inline int lb4_reverse(struct kbp_ctx *ctx, const struct pkt4 *p, __u32 *stat)
{
	bool hairpin = p->daddr == bpf_htonl(KBP_HAIRPIN_ADDR);
	__be16 client_port;
	struct kbp_ct_key key;
	struct kbp_ct_value *ct;
	struct kbp_revnat_key rkey;
	struct kbp_revnat *rn;
	int ret;

	ct4_key(&key, p->saddr, p->daddr, p->sport, p->dport, p->proto, KBP_CT_REPLY);
	ct = bpf_map_lookup_elem(&kbp_ct4_v2, &key);
	if (!ct)
		return KBP_OK;
	rkey.svc_id = ct->svc_id;
	rn = bpf_map_lookup_elem(&kbp_revnat_v1, &rkey);
	if (!rn)
		return KBP_OK; /* frontend removed: nothing to translate back to */

	ct4_touch(ct, p, bpf_ktime_get_coarse_ns());
	if (!(ct->flags & KBP_CT_F_SEEN_REPLY))
		ct->flags |= KBP_CT_F_SEEN_REPLY;
	client_port = (ct->flags & KBP_CT_F_PORT_REMAP) ? ct->client_port : p->dport;
	*stat = KBP_STAT_REVNAT;
	ret = nat4_rewrite(ctx, p, false, p->saddr, rn->vip, p->sport, rn->port);
	if (ret == KBP_OK && (hairpin || client_port != p->dport))
		ret = nat4_rewrite(ctx, p, true, p->daddr, hairpin ? p->saddr : p->daddr, p->dport, client_port);
	return ret;
}

#endif /* KBP_LIB_LB_H */
