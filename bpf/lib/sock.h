/* SPDX-License-Identifier: GPL-2.0 */
/* Socket-level balancing of ClusterIP frontends for the node's own network
 * namespace (host network: kubelet, hostNetwork pods, node daemons), whose
 * traffic never passes a pod device's tc ingress. cgroup/connect4 and
 * cgroup/sendmsg4 point the socket at a backend before the first packet
 * exists, so no packet is ever rewritten and no conntrack entry is needed;
 * cgroup/recvmsg4 and cgroup/getpeername4 give the application the frontend
 * back through kbp_sockrev_v1. Backends are chosen from the same maps and by
 * the same helpers as the tc datapath (lb.h). */
#ifndef KBP_LIB_SOCK_H
#define KBP_LIB_SOCK_H

#include <linux/errno.h>
#include "common.h"
#include "maps.h"
#include "stats.h"
#include "lb.h"

/* Return values of cgroup sock_addr programs. */
#define SOCK_REJECT 0
#define SOCK_ALLOW  1

/* True for sockets of the node's own network namespace, the one whose cookie
 * the agent wrote (0 = not written yet: no socket is). Pods' sockets share
 * the cgroup but not the namespace, and keep going through tc. */
static __always_inline bool sock4_in_host_ns(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct kbp_host_ns *h = bpf_map_lookup_elem(&kbp_hostns_v1, &zero);

	return h && h->netns_cookie && h->netns_cookie == bpf_get_netns_cookie(ctx);
}

/* The address ClientIP affinity keys this node's own sockets by: the node's
 * primary address as the agent configured it (kube-proxy sees host traffic
 * from the address routing picks, normally that one), 0.0.0.0 when unknown. */
static __always_inline __be32 sock4_client_addr(void)
{
	__u32 zero = 0;
	struct kbp_config *cfg = bpf_map_lookup_elem(&kbp_config_v1, &zero);

	return cfg ? cfg->node_ip : 0;
}

/* Remember which frontend a socket asked for, per backend it was given. Only
 * written when it differs (sendmsg runs per datagram). A failed update costs
 * only the name recvmsg/getpeername report, so it does not fail the call. */
static __always_inline void sock4_revnat_record(__u64 cookie, __be32 be_ip, __be16 be_port, __u8 proto,
						__be32 vip, __be16 port, __u32 svc_id)
{
	struct kbp_sock_rev_key key = { .cookie = cookie, .addr = be_ip, .port = be_port, .proto = proto };
	struct kbp_sock_rev v = { .vip = vip, .port = port, .svc_id = svc_id };
	struct kbp_sock_rev *cur = bpf_map_lookup_elem(&kbp_sockrev_v1, &key);

	if (cur && cur->vip == vip && cur->port == port && cur->svc_id == svc_id)
		return;
	bpf_map_update_elem(&kbp_sockrev_v1, &key, &v, BPF_ANY);
}

/*
 * connect()/sendmsg() of a host socket to ctx->user_ip4:user_port: for a
 * ClusterIP frontend, choose a backend as a new tc flow would (the client's
 * sticky one under ClientIP affinity, else a random active slot; slot 0 is
 * the service entry) and point the socket at it. Other frontends (NodePort,
 * externalIP, LoadBalancer) and other addresses are left to the stack.
 * Returns 0 (translated or untouched), -ECONNREFUSED for a frontend without
 * endpoints (KBP_SVC_F_REJECT, as kube-proxy's REJECT) or without a usable
 * backend (a Local policy left none, or a sync is in flight: the tc datapath
 * drops those; a socket cannot be left hanging, so it fails at once).
 */
static __always_inline int sock4_xlate(struct bpf_sock_addr *ctx, __u8 proto)
{
	struct kbp_svc_value *svc;
	struct kbp_backend_key bkey;
	struct kbp_backend *be;
	struct pkt4 p = {
		.daddr = ctx->user_ip4,
		.dport = (__be16)ctx->user_port, /* network order in the low 16 bits */
		.proto = proto,
	};
	__u64 now;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	svc = lb4_lookup_scope(&p, KBP_SCOPE_EXTERNAL);
	if (!svc || !(svc->flags & KBP_SVC_F_CLUSTER_IP))
		return 0;
	if (svc->count == 0)
		return -ECONNREFUSED;

	now = bpf_ktime_get_coarse_ns();
	p.saddr = sock4_client_addr();
	bkey.id = (svc->flags & KBP_SVC_F_AFFINITY) ? lb4_affinity_backend(&p, svc, KBP_SCOPE_EXTERNAL, now) : 0;
	if (!bkey.id) {
		__u16 slot;

		bkey.id = lb4_select_backend(&p, svc, KBP_SCOPE_EXTERNAL, &slot);
		if ((svc->flags & KBP_SVC_F_AFFINITY) && bkey.id)
			lb4_affinity_record(&p, svc, bkey.id, slot, now);
	}
	be = bkey.id ? bpf_map_lookup_elem(&kbp_backend_v2, &bkey) : NULL;
	if (!be)
		return -ECONNREFUSED;

	sock4_revnat_record(bpf_get_socket_cookie(ctx), be->ip, be->port, proto, p.daddr, p.dport, svc->svc_id);
	ctx->user_ip4 = be->ip;
	ctx->user_port = (__u32)be->port;
	return 0;
}

/* connect4/sendmsg4 entry: translate host sockets, count, and refuse with
 * the errno sock4_xlate gave (bpf_set_retval; the caller sees it instead of
 * the EPERM a plain reject gives). */
static __always_inline int sock4_forward(struct bpf_sock_addr *ctx)
{
	__be32 before;
	int err;

	if (!sock4_in_host_ns(ctx))
		return SOCK_ALLOW;
	before = ctx->user_ip4;
	err = sock4_xlate(ctx, ctx->protocol);
	if (err) {
		stats_count(KBP_STAT_SOCK_REJECT, 0);
		bpf_set_retval(err);
		return SOCK_REJECT;
	}
	if (ctx->user_ip4 != before)
		stats_count(KBP_STAT_SOCK_XLATE, 0);
	return SOCK_ALLOW;
}

/* recvmsg4 (UDP reply source) / getpeername4: a backend this socket was
 * pointed at is reported as the frontend it asked for. Only sockets the
 * forward programs translated have entries (keyed by their cookie), so no
 * namespace check is needed here. Always allows (these hooks cannot fail). */
static __always_inline int sock4_reverse(struct bpf_sock_addr *ctx, __u8 proto)
{
	struct kbp_sock_rev_key key = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = ctx->user_ip4,
		.port = (__be16)ctx->user_port,
		.proto = proto,
	};
	struct kbp_sock_rev *rev = bpf_map_lookup_elem(&kbp_sockrev_v1, &key);

	if (rev) {
		ctx->user_ip4 = rev->vip;
		ctx->user_port = (__u32)rev->port;
	}
	return SOCK_ALLOW;
}

#endif /* KBP_LIB_SOCK_H */
