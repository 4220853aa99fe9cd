/* SPDX-License-Identifier: GPL-2.0 */
/* Per-CPU packet/byte counters by outcome (enum kbp_stat in abi.h). Per-CPU, so
 * counting never contends between cores; readers sum over CPUs. */
#ifndef KBP_LIB_STATS_H
#define KBP_LIB_STATS_H

#include "common.h"
#include "maps.h"

static __always_inline void stats_count(__u32 stat, __u32 len)
{
	struct kbp_stat_value *v = bpf_map_lookup_elem(&kbp_stats_v2, &stat);

	if (v) {
		v->packets++;
		v->bytes += len;
	}
}

#endif /* KBP_LIB_STATS_H */
