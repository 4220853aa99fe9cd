// SPDX-License-Identifier: GPL-2.0
/*
 * tc ingress on pod-facing host devices (the host end of each pod's veth).
 *
 * Packets arrive here as they leave a pod, before the node routes them:
 *  - to a frontend (ClusterIP:port/proto): choose or follow a backend, DNAT;
 *  - replies of translated flows leaving a local backend: reverse NAT back to
 *    the frontend the client addressed;
 *  - to a known frontend address on a port it does not serve: drop;
 *  - anything else: pass untouched.
 * Because the rewrite happens before routing, the node routes the packet to
 * the backend (or client) by its new address.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/stats.h"
#include "lib/lb.h"

SEC("tc")
int kbp_from_pod(struct __sk_buff *skb)
{
	struct kbp_svc_value *svc;
	struct pkt4 p;
	__u32 stat = KBP_STAT_PASS;
	int ret;

	if (!parse_ipv4(skb, &p))
		return TC_ACT_OK;

	if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP) {
		ret = KBP_OK;
	} else if (p.fragment || !p.l4_ok) {
		/* Only the first fragment carries ports; without reassembly we
		 * cannot translate a fragmented datagram to a frontend. */
		ret = KBP_OK;
		if (lb4_vip_known(p.daddr))
			ret = p.fragment ? KBP_STAT_DROP_FRAGMENT : KBP_STAT_DROP_MALFORMED;
	} else if ((svc = lb4_lookup_service(p.daddr, p.dport, p.proto))) {
		ret = lb4_forward(skb, &p, svc, false, &stat);
	} else {
		ret = lb4_reverse(skb, &p, &stat);
		if (ret == KBP_OK && stat == KBP_STAT_PASS && lb4_vip_known(p.daddr))
			ret = KBP_STAT_DROP_UNKNOWN_PORT;
	}

	if (ret != KBP_OK) {
		stats_count(ret, skb->len);
		return TC_ACT_SHOT;
	}
	stats_count(stat, skb->len);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
