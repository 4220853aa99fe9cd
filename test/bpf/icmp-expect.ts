// The ICMP port unreachable kbp must answer a rejected packet with, built here
// independently of the datapath (field by field, checksums over the bytes), so
// the tests compare whole frames.

import { inetChecksum } from '../../src/bench/packets.js';

const ETH_LEN = 14;

/**
 * What iptables' REJECT (icmp-port-unreachable) sends for `input`, as kbp
 * builds it: MACs swapped, IPv4 from the frontend (`input`'s destination) to
 * the client with TTL 64, ICMP type 3 code 3 quoting `input`'s IPv4 header and
 * first 8 L4 bytes.
 */
export function expectedReject(input: Buffer): Buffer {
  const ihl = ((input[ETH_LEN] as number) & 0x0f) * 4;
  const quote = input.subarray(ETH_LEN, ETH_LEN + ihl + 8);
  const eth = Buffer.concat([input.subarray(6, 12), input.subarray(0, 6), input.subarray(12, 14)]);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 8 + quote.length, 2);
  ip[8] = 64;
  ip[9] = 1; // ICMP
  input.copy(ip, 12, ETH_LEN + 16, ETH_LEN + 20); // from the frontend
  input.copy(ip, 16, ETH_LEN + 12, ETH_LEN + 16); // to the client
  ip.writeUInt16BE(inetChecksum(ip), 10);
  const icmp = Buffer.concat([Buffer.from([3, 3, 0, 0, 0, 0, 0, 0]), quote]);
  icmp.writeUInt16BE(inetChecksum(icmp), 2);
  return Buffer.concat([eth, ip, icmp]);
}
