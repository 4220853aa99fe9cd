// SPDX-License-Identifier: GPL-2.0
/*
 * tc ingress on node-facing devices (the node's uplinks).
 *
 * Packets arrive here as they enter the node from the network, before routing:
 *  - to a frontend (NodePort on a node address, LoadBalancer ingress IP,
 *    externalIP, or a ClusterIP routed to this node): choose or follow a
 *    backend and DNAT; a backend on another node also gets the client
 *    masqueraded to this node (SNAT) so its reply returns here;
 *  - replies of masqueraded flows: back to the client, from the frontend;
 *  - replies from backends on other nodes to flows this node's pods started
 *    (conntrack REPLY entries): reverse NAT back to the frontend;
 *  - to a known frontend address on a port it does not serve: drop;
 *  - anything else: pass untouched.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/stats.h"
#include "lib/lb.h"

SEC("tc")
int kbp_from_node(struct __sk_buff *skb)
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
		ret = KBP_OK;
		if (lb4_vip_known(p.daddr))
			ret = p.fragment ? KBP_STAT_DROP_FRAGMENT : KBP_STAT_DROP_MALFORMED;
	} else if ((svc = lb4_lookup_service(p.daddr, p.dport, p.proto))) {
		ret = lb4_forward(skb, &p, svc, true, &stat);
	} else {
		ret = lb4_reverse_snat(skb, &p, &stat);
		if (ret == KBP_OK && stat == KBP_STAT_PASS)
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
