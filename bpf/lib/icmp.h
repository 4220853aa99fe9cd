/* SPDX-License-Identifier: GPL-2.0 */
/* ICMP in the datapath: the port-unreachable answer for frontends without
 * endpoints (kube-proxy's REJECT), and ICMP errors that quote a translated
 * flow, translated back so the client's stack can match them to its socket. */
#ifndef KBP_LIB_ICMP_H
#define KBP_LIB_ICMP_H

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "nat.h"
#include "csum.h"

/* <linux/icmp.h> drags in libc socket headers; the few bits needed here. */
#define ICMP_DEST_UNREACH   3
#define ICMP_TIME_EXCEEDED  11
#define ICMP_PARAMETERPROB  12
#define ICMP_PORT_UNREACH   3 /* code of ICMP_DEST_UNREACH */

struct icmphdr {
	__u8   type;
	__u8   code;
	__sum16 checksum;
	__be32 rest; /* unused, or the next-hop MTU of "fragmentation needed" */
};

#define IPV4_MAX_HDR  60
#define ICMP4_QUOTE_L4 8 /* bytes of the offending datagram beyond its IPv4 header (RFC 792) */

/* The whole answer to a rejected packet, built on the stack and stored over it
 * from `eth` on. The leading pad puts the IPv4 and ICMP headers on 4-byte
 * boundaries for bpf_csum_diff. */
struct icmp4_unreach {
	__u16 pad;
	struct ethhdr eth;
	struct iphdr ip;
	struct icmphdr icmp;
	__u8 quote[IPV4_MAX_HDR + ICMP4_QUOTE_L4]; /* the offending IPv4 header + 8 bytes */
} __attribute__((packed, aligned(4)));

#define ICMP4_UNREACH_AT(r, field) ((void *)(r) + offsetof(struct icmp4_unreach, field))

/*
 * Turn a TCP/UDP packet to a frontend without endpoints into an ICMP
 * destination unreachable / port unreachable from that frontend back to the
 * client, quoting the packet's IPv4 header and first 8 L4 bytes (what
 * iptables' REJECT sends, so the client's TCP connect fails with
 * ECONNREFUSED and a connected UDP socket sees it), and send it back out of
 * the device it came in on (tc ingress: egress of the same device reaches the
 * pod behind a veth, or the neighbour on an uplink; MACs swapped).
 * The caller has checked p->l4_ok (8 L4 bytes are there).
 * Returns TC_ACT_REDIRECT, or a drop reason: KBP_STAT_DROP_MALFORMED if the
 * headers cannot be read, KBP_STAT_DROP_REWRITE if resizing or storing failed.
 */
static __always_inline int icmp4_reject(struct __sk_buff *skb, const struct pkt4 *p)
{
	struct icmp4_unreach r = {};
	__u8 mac[ETH_ALEN];
	__u32 qlen = p->l4_off - p->l3_off + ICMP4_QUOTE_L4;
	__u32 len;
	__s64 sum;

	if (qlen < sizeof(struct iphdr) + ICMP4_QUOTE_L4 || qlen > sizeof(r.quote))
		return KBP_STAT_DROP_MALFORMED;
	if (bpf_skb_load_bytes(skb, 0, &r.eth, sizeof(r.eth)) ||
	    bpf_skb_load_bytes(skb, p->l3_off, r.quote, qlen))
		return KBP_STAT_DROP_MALFORMED;

	__builtin_memcpy(mac, r.eth.h_dest, ETH_ALEN);
	__builtin_memcpy(r.eth.h_dest, r.eth.h_source, ETH_ALEN);
	__builtin_memcpy(r.eth.h_source, mac, ETH_ALEN);

	r.ip.version = 4;
	r.ip.ihl = sizeof(struct iphdr) / 4;
	r.ip.tot_len = bpf_htons(sizeof(struct iphdr) + sizeof(struct icmphdr) + qlen);
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_ICMP;
	r.ip.saddr = p->daddr; /* the frontend the client addressed */
	r.ip.daddr = p->saddr;
	sum = bpf_csum_diff(NULL, 0, ICMP4_UNREACH_AT(&r, ip), sizeof(r.ip), 0);
	if (sum < 0)
		return KBP_STAT_DROP_REWRITE;
	r.ip.check = csum_fold32((__u32)sum);

	r.icmp.type = ICMP_DEST_UNREACH;
	r.icmp.code = ICMP_PORT_UNREACH;
	/* ICMP checksum: header + quote, no pseudo header; qlen is a multiple of 4. */
	sum = bpf_csum_diff(NULL, 0, ICMP4_UNREACH_AT(&r, icmp), sizeof(r.icmp) + qlen, 0);
	if (sum < 0)
		return KBP_STAT_DROP_REWRITE;
	r.icmp.checksum = csum_fold32((__u32)sum);

	len = sizeof(r.eth) + sizeof(r.ip) + sizeof(r.icmp) + qlen;
	if (bpf_skb_change_tail(skb, len, 0))
		return KBP_STAT_DROP_REWRITE;
	/* BPF_F_RECOMPUTE_CSUM keeps a CHECKSUM_COMPLETE skb's sum right. */
	if (bpf_skb_store_bytes(skb, 0, ICMP4_UNREACH_AT(&r, eth), len, BPF_F_RECOMPUTE_CSUM))
		return KBP_STAT_DROP_REWRITE;
	return bpf_redirect(skb->ifindex, 0);
}

/* An ICMP error and the datagram it quotes, as offsets into the packet and
 * the quoted tuple (network order). */
struct icmp4_error {
	__u32  icmp_off;  /* ICMP header */
	__u32  in_l3_off; /* quoted IPv4 header */
	__u32  in_l4_off; /* quoted TCP/UDP header (at least 8 bytes present) */
	__be32 saddr;     /* quoted source: who sent the offending datagram */
	__be32 daddr;     /* quoted destination */
	__be16 sport;
	__be16 dport;
	__u8   proto;
};

/* Returns 1 if p is an ICMP error (destination unreachable, time exceeded,
 * parameter problem) quoting a TCP or UDP datagram with its ports, e filled
 * in; 0 for any other packet (it passes untouched). */
static __always_inline int icmp4_parse_error(struct __sk_buff *skb, const struct pkt4 *p, struct icmp4_error *e)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 icmp_off = p->l4_off & 0x7f; /* <= 14 + 60 */
	struct icmphdr *ic = data + icmp_off;
	struct iphdr *in;
	struct udphdr *l4;
	__u32 ihl;

	if ((void *)(ic + 1) > end)
		return 0;
	if (ic->type != ICMP_DEST_UNREACH && ic->type != ICMP_TIME_EXCEEDED && ic->type != ICMP_PARAMETERPROB)
		return 0;
	in = (void *)(ic + 1);
	if ((void *)(in + 1) > end)
		return 0;
	ihl = in->ihl * 4;
	if (ihl < sizeof(*in))
		return 0;
	if (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP)
		return 0;
	if (in->frag_off & bpf_htons(IP_OFFSET)) /* a later fragment quotes no ports */
		return 0;
	l4 = (void *)in + ihl;
	if ((void *)(l4 + 1) > end)
		return 0;

	e->icmp_off = icmp_off;
	e->in_l3_off = icmp_off + sizeof(*ic);
	e->in_l4_off = icmp_off + sizeof(*ic) + ihl;
	e->saddr = in->saddr;
	e->daddr = in->daddr;
	e->sport = l4->source;
	e->dport = l4->dest;
	e->proto = in->protocol;
	return 1;
}

/*
 * Rewrite an ICMP error: the outer addresses and the quoted datagram's
 * addresses and ports. Each checksum follows what changed in the bytes it
 * covers: the outer IPv4 header checksum, the quoted IPv4 header checksum, the
 * quoted L4 checksum when the quote holds it (UDP always, unless zero: none;
 * TCP when 18 L4 bytes are quoted, as Linux does), and the ICMP checksum over
 * all of the quote. So the quote becomes byte for byte the datagram the client
 * sent, and since every change is balanced inside the checksum that covers it,
 * a CHECKSUM_COMPLETE skb's sum stays right.
 * Returns KBP_OK or KBP_STAT_DROP_MALFORMED.
 */
static __always_inline int icmp4_error_rewrite(struct __sk_buff *skb, const struct icmp4_error *e,
					       __be32 out_saddr, __be32 out_daddr,
					       __be32 in_saddr, __be16 in_sport, __be32 in_daddr, __be16 in_dport)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct icmphdr *ic = data + (e->icmp_off & 0x7f);
	struct iphdr *in = data + (e->in_l3_off & 0xff);
	struct tcphdr *th = data + (e->in_l4_off & 0xff);
	struct udphdr *l4 = (void *)th;
	__sum16 *l4_check = NULL;
	__u16 in_check, ic_check;

	if ((void *)(ip + 1) > end || (void *)(ic + 1) > end || (void *)(in + 1) > end || (void *)(l4 + 1) > end)
		return KBP_STAT_DROP_MALFORMED;
	if (e->proto == IPPROTO_UDP) {
		if (l4->check)
			l4_check = &l4->check;
	} else if ((void *)&th->check + sizeof(th->check) <= end) {
		l4_check = &th->check;
	}

	ip->check = csum_replace4(ip->check, ip->saddr, out_saddr);
	ip->check = csum_replace4(ip->check, ip->daddr, out_daddr);
	ip->saddr = out_saddr;
	ip->daddr = out_daddr;

	in_check = csum_replace4(in->check, in->saddr, in_saddr);
	in_check = csum_replace4(in_check, in->daddr, in_daddr);
	ic_check = csum_replace4(ic->checksum, in->saddr, in_saddr);
	ic_check = csum_replace4(ic_check, in->daddr, in_daddr);
	ic_check = csum_replace2(ic_check, in->check, in_check);
	ic_check = csum_replace2(ic_check, l4->source, in_sport);
	ic_check = csum_replace2(ic_check, l4->dest, in_dport);
	if (l4_check) {
		/* The pseudo header holds the addresses, the header the ports. */
		__u16 old = *l4_check;
		__u16 sum = csum_replace4(old, in->saddr, in_saddr);

		sum = csum_replace4(sum, in->daddr, in_daddr);
		sum = csum_replace2(sum, l4->source, in_sport);
		sum = csum_replace2(sum, l4->dest, in_dport);
		if (e->proto == IPPROTO_UDP && sum == 0)
			sum = 0xffff; /* zero means "no checksum" in UDP */
		ic_check = csum_replace2(ic_check, old, sum);
		*l4_check = sum;
	}
	in->saddr = in_saddr;
	in->daddr = in_daddr;
	in->check = in_check;
	l4->source = in_sport;
	l4->dest = in_dport;
	ic->checksum = ic_check;
	return KBP_OK;
}

#endif /* KBP_LIB_ICMP_H */
