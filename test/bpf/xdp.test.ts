// Datapath tests for the XDP program on node-facing devices (bpf/kbp_xdp.c,
// --nodeport-acceleration xdp): the forward half of kbp_from_node before an
// skb exists. Packet in, packet out through BPF_PROG_TEST_RUN, on the same
// pinned maps as the tc programs, so each case also checks that tc, which
// stays attached behind XDP, agrees with what XDP recorded.
//
// Address conventions in these tests (as in node.test.ts):
//   this node        172.18.0.11 (NodePorts 301xx, config node_ip)
//   external client  172.18.0.100 (source ports unique per case)
//   local backend    10.244.1.10:8080   (pod on this node)
//   remote backend   10.244.2.10:8080   (pod on the other node)
//   LoadBalancer IP  172.18.1.60:80
import t, { type Test } from 'tap';
import { DatapathFixture, TC_ACT_OK, TC_ACT_REDIRECT, XDP_DROP, XDP_PASS } from '../../src/bench/fixtures.js';
import { buildArp, buildIcmpError, buildPacket, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, parsePacket, TCP_ACK, TCP_SYN, type PacketSpec } from '../../src/bench/packets.js';
import {
  KBP_SNAT_PORT_MAX,
  KBP_SNAT_PORT_MIN,
  KBP_SVC_F_LOAD_BALANCER,
  KBP_SVC_F_MASQUERADE,
  KBP_SVC_F_NODE_PORT,
  KBP_SVC_F_REJECT,
  STAT_NAMES,
} from '../../src/maps/abi.js';

const NODE = '172.18.0.11';
const CLIENT = '172.18.0.100';
const LOCAL_BE = { id: 101, ip: '10.244.1.10', port: 8080 };
const REMOTE_BE = { id: 102, ip: '10.244.2.10', port: 8080, local: false };
const LB_IP = '172.18.1.60';

let nextPort = 40000;
const sport = (): number => nextPort++;

let dp: DatapathFixture;
t.before(async () => {
  dp = await DatapathFixture.open();
  await dp.setConfig(NODE);
});
t.teardown(() => dp?.close());

type Hook = 'xdp' | 'node' | 'pod';

async function send(spec: PacketSpec | Buffer, hook: Hook = 'xdp') {
  const before = await dp.readStats();
  const input = Buffer.isBuffer(spec) ? spec : buildPacket(spec);
  const res = hook === 'xdp' ? await dp.runXdp(input) : hook === 'node' ? await dp.runNode(input) : await dp.run(input);
  const after = await dp.readStats();
  const moved = STAT_NAMES.filter((_, i) => after[i]!.packets !== before[i]!.packets);
  const passed = hook === 'xdp' ? res.retval === XDP_PASS : res.retval === TC_ACT_OK;
  const untouched = passed && res.data.equals(input);
  // What passed untouched may be no TCP/UDP packet at all (ARP, ICMP, a stub).
  return { input, res, out: passed && !untouched ? parsePacket(res.data) : null, moved, untouched };
}

function checksumsOk(t: Test, out: ReturnType<typeof parsePacket> | null): void {
  t.ok(out?.ipChecksumOk, 'IPv4 checksum');
  t.ok(out?.l4ChecksumOk, 'L4 checksum');
}

t.test('NodePort to a remote backend: DNAT + SNAT in XDP, tc passes the result, the reply is restored by tc', async (t) => {
  await dp.program([{ svcId: 201, vip: NODE, port: 30101, proto: 'tcp', backends: [REMOTE_BE], flags: KBP_SVC_F_NODE_PORT | KBP_SVC_F_MASQUERADE }]);
  const cport = sport();
  const syn = await send({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: cport, dport: 30101 });
  t.equal(syn.res.retval, XDP_PASS);
  t.same(syn.moved, ['snat', 'xdp_forward']);
  t.match(syn.out, { saddr: NODE, daddr: REMOTE_BE.ip, dport: 8080 }, 'masqueraded to the node, DNATed to the backend');
  checksumsOk(t, syn.out);
  const natPort = syn.out!.sport;
  t.ok(natPort >= KBP_SNAT_PORT_MIN && natPort <= KBP_SNAT_PORT_MAX, `SNAT port ${natPort} in range`);

  const behind = await send(syn.res.data, 'node');
  t.ok(behind.untouched, 'kbp_from_node behind XDP leaves the translated packet alone');
  t.same(behind.moved, ['pass']);

  const ack = await send({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: cport, dport: 30101, tcpFlags: TCP_ACK });
  t.same(ack.moved, ['established', 'xdp_forward']);
  t.match(ack.out, { saddr: NODE, sport: natPort, daddr: REMOTE_BE.ip, dport: 8080 }, 'established: same SNAT port');
  checksumsOk(t, ack.out);

  const reply = await send({ saddr: REMOTE_BE.ip, daddr: NODE, proto: 'tcp', sport: 8080, dport: natPort, tcpFlags: TCP_SYN | TCP_ACK });
  t.ok(reply.untouched, 'XDP leaves the reply to tc');
  t.same(reply.moved, []);
  const restored = await send(reply.input, 'node');
  t.same(restored.moved, ['revnat']);
  t.match(restored.out, { saddr: NODE, sport: 30101, daddr: CLIENT, dport: cport }, 'tc restores the reply from the flow XDP recorded');
  checksumsOk(t, restored.out);
});

t.test('the flow XDP records is the one tc follows: byte-identical translation', async (t) => {
  await dp.program([{ svcId: 202, vip: NODE, port: 30102, proto: 'udp', backends: [LOCAL_BE], flags: KBP_SVC_F_NODE_PORT }]);
  const spec: PacketSpec = { saddr: CLIENT, daddr: NODE, proto: 'udp', sport: sport(), dport: 30102 };
  const viaXdp = await send(spec);
  t.same(viaXdp.moved, ['new_flow', 'xdp_forward']);
  t.match(viaXdp.out, { saddr: CLIENT, daddr: LOCAL_BE.ip, dport: 8080 }, 'externalTrafficPolicy Local: the backend sees the client');
  checksumsOk(t, viaXdp.out);
  const viaTc = await send(spec, 'node');
  t.same(viaTc.moved, ['established'], 'tc finds the flow XDP created');
  t.ok(viaTc.res.data.equals(viaXdp.res.data), 'same bytes from both hooks');
});

t.test('UDP: a zero checksum stays zero, a computed one stays valid', async (t) => {
  await dp.program([{ svcId: 203, vip: NODE, port: 30103, proto: 'udp', backends: [LOCAL_BE], flags: KBP_SVC_F_NODE_PORT }]);
  const none = await send({ saddr: CLIENT, daddr: NODE, proto: 'udp', sport: sport(), dport: 30103, udpZeroChecksum: true });
  t.match(none.out, { daddr: LOCAL_BE.ip, dport: 8080, l4Checksum: 0 });
  t.ok(none.out?.ipChecksumOk);
  for (let i = 0; i < 64; i++) {
    // Many payloads, so some sum lands on the 0 <-> 0xffff edge of the update.
    const payload = Buffer.alloc(16, i * 4);
    const r = await send({ saddr: CLIENT, daddr: NODE, proto: 'udp', sport: sport(), dport: 30103, payload });
    if (!r.out?.l4ChecksumOk || r.out.l4Checksum === 0) t.fail(`payload ${i}: checksum ${r.out?.l4Checksum}`);
  }
  t.pass('64 payloads translated with valid, non-zero UDP checksums');
});

t.test('IP options: the L4 header is found behind them', async (t) => {
  await dp.program([{ svcId: 204, vip: NODE, port: 30104, proto: 'tcp', backends: [LOCAL_BE], flags: KBP_SVC_F_NODE_PORT }]);
  const r = await send({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: sport(), dport: 30104, ipOptions: Buffer.from([1, 1, 1, 0]) });
  t.match(r.out, { daddr: LOCAL_BE.ip, dport: 8080 });
  checksumsOk(t, r.out);
});

t.test('a pseudo-header checksum (CHECKSUM_PARTIAL from a local sender) is left to tc, which translates it', async (t) => {
  await dp.program([{ svcId: 205, vip: NODE, port: 30105, proto: 'tcp', backends: [LOCAL_BE], flags: KBP_SVC_F_NODE_PORT }]);
  for (const proto of ['tcp', 'udp'] as const) {
    const spec: PacketSpec = { saddr: CLIENT, daddr: NODE, proto, sport: sport(), dport: 30105, partialChecksum: true };
    if (proto === 'udp') await dp.program([{ svcId: 206, vip: NODE, port: 30105, proto: 'udp', backends: [LOCAL_BE], flags: KBP_SVC_F_NODE_PORT }]);
    const r = await send(spec);
    t.equal(r.res.retval, XDP_PASS, proto);
    t.ok(r.untouched, `${proto}: untouched by XDP`);
    t.same(r.moved, [], `${proto}: nothing counted, no flow recorded`);
    const tc = await send(spec, 'node');
    t.same(tc.moved, ['new_flow'], `${proto}: tc creates the flow`);
    t.match(tc.out, { daddr: LOCAL_BE.ip, dport: 8080 });
  }
});

t.test('a Service without endpoints: XDP passes, tc rejects with ICMP', async (t) => {
  await dp.program([{ svcId: 207, vip: NODE, port: 30107, proto: 'tcp', backends: [], flags: KBP_SVC_F_NODE_PORT | KBP_SVC_F_REJECT }]);
  const spec: PacketSpec = { saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: sport(), dport: 30107 };
  const r = await send(spec);
  t.ok(r.untouched);
  t.same(r.moved, []);
  const tc = await send(spec, 'node');
  t.equal(tc.res.retval, TC_ACT_REDIRECT);
  t.same(tc.moved, ['reject']);
});

t.test('drops in XDP are the drops of tc: no local endpoint under a Local policy, outside loadBalancerSourceRanges', async (t) => {
  await dp.program([
    { svcId: 208, vip: NODE, port: 30108, proto: 'tcp', backends: [], flags: KBP_SVC_F_NODE_PORT },
    { svcId: 209, vip: LB_IP, port: 80, proto: 'tcp', backends: [REMOTE_BE], flags: KBP_SVC_F_LOAD_BALANCER | KBP_SVC_F_MASQUERADE, sourceRanges: ['10.0.0.0/8'] },
  ]);
  const local = await send({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: sport(), dport: 30108 });
  t.equal(local.res.retval, XDP_DROP);
  t.same(local.moved, ['drop_no_backend']);
  const outside = await send({ saddr: CLIENT, daddr: LB_IP, proto: 'tcp', sport: sport(), dport: 80 });
  t.equal(outside.res.retval, XDP_DROP);
  t.same(outside.moved, ['drop_source_range']);
  const inside = await send({ saddr: '10.1.2.3', daddr: LB_IP, proto: 'tcp', sport: sport(), dport: 80 });
  t.same(inside.moved, ['snat', 'xdp_forward']);
  t.match(inside.out, { saddr: NODE, daddr: REMOTE_BE.ip, dport: 8080 }, 'masqueraded to the configured node IP');
});

t.test('what is not a new or established service flow passes untouched and uncounted', async (t) => {
  await dp.program([{ svcId: 210, vip: NODE, port: 30110, proto: 'tcp', backends: [LOCAL_BE], flags: KBP_SVC_F_NODE_PORT }]);
  const base: PacketSpec = { saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: sport(), dport: 30110 };
  const cases: Array<[string, Buffer]> = [
    ['ARP', buildArp()],
    ['the node on another port', buildPacket({ ...base, dport: 22 })],
    ['a later fragment', buildPacket({ ...base, fragment: { moreFragments: false, offset: 4 } })],
    ['a first fragment', buildPacket({ ...base, fragment: { moreFragments: true, offset: 0 } })],
    ['a truncated TCP header', buildPacket(base).subarray(0, 14 + 20 + 10)],
    ['an ICMP error', buildIcmpError({ saddr: LOCAL_BE.ip, daddr: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_PORT_UNREACH, offending: buildPacket(base) })],
  ];
  for (const [what, pkt] of cases) {
    const r = await send(pkt);
    t.equal(r.res.retval, XDP_PASS, what);
    t.ok(r.res.data.equals(pkt), `${what}: untouched`);
    t.same(r.moved, [], `${what}: not counted`);
  }
});
