// SPDX-License-Identifier: GPL-2.0
/* The baseline for the per-packet benchmark: a tc program that does nothing.
 * Every datapath figure is reported as a ratio to this one, measured in the
 * same run with the same harness. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int kbp_noop(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
