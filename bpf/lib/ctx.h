/* SPDX-License-Identifier: GPL-2.0 */
/* The packet context the shared datapath code runs on. tc programs get a
 * struct __sk_buff; the XDP program (kbp_xdp.c, built with KBP_XDP) a struct
 * xdp_md, before the kernel has made an skb. Code that works on either takes
 * a struct kbp_ctx and reads the packet only through these accessors; what
 * differs between the hooks (how the L4 checksum is updated) is chosen once,
 * in nat.h. */
#ifndef KBP_LIB_CTX_H
#define KBP_LIB_CTX_H

#include <linux/bpf.h>

#ifdef KBP_XDP
#define kbp_ctx xdp_md
#else
#define kbp_ctx __sk_buff
#endif

static __always_inline void *ctx_data(const struct kbp_ctx *ctx)
{
	return (void *)(long)ctx->data;
}

static __always_inline void *ctx_data_end(const struct kbp_ctx *ctx)
{
	return (void *)(long)ctx->data_end;
}

/* Bytes of the packet, as the stats count them. */
static __always_inline __u32 ctx_len(const struct kbp_ctx *ctx)
{
#ifdef KBP_XDP
	return ctx->data_end - ctx->data;
#else
	return ctx->len;
#endif
}

#endif /* KBP_LIB_CTX_H */
