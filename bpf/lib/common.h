/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KBP_LIB_COMMON_H
#define KBP_LIB_COMMON_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <kbp/abi.h>

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* Verdicts of the helpers below. A helper that fails returns a KBP_STAT_DROP_*
 * reason; the entry point counts it and drops. KBP_OK means "carry on". */
#define KBP_OK 0

#endif /* KBP_LIB_COMMON_H */
