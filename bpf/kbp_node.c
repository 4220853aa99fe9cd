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
#include "lib/ingress.h"

SEC("tc")
int kbp_from_node(struct __sk_buff *skb)
{
	return lb4_ingress(skb, true);
}

char _license[] SEC("license") = "GPL";
