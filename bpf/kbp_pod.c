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
#include "lib/ingress.h"

SEC("tc")
int kbp_from_pod(struct __sk_buff *skb)
{
	return lb4_ingress(skb, false);
}

char _license[] SEC("license") = "GPL";
