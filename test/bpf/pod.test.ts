// Datapath tests for tc ingress on pod devices (bpf/kbp_pod.c): packet in,
// packet out through BPF_PROG_TEST_RUN, asserting addresses, ports, both
// checksums, the verdict and the counter that moved.
//
// Address conventions in every datapath test:
//   client pod   10.244.1.2 (source ports are unique per case, so flows never collide)
//   backends     10.244.1.10 (be1), 10.244.1.11 (be2)
//   ClusterIPs   10.96.0.10 (tcp/80 -> 8080 x2, tcp/443 -> 8443, udp/53 -> 5353)
//                10.96.0.20 (tcp/80 and udp/53, no endpoints: rejects)
//                10.96.0.21 (tcp/80, no endpoint for this node: drops)
//   elsewhere    10.244.9.9 (a pod IP no Service uses)
import t from 'tap';
import { DatapathFixture, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, type FixtureFrontend } from '../../src/bench/fixtures.js';
import {
  buildArp,
  buildIcmpError,
  buildPacket,
  ICMP_DEST_UNREACH,
  ICMP_FRAG_NEEDED,
  ICMP_PORT_UNREACH,
  ICMP_TIME_EXCEEDED,
  parseIcmpError,
  parsePacket,
  TCP_ACK,
  TCP_FIN,
  TCP_SYN,
  type PacketSpec,
} from '../../src/bench/packets.js';
import { expectedReject } from './icmp-expect.js';
import {
  HAIRPIN_ADDR,
  KBP_CT_F_CLOSING,
  KBP_CT_F_HAIRPIN,
  KBP_CT_F_PORT_REMAP,
  KBP_CT_LIFETIME_CLOSING_NS,
  KBP_CT_LIFETIME_OTHER_NS,
  KBP_CT_F_SEEN_REPLY,
  KBP_CT_FORWARD,
  KBP_CT_REPLY,
  KBP_STAT_DROP_FRAGMENT,
  KBP_STAT_DROP_NO_BACKEND,
  KBP_STAT_DROP_UNKNOWN_PORT,
  KBP_STAT_ESTABLISHED,
  KBP_STAT_NEW_FLOW,
  KBP_STAT_PASS,
  KBP_STAT_REVNAT,
  KBP_STAT_REJECT,
  KBP_SCOPE_EXTERNAL,
  KBP_SNAT_PORT_MAX,
  KBP_SNAT_PORT_MIN,
  KBP_SVC_F_CLUSTER_IP,
  KBP_SVC_F_REJECT,
  STAT_NAMES,
  svcKey,
  type CtKey,
} from '../../src/maps/abi.js';

const CLIENT = '10.244.1.2';
const BE1 = '10.244.1.10';
const BE2 = '10.244.1.11';
const VIP = '10.96.0.10';
const VIP_EMPTY = '10.96.0.20';
const VIP_NO_LOCAL = '10.96.0.21';
const OTHER = '10.244.9.9';

const frontends: FixtureFrontend[] = [
  { svcId: 1, vip: VIP, port: 80, proto: 'tcp', backends: [{ id: 1, ip: BE1, port: 8080 }, { id: 2, ip: BE2, port: 8080 }] },
  { svcId: 2, vip: VIP, port: 443, proto: 'tcp', backends: [{ id: 3, ip: BE1, port: 8443 }] },
  { svcId: 3, vip: VIP, port: 53, proto: 'udp', backends: [{ id: 4, ip: BE2, port: 5353 }] },
  { svcId: 4, vip: VIP_EMPTY, port: 80, proto: 'tcp', backends: [], flags: KBP_SVC_F_CLUSTER_IP | KBP_SVC_F_REJECT },
  { svcId: 5, vip: VIP_EMPTY, port: 53, proto: 'udp', backends: [], flags: KBP_SVC_F_CLUSTER_IP | KBP_SVC_F_REJECT },
  { svcId: 6, vip: VIP_NO_LOCAL, port: 80, proto: 'tcp', backends: [] },
];

let nextPort = 20000;
const sport = (): number => nextPort++;

let dp: DatapathFixture;
t.before(async () => {
  dp = await DatapathFixture.open();
  await dp.program(frontends);
});
t.teardown(() => dp?.close());

/** Run one packet and return the verdict, the parsed output and which counters moved. */
async function send(spec: PacketSpec) {
  const before = await dp.readStats();
  const input = buildPacket(spec);
  const res = await dp.run(input);
  const after = await dp.readStats();
  const moved = STAT_NAMES.filter((_, i) => after[i]!.packets !== before[i]!.packets);
  return { input, res, out: res.retval === TC_ACT_OK ? parsePacket(res.data) : null, moved };
}

interface Case {
  name: string;
  packet: () => PacketSpec;
  verdict: number;
  stat: number;
  /** Expected output tuple; omitted means the packet must leave byte for byte unchanged. */
  out?: { saddr: string; daddr: string | string[]; dport: number };
}

const cases: Case[] = [
  {
    name: 'TCP SYN to ClusterIP:80 is DNATed to a backend:8080',
    packet: () => ({ saddr: CLIENT, daddr: VIP, proto: 'tcp', sport: sport(), dport: 80, tcpFlags: TCP_SYN }),
    verdict: TC_ACT_OK,
    stat: KBP_STAT_NEW_FLOW,
    out: { saddr: CLIENT, daddr: [BE1, BE2], dport: 8080 },
  },
  {
    name: 'a second port of the same ClusterIP translates with its own targetPort',
    packet: () => ({ saddr: CLIENT, daddr: VIP, proto: 'tcp', sport: sport(), dport: 443 }),
    verdict: TC_ACT_OK,
    stat: KBP_STAT_NEW_FLOW,
    out: { saddr: CLIENT, daddr: BE1, dport: 8443 },
  },
  {
    name: 'UDP to ClusterIP:53 is DNATed to backend:5353 with a valid UDP checksum',
    packet: () => ({ saddr: CLIENT, daddr: VIP, proto: 'udp', sport: sport(), dport: 53 }),
    verdict: TC_ACT_OK,
    stat: KBP_STAT_NEW_FLOW,
    out: { saddr: CLIENT, daddr: BE2, dport: 5353 },
  },
  {
    name: 'UDP without checksum is translated and keeps checksum zero',
    packet: () => ({ saddr: CLIENT, daddr: VIP, proto: 'udp', sport: sport(), dport: 53, udpZeroChecksum: true }),
    verdict: TC_ACT_OK,
    stat: KBP_STAT_NEW_FLOW,
    out: { saddr: CLIENT, daddr: BE2, dport: 5353 },
  },
  {
    name: 'a packet with IPv4 options is translated at the right L4 offset',
    packet: () => ({ saddr: CLIENT, daddr: VIP, proto: 'tcp', sport: sport(), dport: 443, ipOptions: Buffer.from([1, 1, 1, 0]) }),
    verdict: TC_ACT_OK,
    stat: KBP_STAT_NEW_FLOW,
    out: { saddr: CLIENT, daddr: BE1, dport: 8443 },
  },
  {
    name: 'known ClusterIP on a port the Service does not have is dropped',
    packet: () => ({ saddr: CLIENT, daddr: VIP, proto: 'tcp', sport: sport(), dport: 8080 }),
    verdict: TC_ACT_SHOT,
    stat: KBP_STAT_DROP_UNKNOWN_PORT,
  },
  {
    name: 'known ClusterIP port with the other protocol is dropped',
    packet: () => ({ saddr: CLIENT, daddr: VIP, proto: 'udp', sport: sport(), dport: 80 }),
    verdict: TC_ACT_SHOT,
    stat: KBP_STAT_DROP_UNKNOWN_PORT,
  },
  {
    name: 'an empty frontend without the reject flag (internalTrafficPolicy Local, no local endpoint) drops',
    packet: () => ({ saddr: CLIENT, daddr: VIP_NO_LOCAL, proto: 'tcp', sport: sport(), dport: 80 }),
    verdict: TC_ACT_SHOT,
    stat: KBP_STAT_DROP_NO_BACKEND,
  },
  {
    name: 'a fragment to a ClusterIP is dropped (no reassembly)',
    packet: () => ({ saddr: CLIENT, daddr: VIP, proto: 'udp', sport: sport(), dport: 53, fragment: { moreFragments: true, offset: 0 } }),
    verdict: TC_ACT_SHOT,
    stat: KBP_STAT_DROP_FRAGMENT,
  },
  {
    name: 'pod-to-pod traffic (no Service) passes untouched',
    packet: () => ({ saddr: CLIENT, daddr: OTHER, proto: 'tcp', sport: sport(), dport: 80 }),
    verdict: TC_ACT_OK,
    stat: KBP_STAT_PASS,
  },
  {
    name: 'a packet from a backend that is not a reply of a translated flow passes untouched',
    packet: () => ({ saddr: BE1, daddr: CLIENT, proto: 'tcp', sport: 8080, dport: sport(), tcpFlags: TCP_ACK }),
    verdict: TC_ACT_OK,
    stat: KBP_STAT_PASS,
  },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    const { input, res, out, moved } = await send(c.packet());
    t.equal(res.retval, c.verdict, 'verdict');
    t.same(moved, [STAT_NAMES[c.stat]], 'exactly one counter moved');
    if (c.verdict !== TC_ACT_OK) return;
    if (!c.out) {
      t.ok(res.data.equals(input), 'packet leaves unchanged');
      return;
    }
    t.equal(out!.saddr, c.out.saddr, 'source address');
    if (Array.isArray(c.out.daddr)) t.ok(c.out.daddr.includes(out!.daddr), `destination ${out!.daddr} is a backend`);
    else t.equal(out!.daddr, c.out.daddr, 'destination address');
    t.equal(out!.dport, c.out.dport, 'destination port');
    t.ok(out!.ipChecksumOk, 'IPv4 header checksum');
    t.ok(out!.l4ChecksumOk, 'L4 checksum');
    t.ok(out!.payload.equals(parsePacket(input).payload), 'payload intact');
  });
}

t.test('a Service without endpoints rejects: ICMP port unreachable from the ClusterIP, sent back out of the pod device', async (t) => {
  const specs: Array<[string, PacketSpec]> = [
    ['TCP SYN', { saddr: CLIENT, daddr: VIP_EMPTY, proto: 'tcp', sport: sport(), dport: 80, tcpFlags: TCP_SYN }],
    ['UDP', { saddr: CLIENT, daddr: VIP_EMPTY, proto: 'udp', sport: sport(), dport: 53 }],
    ['TCP with IPv4 options (the whole header is quoted)', { saddr: CLIENT, daddr: VIP_EMPTY, proto: 'tcp', sport: sport(), dport: 80, ipOptions: Buffer.from([1, 1, 1, 0, 1, 1, 1, 0]) }],
    ['TCP with a 1000-byte payload (the frame shrinks)', { saddr: CLIENT, daddr: VIP_EMPTY, proto: 'tcp', sport: sport(), dport: 80, tcpFlags: TCP_ACK, payload: Buffer.alloc(1000, 7) }],
    ['UDP with no payload (the frame grows)', { saddr: CLIENT, daddr: VIP_EMPTY, proto: 'udp', sport: sport(), dport: 53, payload: Buffer.alloc(0) }],
  ];
  for (const [what, spec] of specs) {
    const { input, res, moved } = await send(spec);
    t.equal(res.retval, TC_ACT_REDIRECT, `${what}: redirected (back out of the ingress device)`);
    t.same(moved, ['reject'], `${what}: counted as reject`);
    const want = expectedReject(input);
    t.ok(res.data.equals(want), `${what}: the exact ICMP frame\n got  ${res.data.toString('hex')}\n want ${want.toString('hex')}`);
    const icmp = parseIcmpError(res.data);
    t.match(icmp, { saddr: VIP_EMPTY, daddr: CLIENT, type: 3, code: 3, ipChecksumOk: true, icmpChecksumOk: true }, `${what}: from the ClusterIP, checksums right`);
    t.match(icmp.quoted, { saddr: CLIENT, daddr: VIP_EMPTY, sport: spec.sport, dport: spec.dport, ipChecksumOk: true }, `${what}: quotes the packet as the client sent it`);
  }
  const fwd = await dp.ctLookup({ saddr: CLIENT, daddr: VIP_EMPTY, sport: specs[0]![1].sport, dport: 80, proto: 6, dir: KBP_CT_FORWARD });
  t.equal(fwd, null, 'a rejected packet records no flow');
  const stats = await dp.readStats();
  t.ok(stats[KBP_STAT_REJECT]!.bytes > 0n, 'reject counts bytes');
});

t.test('non-IPv4 (ARP) passes untouched and counts nothing', async (t) => {
  const before = await dp.readStats();
  const arp = buildArp();
  const res = await dp.run(arp);
  t.equal(res.retval, TC_ACT_OK);
  t.ok(res.data.equals(arp));
  t.same(await dp.readStats(), before);
});

t.test('UDP zero checksum stays zero after DNAT', async (t) => {
  const { out } = await send({ saddr: CLIENT, daddr: VIP, proto: 'udp', sport: sport(), dport: 53, udpZeroChecksum: true });
  t.equal(out!.l4Checksum, 0);
});

t.test('a flow: SYN creates both conntrack entries, later packets follow them, the reply is reverse-NATed', async (t) => {
  const cport = sport();
  const syn = await send({ saddr: CLIENT, daddr: VIP, proto: 'tcp', sport: cport, dport: 80, tcpFlags: TCP_SYN });
  const backend = syn.out!.daddr;
  const backendId = backend === BE1 ? 1 : 2;

  const fwd = await dp.ctLookup({ saddr: CLIENT, daddr: VIP, sport: cport, dport: 80, proto: 6, dir: KBP_CT_FORWARD });
  t.match(fwd, { backend_id: backendId, svc_id: 1, tcp_flags: TCP_SYN }, 'forward entry names the backend id and frontend id');
  const rev = await dp.ctLookup({ saddr: backend, daddr: CLIENT, sport: 8080, dport: cport, proto: 6, dir: KBP_CT_REPLY });
  t.match(rev, { backend_id: backendId, svc_id: 1 }, 'reply entry keyed by the backend tuple');

  for (let i = 0; i < 20; i++) {
    const ack = await send({ saddr: CLIENT, daddr: VIP, proto: 'tcp', sport: cport, dport: 80, tcpFlags: TCP_ACK });
    t.equal(ack.out!.daddr, backend, 'established packets stay on the backend');
    t.same(ack.moved, ['established']);
  }

  const reply = await send({ saddr: backend, daddr: CLIENT, proto: 'tcp', sport: 8080, dport: cport, tcpFlags: TCP_SYN | TCP_ACK });
  t.equal(reply.res.retval, TC_ACT_OK);
  t.same(reply.moved, ['revnat']);
  t.match(reply.out, { saddr: VIP, sport: 80, daddr: CLIENT, dport: cport, ipChecksumOk: true, l4ChecksumOk: true }, 'reply comes from the ClusterIP:80');
  const revAfter = await dp.ctLookup({ saddr: backend, daddr: CLIENT, sport: 8080, dport: cport, proto: 6, dir: KBP_CT_REPLY });
  t.ok(revAfter!.flags & KBP_CT_F_SEEN_REPLY, 'reply marked seen');

  await send({ saddr: CLIENT, daddr: VIP, proto: 'tcp', sport: cport, dport: 80, tcpFlags: TCP_FIN | TCP_ACK });
  const closing = await dp.ctLookup({ saddr: CLIENT, daddr: VIP, sport: cport, dport: 80, proto: 6, dir: KBP_CT_FORWARD });
  t.ok(closing!.flags & KBP_CT_F_CLOSING, 'FIN marks the flow closing');
});

t.test('UDP reply is reverse-NATed to ClusterIP:53', async (t) => {
  const cport = sport();
  const q = await send({ saddr: CLIENT, daddr: VIP, proto: 'udp', sport: cport, dport: 53 });
  t.equal(q.out!.daddr, BE2);
  const a = await send({ saddr: BE2, daddr: CLIENT, proto: 'udp', sport: 5353, dport: cport });
  t.match(a.out, { saddr: VIP, sport: 53, daddr: CLIENT, dport: cport, ipChecksumOk: true, l4ChecksumOk: true });
});

t.test('new flows are spread over every active backend', async (t) => {
  const seen = new Map<string, number>();
  for (let i = 0; i < 200; i++) {
    const { out } = await send({ saddr: CLIENT, daddr: VIP, proto: 'tcp', sport: sport(), dport: 80 });
    seen.set(out!.daddr, (seen.get(out!.daddr) ?? 0) + 1);
  }
  t.same([...seen.keys()].sort(), [BE1, BE2]);
  for (const [ip, n] of seen) t.ok(n > 50, `${ip} got ${n}/200`);
});

t.test('an established flow keeps a terminating backend; new flows avoid it', async (t) => {
  const vip = '10.96.0.40';
  const a = { id: 40, ip: BE1, port: 9000 };
  const b = { id: 41, ip: BE2, port: 9000 };
  await dp.program([{ svcId: 40, vip, port: 80, proto: 'tcp', backends: [a, b] }]);
  // Find a flow on backend a.
  let cport = 0;
  for (let i = 0; i < 100 && !cport; i++) {
    const p = sport();
    const { out } = await send({ saddr: CLIENT, daddr: vip, proto: 'tcp', sport: p, dport: 80 });
    if (out!.daddr === a.ip) cport = p;
  }
  t.ok(cport, 'found a flow on the first backend');

  // a starts terminating: the syncer keeps it in the backend map and drops its slot.
  await dp.program([{ svcId: 40, vip, port: 80, proto: 'tcp', backends: [{ ...a, terminating: true }, b] }]);
  await dp.services.delete(svcKey.encode({ vip, port: 80, proto: 6, scope: KBP_SCOPE_EXTERNAL, slot: 2 })); // trim the stale slot
  const est = await send({ saddr: CLIENT, daddr: vip, proto: 'tcp', sport: cport, dport: 80, tcpFlags: TCP_ACK });
  t.equal(est.out!.daddr, a.ip, 'established flow stays on the terminating backend');
  t.same(est.moved, ['established']);
  for (let i = 0; i < 30; i++) {
    const { out } = await send({ saddr: CLIENT, daddr: vip, proto: 'tcp', sport: sport(), dport: 80 });
    t.equal(out!.daddr, b.ip, 'new flow goes to the active backend');
  }

  // a is removed entirely: the flow is re-balanced instead of black-holed.
  t.ok(await dp.deleteBackend(a.id));
  const moved = await send({ saddr: CLIENT, daddr: vip, proto: 'tcp', sport: cport, dport: 80, tcpFlags: TCP_ACK });
  t.equal(moved.out!.daddr, b.ip, 'flow of a deleted backend moves to a live one');
  t.same(moved.moved, ['new_flow']);
  const fwd = await dp.ctLookup({ saddr: CLIENT, daddr: vip, sport: cport, dport: 80, proto: 6, dir: KBP_CT_FORWARD });
  t.equal(fwd!.backend_id, b.id, 'conntrack now names the new backend');
});

t.test('stats count bytes as well as packets', async (t) => {
  const before = await dp.readStats();
  const { input } = await send({ saddr: CLIENT, daddr: VIP, proto: 'tcp', sport: sport(), dport: 80 });
  const after = await dp.readStats();
  t.equal(after[KBP_STAT_NEW_FLOW]!.bytes - before[KBP_STAT_NEW_FLOW]!.bytes, BigInt(input.length));
  t.equal(after[KBP_STAT_ESTABLISHED]!.packets, before[KBP_STAT_ESTABLISHED]!.packets);
  t.equal(after[KBP_STAT_REVNAT]!.packets, before[KBP_STAT_REVNAT]!.packets);
});


t.test('sessionAffinity ClientIP: a client sticks to its backend across new flows', async (t) => {
  const vip = '10.96.0.60';
  const backends = [
    { id: 60, ip: BE1, port: 8080 },
    { id: 61, ip: BE2, port: 8080 },
  ];
  await dp.program([{ svcId: 60, vip, port: 80, proto: 'tcp', backends, affinityTimeout: 10800 }]);

  const first = await send({ saddr: CLIENT, daddr: vip, proto: 'tcp', sport: sport(), dport: 80 });
  const sticky = first.out!.daddr;
  const aff = await dp.affinityLookup({ client: CLIENT, svc_id: 60 });
  t.match(aff, { backend_id: sticky === BE1 ? 60 : 61 }, 'the first flow records the client backend');
  for (let i = 0; i < 30; i++) {
    const { out } = await send({ saddr: CLIENT, daddr: vip, proto: 'tcp', sport: sport(), dport: 80 });
    t.equal(out!.daddr, sticky, `new flow ${i} goes to the same backend`);
  }

  // Many other clients still get both backends.
  const seen = new Set<string>();
  for (let i = 0; i < 40; i++) {
    const { out } = await send({ saddr: `10.244.2.${i + 1}`, daddr: vip, proto: 'tcp', sport: sport(), dport: 80 });
    seen.add(out!.daddr);
  }
  t.same([...seen].sort(), [BE1, BE2], 'other clients are balanced over both backends');
});

t.test('sessionAffinity: an expired entry, or one whose backend left the frontend, is not used', async (t) => {
  const vip = '10.96.0.61';
  const be1 = { id: 70, ip: BE1, port: 8080 };
  const be2 = { id: 71, ip: BE2, port: 8080 };
  // be1 is still a live backend (another frontend uses it), but not of this one.
  await dp.program([
    { svcId: 70, vip, port: 80, proto: 'tcp', backends: [be2], affinityTimeout: 60 },
    { svcId: 71, vip: '10.96.0.62', port: 80, proto: 'tcp', backends: [be1] },
  ]);
  const client = '10.244.3.1';
  await dp.affinitySet({ client, svc_id: 70 }, { last_used_ns: 0n, backend_id: be1.id, slot: 1 });
  const stale = await send({ saddr: client, daddr: vip, proto: 'tcp', sport: sport(), dport: 80 });
  t.equal(stale.out!.daddr, BE2, 'slot 1 names another backend: affinity entry ignored');
  t.match(await dp.affinityLookup({ client, svc_id: 70 }), { backend_id: be2.id, slot: 1 }, 're-recorded');

  // Expired: the entry names the right slot and backend, but is older than the timeout.
  const client2 = '10.244.3.2';
  await dp.program([{ svcId: 70, vip, port: 80, proto: 'tcp', backends: [be2, be1], affinityTimeout: 1 }]);
  await dp.affinitySet({ client: client2, svc_id: 70 }, { last_used_ns: 0n, backend_id: be1.id, slot: 2 });
  const picks = new Set<string>();
  for (let i = 0; i < 40; i++) {
    // Age the entry again before each flow, so every flow sees an expired one.
    const cur = await dp.affinityLookup({ client: client2, svc_id: 70 });
    await dp.affinitySet({ client: client2, svc_id: 70 }, { ...cur!, last_used_ns: 0n });
    const { out } = await send({ saddr: client2, daddr: vip, proto: 'tcp', sport: sport(), dport: 80 });
    picks.add(out!.daddr);
  }
  t.same([...picks].sort(), [BE1, BE2], 'expired entries do not pin the client');

  // Fresh entry with a timeout: honoured.
  const now = (await dp.affinityLookup({ client: client2, svc_id: 70 }))!;
  t.ok(now.last_used_ns > 0n, 'each new flow refreshed the entry');
  for (let i = 0; i < 20; i++) {
    const { out } = await send({ saddr: client2, daddr: vip, proto: 'tcp', sport: sport(), dport: 80 });
    t.equal(out!.daddr, now.backend_id === be1.id ? BE1 : BE2, `flow ${i} follows the fresh entry`);
  }
});

t.test('conntrack lifecycle: stale entries, port reuse after close, evicted reply entries, tuple clashes', async (t) => {
  const vip = '10.96.0.80';
  const a = { id: 80, ip: BE1, port: 8080 };
  const b = { id: 81, ip: BE2, port: 8080 };
  await dp.program([{ svcId: 80, vip, port: 80, proto: 'tcp', backends: [a, b] }]);
  const fwdKey = (cport: number, dst = vip) => ({ saddr: CLIENT, daddr: dst, sport: cport, dport: 80, proto: 6, dir: KBP_CT_FORWARD });

  t.test('an entry idle past its lifetime is a new flow', async (t) => {
    // UDP (the shortest lifetime, so this machine's uptime can predate it).
    const cport = sport();
    await send({ saddr: CLIENT, daddr: VIP, proto: 'udp', sport: cport, dport: 53 });
    const key = { saddr: CLIENT, daddr: VIP, sport: cport, dport: 53, proto: 17, dir: KBP_CT_FORWARD };
    const cur = (await dp.ctLookup(key))!;
    const fresh = await send({ saddr: CLIENT, daddr: VIP, proto: 'udp', sport: cport, dport: 53 });
    t.same(fresh.moved, ['established'], 'within its lifetime the flow is followed');
    await dp.ctSet(key, { ...cur, last_seen_ns: cur.last_seen_ns - BigInt(KBP_CT_LIFETIME_OTHER_NS) - 1_000_000_000n });
    const again = await send({ saddr: CLIENT, daddr: VIP, proto: 'udp', sport: cport, dport: 53 });
    t.same(again.moved, ['new_flow'], 'past it, the packet is balanced anew');
  });

  t.test('a SYN on the tuple of a closed flow starts a new flow; other packets of it do not', async (t) => {
    const cport = sport();
    await send({ saddr: CLIENT, daddr: vip, proto: 'tcp', sport: cport, dport: 80 });
    await send({ saddr: CLIENT, daddr: vip, proto: 'tcp', sport: cport, dport: 80, tcpFlags: TCP_FIN | TCP_ACK });
    const late = await send({ saddr: CLIENT, daddr: vip, proto: 'tcp', sport: cport, dport: 80, tcpFlags: TCP_ACK });
    t.same(late.moved, ['established'], 'the last ACK of the closing flow follows it');
    const reuse = await send({ saddr: CLIENT, daddr: vip, proto: 'tcp', sport: cport, dport: 80, tcpFlags: TCP_SYN });
    t.same(reuse.moved, ['new_flow'], 'a new connection on the same port is balanced anew');
    const fwd = await dp.ctLookup(fwdKey(cport));
    t.equal(fwd!.flags & KBP_CT_F_CLOSING, 0, 'and is not closing');
  });

  t.test('a reply entry evicted under LRU pressure is put back by the next refresh', async (t) => {
    const cport = sport();
    const syn = await send({ saddr: CLIENT, daddr: vip, proto: 'tcp', sport: cport, dport: 80 });
    const be = syn.out!.daddr;
    const revKey = { saddr: be, daddr: CLIENT, sport: 8080, dport: cport, proto: 6, dir: KBP_CT_REPLY };
    t.ok(await dp.ctDelete(revKey), 'reply entry evicted');
    const cur = (await dp.ctLookup(fwdKey(cport)))!;
    await dp.ctSet(fwdKey(cport), { ...cur, last_seen_ns: cur.last_seen_ns - 2_000_000_000n });
    await send({ saddr: CLIENT, daddr: vip, proto: 'tcp', sport: cport, dport: 80, tcpFlags: TCP_ACK });
    t.match(await dp.ctLookup(revKey), { backend_id: cur.backend_id, svc_id: 80, nat_addr: vip, nat_port: 80 }, 'reply entry restored');
    const reply = await send({ saddr: be, daddr: CLIENT, proto: 'tcp', sport: 8080, dport: cport, tcpFlags: TCP_ACK });
    t.match(reply.out, { saddr: vip, sport: 80 }, 'replies are translated again');
  });

  t.test("a second frontend never takes over another flow's reply tuple: the client's port is remapped", async (t) => {
    // The same client port reaches the same single backend through two ClusterIPs.
    const vip2 = '10.96.0.81';
    const vip3 = '10.96.0.82';
    await dp.program([
      { svcId: 81, vip: vip2, port: 80, proto: 'tcp', backends: [a] },
      { svcId: 82, vip: vip3, port: 80, proto: 'tcp', backends: [a] },
      { svcId: 83, vip: vip2, port: 53, proto: 'udp', backends: [{ id: 83, ip: BE1, port: 5353 }] },
      { svcId: 84, vip: vip3, port: 53, proto: 'udp', backends: [{ id: 83, ip: BE1, port: 5353 }] },
    ]);
    const inRange = (port: number) => port >= KBP_SNAT_PORT_MIN && port <= KBP_SNAT_PORT_MAX;
    const cport = sport();
    const first = await send({ saddr: CLIENT, daddr: vip2, proto: 'tcp', sport: cport, dport: 80 });
    t.same(first.moved, ['new_flow']);
    t.match(first.out, { saddr: CLIENT, sport: cport, daddr: a.ip, dport: 8080 }, 'the first flow keeps its port');

    const second = await send({ saddr: CLIENT, daddr: vip3, proto: 'tcp', sport: cport, dport: 80 });
    t.equal(second.res.retval, TC_ACT_OK, 'the clashing new flow is translated');
    t.same(second.moved, ['port_remap']);
    const remapped = second.out!.sport;
    t.match(second.out, { saddr: CLIENT, daddr: a.ip, dport: 8080, l4ChecksumOk: true, ipChecksumOk: true }, 'to the backend, from the client address');
    t.ok(remapped !== cport && inRange(remapped), `from another port of the SNAT range (${remapped})`);
    const fwd = (await dp.ctLookup(fwdKey(cport, vip3)))!;
    t.match(fwd, { svc_id: 82, nat_addr: CLIENT, nat_port: remapped }, 'forward entry names the port');
    t.ok(fwd.flags & KBP_CT_F_PORT_REMAP, 'and is flagged remapped');
    const rev = (await dp.ctLookup({ saddr: a.ip, daddr: CLIENT, sport: 8080, dport: remapped, proto: 6, dir: KBP_CT_REPLY }))!;
    t.match(rev, { svc_id: 82, nat_addr: vip3, nat_port: 80, client_port: cport }, 'its reply entry is keyed by the new port and names the client\'s own');
    t.ok(rev.flags & KBP_CT_F_PORT_REMAP);

    const reply1 = await send({ saddr: a.ip, daddr: CLIENT, proto: 'tcp', sport: 8080, dport: cport, tcpFlags: TCP_ACK });
    t.match(reply1.out, { saddr: vip2, sport: 80, daddr: CLIENT, dport: cport }, "the first flow's replies still come from its own ClusterIP");
    const reply2 = await send({ saddr: a.ip, daddr: CLIENT, proto: 'tcp', sport: 8080, dport: remapped, tcpFlags: TCP_SYN | TCP_ACK });
    t.same(reply2.moved, ['revnat']);
    t.match(reply2.out, { saddr: vip3, sport: 80, daddr: CLIENT, dport: cport, l4ChecksumOk: true, ipChecksumOk: true }, "the second's come from the other, to the client's own port");
    const est = await send({ saddr: CLIENT, daddr: vip3, proto: 'tcp', sport: cport, dport: 80, tcpFlags: TCP_ACK });
    t.same(est.moved, ['established']);
    t.match(est.out, { saddr: CLIENT, sport: remapped, daddr: a.ip, dport: 8080, l4ChecksumOk: true }, 'established packets keep the remapped port');

    await t.test('an ICMP error about the remapped flow reaches the client with its own port', async (t) => {
      const err = buildIcmpError({ saddr: '10.244.0.1', daddr: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, rest: 1400, offending: est.res.data, quoteL4: 64 });
      const { res, moved } = await sendRaw(err);
      t.same(moved, ['icmp_revnat']);
      const want = buildIcmpError({ saddr: vip3, daddr: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, rest: 1400, offending: est.input, quoteL4: 64 });
      t.ok(res.data.equals(want), `exact frame\n got  ${res.data.toString('hex')}\n want ${want.toString('hex')}`);
    });

    // The frontend replaced (a new id, the same address and port): the flow is
    // re-recorded under it, on the port the backend knows it by.
    await dp.program([{ svcId: 87, vip: vip3, port: 80, proto: 'tcp', backends: [a] }]);
    const rebound = await send({ saddr: CLIENT, daddr: vip3, proto: 'tcp', sport: cport, dport: 80, tcpFlags: TCP_ACK });
    t.same(rebound.moved, ['port_remap'], 're-recorded under the new frontend id');
    t.match(rebound.out, { saddr: CLIENT, sport: remapped, daddr: a.ip, dport: 8080 }, 'keeping its remapped port');
    t.match(await dp.ctLookup(fwdKey(cport, vip3)), { svc_id: 87, nat_port: remapped });
    const reply3 = await send({ saddr: a.ip, daddr: CLIENT, proto: 'tcp', sport: 8080, dport: remapped, tcpFlags: TCP_ACK });
    t.match(reply3.out, { saddr: vip3, sport: 80, dport: cport }, 'its replies still reach the client port');

    // A closing flow's tuple is not taken over either: the backend may still
    // hold that connection in TIME_WAIT and refuse a SYN on it.
    const cport2 = sport();
    await send({ saddr: CLIENT, daddr: vip2, proto: 'tcp', sport: cport2, dport: 80 });
    await send({ saddr: a.ip, daddr: CLIENT, proto: 'tcp', sport: 8080, dport: cport2, tcpFlags: TCP_FIN | TCP_ACK });
    const reused = await send({ saddr: CLIENT, daddr: vip3, proto: 'tcp', sport: cport2, dport: 80, tcpFlags: TCP_SYN });
    t.same(reused.moved, ['port_remap'], 'a closing flow of another frontend: remapped too');
    const lastAck = await send({ saddr: a.ip, daddr: CLIENT, proto: 'tcp', sport: 8080, dport: cport2, tcpFlags: TCP_ACK });
    t.match(lastAck.out, { saddr: vip2, sport: 80, dport: cport2 }, "and the closing flow's last packets still come from its frontend");
    const newReply = await send({ saddr: a.ip, daddr: CLIENT, proto: 'tcp', sport: 8080, dport: reused.out!.sport, tcpFlags: TCP_SYN | TCP_ACK });
    t.match(newReply.out, { saddr: vip3, sport: 80, dport: cport2 });

    // The same frontend again (a new connection on the same port after
    // close) takes the tuple over, as before.
    await send({ saddr: CLIENT, daddr: vip2, proto: 'tcp', sport: cport2, dport: 80, tcpFlags: TCP_FIN | TCP_ACK });
    const again = await send({ saddr: CLIENT, daddr: vip2, proto: 'tcp', sport: cport2, dport: 80, tcpFlags: TCP_SYN });
    t.same(again.moved, ['new_flow'], 'the same frontend on a closed flow: a new flow on the own port');
    t.equal(again.out!.sport, cport2);

    // UDP has no close: the same client port to a second DNS frontend with the same backend.
    const uport = sport();
    const u1 = await send({ saddr: CLIENT, daddr: vip2, proto: 'udp', sport: uport, dport: 53 });
    t.same(u1.moved, ['new_flow']);
    const u2 = await send({ saddr: CLIENT, daddr: vip3, proto: 'udp', sport: uport, dport: 53 });
    t.same(u2.moved, ['port_remap'], 'UDP: remapped, not dropped');
    t.ok(inRange(u2.out!.sport) && u2.out!.l4ChecksumOk, 'with a valid UDP checksum');
    const ur = await send({ saddr: BE1, daddr: CLIENT, proto: 'udp', sport: 5353, dport: u2.out!.sport });
    t.match(ur.out, { saddr: vip3, sport: 53, daddr: CLIENT, dport: uport, l4ChecksumOk: true });

    // Once the first flow is over, the tuple is free for the other frontend.
    const revFirst = { saddr: a.ip, daddr: CLIENT, sport: 8080, dport: cport, proto: 6, dir: KBP_CT_REPLY };
    const cur = (await dp.ctLookup(revFirst))!;
    await dp.ctSet(revFirst, { ...cur, flags: cur.flags | KBP_CT_F_CLOSING, last_seen_ns: cur.last_seen_ns - BigInt(KBP_CT_LIFETIME_CLOSING_NS) - 1_000_000_000n });
    const fwd3 = (await dp.ctLookup(fwdKey(cport, vip3)))!;
    await dp.ctSet(fwdKey(cport, vip3), { ...fwd3, flags: fwd3.flags | KBP_CT_F_CLOSING });
    const later = await send({ saddr: CLIENT, daddr: vip3, proto: 'tcp', sport: cport, dport: 80, tcpFlags: TCP_SYN });
    t.same(later.moved, ['new_flow']);
    t.equal(later.out!.sport, cport, 'on its own port');
  });

  t.test('a clash with every port of the range held is dropped (drop_ct_clash)', async (t) => {
    const vip4 = '10.96.0.83';
    const vip5 = '10.96.0.84';
    await dp.program([
      { svcId: 85, vip: vip4, port: 80, proto: 'tcp', backends: [b] },
      { svcId: 86, vip: vip5, port: 80, proto: 'tcp', backends: [b] },
    ]);
    const cport = sport();
    await send({ saddr: CLIENT, daddr: vip4, proto: 'tcp', sport: cport, dport: 80 });
    const held = (await dp.ctLookup({ saddr: b.ip, daddr: CLIENT, sport: 8080, dport: cport, proto: 6, dir: KBP_CT_REPLY }))!;
    const taken: CtKey[] = [];
    for (let port = KBP_SNAT_PORT_MIN; port <= KBP_SNAT_PORT_MAX; port++) taken.push({ saddr: b.ip, daddr: CLIENT, sport: 8080, dport: port, proto: 6, dir: KBP_CT_REPLY });
    for (const k of taken) await dp.ctSet(k, held);
    t.teardown(async () => {
      for (const k of taken) await dp.ctDelete(k);
    });
    const second = await send({ saddr: CLIENT, daddr: vip5, proto: 'tcp', sport: cport, dport: 80 });
    t.equal(second.res.retval, TC_ACT_SHOT, 'refused');
    t.same(second.moved, ['drop_ct_clash']);
    t.equal(await dp.ctLookup(fwdKey(cport, vip5)), null, 'nothing recorded');
  });
});

/** Run a raw frame through the pod program; verdict, counters moved. */
async function sendRaw(input: Buffer) {
  const before = await dp.readStats();
  const res = await dp.run(input);
  const after = await dp.readStats();
  return { res, moved: STAT_NAMES.filter((_, i) => after[i]!.packets !== before[i]!.packets) };
}

t.test('ICMP errors about a translated flow are translated back for the client', async (t) => {
  t.test("a backend's port unreachable for a UDP flow: from the ClusterIP, quoting client -> ClusterIP:53", async (t) => {
    const cport = sport();
    const query = { saddr: CLIENT, daddr: VIP, proto: 'udp', sport: cport, dport: 53 } as const;
    const sent = buildPacket(query);
    const dnat = await dp.run(sent);
    t.match(parsePacket(dnat.data), { daddr: BE2, dport: 5353 });
    // BE2 has no socket on 5353: its kernel quotes the datagram as it arrived.
    const err = buildIcmpError({ saddr: BE2, daddr: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_PORT_UNREACH, offending: dnat.data, quoteL4: 24 });
    const { res, moved } = await sendRaw(err);
    t.equal(res.retval, TC_ACT_OK);
    t.same(moved, ['icmp_revnat']);
    const want = buildIcmpError({ saddr: VIP, daddr: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_PORT_UNREACH, offending: sent, quoteL4: 24 });
    t.ok(res.data.equals(want), `exact frame: the quote is the datagram the client sent\n got  ${res.data.toString('hex')}\n want ${want.toString('hex')}`);
    const p = parseIcmpError(res.data);
    t.match(p, { saddr: VIP, daddr: CLIENT, ipChecksumOk: true, icmpChecksumOk: true });
    t.match(p.quoted, { saddr: CLIENT, daddr: VIP, sport: cport, dport: 53, ipChecksumOk: true });
  });

  t.test('fragmentation needed from a router on the way, about a TCP flow: from the ClusterIP, MTU kept, TCP checksum in the quote restored', async (t) => {
    const cport = sport();
    const seg = { saddr: CLIENT, daddr: VIP, proto: 'tcp', sport: cport, dport: 443, tcpFlags: TCP_ACK, payload: Buffer.alloc(64, 1) } as const;
    const sent = buildPacket(seg);
    const dnat = await dp.run(sent);
    t.match(parsePacket(dnat.data), { daddr: BE1, dport: 8443 });
    const err = buildIcmpError({ saddr: '10.244.0.1', daddr: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, rest: 1400, offending: dnat.data, quoteL4: 64 });
    const { res, moved } = await sendRaw(err);
    t.same(moved, ['icmp_revnat']);
    const want = buildIcmpError({ saddr: VIP, daddr: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, rest: 1400, offending: sent, quoteL4: 64 });
    t.ok(res.data.equals(want), `exact frame\n got  ${res.data.toString('hex')}\n want ${want.toString('hex')}`);
    t.equal(parseIcmpError(res.data).rest, 1400, 'next-hop MTU untouched');
  });

  t.test('a quote of 8 L4 bytes (no TCP checksum in it) is still translated, checksums right', async (t) => {
    const cport = sport();
    const sent = buildPacket({ saddr: CLIENT, daddr: VIP, proto: 'tcp', sport: cport, dport: 443 });
    const dnat = await dp.run(sent);
    const err = buildIcmpError({ saddr: BE1, daddr: CLIENT, type: ICMP_TIME_EXCEEDED, code: 0, offending: dnat.data, quoteL4: 8 });
    const { res } = await sendRaw(err);
    const want = buildIcmpError({ saddr: VIP, daddr: CLIENT, type: ICMP_TIME_EXCEEDED, code: 0, offending: sent, quoteL4: 8 });
    t.ok(res.data.equals(want), 'exact frame');
  });

  t.test('ICMP that is no error about a known flow passes untouched', async (t) => {
    const stray = buildPacket({ saddr: CLIENT, daddr: BE1, proto: 'udp', sport: sport(), dport: 9999 });
    const err = buildIcmpError({ saddr: BE1, daddr: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_PORT_UNREACH, offending: stray });
    const a = await sendRaw(err);
    t.equal(a.res.retval, TC_ACT_OK);
    t.ok(a.res.data.equals(err), 'unknown flow: unchanged');
    t.same(a.moved, ['pass']);
    const echo = Buffer.from(err);
    echo[14 + 20] = 8; // echo request
    const b = await sendRaw(echo);
    t.ok(b.res.data.equals(echo), 'echo request: unchanged');
  });
});

t.test('hairpin: a pod that gets itself as backend is answered by itself, through the ClusterIP', async (t) => {
  // 10.96.0.10:443 has one backend, BE1:8443; BE1 is the client here.
  const cport = sport();
  const syn = await send({ saddr: BE1, daddr: VIP, proto: 'tcp', sport: cport, dport: 443, tcpFlags: TCP_SYN });
  t.equal(syn.res.retval, TC_ACT_OK);
  t.same(syn.moved, ['hairpin']);
  t.match(syn.out, { saddr: HAIRPIN_ADDR, sport: cport, daddr: BE1, dport: 8443, ipChecksumOk: true, l4ChecksumOk: true }, 'the pod sees itself reached from 169.254.42.1');
  const fwd = await dp.ctLookup({ saddr: BE1, daddr: VIP, sport: cport, dport: 443, proto: 6, dir: KBP_CT_FORWARD });
  t.match(fwd, { backend_id: 3, svc_id: 2, nat_addr: HAIRPIN_ADDR, nat_port: cport });
  t.ok(fwd!.flags & KBP_CT_F_HAIRPIN, 'forward entry marked hairpin');
  t.match(await dp.ctLookup({ saddr: BE1, daddr: HAIRPIN_ADDR, sport: 8443, dport: cport, proto: 6, dir: KBP_CT_REPLY }), { backend_id: 3, nat_addr: VIP, nat_port: 443 }, 'reply entry keyed by what the pod answers');

  const ack = await send({ saddr: BE1, daddr: VIP, proto: 'tcp', sport: cport, dport: 443, tcpFlags: TCP_ACK });
  t.same(ack.moved, ['established']);
  t.match(ack.out, { saddr: HAIRPIN_ADDR, sport: cport, daddr: BE1, dport: 8443, l4ChecksumOk: true }, 'established packets keep the hairpin source');

  const reply = await send({ saddr: BE1, daddr: HAIRPIN_ADDR, proto: 'tcp', sport: 8443, dport: cport, tcpFlags: TCP_SYN | TCP_ACK });
  t.same(reply.moved, ['revnat']);
  t.match(reply.out, { saddr: VIP, sport: 443, daddr: BE1, dport: cport, ipChecksumOk: true, l4ChecksumOk: true }, 'the reply comes from the ClusterIP to the pod');

  // UDP, and a zero UDP checksum stays zero through both rewrites.
  const uport = sport();
  await dp.program([{ svcId: 90, vip: '10.96.0.90', port: 53, proto: 'udp', backends: [{ id: 90, ip: BE1, port: 5353 }] }]);
  const q = await send({ saddr: BE1, daddr: '10.96.0.90', proto: 'udp', sport: uport, dport: 53, udpZeroChecksum: true });
  t.match(q.out, { saddr: HAIRPIN_ADDR, daddr: BE1, dport: 5353, l4Checksum: 0 });
  const a = await send({ saddr: BE1, daddr: HAIRPIN_ADDR, proto: 'udp', sport: 5353, dport: uport });
  t.match(a.out, { saddr: '10.96.0.90', sport: 53, daddr: BE1, dport: uport, l4ChecksumOk: true });

  // Another client of the same backend is not hairpinned.
  const other = await send({ saddr: CLIENT, daddr: VIP, proto: 'tcp', sport: sport(), dport: 443 });
  t.same(other.moved, ['new_flow']);
  t.equal(other.out!.saddr, CLIENT);
});

t.test("hairpin: an ICMP error the pod sends about its own hairpinned flow reaches it translated", async (t) => {
  const uport = sport();
  const sent = buildPacket({ saddr: BE1, daddr: '10.96.0.90', proto: 'udp', sport: uport, dport: 53 });
  const dnat = await dp.run(sent);
  t.match(parsePacket(dnat.data), { saddr: HAIRPIN_ADDR, daddr: BE1 });
  const err = buildIcmpError({ saddr: BE1, daddr: HAIRPIN_ADDR, type: ICMP_DEST_UNREACH, code: ICMP_PORT_UNREACH, offending: dnat.data, quoteL4: 16 });
  const { res, moved } = await sendRaw(err);
  t.same(moved, ['icmp_revnat']);
  const want = buildIcmpError({ saddr: '10.96.0.90', daddr: BE1, type: ICMP_DEST_UNREACH, code: ICMP_PORT_UNREACH, offending: sent, quoteL4: 16 });
  t.ok(res.data.equals(want), `exact frame\n got  ${res.data.toString('hex')}\n want ${want.toString('hex')}`);
});
