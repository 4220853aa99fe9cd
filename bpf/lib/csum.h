/* SPDX-License-Identifier: GPL-2.0 */
/* One's-complement checksum arithmetic on values as stored in the packet
 * (network order in, network order out: the sum does not depend on byte
 * order as long as every operand has the same). */
#ifndef KBP_LIB_CSUM_H
#define KBP_LIB_CSUM_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* Fold a 32-bit one's-complement sum (bpf_csum_diff's result) and invert it. */
static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Update of a checksum for a 32-bit field changing from `from` to `to`
 * (RFC 1624, eqn. 3). */
static __always_inline __u16 csum_replace4(__u16 check, __be32 from, __be32 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~from + (__u16)~(from >> 16);
	sum += (__u16)to + (__u16)(to >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* The same for a 16-bit field. */
static __always_inline __u16 csum_replace2(__u16 check, __u16 from, __u16 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~from + to;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* The folded, not inverted, TCP/UDP pseudo-header sum: what a locally
 * generated packet with CHECKSUM_PARTIAL carries in its L4 checksum field
 * until the device (or the stack's fallback) completes it. */
static __always_inline __u16 csum_pseudo4(__be32 saddr, __be32 daddr, __u8 proto, __u16 l4_len)
{
	__u32 sum = (saddr & 0xffff) + (saddr >> 16) + (daddr & 0xffff) + (daddr >> 16);

	sum += bpf_htons((__u16)proto) + bpf_htons(l4_len);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

#endif /* KBP_LIB_CSUM_H */
