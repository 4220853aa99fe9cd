// Scenario 4 of issue 8: map exhaustion. Maps sized small with the agent's
// --map-sizes and driven past full.
//
// In a node namespace (agent from manifests, real traffic):
//  - services map (a plain hash: full means the kernel refuses new keys):
//    Services added past its capacity; the sync fails with map full, the
//    agent logs it, counts it (kbp_sync_map_full_errors_total) and retries,
//    never exits; held connections and new requests to the Services already
//    programmed keep working; once the extra Services are gone the next sync
//    succeeds and the map holds exactly the remaining frontends.
//  - conntrack (LRU: full means the kernel evicts the least recently used
//    entries, it never refuses one): new connections past its capacity
//    succeed (at most 0.2% lost, each to counted drops: an entry evicted
//    within milliseconds of its creation can make a new flow clash); the
//    agent warns that the map is nearly full, and kbp_map_entries is the
//    map's own entry count (bpftool), over half full (an LRU evicts before
//    max_entries: each CPU keeps freed entries); idle connections held to a Service
//    with one backend survive (an evicted flow is balanced again, onto the
//    same backend); to a Service with two backends an evicted idle flow may be
//    balanced onto the other one and break — measured and printed, not
//    asserted, because LRU eviction of idle flows is the design.
//  - a pinned map cannot be resized: another --map-sizes against the pins is
//    refused with a message naming map and sizes; the same sizes start fine.
// With prog test run (kernel maps, no netns):
//  - SNAT (LRU) past capacity: every new masqueraded flow is still
//    translated; a flow whose SNAT entry was evicted is repaired by its next
//    forward packet more than a second after the last refresh (the reply in
//    between passes untranslated — printed as a measured gap).
//  - SNAT ports towards one backend exhausted: new flows are dropped and
//    counted (drop_snat_ports), established flows keep being translated, and
//    freeing ports (as the garbage collector does for ended flows) lets new
//    flows through again.
//
// Address conventions: ClusterIPs 10.96.0.10 (two backends), 10.96.0.11
// (one backend), 10.96.1.x (the Services that overflow the map); pods
// 10.244.1.x. Needs root and a built tree.

import t from 'tap';
import path from 'node:path';
import { Testbed } from '../../src/testbed/netns.js';
import { Agent } from '../../src/testbed/agent.js';
import { serviceScenario } from '../../src/testbed/scenario.js';
import { removeService, writeService, type ServiceSpec } from '../../src/testbed/manifests.js';
import { HeldConnections } from '../../src/reliability/held.js';
import { backendsOf, failures, sleep, until } from '../../src/reliability/apinode.js';
import { scaled } from '../../src/reliability/scale.js';
import { parseMapSizes } from '../../src/agent/mapsizes.js';
import { DatapathFixture, TC_ACT_OK, TC_ACT_SHOT } from '../../src/bench/fixtures.js';
import { buildPacket, parsePacket, TCP_ACK, TCP_SYN } from '../../src/bench/packets.js';
import * as abi from '../../src/maps/abi.js';
import { pinnedEntries } from '../../src/testbed/mapdump.js';

const skip = process.getuid?.() !== 0 ? 'needs root (network namespaces, bpffs, tc)' : false;

const SIZES = { services: 64, conntrack: 256 };
const SIZES_FLAG = `services=${SIZES.services},conntrack=${SIZES.conntrack}`;

t.test('--map-sizes parsing', async (t) => {
  t.same(parseMapSizes('conntrack=4096, snat=1024'), { [abi.KBP_MAP_CT]: 4096, [abi.KBP_MAP_SNAT]: 1024 });
  t.same(parseMapSizes(''), {});
  t.throws(() => parseMapSizes('ct=5'), /unknown key "ct"/);
  t.throws(() => parseMapSizes('services=0'), /out of range/);
  t.throws(() => parseMapSizes('services=10,services=20'), /given twice/);
  t.throws(() => parseMapSizes('services'), /expected KEY=N/);
});

const svc = (name: string, clusterIP: string, endpoints: Array<{ ip: string; podName: string }>): ServiceSpec => ({
  name,
  namespace: 'default',
  clusterIP,
  ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
  endpoints,
});

t.test('agent with small maps driven past full', { skip }, async (t) => {
  const tb = Testbed.create();
  t.teardown(() => tb.teardown());
  const web = svc('web', '10.96.0.10', [{ ip: '10.244.1.11', podName: 'web-a' }, { ip: '10.244.1.12', podName: 'web-b' }]);
  const sc = await serviceScenario(tb, web, { nodeName: 'node-1' });
  const one = svc('one', '10.96.0.11', [{ ip: '10.244.1.11', podName: 'web-a' }]);
  await writeService(sc.manifestsDir, one);
  const logFile = `${await tb.tempDir('agent')}/agent.log`;
  const start = (label: string, sizes: string) =>
    Agent.start(tb, sc.cluster, sc.nodeProbe, { manifestsDir: sc.manifestsDir, logFile: logFile.replace('agent.log', `${label}.log`), extraArgs: ['--map-sizes', sizes, '--log-level', 'debug', '--conntrack-gc-interval', '500ms', '--min-sync-period', '50ms'] });
  let agent = await start('small', SIZES_FLAG);
  t.teardown(() => agent.stop());
  await agent.waitHealthy();
  const log = async () => (await agent.logTail(100000)).toString();
  const metrics = async () => (await sc.nodeProbe.get(`${agent.apiUrl}/metrics`, 5000)).body;
  const metric = async (name: string) => Number((await metrics()).split('\n').find((l) => l.startsWith(name))?.split(' ').at(-1) ?? NaN);
  const maxOf = async (map: string) => metric(`kbp_map_max_entries{map="${map}"}`);
  t.equal(await maxOf(abi.KBP_MAP_SERVICES), SIZES.services, 'services map created with the asked capacity');
  t.equal(await maxOf(abi.KBP_MAP_CT), SIZES.conntrack, 'conntrack map created with the asked capacity');
  const get = (vip: string, count: number) => sc.clientProbe.http(vip, 80, { count });

  await t.test('services map past full: error metric, log line, retry; programmed Services unaffected; recovers', async (t) => {
    const held = await HeldConnections.open(tb, sc.client.ns, web.clusterIP, 80, 8);
    const extra = Array.from({ length: 30 }, (_, i) => svc(`extra-${i}`, `10.96.1.${i + 1}`, [{ ip: '10.244.1.12', podName: 'web-b' }]));
    for (const s of extra) await writeService(sc.manifestsDir, s);
    await until('map full counted', async () => ((await metric('kbp_sync_map_full_errors_total')) > 0 ? true : 'not yet'), 15_000);
    t.match(await log(), /map full: sync incomplete, will retry with a full resync/, 'the agent logs the full map');
    const fullBefore = await metric('kbp_sync_map_full_errors_total');
    await sleep(2500);
    const fullAfter = await metric('kbp_sync_map_full_errors_total');
    t.ok(fullAfter > fullBefore, `it keeps retrying (kbp_sync_map_full_errors_total ${fullBefore} -> ${fullAfter})`);
    t.ok(agent.running, 'the agent is still running');
    let rs = await get(web.clusterIP, 40);
    t.same(failures(rs).map((r) => r.error), [], 'new requests to a programmed Service succeed while the map is full');
    t.same(backendsOf(rs), ['web-a', 'web-b']);
    const answers = await held.use();
    t.same(answers.filter((x) => !x.ok).map((x) => x.error), [], 'held connections complete');

    for (const s of extra) await removeService(sc.manifestsDir, s);
    const settled = await metric('kbp_sync_total');
    await until('a successful sync after the pressure', async () => {
      const vips = [...new Set(((await agent.services()) as Array<{ vip: string }>).map((x) => x.vip))].sort();
      return vips.includes(web.clusterIP) && vips.includes(one.clusterIP) && !vips.some((v) => v.startsWith('10.96.1.')) ? true : vips.join(',');
    }, 15_000);
    const fullEnd = await metric('kbp_sync_map_full_errors_total');
    await sleep(1500);
    t.equal(await metric('kbp_sync_map_full_errors_total'), fullEnd, 'no more map-full errors once the pressure ended');
    t.ok((await metric('kbp_sync_total')) > settled, 'syncs go on');
    rs = await get(one.clusterIP, 10);
    t.same(failures(rs).map((r) => r.error), [], 'both Services answer after recovery');
  });

  await t.test('conntrack (LRU) past capacity: new flows go on, a warning, single-backend idle flows survive', async (t) => {
    const n = scaled(1_000, 10_000);
    t.comment(`size: ${n} new connections through a conntrack map of ${SIZES.conntrack} entries (2 per flow)`);
    const heldOne = await HeldConnections.open(tb, sc.client.ns, one.clusterIP, 80, 8);
    const heldWeb = await HeldConnections.open(tb, sc.client.ns, web.clusterIP, 80, 16);
    const rs: Awaited<ReturnType<typeof get>> = [];
    // 5 s per request: a connection whose reply entry the LRU evicted right
    // after its SYN waits for a SYN retransmit (1 s, 3 s) to be repaired.
    while (rs.length < n) rs.push(...(await sc.clientProbe.http(rs.length % 2 ? web.clusterIP : one.clusterIP, 80, { count: 50, timeoutMs: 5000 })));
    const slow = rs.filter((r) => r.ok && r.end - r.start > 900);
    const dropLines = (await metrics()).split('\n').filter((l) => l.startsWith('kbp_datapath_packets_total{reason="drop_') && !l.endsWith(' 0'));
    const drops = dropLines.reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
    const failed = failures(rs);
    t.comment(`${failed.length} of ${rs.length} connections failed (${failed.map((r) => r.error).join('; ') || '-'}), ${slow.length} took over 0.9 s; datapath drops: ${dropLines.map((l) => l.replace('kbp_datapath_packets_total', '')).join(' ') || 'none'}`);
    // Under LRU pressure a flow's entries can be evicted within milliseconds:
    // a new connection may then lose SYNs to ct clash drops (finding in
    // docs/reliability.md). Asserted: almost every connection completes, and
    // no connection is lost without a counted datapath drop.
    t.ok(failed.length <= rs.length / 500, `at most 0.2% of new connections fail (${failed.length} of ${rs.length})`);
    t.ok(failed.length === 0 || drops >= failed.length, `every failed connection is accounted for by counted drops (${drops} dropped packets)`);
    await until('pressure logged', async () => (/map nearly full.*map=kbp_ct4_v2/.test(await log()) ? true : `no warning yet; entries ${await metric(`kbp_map_entries{map="${abi.KBP_MAP_CT}"}`)}; ${(await log()).split('\n').filter((l) => l.includes('component=conntrack')).slice(-3).join(' | ')}`), 5000);
    t.pass('the agent warns that conntrack is nearly full');
    // The metric against an independent count of the pinned map (bpftool),
    // both still once the traffic has stopped; the API caches entry counts
    // for 5 s, so poll. An LRU hash never stays at max_entries: each CPU
    // keeps entries it freed in a list of its own (up to min(max_entries /
    // CPUs, 128) at a time, kernel/bpf/bpf_lru_list.c), so a 256-entry map
    // on 2 CPUs settles near 70% (178-180 measured), and over half is what
    // holds whatever the moment the traffic stopped in.
    let entries = NaN;
    let inMap = NaN;
    await until('conntrack entries metric', async () => {
      entries = await metric(`kbp_map_entries{map="${abi.KBP_MAP_CT}"}`);
      inMap = (await pinnedEntries(path.join(sc.cluster.bpffs, abi.KBP_MAP_CT))).length;
      return entries === inMap ? true : `metric ${entries}, map ${inMap}`;
    }, 12_000, 1000).catch(() => undefined);
    t.equal(entries, inMap, `kbp_map_entries for conntrack is the map's entry count: ${entries} of ${SIZES.conntrack}`);
    t.ok(entries >= 0.5 * SIZES.conntrack && entries <= SIZES.conntrack, `driven into eviction and reported so: over half of ${SIZES.conntrack}`);
    const a1 = await heldOne.use();
    t.same(a1.filter((x) => !x.ok).map((x) => x.error), [], 'idle connections to the one-backend Service complete (evicted flows balanced back onto the same backend)');
    const a2 = await heldWeb.use();
    t.comment(`idle connections to the two-backend Service after eviction: ${a2.filter((x) => x.ok).length} of ${a2.length} completed (an evicted idle flow re-balanced onto the other backend breaks: LRU, by design)`);
    const after = await get(web.clusterIP, 20);
    t.same(failures(after).map((r) => r.error), [], 'new connections still succeed');
  });

  await t.test('a pinned map cannot be resized: clear refusal; the same sizes start again', async (t) => {
    await agent.stop();
    const other = await start('resized', 'services=64,conntrack=512');
    t.teardown(() => other.stop());
    await until('refused', async () => (!other.running ? true : `running: ${(await other.logTail(5)).replace(/\n/g, ' | ')}`), 60_000, 200);
    t.not(other.child.exitCode, 0, `the agent exits non-zero (${other.child.exitCode})`);
    t.match(await other.logTail(30), /conntrack \(kbp_ct4_v2\) is pinned with 256 entries, wanted 512/, 'the error names map and both sizes');
    agent = await start('again', SIZES_FLAG);
    await agent.waitHealthy();
    t.match(await agent.logTail(200), /msg="maps synced".*updates=0 deletes=0/, 'with the pinned sizes it starts and writes nothing');
  });
});

t.test('SNAT map and SNAT ports past full (prog test run)', { skip }, async (t) => {
  const SNAT_MAX = 64;
  const fx = await DatapathFixture.open({ maxEntries: { [abi.KBP_MAP_SNAT]: SNAT_MAX } });
  t.teardown(() => fx.close());
  t.equal(fx.snat.info.maxEntries, SNAT_MAX);
  const NODE = '192.168.0.1';
  const BACKEND = { id: 1, ip: '10.244.2.3', port: 8080, local: false };
  await fx.program([{ svcId: 1, vip: NODE, port: 30080, proto: 'tcp', backends: [BACKEND], flags: abi.KBP_SVC_F_NODE_PORT }]);
  await fx.setConfig(NODE);
  const fwd = (client: string, sport: number, flags = TCP_SYN) => buildPacket({ saddr: client, daddr: NODE, proto: 'tcp', sport, dport: 30080, tcpFlags: flags });

  // One flow whose SNAT entry we follow.
  const r0 = await fx.runNode(fwd('10.0.0.1', 40000));
  t.equal(r0.retval, TC_ACT_OK);
  const nat = parsePacket(r0.data);
  const reply = () => buildPacket({ saddr: BACKEND.ip, daddr: nat.saddr, proto: 'tcp', sport: BACKEND.port, dport: nat.sport, tcpFlags: TCP_ACK });

  // Past capacity: every new masqueraded flow is translated.
  const flows = SNAT_MAX * 8;
  let translated = 0;
  for (let i = 0; i < flows; i++) {
    const r = await fx.runNode(fwd(`10.0.${1 + (i >> 8)}.${i & 255}`, 41000 + i));
    if (r.retval === TC_ACT_OK && parsePacket(r.data).daddr === BACKEND.ip) translated++;
  }
  t.equal(translated, flows, `${flows} new flows through a SNAT map of ${SNAT_MAX}: all masqueraded`);
  const stats = await fx.readStats();
  t.equal(Number(stats[abi.KBP_STAT_DROP_SNAT_PORTS]!.packets), 0, 'no drop_snat_ports: LRU evicts, it never refuses');

  const rr = await fx.runNode(reply());
  const evicted = parsePacket(rr.data).daddr !== '10.0.0.1';
  t.comment(`the first flow's reply after eviction: ${evicted ? 'passes untranslated (its SNAT entry was evicted)' : 'still translated'}`);
  // Its port may meanwhile belong to a flow that reserved it after the eviction.
  const key = { saddr: BACKEND.ip, daddr: NODE, sport: BACKEND.port, dport: nat.sport, proto: abi.IPPROTO_TCP };
  const holder = await fx.snatLookup(key);
  const taken = !!holder && holder.client_addr !== '10.0.0.1';
  await sleep(1100); // the datapath refreshes (and repairs) a flow at most once a second
  const next = await fx.runNode(fwd('10.0.0.1', 40000, TCP_ACK));
  if (taken) {
    t.equal(next.retval, TC_ACT_SHOT, 'its SNAT port went to another flow: its next packet is dropped (ct clash), never delivered as someone else');
  } else {
    t.equal(next.retval, TC_ACT_OK, 'its next forward packet is translated');
    const back = parsePacket((await fx.runNode(reply())).data);
    t.same([back.daddr, back.dport, back.saddr, back.sport], ['10.0.0.1', 40000, NODE, 30080], 'after it, the reply is translated again (SNAT entry repaired)');
  }
});

t.test('SNAT ports towards one backend exhausted: counted drops, established flows unaffected, recovery', { skip }, async (t) => {
  const fx = await DatapathFixture.open();
  t.teardown(() => fx.close());
  const NODE = '192.168.0.1';
  const BACKEND = { id: 1, ip: '10.244.2.3', port: 8080, local: false };
  await fx.program([{ svcId: 1, vip: NODE, port: 30080, proto: 'tcp', backends: [BACKEND], flags: abi.KBP_SVC_F_NODE_PORT }]);
  await fx.setConfig(NODE);
  const fwd = (i: number, flags = TCP_SYN) => buildPacket({ saddr: `10.1.${i >> 8}.${i & 255}`, daddr: NODE, proto: 'tcp', sport: 40000, dport: 30080, tcpFlags: flags });
  const range = abi.KBP_SNAT_PORT_MAX - abi.KBP_SNAT_PORT_MIN + 1;
  const flows = range + 500;
  let ok = 0;
  let dropped = 0;
  for (let i = 0; i < flows; i++) {
    const r = await fx.runNode(fwd(i));
    if (r.retval === TC_ACT_OK) ok++;
    else if (r.retval === TC_ACT_SHOT) dropped++;
  }
  const stats = await fx.readStats();
  t.comment(`${flows} new flows to one backend, ${range} SNAT ports: ${ok} masqueraded, ${dropped} dropped`);
  t.ok(ok <= range, 'never more flows than ports');
  t.ok(dropped >= flows - range, 'the flows beyond the port range are dropped');
  t.equal(Number(stats[abi.KBP_STAT_DROP_SNAT_PORTS]!.packets), dropped, 'every drop counted as drop_snat_ports (kbp_datapath_packets_total{reason="drop_snat_ports"})');
  const est = await fx.runNode(fwd(0, TCP_ACK));
  t.equal(est.retval, TC_ACT_OK, 'an established flow is still translated');
  t.equal(parsePacket(est.data).daddr, BACKEND.ip);

  // Pressure ends: every flow but the established one ends and its port is
  // freed (what the garbage collector does for ended flows).
  const ended: Buffer[] = [];
  let cursor: Buffer | null = null;
  do {
    const page: Awaited<ReturnType<typeof fx.snat.lookupBatch>> = await fx.snat.lookupBatch(cursor, 1024);
    for (let i = 0; i < page.count; i++) {
      const v = abi.snatValue.decode(page.values.subarray(i * abi.snatValue.size, (i + 1) * abi.snatValue.size));
      if (v.client_addr !== '10.1.0.0') ended.push(Buffer.from(page.keys.subarray(i * abi.snatKey.size, (i + 1) * abi.snatKey.size)));
    }
    cursor = page.next;
  } while (cursor);
  const freed = await fx.snat.deleteBatch(Buffer.concat(ended), ended.length);
  t.equal((await fx.runNode(fwd(0, TCP_ACK))).retval, TC_ACT_OK, 'the established flow is still translated after the others ended');
  let after = 0;
  for (let i = 0; i < 100; i++) if ((await fx.runNode(fwd(flows + i))).retval === TC_ACT_OK) after++;
  t.equal(after, 100, `after ${freed} ports were freed, 100 new flows are masqueraded again`);
});
