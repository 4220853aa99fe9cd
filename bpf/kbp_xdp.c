// SPDX-License-Identifier: GPL-2.0
/*
 * XDP on node-facing devices (--nodeport-acceleration xdp), in front of
 * kbp_from_node at tc ingress of the same device, which stays attached:
 *  - new and established flows to a frontend: balanced, masqueraded when the
 *    backend is on another node, recorded and DNATed here (lib/xdp.h), with
 *    the maps kbp_from_node uses;
 *  - everything else (replies, ICMP, REJECT, fragments, packets with only a
 *    pseudo-header checksum): passed to tc unchanged.
 */
#define KBP_XDP 1

#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/xdp.h"

SEC("xdp")
int kbp_xdp_node(struct xdp_md *ctx)
{
	return lb4_xdp(ctx);
}

char _license[] SEC("license") = "GPL";
