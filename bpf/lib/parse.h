/* SPDX-License-Identifier: GPL-2.0 */
/* IPv4 TCP/UDP parsing with a bounds check before every header read. */
#ifndef KBP_LIB_PARSE_H
#define KBP_LIB_PARSE_H

#include "common.h"
#include "ctx.h"

/* What the datapath needs of one packet: its tuple as carried on the wire
 * (network order) and where the headers it rewrites start. */
struct pkt4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;  /* 0 unless TCP/UDP */
	__be16 dport;  /* 0 unless TCP/UDP */
	__u8   proto;
	__u8   tcp_flags; /* TCP only: flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10) */
	__u8   fragment;  /* 1 if MF is set or the fragment offset is non-zero */
	__u8   l4_ok;     /* 1 if the TCP/UDP header is inside the packet */
	__u32  l3_off;    /* offset of the IPv4 header */
	__u32  l4_off;    /* offset of the TCP/UDP header */
};

#define IP_MF     0x2000
#define IP_OFFSET 0x1fff

/* Returns 1 for IPv4 (pkt filled in), 0 for anything the datapath leaves alone
 * (not IPv4, a version other than 4 behind the IPv4 ethertype, or an IPv4
 * header that does not fit: the stack judges those). */
static __always_inline int parse_ipv4(struct kbp_ctx *ctx, struct pkt4 *p)
{
	void *data = ctx_data(ctx);
	void *end = ctx_data_end(ctx);
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 ihl;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return 0;
	/* ip_rcv drops a wrong version after tc anyway; leaving it alone here
	 * keeps it from creating flows. */
	if (ip->version != 4)
		return 0;
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return 0;

	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->fragment = (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) != 0;
	p->l3_off = sizeof(*eth);
	p->l4_off = sizeof(*eth) + ihl;
	p->sport = 0;
	p->dport = 0;
	p->tcp_flags = 0;
	p->l4_ok = 0;

	if (p->fragment)
		return 1;

	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) {
		/* TCP and UDP carry the ports at the same offsets: one check,
		 * one load, so the compiler cannot split the pointer the verifier
		 * has range-checked. */
		struct udphdr *uh = (void *)ip + ihl;

		if ((void *)(uh + 1) > end)
			return 1;
		p->sport = uh->source;
		p->dport = uh->dest;
		if (p->proto == IPPROTO_TCP) {
			struct tcphdr *th = (void *)uh;

			if ((void *)(th + 1) > end)
				return 1;
			p->tcp_flags = ((__u8 *)th)[13];
		}
		p->l4_ok = 1;
	}
	return 1;
}

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

#endif /* KBP_LIB_PARSE_H */
