// The conntrack/SNAT garbage collector on real kernel maps: flows are created
// by the datapath itself (BPF_PROG_TEST_RUN of the pod and node programs),
// then aged by rewriting their timestamps, and one collection pass must delete
// exactly the dead ones.
//
// Address conventions: client pod 10.244.1.2, backends 10.244.1.10 (local) and
// 10.244.2.10 (remote), ClusterIP 10.96.0.90 (tcp/80, udp/53), this node
// 172.18.0.11 with NodePort 30090, external client 172.18.0.100.
import t from 'tap';
import { DatapathFixture, TC_ACT_OK } from '../../src/bench/fixtures.js';
import { buildPacket, TCP_ACK, TCP_SYN } from '../../src/bench/packets.js';
import * as abi from '../../src/maps/abi.js';
import { collectConntrack, ctLive } from '../../src/proxy/conntrack.js';

const POD = '10.244.1.2';
const VIP = '10.96.0.90';
const NODE = '172.18.0.11';
const EXT = '172.18.0.100';
const LOCAL = { id: 1, ip: '10.244.1.10', port: 8080 };
const REMOTE = { id: 2, ip: '10.244.2.10', port: 8080, local: false };
const SEC = 1_000_000_000n;

let dp: DatapathFixture;
t.before(async () => {
  dp = await DatapathFixture.open();
  await dp.program([
    { svcId: 1, vip: VIP, port: 80, proto: 'tcp', backends: [LOCAL] },
    { svcId: 2, vip: VIP, port: 53, proto: 'udp', backends: [{ ...LOCAL, id: 3, port: 5353 }] },
    { svcId: 3, vip: NODE, port: 30090, proto: 'tcp', backends: [REMOTE], flags: abi.KBP_SVC_F_NODE_PORT },
  ]);
});
t.teardown(() => dp?.close());

const gc = () => collectConntrack({ ct: dp.ct, snat: dp.snat, revnat: dp.revnat });
const fwd = (saddr: string, daddr: string, sport: number, dport: number, proto: number): abi.CtKey => ({ saddr, daddr, sport, dport, proto, dir: abi.KBP_CT_FORWARD });
const rev = (saddr: string, daddr: string, sport: number, dport: number, proto: number): abi.CtKey => ({ saddr, daddr, sport, dport, proto, dir: abi.KBP_CT_REPLY });

async function age(k: abi.CtKey, by: bigint, flags = 0): Promise<void> {
  const v = (await dp.ctLookup(k))!;
  await dp.ctSet(k, { ...v, flags: v.flags | flags, last_seen_ns: v.last_seen_ns - by });
}

async function flow(via: 'pod' | 'node', spec: Parameters<typeof buildPacket>[0]) {
  const r = via === 'pod' ? await dp.run(buildPacket(spec)) : await dp.runNode(buildPacket(spec));
  if (r.retval !== TC_ACT_OK) throw new Error(`${spec.daddr}:${spec.dport} verdict ${r.retval}`);
}

t.test('ctLive follows the datapath lifetimes', async (t) => {
  const now = 1000n * SEC;
  t.ok(ctLive(abi.IPPROTO_TCP, { last_seen_ns: now - 3600n * SEC, flags: 0 }, now), 'idle TCP lives for hours');
  t.notOk(ctLive(abi.IPPROTO_TCP, { last_seen_ns: now - 31n * SEC, flags: abi.KBP_CT_F_CLOSING }, now), 'closing TCP goes after 30 s');
  t.ok(ctLive(abi.IPPROTO_UDP, { last_seen_ns: now - 59n * SEC, flags: 0 }, now));
  t.notOk(ctLive(abi.IPPROTO_UDP, { last_seen_ns: now - 61n * SEC, flags: 0 }, now), 'UDP goes after 60 s');
});

t.test('a pass deletes exactly the dead flows, in both tables', async (t) => {
  await flow('pod', { saddr: POD, daddr: VIP, proto: 'tcp', sport: 40001, dport: 80, tcpFlags: TCP_SYN });
  await flow('pod', { saddr: POD, daddr: VIP, proto: 'tcp', sport: 40002, dport: 80, tcpFlags: TCP_SYN });
  await flow('pod', { saddr: POD, daddr: VIP, proto: 'udp', sport: 40003, dport: 53 });
  await flow('node', { saddr: EXT, daddr: NODE, proto: 'tcp', sport: 40004, dport: 30090, tcpFlags: TCP_SYN });
  await flow('node', { saddr: EXT, daddr: NODE, proto: 'tcp', sport: 40005, dport: 30090, tcpFlags: TCP_SYN });
  const snatOf = async (sport: number) => {
    const out = await dp.runNode(buildPacket({ saddr: EXT, daddr: NODE, proto: 'tcp', sport, dport: 30090, tcpFlags: TCP_ACK }));
    const natPort = out.data.readUInt16BE(14 + 20); // source port after SNAT
    return { saddr: REMOTE.ip, daddr: NODE, sport: 8080, dport: natPort, proto: abi.IPPROTO_TCP };
  };
  const snat4 = await snatOf(40004);
  const snat5 = await snatOf(40005);
  t.equal(await dp.ctCount(), 2 * 3 + 2, 'three local flows with two entries, two masqueraded flows with one');

  let r = await gc();
  t.match(r, { ctScanned: 8, ctDeleted: 0, snatScanned: 2, snatDeleted: 0 }, 'nothing is dead yet');

  // UDP idle past 60 s: both its entries go. TCP 40001 closing for 31 s: its
  // forward entry goes (the reply entry saw no FIN and lives on until it ages).
  await age(fwd(POD, VIP, 40003, 53, 17), 61n * SEC);
  await age(rev(LOCAL.ip, POD, 5353, 40003, 17), 61n * SEC);
  await age(fwd(POD, VIP, 40001, 80, 6), 31n * SEC, abi.KBP_CT_F_CLOSING);
  // Masqueraded flow 40004 ends; 40005 stays busy. Both SNAT entries are old
  // enough to be checked.
  await age(fwd(EXT, NODE, 40004, 30090, 6), 31n * SEC, abi.KBP_CT_F_CLOSING);
  for (const k of [snat4, snat5]) {
    const v = (await dp.snatLookup(k))!;
    await dp.snat.update(abi.snatKey.encode(k), abi.snatValue.encode({ ...v, created_ns: v.created_ns - 120n * SEC }));
  }

  r = await gc();
  t.match(r, { ctScanned: 8, ctDeleted: 4, snatScanned: 2, snatDeleted: 1 });
  t.equal(await dp.ctLookup(fwd(POD, VIP, 40003, 53, 17)), null, 'UDP forward gone');
  t.equal(await dp.ctLookup(rev(LOCAL.ip, POD, 5353, 40003, 17)), null, 'UDP reply gone');
  t.equal(await dp.ctLookup(fwd(POD, VIP, 40001, 80, 6)), null, 'closed TCP forward gone');
  t.not(await dp.ctLookup(fwd(POD, VIP, 40002, 80, 6)), null, 'open TCP flow kept');
  t.equal(await dp.snatLookup(snat4), null, "the ended flow's SNAT port is free again");
  t.not(await dp.snatLookup(snat5), null, "the live flow's SNAT entry is kept");
  t.not(await dp.ctLookup(fwd(EXT, NODE, 40005, 30090, 6)), null);

  r = await gc();
  t.match(r, { ctDeleted: 0, snatDeleted: 0 }, 'a second pass finds nothing more');
});

t.test('a SNAT entry whose frontend is gone is collected', async (t) => {
  await flow('node', { saddr: EXT, daddr: NODE, proto: 'tcp', sport: 40010, dport: 30090, tcpFlags: TCP_SYN });
  const out = await dp.runNode(buildPacket({ saddr: EXT, daddr: NODE, proto: 'tcp', sport: 40010, dport: 30090, tcpFlags: TCP_ACK }));
  const k = { saddr: REMOTE.ip, daddr: NODE, sport: 8080, dport: out.data.readUInt16BE(14 + 20), proto: abi.IPPROTO_TCP };
  const v = (await dp.snatLookup(k))!;
  await dp.snat.update(abi.snatKey.encode(k), abi.snatValue.encode({ ...v, created_ns: v.created_ns - 120n * SEC }));
  await dp.revnat.delete(abi.revnatKey.encode({ svc_id: 3 }));
  const r = await gc();
  t.equal(r.snatDeleted, 2, "this flow's and the earlier live flow's: both belonged to the removed frontend");
  t.equal(await dp.snatLookup(k), null);
  t.equal(await dp.snat.nextKey(null), null, 'no SNAT entry left');
});
