// Datapath tests for tc ingress on node-facing devices (bpf/kbp_node.c):
// NodePort / LoadBalancer DNAT, masquerade (SNAT) when the backend runs on
// another node, reverse SNAT of replies, and cross-node replies of flows this
// node's pods started. Packet in, packet out through BPF_PROG_TEST_RUN.
//
// Address conventions in these tests:
//   this node        172.18.0.11 (NodePort 30080, config node_ip)
//   external client  172.18.0.100 (source ports unique per case)
//   local backend    10.244.1.10:8080   (pod on this node)
//   remote backend   10.244.2.10:8080   (pod on the other node)
//   ClusterIP        10.96.0.70:80      LoadBalancer IP 172.18.1.50:80
//   client pod       10.244.1.2
import t, { type Test } from 'tap';
import { DatapathFixture, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT } from '../../src/bench/fixtures.js';
import {
  buildIcmpError,
  buildPacket,
  ICMP_DEST_UNREACH,
  ICMP_FRAG_NEEDED,
  ICMP_PORT_UNREACH,
  parseIcmpError,
  parsePacket,
  TCP_ACK,
  TCP_SYN,
  type PacketSpec,
} from '../../src/bench/packets.js';
import { expectedReject } from './icmp-expect.js';
import {
  KBP_CT_F_SNAT,
  KBP_CT_FORWARD,
  KBP_SNAT_PORT_MAX,
  KBP_SNAT_PORT_MIN,
  KBP_SCOPE_INTERNAL,
  KBP_SVC_F_LOAD_BALANCER,
  KBP_SVC_F_INTERNAL_SCOPE,
  KBP_SVC_F_MASQUERADE,
  KBP_SVC_F_NODE_PORT,
  KBP_SVC_F_REJECT,
  STAT_NAMES,
  snatKey,
  snatValue,
  srcRangeKey,
  srcRangeKeyOf,
} from '../../src/maps/abi.js';

const NODE = '172.18.0.11';
const CLIENT = '172.18.0.100';
const LOCAL_BE = { id: 1, ip: '10.244.1.10', port: 8080 };
const REMOTE_BE = { id: 2, ip: '10.244.2.10', port: 8080, local: false };
const CLUSTER_IP = '10.96.0.70';
const LB_IP = '172.18.1.50';
const POD = '10.244.1.2';

let nextPort = 30000;
const sport = (): number => nextPort++;

let dp: DatapathFixture;
t.before(async () => {
  dp = await DatapathFixture.open();
});
t.teardown(() => dp?.close());

async function send(spec: PacketSpec, via: 'node' | 'pod' = 'node') {
  const before = await dp.readStats();
  const input = buildPacket(spec);
  const res = via === 'node' ? await dp.runNode(input) : await dp.run(input);
  const after = await dp.readStats();
  const moved = STAT_NAMES.filter((_, i) => after[i]!.packets !== before[i]!.packets);
  return { input, res, out: res.retval === TC_ACT_OK ? parsePacket(res.data) : null, moved };
}

function checksumsOk(t: Test, out: ReturnType<typeof parsePacket> | null): void {
  t.ok(out?.ipChecksumOk, 'IPv4 checksum');
  t.ok(out?.l4ChecksumOk, 'L4 checksum');
}

t.test('NodePort to a local backend: DNAT only, the backend sees the client', async (t) => {
  await dp.program([{ svcId: 1, vip: NODE, port: 30080, proto: 'tcp', backends: [LOCAL_BE], flags: KBP_SVC_F_NODE_PORT }]);
  const cport = sport();
  const { out, moved } = await send({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: cport, dport: 30080 });
  t.match(out, { saddr: CLIENT, sport: cport, daddr: LOCAL_BE.ip, dport: 8080 });
  checksumsOk(t, out);
  t.same(moved, ['new_flow']);
  // The local backend's reply leaves through its pod device: reverse NAT there.
  const reply = await send({ saddr: LOCAL_BE.ip, daddr: CLIENT, proto: 'tcp', sport: 8080, dport: cport, tcpFlags: TCP_SYN | TCP_ACK }, 'pod');
  t.match(reply.out, { saddr: NODE, sport: 30080, daddr: CLIENT, dport: cport }, 'reply from the NodePort');
  checksumsOk(t, reply.out);
});

t.test('NodePort with externalTrafficPolicy Cluster (KBP_SVC_F_MASQUERADE) to a local backend: masqueraded like kube-proxy; the reply and its ICMP errors are restored on the pod device', async (t) => {
  await dp.program([{ svcId: 11, vip: NODE, port: 30083, proto: 'udp', backends: [LOCAL_BE], flags: KBP_SVC_F_NODE_PORT | KBP_SVC_F_MASQUERADE }]);
  const cport = sport();
  const first = await send({ saddr: CLIENT, daddr: NODE, proto: 'udp', sport: cport, dport: 30083 });
  t.same(first.moved, ['snat']);
  t.match(first.out, { saddr: NODE, daddr: LOCAL_BE.ip, dport: 8080 }, 'the local backend sees the node address');
  checksumsOk(t, first.out);
  const natPort = first.out!.sport;
  t.ok(natPort >= KBP_SNAT_PORT_MIN && natPort <= KBP_SNAT_PORT_MAX, `SNAT port ${natPort} in range`);
  const again = await send({ saddr: CLIENT, daddr: NODE, proto: 'udp', sport: cport, dport: 30083 });
  t.match(again.out, { saddr: NODE, sport: natPort, daddr: LOCAL_BE.ip }, 'established: same SNAT port');

  const reply = await send({ saddr: LOCAL_BE.ip, daddr: NODE, proto: 'udp', sport: 8080, dport: natPort }, 'pod');
  t.same(reply.moved, ['revnat']);
  t.match(reply.out, { saddr: NODE, sport: 30083, daddr: CLIENT, dport: cport }, 'reply restored at the backend\'s own device');
  checksumsOk(t, reply.out);

  // The backend's port unreachable, quoting what it received.
  const before = await dp.readStats();
  const err = await dp.run(buildIcmpError({ saddr: LOCAL_BE.ip, daddr: NODE, type: ICMP_DEST_UNREACH, code: ICMP_PORT_UNREACH, offending: again.res.data }));
  const after = await dp.readStats();
  t.equal(err.retval, TC_ACT_OK);
  t.same(STAT_NAMES.filter((_, i) => after[i]!.packets !== before[i]!.packets), ['icmp_revnat']);
  const e = parseIcmpError(err.data);
  t.match(e, { saddr: NODE, daddr: CLIENT, ipChecksumOk: true, icmpChecksumOk: true }, 'ICMP error from the frontend to the client');
  t.match(e.quoted, { saddr: CLIENT, sport: cport, daddr: NODE, dport: 30083, ipChecksumOk: true }, 'quote restored to client -> NodePort');

  // A pod on this node addressing the NodePort is masqueraded too (kube-proxy's KUBE-EXT marks it).
  const podPort = sport();
  const fromPod = await send({ saddr: POD, daddr: NODE, proto: 'udp', sport: podPort, dport: 30083 }, 'pod');
  t.same(fromPod.moved, ['snat']);
  t.match(fromPod.out, { saddr: NODE, daddr: LOCAL_BE.ip, dport: 8080 }, 'pod masqueraded to the node address');
  const podReply = await send({ saddr: LOCAL_BE.ip, daddr: NODE, proto: 'udp', sport: 8080, dport: fromPod.out!.sport }, 'pod');
  t.match(podReply.out, { saddr: NODE, sport: 30083, daddr: POD, dport: podPort }, 'and its reply restored');

  // Without the flag (externalTrafficPolicy Local) the client keeps its address.
  await dp.program([{ svcId: 12, vip: NODE, port: 30084, proto: 'udp', backends: [LOCAL_BE], flags: KBP_SVC_F_NODE_PORT }]);
  const local = await send({ saddr: CLIENT, daddr: NODE, proto: 'udp', sport: sport(), dport: 30084 });
  t.same(local.moved, ['new_flow']);
  t.equal(local.out!.saddr, CLIENT);
});

t.test('externalTrafficPolicy Local (KBP_SVC_F_INTERNAL_SCOPE): from outside only local backends, pods use the internal-scope entry with every endpoint', async (t) => {
  await dp.program([
    { svcId: 13, vip: NODE, port: 30085, proto: 'tcp', backends: [], flags: KBP_SVC_F_NODE_PORT | KBP_SVC_F_INTERNAL_SCOPE },
    { svcId: 14, vip: NODE, port: 30085, proto: 'tcp', backends: [REMOTE_BE], flags: KBP_SVC_F_NODE_PORT, scope: KBP_SCOPE_INTERNAL },
  ]);
  const outside = await send({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: sport(), dport: 30085 });
  t.equal(outside.res.retval, TC_ACT_SHOT, 'from outside: no local endpoint, dropped');
  t.same(outside.moved, ['drop_no_backend']);
  const podPort = sport();
  const fromPod = await send({ saddr: POD, daddr: NODE, proto: 'tcp', sport: podPort, dport: 30085 }, 'pod');
  t.same(fromPod.moved, ['new_flow']);
  t.match(fromPod.out, { saddr: POD, sport: podPort, daddr: REMOTE_BE.ip, dport: 8080 }, 'a pod reaches the remote endpoint, not masqueraded');
  const fwd = await dp.ctLookup({ saddr: POD, daddr: NODE, sport: podPort, dport: 30085, proto: 6, dir: KBP_CT_FORWARD });
  t.match(fwd, { svc_id: 14, backend_id: REMOTE_BE.id }, 'the flow is recorded under the internal entry');
  const ack = await send({ saddr: POD, daddr: NODE, proto: 'tcp', sport: podPort, dport: 30085, tcpFlags: TCP_ACK }, 'pod');
  t.same(ack.moved, ['established']);
  // The remote backend's reply comes back through the uplink: reverse NAT there.
  const reply = await send({ saddr: REMOTE_BE.ip, daddr: POD, proto: 'tcp', sport: 8080, dport: podPort, tcpFlags: TCP_SYN | TCP_ACK });
  t.match(reply.out, { saddr: NODE, sport: 30085, daddr: POD, dport: podPort }, 'reply from the NodePort');
});

t.test('NodePort to a remote backend: DNAT + SNAT, established packets reuse the port, the reply is restored', async (t) => {
  await dp.program([{ svcId: 2, vip: NODE, port: 30081, proto: 'tcp', backends: [REMOTE_BE], flags: KBP_SVC_F_NODE_PORT }]);
  const cport = sport();
  const syn = await send({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: cport, dport: 30081 });
  t.same(syn.moved, ['snat']);
  t.equal(syn.out!.saddr, NODE, 'client masqueraded to the node address it targeted');
  t.equal(syn.out!.daddr, REMOTE_BE.ip);
  t.equal(syn.out!.dport, 8080);
  const natPort = syn.out!.sport;
  t.ok(natPort >= KBP_SNAT_PORT_MIN && natPort <= KBP_SNAT_PORT_MAX, `SNAT port ${natPort} in range`);
  checksumsOk(t, syn.out);

  const fwd = await dp.ctLookup({ saddr: CLIENT, daddr: NODE, sport: cport, dport: 30081, proto: 6, dir: KBP_CT_FORWARD });
  t.match(fwd, { backend_id: REMOTE_BE.id, svc_id: 2, nat_addr: NODE, nat_port: natPort });
  t.ok(fwd!.flags & KBP_CT_F_SNAT, 'forward entry marked SNAT');
  const sn = await dp.snatLookup({ saddr: REMOTE_BE.ip, daddr: NODE, sport: 8080, dport: natPort, proto: 6 });
  t.match(sn, { client_addr: CLIENT, client_port: cport, svc_id: 2 }, 'SNAT entry remembers the client');

  for (let i = 0; i < 5; i++) {
    const ack = await send({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: cport, dport: 30081, tcpFlags: TCP_ACK });
    t.match(ack.out, { saddr: NODE, sport: natPort, daddr: REMOTE_BE.ip, dport: 8080 }, `packet ${i} keeps backend and SNAT port`);
    t.same(ack.moved, ['established']);
  }

  const reply = await send({ saddr: REMOTE_BE.ip, daddr: NODE, proto: 'tcp', sport: 8080, dport: natPort, tcpFlags: TCP_SYN | TCP_ACK });
  t.same(reply.moved, ['revnat']);
  t.match(reply.out, { saddr: NODE, sport: 30081, daddr: CLIENT, dport: cport }, 'the client gets the reply from NodeIP:NodePort');
  checksumsOk(t, reply.out);
});

t.test('two clients with the same source port get distinct SNAT ports', async (t) => {
  await dp.program([{ svcId: 3, vip: NODE, port: 30082, proto: 'udp', backends: [REMOTE_BE], flags: KBP_SVC_F_NODE_PORT }]);
  const ports = new Set<number>();
  for (let i = 0; i < 50; i++) {
    const { out } = await send({ saddr: `172.18.0.${150 + i}`, daddr: NODE, proto: 'udp', sport: 5000, dport: 30082 });
    t.equal(out!.saddr, NODE);
    ports.add(out!.sport);
  }
  t.equal(ports.size, 50, 'every masqueraded flow has its own port');
});

t.test('no free SNAT port: the new flow is dropped, not mis-translated', async (t) => {
  const be = { id: 9, ip: '10.244.2.99', port: 9999, local: false };
  await dp.program([{ svcId: 9, vip: NODE, port: 30089, proto: 'tcp', backends: [be], flags: KBP_SVC_F_NODE_PORT }]);
  const n = KBP_SNAT_PORT_MAX - KBP_SNAT_PORT_MIN + 1;
  const keys = Buffer.alloc(n * snatKey.size);
  const values = Buffer.alloc(n * snatValue.size);
  for (let i = 0; i < n; i++) {
    snatKey.encodeInto({ saddr: be.ip, daddr: NODE, sport: be.port, dport: KBP_SNAT_PORT_MIN + i, proto: 6 }, keys, i * snatKey.size);
    snatValue.encodeInto({ created_ns: 1n, client_addr: '172.18.9.9', client_port: i, svc_id: 9 }, values, i * snatValue.size);
  }
  await dp.snat.updateBatch(keys, values, n);
  const { res, moved } = await send({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: sport(), dport: 30089 });
  t.equal(res.retval, TC_ACT_SHOT);
  t.same(moved, ['drop_snat_ports']);
  await dp.snat.deleteBatch(keys, n);
});

t.test('LoadBalancer IP to a remote backend masquerades to the configured node IP', async (t) => {
  await dp.program([{ svcId: 4, vip: LB_IP, port: 80, proto: 'tcp', backends: [REMOTE_BE], flags: KBP_SVC_F_LOAD_BALANCER }]);
  const noConfig = await send({ saddr: CLIENT, daddr: LB_IP, proto: 'tcp', sport: sport(), dport: 80 });
  t.equal(noConfig.res.retval, TC_ACT_SHOT, 'without a node IP there is nothing to masquerade to');
  t.same(noConfig.moved, ['drop_no_config']);

  await dp.setConfig(NODE);
  const cport = sport();
  const { out } = await send({ saddr: CLIENT, daddr: LB_IP, proto: 'tcp', sport: cport, dport: 80 });
  t.match(out, { saddr: NODE, daddr: REMOTE_BE.ip, dport: 8080 });
  const reply = await send({ saddr: REMOTE_BE.ip, daddr: NODE, proto: 'tcp', sport: 8080, dport: out!.sport, tcpFlags: TCP_ACK });
  t.match(reply.out, { saddr: LB_IP, sport: 80, daddr: CLIENT, dport: cport }, 'reply from the LoadBalancer IP');
});

t.test('externalTrafficPolicy Local on a node without a local backend: dropped', async (t) => {
  // The syncer gives such a frontend only this node's backends: none here.
  await dp.program([{ svcId: 5, vip: NODE, port: 30085, proto: 'tcp', backends: [], flags: KBP_SVC_F_NODE_PORT }]);
  const { res, moved } = await send({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: sport(), dport: 30085 });
  t.equal(res.retval, TC_ACT_SHOT);
  t.same(moved, ['drop_no_backend']);
});

t.test("a pod's ClusterIP flow to a remote backend: the reply entering the uplink is reverse-NATed", async (t) => {
  await dp.program([{ svcId: 6, vip: CLUSTER_IP, port: 80, proto: 'tcp', backends: [REMOTE_BE] }]);
  const cport = sport();
  const out = await send({ saddr: POD, daddr: CLUSTER_IP, proto: 'tcp', sport: cport, dport: 80 }, 'pod');
  t.match(out.out, { saddr: POD, daddr: REMOTE_BE.ip, dport: 8080 }, 'pods are not masqueraded');
  const reply = await send({ saddr: REMOTE_BE.ip, daddr: POD, proto: 'tcp', sport: 8080, dport: cport, tcpFlags: TCP_ACK });
  t.same(reply.moved, ['revnat']);
  t.match(reply.out, { saddr: CLUSTER_IP, sport: 80, daddr: POD, dport: cport });
  checksumsOk(t, reply.out);
});

t.test('traffic to the node itself on other ports passes untouched', async (t) => {
  const input = buildPacket({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: sport(), dport: 22 });
  const res = await dp.runNode(input);
  t.equal(res.retval, TC_ACT_OK);
  t.ok(res.data.equals(input));
});

t.test('an evicted SNAT entry is put back on the same port by the next refresh', async (t) => {
  await dp.program([{ svcId: 7, vip: NODE, port: 30087, proto: 'tcp', backends: [REMOTE_BE], flags: KBP_SVC_F_NODE_PORT }]);
  const cport = sport();
  const syn = await send({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: cport, dport: 30087 });
  const natPort = syn.out!.sport;
  const key = { saddr: REMOTE_BE.ip, daddr: NODE, sport: 8080, dport: natPort, proto: 6 };
  t.ok(await dp.snatDelete(key), 'SNAT entry evicted');
  const fwdKey = { saddr: CLIENT, daddr: NODE, sport: cport, dport: 30087, proto: 6, dir: KBP_CT_FORWARD };
  const cur = (await dp.ctLookup(fwdKey))!;
  await dp.ctSet(fwdKey, { ...cur, last_seen_ns: cur.last_seen_ns - 2_000_000_000n });
  const ack = await send({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: cport, dport: 30087, tcpFlags: TCP_ACK });
  t.equal(ack.out!.sport, natPort, 'same SNAT port');
  t.match(await dp.snatLookup(key), { client_addr: CLIENT, client_port: cport, svc_id: 7 }, 'SNAT entry restored');
});

t.test('NodePort of a Service without endpoints rejects: ICMP port unreachable from NodeIP, back out of the uplink', async (t) => {
  await dp.program([{ svcId: 10, vip: NODE, port: 30090, proto: 'tcp', backends: [], flags: KBP_SVC_F_NODE_PORT | KBP_SVC_F_REJECT }]);
  const { input, res, moved } = await send({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: sport(), dport: 30090 });
  t.equal(res.retval, TC_ACT_REDIRECT);
  t.same(moved, ['reject']);
  t.ok(res.data.equals(expectedReject(input)), 'the exact ICMP frame');
  t.match(parseIcmpError(res.data), { saddr: NODE, daddr: CLIENT, type: 3, code: 3, ipChecksumOk: true, icmpChecksumOk: true });
});

t.test('ICMP errors about a masqueraded flow reach the client translated (SNAT map), from the NodePort', async (t) => {
  await dp.program([
    { svcId: 11, vip: NODE, port: 30091, proto: 'udp', backends: [REMOTE_BE], flags: KBP_SVC_F_NODE_PORT },
    { svcId: 12, vip: NODE, port: 30092, proto: 'tcp', backends: [REMOTE_BE], flags: KBP_SVC_F_NODE_PORT },
  ]);
  // UDP: the remote backend has no socket on 8080 and says so to the node.
  const cport = sport();
  const sent = buildPacket({ saddr: CLIENT, daddr: NODE, proto: 'udp', sport: cport, dport: 30091 });
  const out = await dp.runNode(sent);
  const fwd = parsePacket(out.data);
  t.match(fwd, { saddr: NODE, daddr: REMOTE_BE.ip, dport: 8080 });
  const err = buildIcmpError({ saddr: REMOTE_BE.ip, daddr: NODE, type: ICMP_DEST_UNREACH, code: ICMP_PORT_UNREACH, offending: out.data, quoteL4: 24 });
  const before = await dp.readStats();
  const res = await dp.runNode(err);
  const after = await dp.readStats();
  t.equal(res.retval, TC_ACT_OK);
  t.same(STAT_NAMES.filter((_, i) => after[i]!.packets !== before[i]!.packets), ['icmp_revnat']);
  const want = buildIcmpError({ saddr: NODE, daddr: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_PORT_UNREACH, offending: sent, quoteL4: 24 });
  t.ok(res.data.equals(want), `exact frame: to the client, quoting client -> NodeIP:nodePort\n got  ${res.data.toString('hex')}\n want ${want.toString('hex')}`);
  t.match(parseIcmpError(res.data).quoted, { saddr: CLIENT, sport: cport, daddr: NODE, dport: 30091, ipChecksumOk: true });

  // TCP: fragmentation needed from a router between the nodes.
  const tport = sport();
  const seg = buildPacket({ saddr: CLIENT, daddr: NODE, proto: 'tcp', sport: tport, dport: 30092, payload: Buffer.alloc(200, 3) });
  const tout = await dp.runNode(seg);
  t.equal(parsePacket(tout.data).saddr, NODE);
  const frag = buildIcmpError({ saddr: '172.18.0.1', daddr: NODE, type: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, rest: 1300, offending: tout.data, quoteL4: 100 });
  const fres = await dp.runNode(frag);
  const fwant = buildIcmpError({ saddr: NODE, daddr: CLIENT, type: ICMP_DEST_UNREACH, code: ICMP_FRAG_NEEDED, rest: 1300, offending: seg, quoteL4: 100 });
  t.ok(fres.data.equals(fwant), 'exact frame for the path-MTU error');
});

t.test("ICMP errors about a pod's flow to a remote backend are translated at the uplink (REPLY entry)", async (t) => {
  await dp.program([{ svcId: 13, vip: CLUSTER_IP, port: 53, proto: 'udp', backends: [REMOTE_BE] }]);
  const cport = sport();
  const sent = buildPacket({ saddr: POD, daddr: CLUSTER_IP, proto: 'udp', sport: cport, dport: 53 });
  const out = await dp.run(sent);
  t.match(parsePacket(out.data), { saddr: POD, daddr: REMOTE_BE.ip });
  const err = buildIcmpError({ saddr: REMOTE_BE.ip, daddr: POD, type: ICMP_DEST_UNREACH, code: ICMP_PORT_UNREACH, offending: out.data, quoteL4: 24 });
  const res = await dp.runNode(err);
  const want = buildIcmpError({ saddr: CLUSTER_IP, daddr: POD, type: ICMP_DEST_UNREACH, code: ICMP_PORT_UNREACH, offending: sent, quoteL4: 24 });
  t.ok(res.data.equals(want), 'exact frame: from the ClusterIP, quoting pod -> ClusterIP:53');
});

t.test('loadBalancerSourceRanges: only clients inside a range start flows to the LB IP; established flows and other frontends unaffected', async (t) => {
  const lb = '172.18.1.60';
  await dp.setConfig(NODE);
  await dp.program([
    { svcId: 14, vip: lb, port: 80, proto: 'tcp', backends: [LOCAL_BE], flags: KBP_SVC_F_LOAD_BALANCER, sourceRanges: ['172.18.0.101/30', '10.0.0.0/8'] },
    // Another frontend of the same address space without ranges, and one whose ranges name the denied client.
    { svcId: 15, vip: lb, port: 81, proto: 'tcp', backends: [LOCAL_BE], flags: KBP_SVC_F_LOAD_BALANCER },
    { svcId: 16, vip: lb, port: 82, proto: 'tcp', backends: [LOCAL_BE], flags: KBP_SVC_F_LOAD_BALANCER, sourceRanges: ['172.18.0.104/32'] },
  ]);
  const allowed = await send({ saddr: CLIENT, daddr: lb, proto: 'tcp', sport: sport(), dport: 80 }); // .100 in .100/30 (written as .101/30: host bits cleared)
  t.same(allowed.moved, ['new_flow'], '172.18.0.100 is inside 172.18.0.100/30');
  t.match(allowed.out, { daddr: LOCAL_BE.ip, dport: 8080 });
  const inTen = await send({ saddr: '10.9.8.7', daddr: lb, proto: 'tcp', sport: sport(), dport: 80 });
  t.same(inTen.moved, ['new_flow'], '10.9.8.7 is inside 10.0.0.0/8');
  for (const denied of ['172.18.0.104', '172.18.0.99', '11.0.0.1']) {
    const r = await send({ saddr: denied, daddr: lb, proto: 'tcp', sport: sport(), dport: 80 });
    t.equal(r.res.retval, TC_ACT_SHOT, `${denied} is outside every range: dropped`);
    t.same(r.moved, ['drop_source_range']);
  }
  const other = await send({ saddr: '172.18.0.104', daddr: lb, proto: 'tcp', sport: sport(), dport: 81 });
  t.same(other.moved, ['new_flow'], 'a frontend without ranges takes everyone');
  const own = await send({ saddr: '172.18.0.104', daddr: lb, proto: 'tcp', sport: sport(), dport: 82 });
  t.same(own.moved, ['new_flow'], "ranges are per frontend: .104 is inside port 82's");
  const notOwn = await send({ saddr: CLIENT, daddr: lb, proto: 'tcp', sport: sport(), dport: 82 });
  t.same(notOwn.moved, ['drop_source_range'], "and .100 outside them, although port 80's admit it");

  // The ranges change under an established flow: it goes on (the check is for new flows, as kube-proxy's firewall in the nat table).
  const cport = sport();
  await send({ saddr: CLIENT, daddr: lb, proto: 'tcp', sport: cport, dport: 80 });
  const key = srcRangeKey.encode(srcRangeKeyOf(14, '172.18.0.100/30'));
  t.ok(await dp.srcRanges.delete(key), 'range removed');
  const est = await send({ saddr: CLIENT, daddr: lb, proto: 'tcp', sport: cport, dport: 80, tcpFlags: TCP_ACK });
  t.same(est.moved, ['established']);
  const fresh = await send({ saddr: CLIENT, daddr: lb, proto: 'tcp', sport: sport(), dport: 80 });
  t.same(fresh.moved, ['drop_source_range'], 'a new flow from the removed range is dropped');
});
