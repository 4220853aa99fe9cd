// Syncer against FakeMapWriter: whole-map goldens and exact operation logs.
//
// Address conventions: ClusterIPs 10.96.0.x, pods 10.244.<node>.<pod>
// (node-1 = this node). Map dumps are decoded lines (src/maps/format.ts):
//   services: "<vip>:<port>/<proto> scope=<s> slot=<n> -> svc=<id> ..."
//   backends: "backend=<id> -> <ip>:<port>/<proto> <state>"
//   revnat:   "svc=<id> -> <vip>:<port>"
// Operation lines are "<op> <map> <key> [-> <value>]", one per key.

import t from 'tap';
import * as abi from '../../src/maps/abi.js';
import { FakeMapWriter, MapFullError } from '../../src/maps/writer.js';
import { formatMap, formatOp } from '../../src/maps/format.js';
import { computeDesired } from '../../src/proxy/desired.js';
import { SlotTable, Syncer, assignSlots } from '../../src/proxy/syncer.js';
import { memoryLogger, silentLogger } from '../../src/log.js';
import type { EndpointSlice, Service } from '../../src/k8s/types.js';
import { NODE, slice, svc } from './fixtures.js';

const S = abi.KBP_MAP_SERVICES;
const B = abi.KBP_MAP_BACKENDS;
const R = abi.KBP_MAP_REVNAT;

function fakeMaps(max: { backends?: number } = {}): FakeMapWriter {
  return new FakeMapWriter({
    [S]: { keySize: abi.svcKey.size, valueSize: abi.svcValue.size },
    [B]: { keySize: abi.backendKey.size, valueSize: abi.backendValue.size, maxEntries: max.backends },
    [R]: { keySize: abi.revnatKey.size, valueSize: abi.revnatValue.size },
    [abi.KBP_MAP_SRC_RANGES]: { keySize: abi.srcRangeKey.size, valueSize: abi.srcRangeValue.size },
  });
}

function dump(w: FakeMapWriter): string[] {
  return [S, B, R].flatMap((m) => formatMap(m, w.snapshot(m)).map((l) => `${m} ${l}`));
}

function takeOps(w: FakeMapWriter): string[] {
  const out = w.ops.flatMap(formatOp);
  w.ops.length = 0;
  return out;
}

const nginx = (): Service => svc('my-nginx', '10.96.0.10', [{ port: 80, targetPort: 8080 }]);
const nginxEps = (ips: string[]): EndpointSlice => slice('my-nginx-1', 'my-nginx', [{ port: 8080 }], ips);
const dns = (): Service =>
  svc('dns', '10.96.0.53', [
    { name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 },
    { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 5353 },
  ], { sessionAffinity: 'ClientIP' }, 'kube-system');
const dnsEps = (): EndpointSlice =>
  slice('dns-1', 'dns', [{ name: 'dns', port: 5353, protocol: 'UDP' }, { name: 'dns-tcp', port: 5353 }], ['10.244.1.20', '10.244.2.20'], {}, 'kube-system');

const state = (services: Service[], slices: EndpointSlice[]) => computeDesired(services, slices, NODE);

const firstGolden = [
  'kbp_svc_v1 10.96.0.10:0/0 scope=0 slot=0 -> svc=0 count=0 flags=vip-marker affinity=0',
  'kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=0 -> svc=3 count=2 flags=cluster-ip affinity=0',
  'kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=1 -> svc=3 backend=5',
  'kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=2 -> svc=3 backend=6',
  'kbp_svc_v1 10.96.0.53:0/0 scope=0 slot=0 -> svc=0 count=0 flags=vip-marker affinity=0',
  'kbp_svc_v1 10.96.0.53:53/TCP scope=0 slot=0 -> svc=2 count=2 flags=cluster-ip,affinity affinity=10800',
  'kbp_svc_v1 10.96.0.53:53/TCP scope=0 slot=1 -> svc=2 backend=3',
  'kbp_svc_v1 10.96.0.53:53/TCP scope=0 slot=2 -> svc=2 backend=4',
  'kbp_svc_v1 10.96.0.53:53/UDP scope=0 slot=0 -> svc=1 count=2 flags=cluster-ip,affinity affinity=10800',
  'kbp_svc_v1 10.96.0.53:53/UDP scope=0 slot=1 -> svc=1 backend=1',
  'kbp_svc_v1 10.96.0.53:53/UDP scope=0 slot=2 -> svc=1 backend=2',
  'kbp_backend_v2 backend=1 -> 10.244.1.20:5353/UDP active local',
  'kbp_backend_v2 backend=2 -> 10.244.2.20:5353/UDP active',
  'kbp_backend_v2 backend=3 -> 10.244.1.20:5353/TCP active local',
  'kbp_backend_v2 backend=4 -> 10.244.2.20:5353/TCP active',
  'kbp_backend_v2 backend=5 -> 10.244.1.5:8080/TCP active local',
  'kbp_backend_v2 backend=6 -> 10.244.2.7:8080/TCP active',
  'kbp_revnat_v1 svc=1 -> 10.96.0.53:53',
  'kbp_revnat_v1 svc=2 -> 10.96.0.53:53',
  'kbp_revnat_v1 svc=3 -> 10.96.0.10:80',
];

t.test('first sync: golden maps, written in datapath order; a resync writes nothing', async (t) => {
  const w = fakeMaps();
  const s = new Syncer({ writer: w, log: silentLogger(), batchMin: 100 });
  const d = state([nginx(), dns()], [nginxEps(['10.244.1.5', '10.244.2.7']), dnsEps()]);
  const r = await s.sync(d);
  t.match(r, { ok: true, full: true, updates: 20, deletes: 0 });
  t.same(dump(w), firstGolden);
  const ops = takeOps(w);
  // The order of phases: every backend, then every slot, then revnat, then slot-0 entries and markers.
  const phase = (l: string) =>
    l.includes(B) ? 1 : l.includes(R) ? 3 : / slot=0 /.test(l) ? 4 : 2;
  t.same(ops.map(phase), [...ops.map(phase)].sort(), 'phases in order');
  t.same(ops.filter((l) => / slot=0 /.test(l)).slice(-2), [
    'update kbp_svc_v1 10.96.0.10:0/0 scope=0 slot=0 -> svc=0 count=0 flags=vip-marker affinity=0',
    'update kbp_svc_v1 10.96.0.53:0/0 scope=0 slot=0 -> svc=0 count=0 flags=vip-marker affinity=0',
  ], 'VIP markers after the service entries');
  t.equal(ops.length, 20);

  const again = await s.sync(state([nginx(), dns()], [nginxEps(['10.244.1.5', '10.244.2.7']), dnsEps()]));
  t.match(again, { ok: true, full: false, updates: 0, deletes: 0 });
  t.same(takeOps(w), [], 'no-op resync writes nothing');
  t.same(s.frontend(3), { id: 3, frontend: '10.96.0.10:80/TCP', service: { namespace: 'web', name: 'my-nginx', portName: '' } });
});

t.test('endpoint removal: the last backend fills the hole, count drops, slot and backend go', async (t) => {
  const w = fakeMaps();
  const s = new Syncer({ writer: w, log: silentLogger() });
  await s.sync(state([nginx()], [nginxEps(['10.244.1.1', '10.244.1.2', '10.244.1.3'])]));
  takeOps(w);
  const r = await s.sync(state([nginx()], [nginxEps(['10.244.1.1', '10.244.1.3'])]));
  t.match(r, { ok: true, full: false, updates: 2, deletes: 2 });
  t.same(takeOps(w), [
    'update kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=2 -> svc=1 backend=3',
    'update kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=0 -> svc=1 count=2 flags=cluster-ip affinity=0',
    'delete kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=3',
    'delete kbp_backend_v2 backend=2',
  ]);
  t.same(dump(w), [
    'kbp_svc_v1 10.96.0.10:0/0 scope=0 slot=0 -> svc=0 count=0 flags=vip-marker affinity=0',
    'kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=0 -> svc=1 count=2 flags=cluster-ip affinity=0',
    'kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=1 -> svc=1 backend=1',
    'kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=2 -> svc=1 backend=3',
    'kbp_backend_v2 backend=1 -> 10.244.1.1:8080/TCP active local',
    'kbp_backend_v2 backend=3 -> 10.244.1.3:8080/TCP active local',
    'kbp_revnat_v1 svc=1 -> 10.96.0.10:80',
  ]);

  // Adding one back: new id (2 was released, fresh ids come first), written before the count rises.
  await s.sync(state([nginx()], [nginxEps(['10.244.1.1', '10.244.1.2', '10.244.1.3'])]));
  t.same(takeOps(w), [
    'update kbp_backend_v2 backend=4 -> 10.244.1.2:8080/TCP active local',
    'update kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=3 -> svc=1 backend=4',
    'update kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=0 -> svc=1 count=3 flags=cluster-ip affinity=0',
  ]);
});

t.test('a terminating endpoint leaves the slots but keeps its backend for established flows', async (t) => {
  const w = fakeMaps();
  const s = new Syncer({ writer: w, log: silentLogger() });
  await s.sync(state([nginx()], [nginxEps(['10.244.1.1', '10.244.1.2'])]));
  takeOps(w);
  await s.sync(state([nginx()], [nginxEps(['10.244.1.2', { addresses: ['10.244.1.1'], conditions: { ready: false, terminating: true } } as never])]));
  t.same(takeOps(w), [
    'update kbp_backend_v2 backend=1 -> 10.244.1.1:8080/TCP terminating',
    'update kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=1 -> svc=1 backend=2',
    'update kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=0 -> svc=1 count=1 flags=cluster-ip affinity=0',
    'delete kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=2',
  ]);
});

t.test('Service removal: entry first, then slots, then revnat, then marker-less VIP and backends', async (t) => {
  const w = fakeMaps();
  const s = new Syncer({ writer: w, log: silentLogger() });
  await s.sync(state([nginx(), dns()], [nginxEps(['10.244.1.5', '10.244.2.7']), dnsEps()]));
  takeOps(w);
  await s.sync(state([dns()], [dnsEps()]));
  t.same(takeOps(w), [
    'delete kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=0',
    'delete kbp_svc_v1 10.96.0.10:0/0 scope=0 slot=0',
    'delete kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=1',
    'delete kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=2',
    'delete kbp_revnat_v1 svc=3',
    'delete kbp_backend_v2 backend=5',
    'delete kbp_backend_v2 backend=6',
  ]);
  t.same(dump(w), firstGolden.filter((l) => !/10\.96\.0\.10|backend=[56] ->|svc=3 ->/.test(l)));
  t.equal(s.frontendIds.get('10.96.0.10:80/TCP#0'), undefined, 'its id is released');
});

t.test('restart: ids restored from the maps, nothing rewritten; new objects get fresh ids', async (t) => {
  const w = fakeMaps();
  const first = new Syncer({ writer: w, log: silentLogger() });
  await first.sync(state([nginx(), dns()], [nginxEps(['10.244.1.5', '10.244.2.7']), dnsEps()]));
  // Shuffle slot positions the way an earlier removal would have left them.
  await w.update(S, abi.svcKey.encode({ vip: '10.96.0.10', port: 80, proto: 6, scope: 0, slot: 1 }), abi.svcValue.encode({ backend_id: 6, svc_id: 3, count: 0, flags: 0, affinity_timeout: 0 }));
  await w.update(S, abi.svcKey.encode({ vip: '10.96.0.10', port: 80, proto: 6, scope: 0, slot: 2 }), abi.svcValue.encode({ backend_id: 5, svc_id: 3, count: 0, flags: 0, affinity_timeout: 0 }));
  const before = dump(w);
  takeOps(w);

  const { log, lines } = memoryLogger('info');
  const second = new Syncer({ writer: w, log });
  const r = await second.sync(state([nginx(), dns()], [nginxEps(['10.244.1.5', '10.244.2.7']), dnsEps()]));
  t.match(r, { ok: true, full: true, updates: 0, deletes: 0 });
  t.same(takeOps(w), [], 'nothing written after a restart');
  t.same(dump(w), before);
  t.match(lines[0], /msg="maps read" frontends=3 slots=6 backends=6 revnat=3/);

  await second.sync(state([nginx(), dns(), svc('new', '10.96.0.11', [{ port: 80 }])], [nginxEps(['10.244.1.5', '10.244.2.7', '10.244.1.9']), dnsEps()]));
  t.same(takeOps(w), [
    'update kbp_backend_v2 backend=7 -> 10.244.1.9:8080/TCP active local',
    'update kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=3 -> svc=3 backend=7',
    'update kbp_revnat_v1 svc=4 -> 10.96.0.11:80',
    'update kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=0 -> svc=3 count=3 flags=cluster-ip affinity=0',
    'update kbp_svc_v1 10.96.0.11:80/TCP scope=0 slot=0 -> svc=4 count=0 flags=cluster-ip,reject affinity=0',
    'update kbp_svc_v1 10.96.0.11:0/0 scope=0 slot=0 -> svc=0 count=0 flags=vip-marker affinity=0',
  ]);
});

t.test('restart over backends without their locality flag (migrated from ABI v1): only those are rewritten', async (t) => {
  const w = fakeMaps();
  const d = () => state([nginx()], [nginxEps(['10.244.1.5', '10.244.2.7'])]);
  await new Syncer({ writer: w, log: silentLogger() }).sync(d());
  // backend 1 is local; an ABI v1 backend map had no flags, and migrate.ts copies it with 0.
  await w.update(B, abi.backendKey.encode({ id: 1 }), abi.backendValue.encode({ ip: '10.244.1.5', port: 8080, proto: 6, state: abi.KBP_BACKEND_ACTIVE, flags: 0 }));
  const good = dump(w);
  takeOps(w);
  const r = await new Syncer({ writer: w, log: silentLogger() }).sync(d());
  t.match(r, { ok: true, full: true, updates: 1, deletes: 0 });
  t.same(takeOps(w), ['update kbp_backend_v2 backend=1 -> 10.244.1.5:8080/TCP active local']);
  t.not(dump(w).join('\n'), good.join('\n'));
});

t.test('restore cleans what a crashed agent left: orphan slots, stale revnat, unknown backends', async (t) => {
  const w = fakeMaps();
  const k = (vip: string, port: number, slot: number) => abi.svcKey.encode({ vip, port, proto: 6, scope: 0, slot });
  const v = (svc_id: number, backend_id: number, count = 0) => abi.svcValue.encode({ backend_id, svc_id, count, flags: count ? 1 : 0, affinity_timeout: 0 });
  // A frontend whose slot 0 was never written, one slot past count, a revnat without frontend, an unused backend.
  await w.update(S, k('10.96.0.99', 80, 1), v(9, 1));
  await w.update(S, k('10.96.0.10', 80, 0), v(3, 0, 1));
  await w.update(S, k('10.96.0.10', 80, 1), v(3, 1));
  await w.update(S, k('10.96.0.10', 80, 2), v(3, 2));
  await w.update(B, abi.backendKey.encode({ id: 1 }), abi.backendValue.encode({ ip: '10.244.1.5', port: 8080, proto: 6, state: 0, flags: abi.KBP_BACKEND_F_LOCAL }));
  await w.update(B, abi.backendKey.encode({ id: 2 }), abi.backendValue.encode({ ip: '10.244.2.7', port: 8080, proto: 6, state: 0, flags: 0 }));
  await w.update(R, abi.revnatKey.encode({ svc_id: 3 }), abi.revnatValue.encode({ vip: '10.96.0.10', port: 80 }));
  await w.update(R, abi.revnatKey.encode({ svc_id: 9 }), abi.revnatValue.encode({ vip: '10.96.0.99', port: 80 }));
  takeOps(w);
  const s = new Syncer({ writer: w, log: silentLogger() });
  await s.sync(state([nginx()], [nginxEps(['10.244.1.5'])]));
  t.same(takeOps(w), [
    'update kbp_svc_v1 10.96.0.10:0/0 scope=0 slot=0 -> svc=0 count=0 flags=vip-marker affinity=0',
    'delete kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=2',
    'delete kbp_svc_v1 10.96.0.99:80/TCP scope=0 slot=1',
    'delete kbp_revnat_v1 svc=9',
    'delete kbp_backend_v2 backend=2',
  ]);
});

t.test('a failed write: counted, logged, and the next sync re-reads the maps and converges', async (t) => {
  const w = fakeMaps();
  const { log, lines } = memoryLogger();
  const s = new Syncer({ writer: w, log, batchMin: 100 });
  let n = 0;
  w.failWith = (op) => (op.op === 'update' && ++n === 3 ? Object.assign(new Error('injected'), { code: 'EPERM' }) : undefined);
  const d = state([nginx(), dns()], [nginxEps(['10.244.1.5', '10.244.2.7']), dnsEps()]);
  const r1 = await s.sync(d);
  t.match(r1, { ok: false, updates: 2 });
  t.match(r1.error, { code: 'EPERM' });
  t.equal(s.stats.failures, 1);
  t.equal(s.stats.lastSuccess, undefined);
  t.match(lines.join('\n'), /level=error msg="sync failed, next sync is a full resync" err=.*injected.* code=EPERM/);
  t.equal(w.size(B), 2, 'two backends made it before the failure');

  w.logReads = true;
  const r2 = await s.sync(d);
  t.match(r2, { ok: true, full: true });
  t.same(
    w.ops.filter((o) => o.op === 'entries').map((o) => o.map),
    [S, B, R, abi.KBP_MAP_SRC_RANGES],
    'the maps are read again',
  );
  t.same(dump(w), firstGolden, 'same maps as a clean first sync');
  t.ok(s.stats.lastSuccess instanceof Date);
  t.equal(s.stats.fullSyncs, 2);
});

t.test('map full surfaces as MapFullError, counted apart, and the sync retries fully', async (t) => {
  const w = fakeMaps({ backends: 3 });
  const { log, lines } = memoryLogger();
  const s = new Syncer({ writer: w, log, batchMin: 2 });
  const r = await s.sync(state([nginx()], [nginxEps(['10.244.1.1', '10.244.1.2', '10.244.1.3', '10.244.1.4'])]));
  t.equal(r.ok, false);
  t.type(r.error, MapFullError);
  t.match(r.error, { map: B, code: 'E2BIG', op: 'updateBatch' });
  t.match(s.stats, { failures: 1, mapFull: 1 });
  t.match(lines.join('\n'), /level=error msg="map full: sync incomplete, will retry with a full resync; raise the map size" map=kbp_backend_v2 code=E2BIG/);
  t.equal(w.size(S), 0, 'no slot or entry points at backends that could not be written');
  // With room again (one endpoint fewer), the next sync completes.
  const r2 = await s.sync(state([nginx()], [nginxEps(['10.244.1.1', '10.244.1.2', '10.244.1.3'])]));
  t.match(r2, { ok: true, full: true });
  t.equal(w.size(B), 3);
});

t.test('batches are used from batchMin entries on', async (t) => {
  const w = fakeMaps();
  const s = new Syncer({ writer: w, log: silentLogger(), batchMin: 3 });
  await s.sync(state([nginx()], [nginxEps(['10.244.1.1', '10.244.1.2', '10.244.1.3'])]));
  t.same(
    w.ops.map((o) => `${o.op} ${o.map} x${o.keys.length}`),
    ['updateBatch kbp_backend_v2 x3', 'updateBatch kbp_svc_v1 x3', 'update kbp_revnat_v1 x1', 'update kbp_svc_v1 x1', 'update kbp_svc_v1 x1'],
  );
  w.ops.length = 0;
  await s.sync(state([], []));
  t.same(
    w.ops.map((o) => `${o.op} ${o.map} x${o.keys.length}`),
    ['delete kbp_svc_v1 x1', 'delete kbp_svc_v1 x1', 'deleteBatch kbp_svc_v1 x3', 'delete kbp_revnat_v1 x1', 'deleteBatch kbp_backend_v2 x3'],
  );
  t.same(dump(w), []);
});

t.test('SlotTable: backend ids per slot, anything else the maps hold kept whole', async (t) => {
  const v = (backend_id: number, svc_id = 7, extra: Partial<{ count: number; flags: number; affinity_timeout: number }> = {}) => ({ backend_id, svc_id, count: 0, flags: 0, affinity_timeout: 0, ...extra });
  const s = new SlotTable();
  s.set(2, v(11));
  s.set(1, v(10));
  s.set(4, v(12, 9)); // another frontend's id (a stale slot)
  s.set(5, v(13, 7, { count: 3 }));
  s.set(6, v(0)); // a slot pointing at no backend
  t.equal(s.size, 5);
  t.same(s.slots(), [1, 2, 4, 5, 6]);
  t.same([1, 2, 3, 4, 5, 6].map((slot) => s.backendId(slot)), [10, 11, undefined, 12, 13, 0]);
  t.ok(s.holds(1, 10, 7) && s.holds(2, 11, 7), 'what the syncer writes');
  t.notOk(s.holds(1, 10, 8), 'another frontend id');
  t.notOk(s.holds(3, 0, 7) || s.holds(3, 10, 7), 'no entry');
  t.notOk(s.holds(4, 12, 7), 'stale id kept as it is');
  t.ok(s.holds(4, 12, 9));
  t.notOk(s.holds(5, 13, 7), 'a slot with a count is not what the syncer writes');
  t.notOk(s.holds(6, 0, 7));
  s.set(5, v(13));
  t.ok(s.holds(5, 13, 7), 'rewritten');
  s.delete(2);
  s.delete(6);
  s.delete(3);
  t.same(s.slots(), [1, 4, 5]);
  t.equal(s.size, 3);
  t.equal(s.backendId(2), undefined);
});

t.test('assignSlots keeps positions and fills holes with the displaced', async (t) => {
  const cur = (ids: number[]) => (slot: number) => ids[slot - 1];
  t.same(assignSlots([1, 2, 3], undefined), [1, 2, 3]);
  t.same(assignSlots([1, 3], cur([1, 2, 3])), [1, 3], 'last moves into the hole');
  t.same(assignSlots([1, 2, 3, 4], cur([3, 1, 2])), [3, 1, 2, 4], 'existing order kept, new appended');
  t.same(assignSlots([2, 5], cur([1, 2, 3])), [5, 2]);
  t.same(assignSlots([], cur([1])), []);
});

t.test('a full resync repairs entries changed behind the syncer, and only those', async (t) => {
  const w = fakeMaps();
  const s = new Syncer({ writer: w, log: silentLogger() });
  const d = () => state([nginx()], [nginxEps(['10.244.1.1', '10.244.1.2'])]);
  await s.sync(d());
  const good = dump(w);
  // Someone (bpftool, a crashed tool) overwrote a slot and deleted the revnat entry.
  await w.update(S, abi.svcKey.encode({ vip: '10.96.0.10', port: 80, proto: 6, scope: 0, slot: 2 }), abi.svcValue.encode({ backend_id: 99, svc_id: 1, count: 0, flags: 0, affinity_timeout: 0 }));
  await w.delete(R, abi.revnatKey.encode({ svc_id: 1 }));
  takeOps(w);
  await s.sync(d());
  t.same(takeOps(w), [], 'an incremental sync trusts its memory');
  s.requestFullResync();
  const r = await s.sync(d());
  t.match(r, { ok: true, full: true, updates: 2, deletes: 0 });
  t.same(takeOps(w), [
    'update kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=2 -> svc=1 backend=2',
    'update kbp_revnat_v1 svc=1 -> 10.96.0.10:80',
  ]);
  t.same(dump(w), good);
});

t.test('map writes are counted per map; every sync reaches the listeners with the change times it programmed', async (t) => {
  const w = fakeMaps();
  const s = new Syncer({ writer: w, log: silentLogger(), batchMin: 2 });
  const seen: Array<{ ok: boolean; writes: Record<string, number>; programmed: number[] }> = [];
  const off = s.onSync((r) => seen.push({ ok: r.ok, writes: r.writes, programmed: r.programmed }));
  t.same(s.stats.mapWrites, { [S]: 0, [B]: 0, [R]: 0 }, 'every map present from the start');

  await s.sync(state([nginx()], [nginxEps(['10.244.1.5', '10.244.2.7'])]), undefined, [1000]);
  // 2 backends; 2 slots + entry + VIP marker; 1 revnat.
  t.same(seen.at(-1), { ok: true, writes: { [B]: 2, [S]: 4, [R]: 1 }, programmed: [1000] });
  const logged = w.ops.filter((o) => o.op !== 'entries').reduce<Record<string, number>>((a, o) => {
    a[o.map] = (a[o.map] ?? 0) + o.keys.length;
    return a;
  }, {});
  t.same(s.stats.mapWrites, { [S]: 4, [B]: 2, [R]: 1 });
  t.same(s.stats.mapWrites, { [S]: 0, [B]: 0, [R]: 0, ...logged }, 'the counters agree with the operations the fake map saw');

  // Endpoint removed: last backend fills the hole (slot 1 rewritten), count down, slot 2 and backend deleted.
  await s.sync(state([nginx()], [nginxEps(['10.244.2.7'])]), undefined, [2000, 2500]);
  t.same(seen.at(-1), { ok: true, writes: { [S]: 3, [B]: 1 }, programmed: [2000, 2500] });
  t.same(s.stats.mapWrites, { [S]: 7, [B]: 3, [R]: 1 });

  // Nothing changed: no writes, no programming times.
  await s.sync(state([nginx()], [nginxEps(['10.244.2.7'])]));
  t.same(seen.at(-1), { ok: true, writes: {}, programmed: [] });

  // A failed sync keeps its change times for the next successful one.
  w.failWith = (op) => (op.op !== 'entries' ? Object.assign(new Error('injected'), { code: 'EPERM' }) : undefined);
  await s.sync(state([nginx()], [nginxEps(['10.244.2.8'])]), undefined, [3000]);
  t.match(seen.at(-1), { ok: false, programmed: [] });
  w.failWith = undefined;
  await s.sync(state([nginx()], [nginxEps(['10.244.2.8'])]), undefined, [3100]);
  t.match(seen.at(-1), { ok: true, programmed: [3000, 3100] });
  t.equal(seen.length, 5, 'one call per sync');
  off();
  await s.sync(state([nginx()], [nginxEps(['10.244.2.8'])]));
  t.equal(seen.length, 5, 'unsubscribed');
});

t.test('loadBalancerSourceRanges: ranges written before the entry that flags them, changed in place, removed after it', async (t) => {
  const w = fakeMaps();
  const lb = (ranges: string[]): Service => {
    const s = svc('lb', '10.96.0.90', [{ port: 80, targetPort: 8080 }], { type: 'LoadBalancer', loadBalancerSourceRanges: ranges });
    s.status = { loadBalancer: { ingress: [{ ip: '172.18.1.50' }] } };
    return s;
  };
  const eps = slice('lb-1', 'lb', [{ port: 8080 }], ['10.244.1.5']);
  const s = new Syncer({ writer: w, log: silentLogger(), batchMin: 100 });
  await s.sync(state([lb(['172.18.0.0/24', '10.0.0.1'])], [eps]));
  const ops = takeOps(w);
  const ranges = ops.filter((l) => l.includes(abi.KBP_MAP_SRC_RANGES));
  t.same(ranges, ['update kbp_srcrange_v1 svc=2 10.0.0.1/32 -> allow', 'update kbp_srcrange_v1 svc=2 172.18.0.0/24 -> allow'], 'the LB frontend (svc 2) gets its ranges; the ClusterIP none');
  const entry = ops.indexOf('update kbp_svc_v1 172.18.1.50:80/TCP scope=0 slot=0 -> svc=2 count=1 flags=load-balancer,source-ranges,masquerade affinity=0');
  t.ok(entry > ops.indexOf(ranges[1]!), 'the flagged entry comes after its ranges');
  t.ok(ops.includes('update kbp_svc_v1 10.96.0.90:80/TCP scope=0 slot=0 -> svc=1 count=1 flags=cluster-ip affinity=0'), 'the ClusterIP is not flagged');

  await s.sync(state([lb(['172.18.0.0/24', '192.168.0.0/16'])], [eps]));
  t.same(takeOps(w), ['update kbp_srcrange_v1 svc=2 192.168.0.0/16 -> allow', 'delete kbp_srcrange_v1 svc=2 10.0.0.1/32'], 'a changed list: the new range, then the old one goes');

  // A restarted agent reads the ranges back and writes nothing.
  const s2 = new Syncer({ writer: w, log: silentLogger() });
  const r = await s2.sync(state([lb(['172.18.0.0/24', '192.168.0.0/16'])], [eps]));
  t.match(r, { ok: true, updates: 0, deletes: 0 }, 'restart: nothing rewritten');

  await s2.sync(state([lb([])], [eps]));
  t.same(takeOps(w).filter((l) => /172\.18\.1\.50|srcrange/.test(l)), [
    'update kbp_svc_v1 172.18.1.50:80/TCP scope=0 slot=0 -> svc=2 count=1 flags=load-balancer,masquerade affinity=0',
    'delete kbp_srcrange_v1 svc=2 172.18.0.0/24',
    'delete kbp_srcrange_v1 svc=2 192.168.0.0/16',
  ], 'ranges dropped: the flag goes first, then the entries');
  t.same(formatMap(abi.KBP_MAP_SRC_RANGES, w.snapshot(abi.KBP_MAP_SRC_RANGES)), []);

  await s2.sync(state([lb(['10.1.0.0/16'])], [eps]));
  takeOps(w);
  await s2.sync(state([], []));
  t.ok(takeOps(w).includes('delete kbp_srcrange_v1 svc=2 10.1.0.0/16'), 'a removed Service takes its ranges along');
  t.same(formatMap(abi.KBP_MAP_SRC_RANGES, w.snapshot(abi.KBP_MAP_SRC_RANGES)), []);
});
