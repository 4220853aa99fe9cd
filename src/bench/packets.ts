// Ethernet/IPv4/TCP/UDP packets for BPF_PROG_TEST_RUN: built with correct
// checksums, and parsed back with every checksum verified, so datapath tests
// assert the exact bytes that matter and the per-packet benchmark feeds the
// same packets.

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

export type L4Proto = 'tcp' | 'udp';

export interface PacketSpec {
  saddr: string;
  daddr: string;
  proto: L4Proto;
  sport: number;
  dport: number;
  tcpFlags?: number; // default SYN
  payload?: Buffer; // default 16 bytes of 0xab
  /** UDP only: send a zero checksum ("no checksum"). */
  udpZeroChecksum?: boolean;
  /** The L4 checksum field holds only the pseudo-header sum, as a locally
   * generated packet with CHECKSUM_PARTIAL carries it through a veth. */
  partialChecksum?: boolean;
  /** IPv4 options (padded to 4 bytes by the caller). */
  ipOptions?: Buffer;
  /** More-fragments flag and fragment offset in 8-byte units. */
  fragment?: { moreFragments: boolean; offset: number };
}

const SRC_MAC = Buffer.from('02000000000a', 'hex');
const DST_MAC = Buffer.from('02000000000b', 'hex');
const ETH_LEN = 14;

export function ipToBuf(ip: string): Buffer {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) {
    throw new Error(`not an IPv4 address: ${ip}`);
  }
  return Buffer.from(parts);
}

export function bufToIp(b: Buffer, off = 0): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** One's-complement sum of 16-bit big-endian words, folded (not inverted). */
function sum16(buf: Buffer, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2) sum += (buf[buf.length - 1] as number) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

export function inetChecksum(buf: Buffer, initial = 0): number {
  return ~sum16(buf, initial) & 0xffff;
}

function pseudoHeaderSum(saddr: Buffer, daddr: Buffer, proto: number, l4len: number): number {
  const ph = Buffer.alloc(12);
  saddr.copy(ph, 0);
  daddr.copy(ph, 4);
  ph[9] = proto;
  ph.writeUInt16BE(l4len, 10);
  return sum16(ph);
}

/**
 * Whether an IPv4 TCP/UDP frame's L4 checksum field equals its pseudo-header
 * sum, the form a CHECKSUM_PARTIAL packet carries; the XDP datapath leaves
 * such packets to tc. A complete checksum has that value about once in
 * 65,536 packets.
 */
export function pseudoHeaderOnly(pkt: Buffer): boolean {
  const ihl = ((pkt[ETH_LEN] as number) & 0x0f) * 4;
  const proto = pkt[ETH_LEN + 9] as number;
  const l4 = ETH_LEN + ihl;
  const l4len = pkt.readUInt16BE(ETH_LEN + 2) - ihl;
  const check = pkt.readUInt16BE(l4 + (proto === IPPROTO_TCP ? 16 : 6));
  return check === pseudoHeaderSum(pkt.subarray(ETH_LEN + 12, ETH_LEN + 16), pkt.subarray(ETH_LEN + 16, ETH_LEN + 20), proto, l4len);
}

export function buildPacket(spec: PacketSpec): Buffer {
  const proto = spec.proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP;
  const payload = spec.payload ?? Buffer.alloc(16, 0xab);
  const options = spec.ipOptions ?? Buffer.alloc(0);
  if (options.length % 4) throw new Error('IPv4 options must be padded to 4 bytes');
  const l4HdrLen = spec.proto === 'tcp' ? 20 : 8;
  const l4 = Buffer.alloc(l4HdrLen + payload.length);
  l4.writeUInt16BE(spec.sport, 0);
  l4.writeUInt16BE(spec.dport, 2);
  if (spec.proto === 'tcp') {
    l4.writeUInt32BE(1000, 4); // seq
    l4.writeUInt32BE(0, 8); // ack
    l4[12] = (20 / 4) << 4;
    l4[13] = spec.tcpFlags ?? TCP_SYN;
    l4.writeUInt16BE(64240, 14); // window
  } else {
    l4.writeUInt16BE(l4.length, 4);
  }
  payload.copy(l4, l4HdrLen);

  const saddr = ipToBuf(spec.saddr);
  const daddr = ipToBuf(spec.daddr);
  const csumOff = spec.proto === 'tcp' ? 16 : 6;
  if (spec.partialChecksum) {
    l4.writeUInt16BE(pseudoHeaderSum(saddr, daddr, proto, l4.length), csumOff);
  } else if (!(spec.proto === 'udp' && spec.udpZeroChecksum)) {
    let c = inetChecksum(l4, pseudoHeaderSum(saddr, daddr, proto, l4.length));
    if (spec.proto === 'udp' && c === 0) c = 0xffff;
    l4.writeUInt16BE(c, csumOff);
  }

  let frag = 0x4000; // DF
  if (spec.fragment) frag = (spec.fragment.moreFragments ? 0x2000 : 0) | (spec.fragment.offset & 0x1fff);
  return ipv4Frame({ saddr, daddr, proto, id: 0x1234, frag, options }, l4);
}

/** Ethernet + IPv4 header (checksum computed, TTL 64) + `payload`. */
function ipv4Frame(h: { saddr: Buffer; daddr: Buffer; proto: number; tos?: number; id: number; frag: number; options?: Buffer }, payload: Buffer): Buffer {
  const options = h.options ?? Buffer.alloc(0);
  const ip = Buffer.alloc(20 + options.length);
  ip[0] = 0x40 | (ip.length / 4);
  ip[1] = h.tos ?? 0;
  ip.writeUInt16BE(ip.length + payload.length, 2);
  ip.writeUInt16BE(h.id, 4);
  ip.writeUInt16BE(h.frag, 6);
  ip[8] = 64;
  ip[9] = h.proto;
  h.saddr.copy(ip, 12);
  h.daddr.copy(ip, 16);
  options.copy(ip, 20);
  ip.writeUInt16BE(inetChecksum(ip), 10);
  const eth = Buffer.alloc(ETH_LEN);
  DST_MAC.copy(eth, 0);
  SRC_MAC.copy(eth, 6);
  eth.writeUInt16BE(ETH_P_IP, 12);
  return Buffer.concat([eth, ip, payload]);
}

/** An ARP request, for "non-IPv4 passes untouched". */
export function buildArp(): Buffer {
  const b = Buffer.alloc(ETH_LEN + 28);
  Buffer.alloc(6, 0xff).copy(b, 0);
  SRC_MAC.copy(b, 6);
  b.writeUInt16BE(ETH_P_ARP, 12);
  b.writeUInt16BE(1, 14); // ethernet
  b.writeUInt16BE(ETH_P_IP, 16);
  b[18] = 6;
  b[19] = 4;
  b.writeUInt16BE(1, 20); // request
  return b;
}

export interface ParsedPacket {
  saddr: string;
  daddr: string;
  proto: number;
  sport: number;
  dport: number;
  tcpFlags: number;
  ipChecksumOk: boolean;
  /** Recomputed over the pseudo header and segment (UDP zero = "none" counts as ok). */
  l4ChecksumOk: boolean;
  l4Checksum: number;
  payload: Buffer;
}

export function parsePacket(pkt: Buffer): ParsedPacket {
  if (pkt.length < ETH_LEN + 20 || pkt.readUInt16BE(12) !== ETH_P_IP) throw new Error('not an IPv4 packet');
  const ipOff = ETH_LEN;
  const ihl = ((pkt[ipOff] as number) & 0x0f) * 4;
  const totLen = pkt.readUInt16BE(ipOff + 2);
  const ipHdr = pkt.subarray(ipOff, ipOff + ihl);
  const proto = pkt[ipOff + 9] as number;
  const saddrB = pkt.subarray(ipOff + 12, ipOff + 16);
  const daddrB = pkt.subarray(ipOff + 16, ipOff + 20);
  const l4 = pkt.subarray(ipOff + ihl, ipOff + totLen);
  const isTcp = proto === IPPROTO_TCP;
  const l4Checksum = l4.readUInt16BE(isTcp ? 16 : 6);
  let l4ChecksumOk: boolean;
  if (!isTcp && l4Checksum === 0) {
    l4ChecksumOk = true;
  } else {
    l4ChecksumOk = sum16(l4, pseudoHeaderSum(saddrB, daddrB, proto, l4.length)) === 0xffff;
  }
  return {
    saddr: bufToIp(saddrB),
    daddr: bufToIp(daddrB),
    proto,
    sport: l4.readUInt16BE(0),
    dport: l4.readUInt16BE(2),
    tcpFlags: isTcp ? (l4[13] as number) : 0,
    ipChecksumOk: sum16(ipHdr) === 0xffff,
    l4ChecksumOk,
    l4Checksum,
    payload: l4.subarray(isTcp ? ((l4[12] as number) >> 4) * 4 : 8),
  };
}

export const IPPROTO_ICMP = 1;
export const ICMP_DEST_UNREACH = 3;
export const ICMP_TIME_EXCEEDED = 11;
export const ICMP_PORT_UNREACH = 3;
export const ICMP_FRAG_NEEDED = 4;

export interface IcmpErrorSpec {
  /** Outer addresses: who reports the error, and to whom. */
  saddr: string;
  daddr: string;
  type: number;
  code: number;
  /** Bytes 4..7 of the ICMP header (the next-hop MTU for "fragmentation needed"). */
  rest?: number;
  /** The offending packet (Ethernet frame from buildPacket): its IPv4 header and `quoteL4` L4 bytes are quoted. */
  offending: Buffer;
  /** L4 bytes quoted; default 8 (the minimum); Linux quotes up to 576 bytes in all. */
  quoteL4?: number;
}

/** An Ethernet frame carrying an ICMP error with correct IPv4 and ICMP checksums. */
export function buildIcmpError(spec: IcmpErrorSpec): Buffer {
  const inner = spec.offending.subarray(ETH_LEN);
  const ihl = ((inner[0] as number) & 0x0f) * 4;
  const quote = Buffer.from(inner.subarray(0, Math.min(inner.length, ihl + (spec.quoteL4 ?? 8))));
  const icmp = Buffer.alloc(8 + quote.length);
  icmp[0] = spec.type;
  icmp[1] = spec.code;
  icmp.writeUInt32BE(spec.rest ?? 0, 4);
  quote.copy(icmp, 8);
  icmp.writeUInt16BE(inetChecksum(icmp), 2);
  // TOS as Linux sends ICMP errors (internetwork control).
  return ipv4Frame({ saddr: ipToBuf(spec.saddr), daddr: ipToBuf(spec.daddr), proto: IPPROTO_ICMP, tos: 0xc0, id: 0, frag: 0 }, icmp);
}

export interface ParsedIcmpError {
  dstMac: Buffer;
  srcMac: Buffer;
  saddr: string;
  daddr: string;
  ttl: number;
  totalLength: number;
  type: number;
  code: number;
  rest: number;
  ipChecksumOk: boolean;
  icmpChecksumOk: boolean;
  /** The quoted datagram: its IPv4 header fields and ports. */
  quoted: { saddr: string; daddr: string; proto: number; sport: number; dport: number; ipChecksumOk: boolean; header: Buffer; l4: Buffer };
}

/** Parses an Ethernet frame carrying an ICMP error, verifying the outer, ICMP and quoted IPv4 checksums. */
export function parseIcmpError(pkt: Buffer): ParsedIcmpError {
  if (pkt.length < ETH_LEN + 20 + 8 + 20 + 8 || pkt.readUInt16BE(12) !== ETH_P_IP) throw new Error('not an IPv4 ICMP error');
  const ipOff = ETH_LEN;
  const ihl = ((pkt[ipOff] as number) & 0x0f) * 4;
  const totalLength = pkt.readUInt16BE(ipOff + 2);
  if (pkt[ipOff + 9] !== IPPROTO_ICMP) throw new Error(`not ICMP: protocol ${pkt[ipOff + 9]}`);
  const icmp = pkt.subarray(ipOff + ihl, ipOff + totalLength);
  const inner = icmp.subarray(8);
  const innerIhl = ((inner[0] as number) & 0x0f) * 4;
  const header = inner.subarray(0, innerIhl);
  return {
    dstMac: pkt.subarray(0, 6),
    srcMac: pkt.subarray(6, 12),
    saddr: bufToIp(pkt, ipOff + 12),
    daddr: bufToIp(pkt, ipOff + 16),
    ttl: pkt[ipOff + 8] as number,
    totalLength,
    type: icmp[0] as number,
    code: icmp[1] as number,
    rest: icmp.readUInt32BE(4),
    ipChecksumOk: sum16(pkt.subarray(ipOff, ipOff + ihl)) === 0xffff,
    icmpChecksumOk: sum16(icmp) === 0xffff,
    quoted: {
      saddr: bufToIp(header, 12),
      daddr: bufToIp(header, 16),
      proto: header[9] as number,
      sport: inner.readUInt16BE(innerIhl),
      dport: inner.readUInt16BE(innerIhl + 2),
      ipChecksumOk: sum16(header) === 0xffff,
      header,
      l4: inner.subarray(innerIhl),
    },
  };
}
