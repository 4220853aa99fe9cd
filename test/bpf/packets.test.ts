// The packet builder/parser that every datapath test relies on: checked against
// a published checksum vector and against corruption, so a wrong checksum in a
// datapath test can only come from the datapath.
import t from 'tap';
import { buildPacket, inetChecksum, parsePacket, TCP_ACK } from '../../src/bench/packets.js';

t.test('IPv4 header checksum matches the well-known vector', async (t) => {
  // 192.168.0.1 -> 192.168.0.199, UDP, total length 0x73: checksum 0xb861.
  const hdr = Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex');
  t.equal(inetChecksum(hdr), 0xb861);
});

t.test('built packets parse back with valid checksums', async (t) => {
  for (const proto of ['tcp', 'udp'] as const) {
    const p = parsePacket(buildPacket({ saddr: '10.244.1.2', daddr: '10.96.0.10', proto, sport: 40000, dport: 80, tcpFlags: TCP_ACK }));
    t.match(p, { saddr: '10.244.1.2', daddr: '10.96.0.10', sport: 40000, dport: 80, ipChecksumOk: true, l4ChecksumOk: true }, proto);
  }
  const opt = parsePacket(buildPacket({ saddr: '1.2.3.4', daddr: '5.6.7.8', proto: 'tcp', sport: 1, dport: 2, ipOptions: Buffer.from([1, 1, 1, 0]) }));
  t.ok(opt.ipChecksumOk && opt.l4ChecksumOk, 'with IP options');
  const zero = parsePacket(buildPacket({ saddr: '1.2.3.4', daddr: '5.6.7.8', proto: 'udp', sport: 1, dport: 2, udpZeroChecksum: true }));
  t.equal(zero.l4Checksum, 0);
});

t.test('a flipped address bit breaks both checksums', async (t) => {
  for (const proto of ['tcp', 'udp'] as const) {
    const pkt = buildPacket({ saddr: '10.244.1.2', daddr: '10.96.0.10', proto, sport: 40000, dport: 80 });
    pkt[14 + 19] = (pkt[14 + 19] as number) ^ 1; // last byte of daddr
    const p = parsePacket(pkt);
    t.notOk(p.ipChecksumOk, `${proto} ip`);
    t.notOk(p.l4ChecksumOk, `${proto} l4`);
  }
});
