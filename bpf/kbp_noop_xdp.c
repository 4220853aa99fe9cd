// SPDX-License-Identifier: GPL-2.0
/* The XDP baseline for the per-packet benchmark: an XDP program that passes
 * every packet. The XDP path is reported as a ratio to it, as the tc paths
 * are to kbp_noop. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int kbp_noop_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
