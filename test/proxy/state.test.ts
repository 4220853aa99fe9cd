// ProxyState (trackers + per-Service desired state) driving the syncer over a
// FakeMapWriter: only changed Services are recomputed, only their entries
// visited; problems logged once; stale UDP conntrack entries flushed; a
// restart writes nothing.
//
// Address conventions: ClusterIPs 10.96.0.x, pods 10.244.<node>.<pod>
// (node-1 = this node), clients 10.244.9.x. Operation lines are
// "<op> <map> <key> [-> <value>]" (src/maps/format.ts).

import t from 'tap';
import * as abi from '../../src/maps/abi.js';
import { FakeMapWriter } from '../../src/maps/writer.js';
import { formatMap, formatOp } from '../../src/maps/format.js';
import { memoryLogger, silentLogger } from '../../src/log.js';
import { ProxyState } from '../../src/proxy/state.js';
import { Syncer } from '../../src/proxy/syncer.js';
import { flushStaleUdpFlows } from '../../src/proxy/conntrack.js';
import { computeDesired } from '../../src/proxy/desired.js';
import type { EndpointSlice, Service } from '../../src/k8s/types.js';
import { NODE, slice, svc } from './fixtures.js';

const S = abi.KBP_MAP_SERVICES;
const B = abi.KBP_MAP_BACKENDS;
const R = abi.KBP_MAP_REVNAT;
const CT = abi.KBP_MAP_CT;

function fakeMaps(): FakeMapWriter {
  return new FakeMapWriter({
    [S]: { keySize: abi.svcKey.size, valueSize: abi.svcValue.size },
    [B]: { keySize: abi.backendKey.size, valueSize: abi.backendValue.size },
    [R]: { keySize: abi.revnatKey.size, valueSize: abi.revnatValue.size },
    [abi.KBP_MAP_SRC_RANGES]: { keySize: abi.srcRangeKey.size, valueSize: abi.srcRangeValue.size },
    [CT]: { keySize: abi.ctKey.size, valueSize: abi.ctValue.size },
  });
}
const dump = (w: FakeMapWriter) => [S, B, R].flatMap((m) => formatMap(m, w.snapshot(m)).map((l) => `${m} ${l}`));
const takeOps = (w: FakeMapWriter) => {
  const out = w.ops.flatMap(formatOp);
  w.ops.length = 0;
  return out;
};

const web = (): Service => svc('web', '10.96.0.10', [{ port: 80, targetPort: 8080 }]);
const webEps = (ips: string[]): EndpointSlice => slice('web-1', 'web', [{ port: 8080 }], ips);
const dns = (): Service => svc('dns', '10.96.0.53', [{ name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 }], {}, 'kube-system');
const dnsEps = (ips: string[]): EndpointSlice => slice('dns-1', 'dns', [{ name: 'dns', port: 5353, protocol: 'UDP' }], ips, {}, 'kube-system');

async function setup(log = silentLogger()) {
  const w = fakeMaps();
  const state = new ProxyState(NODE, log);
  const syncer = new Syncer({ writer: w, log: silentLogger() });
  const feed = (objs: Array<Service | EndpointSlice>) => {
    for (const o of objs) {
      const key = `${o.metadata.namespace}/${o.metadata.name}`;
      if (o.kind === 'Service') state.onService(key, o);
      else state.onEndpointSlice(key, o);
    }
  };
  const sync = async () => {
    const c = state.compute();
    const r = await syncer.sync(c.desired, c.changes);
    return { ...r, recomputed: c.recomputed };
  };
  return { w, state, syncer, feed, sync };
}

t.test('one endpoint change: one Service recomputed, a handful of writes, same maps as computing everything', async (t) => {
  const { w, feed, sync } = await setup();
  const others = Array.from({ length: 50 }, (_, i) => svc(`s${i}`, `10.96.1.${i + 1}`, [{ port: 80, targetPort: 8080 }]));
  const otherEps = others.map((s, i) => slice(`${s.metadata.name}-1`, s.metadata.name, [{ port: 8080 }], [`10.244.2.${i + 1}`]));
  feed([web(), webEps(['10.244.1.1', '10.244.1.2', '10.244.1.3']), dns(), dnsEps(['10.244.1.53']), ...others, ...otherEps]);
  const first = await sync();
  t.match(first, { ok: true, complete: true, recomputed: 52 });
  takeOps(w);

  feed([webEps(['10.244.1.1', '10.244.1.3'])]);
  const r = await sync();
  t.match(r, { ok: true, complete: false, recomputed: 1, updates: 2, deletes: 2 });
  t.same(takeOps(w), [
    'update kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=2 -> svc=1 backend=3',
    'update kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=0 -> svc=1 count=2 flags=cluster-ip affinity=0',
    'delete kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=3',
    'delete kbp_backend_v2 backend=2',
  ]);
  t.same(r.removedBackends, [{ id: 2, key: '10.244.1.2:8080/TCP', proto: abi.IPPROTO_TCP }]);

  // The same objects computed from scratch by a fresh syncer give the same maps (ids aside: compare by address).
  const fresh = fakeMaps();
  await new Syncer({ writer: fresh, log: silentLogger() }).sync(
    computeDesired([web(), dns(), ...others], [webEps(['10.244.1.1', '10.244.1.3']), dnsEps(['10.244.1.53']), ...otherEps], NODE),
  );
  t.equal(fresh.size(S), w.size(S));
  t.same(
    formatMap(B, fresh.snapshot(B)).map((l) => l.replace(/backend=\d+ /, '')).sort(),
    formatMap(B, w.snapshot(B)).map((l) => l.replace(/backend=\d+ /, '')).sort(),
  );

  t.match(await sync(), { ok: true, recomputed: 0, updates: 0, deletes: 0 }, 'nothing changed: nothing visited');
  feed([webEps(['10.244.1.1', '10.244.1.3'])]);
  t.match(await sync(), { recomputed: 0, updates: 0 }, 'a no-op update is dropped by the tracker');
});

t.test('Service deleted, re-added, a second Service claiming its frontend', async (t) => {
  const { w, state, feed, sync } = await setup();
  feed([web(), webEps(['10.244.1.1'])]);
  await sync();
  takeOps(w);
  state.onService('web/web', undefined);
  const r = await sync();
  t.match(r, { ok: true, recomputed: 1 });
  t.same(takeOps(w), [
    'delete kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=0',
    'delete kbp_svc_v1 10.96.0.10:0/0 scope=0 slot=0',
    'delete kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=1',
    'delete kbp_revnat_v1 svc=1',
    'delete kbp_backend_v2 backend=1',
  ]);
  t.same(dump(w), []);
  // A thief takes the ClusterIP:port; when the owner (first by namespace/name) comes back it wins it.
  feed([svc('zz-thief', '10.96.0.10', [{ port: 80, targetPort: 9090 }])]);
  await sync();
  t.same(dump(w).filter((l) => l.includes('slot=0 ->') && !l.includes('marker')), ['kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=0 -> svc=2 count=0 flags=cluster-ip,reject affinity=0']);
  feed([web()]);
  await sync();
  t.same(dump(w), [
    'kbp_svc_v1 10.96.0.10:0/0 scope=0 slot=0 -> svc=0 count=0 flags=vip-marker affinity=0',
    'kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=0 -> svc=2 count=1 flags=cluster-ip affinity=0',
    'kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=1 -> svc=2 backend=2',
    'kbp_backend_v2 backend=2 -> 10.244.1.1:8080/TCP active local',
    'kbp_revnat_v1 svc=2 -> 10.96.0.10:80',
  ]);
});

t.test('an invalid Service is logged once with its name and reason; the others keep working', async (t) => {
  const { log, lines } = memoryLogger('info');
  const { w, feed, sync } = await setup(log);
  const bad = svc('broken', '10.96.0.20', [{ port: 70000 }]);
  feed([web(), webEps(['10.244.1.1']), bad]);
  await sync();
  const warn = /level=warn msg="invalid spec, Service skipped: ports\[0\]: port 70000 is out of range 1-65535" component=\S+ object="Service web\/broken"|level=warn msg="invalid spec, Service skipped: ports\[0\]: port 70000 is out of range 1-65535" object="Service web\/broken"/;
  t.equal(lines.filter((l) => warn.test(l)).length, 1, 'logged');
  t.ok(dump(w).some((l) => l.startsWith('kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=1')), 'web is programmed');
  feed([webEps(['10.244.1.1', '10.244.1.2'])]);
  feed([{ ...bad, metadata: { ...bad.metadata, resourceVersion: '9' } }]);
  await sync();
  t.equal(lines.filter((l) => warn.test(l)).length, 1, 'not again while it stays broken');
  feed([svc('broken', '10.96.0.20', [{ port: 80 }])]);
  await sync();
  t.ok(dump(w).some((l) => l.startsWith('kbp_svc_v1 10.96.0.20:80/TCP scope=0 slot=0')), 'fixed: programmed');
  feed([bad]);
  await sync();
  t.equal(lines.filter((l) => warn.test(l)).length, 2, 'broken again: logged again');
  t.notOk(dump(w).some((l) => l.includes('10.96.0.20')), 'and its entries are gone');
});

t.test('removed UDP backend: its conntrack entries (both directions) are flushed, others stay', async (t) => {
  const { w, feed, sync } = await setup();
  feed([dns(), dnsEps(['10.244.1.53', '10.244.2.53']), web(), webEps(['10.244.1.1'])]);
  await sync();
  const id = (ip: string, proto: number) => Number(formatMap(B, w.snapshot(B)).find((l) => l.includes(`${ip}:`) && l.includes(abi.protoName(proto)))!.match(/backend=(\d+)/)![1]);
  const gone = id('10.244.2.53', abi.IPPROTO_UDP);
  const kept = id('10.244.1.53', abi.IPPROTO_UDP);
  const tcp = id('10.244.1.1', abi.IPPROTO_TCP);
  const ct = async (saddr: string, sport: number, daddr: string, dport: number, proto: number, dir: number, backend_id: number) =>
    w.update(CT, abi.ctKey.encode({ saddr, daddr, sport, dport, proto, dir }), abi.ctValue.encode({ created_ns: 1n, last_seen_ns: 2n, backend_id, svc_id: 1, nat_addr: '0.0.0.0', nat_port: 0, flags: 0, tcp_flags: 0, client_port: 0 }));
  await ct('10.244.9.1', 4000, '10.96.0.53', 53, 17, abi.KBP_CT_FORWARD, gone);
  await ct('10.244.2.53', 5353, '10.244.9.1', 4000, 17, abi.KBP_CT_REPLY, gone);
  await ct('10.244.9.2', 4000, '10.96.0.53', 53, 17, abi.KBP_CT_FORWARD, kept);
  await ct('10.244.9.3', 4000, '10.96.0.10', 80, 6, abi.KBP_CT_FORWARD, tcp);
  takeOps(w);

  feed([dnsEps(['10.244.1.53'])]);
  const r = await sync();
  t.same(r.removedBackends, [{ id: gone, key: '10.244.2.53:5353/UDP', proto: abi.IPPROTO_UDP }]);
  const f = await flushStaleUdpFlows(w, r.removedBackends);
  t.same(f, { scanned: 4, deleted: 2 });
  const ctLines = w.snapshot(CT).map((e) => {
    const k = abi.ctKey.decode(e.key);
    return `${k.saddr}:${k.sport} -> ${k.daddr}:${k.dport} ${abi.protoName(k.proto)} dir=${k.dir} backend=${abi.ctValue.decode(e.value).backend_id}`;
  });
  t.same(ctLines.sort(), [`10.244.9.2:4000 -> 10.96.0.53:53 UDP dir=0 backend=${kept}`, `10.244.9.3:4000 -> 10.96.0.10:80 TCP dir=0 backend=${tcp}`].sort());
  t.same(await flushStaleUdpFlows(w, [{ id: tcp, key: 'x', proto: abi.IPPROTO_TCP }]), { scanned: 0, deleted: 0 }, 'TCP backends: the map is not even read');
});

t.test('restart: a new agent over the same maps writes nothing; a zone change recomputes every Service', async (t) => {
  const zoned = (name: string, ip: string) => svc(name, ip, [{ port: 80, targetPort: 8080 }], { trafficDistribution: 'PreferClose' });
  const hinted = (name: string) =>
    slice(`${name}-1`, name, [{ port: 8080 }], [
      { addresses: ['10.244.1.1'], nodeName: 'node-1', hints: { forZones: [{ name: 'a' }] } },
      { addresses: ['10.244.2.1'], nodeName: 'node-2', hints: { forZones: [{ name: 'b' }] } },
    ]);
  const objs = [zoned('h1', '10.96.0.31'), hinted('h1'), zoned('h2', '10.96.0.32'), hinted('h2')];
  const node = (zone: string) => ({ apiVersion: 'v1' as const, kind: 'Node' as const, metadata: { name: NODE, labels: { 'topology.kubernetes.io/zone': zone } } });
  const a = await setup();
  a.feed(objs);
  a.state.onNode(node('a'));
  await a.sync();
  t.same(a.w.snapshot(S).length, 6, 'one slot each (zone a)');

  const b = { ...(await setup()), w: a.w };
  const syncer2 = new Syncer({ writer: a.w, log: silentLogger() });
  b.feed(objs);
  b.state.onNode(node('a'));
  takeOps(a.w);
  const c = b.state.compute();
  const r = await syncer2.sync(c.desired, c.changes);
  t.match(r, { ok: true, full: true, updates: 0, deletes: 0 });
  t.same(takeOps(a.w), [], 'nothing written after a restart');

  b.state.onNode(node('b'));
  const c2 = b.state.compute();
  t.equal(c2.recomputed, 2, 'zone change: every Service');
  const r2 = await syncer2.sync(c2.desired, c2.changes);
  t.match(r2, { ok: true, complete: false, updates: 2, deletes: 0 }, 'slot 1 of each frontend now names the zone-b endpoint; counts unchanged');
});

t.test('change times for network programming: trigger time when newer than the tracker, else arrival; one per slice; no-ops none', async (t) => {
  let clock = 10_000;
  const state = new ProxyState(NODE, silentLogger(), () => clock);
  state.onService('default/web', web());
  t.ok(state.onEndpointSlice('default/web-1', webEps(['10.244.1.5']), 9_000), 'listed slice with a trigger time older than the tracker');
  t.same(state.compute().triggers, [], 'not measured (the first list would report the age of the cluster)');

  clock = 12_000;
  state.onEndpointSlice('default/web-1', webEps(['10.244.1.6']), 11_500);
  clock = 12_100;
  state.onEndpointSlice('default/web-1', webEps(['10.244.1.7']), 12_050);
  state.onEndpointSlice('default/dns-1', dnsEps(['10.244.1.9']));
  t.notOk(state.onEndpointSlice('default/dns-1', dnsEps(['10.244.1.9']), 12_090), 'a no-op update changes nothing');
  t.same(state.compute().triggers.sort(), [11_500, 12_100], 'the oldest pending change per slice; arrival time without annotation');
  t.same(state.compute().triggers, [], 'taken once');
  clock = 13_000;
  state.onEndpointSlice('default/web-1', undefined);
  t.same(state.compute().triggers, [13_000], 'a delete is measured from its arrival');
});

t.test('precompute while listing: the first sync programs the same maps and computes only what arrived after', async (t) => {
  const objs = (n: number) => {
    const svcs = Array.from({ length: n }, (_, i) => svc(`s${i}`, `10.96.1.${i + 1}`, [{ port: 80, targetPort: 8080 }]));
    return { svcs, eps: svcs.map((s, i) => slice(`${s.metadata.name}-1`, s.metadata.name, [{ port: 8080 }], [`10.244.2.${i + 1}`, `10.244.3.${i + 1}`])) };
  };
  const { svcs, eps } = objs(20);
  const plain = await setup();
  plain.feed([...svcs, ...eps]);
  const base = await plain.sync();
  t.match(base, { ok: true, recomputed: 20 });

  // Services first, then the slices page by page, a precompute after each page (as the agent does while listing).
  const piped = await setup();
  piped.feed(svcs);
  t.equal(piped.state.precompute(), 20, 'Services folded in before their slices arrive');
  piped.feed(eps.slice(0, 10));
  t.equal(piped.state.precompute(), 10, 'first page of slices: its 10 Services recomputed');
  piped.feed(eps.slice(10, 15));
  const r = await piped.sync();
  t.match(r, { ok: true, complete: true, recomputed: 5 }, 'the first sync computes only the last 5 Services');
  piped.feed(eps.slice(15));
  await piped.sync();
  t.same(dump(piped.w), dump(plain.w), 'once everything arrived: the same maps');
});
