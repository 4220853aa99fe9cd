// Every route and error code of the agent API over fake kernel maps
// (test/api/fakes.ts), each response also checked against the OpenAPI
// document the API serves.

import t, { type Test } from 'tap';
import { Ajv } from 'ajv';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import * as abi from '../../src/maps/abi.js';
import { parseListen, rateLimiter } from '../../src/api/app.js';
import type { DesiredFrontendLike } from '../../src/api/frontends.js';
import type { SyncListener, SyncResult, SyncerStats } from '../../src/proxy/syncer.js';
import { build, NODE, putBackend, putFlow, putFrontend, putStat, putVipMarker, type FakeMaps } from './fakes.js';

const ajv = new Ajv({ strict: false, allErrors: true });
const docs = new WeakMap<FastifyInstance, Record<string, unknown>>();

/** GET url; the body must match the OpenAPI schema of that route and status. */
async function get(t: Test, app: FastifyInstance, url: string, route?: string): Promise<LightMyRequestResponse> {
  const r = await app.inject({ method: 'GET', url });
  let doc = docs.get(app);
  if (!doc) {
    doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json() as Record<string, unknown>;
    docs.set(app, doc);
  }
  const p = route ?? url.split('?')[0]!;
  const op = (doc.paths as Record<string, Record<string, { responses: Record<string, { content: Record<string, { schema: object }> }> }>>)[p]?.get;
  const resp = op?.responses[String(r.statusCode)];
  if (!resp) {
    t.fail(`${p}: status ${r.statusCode} not in the OpenAPI document`);
    return r;
  }
  const [type, media] = Object.entries(resp.content)[0]!;
  if (type === 'application/json') {
    const ok = ajv.validate(media.schema, r.json());
    if (!ok) t.fail(`${url} ${r.statusCode}: body does not match the OpenAPI schema: ${ajv.errorsText()}`);
  }
  return r;
}

const I = abi.KBP_STAT_NEW_FLOW;

function program(m: FakeMaps): void {
  putBackend(m, 1, '10.244.1.5', 8080);
  putBackend(m, 2, '10.244.2.7', 8080);
  putBackend(m, 3, '10.244.1.6', 8080, abi.KBP_BACKEND_TERMINATING);
  putBackend(m, 4, '10.244.1.9', 5353, abi.KBP_BACKEND_ACTIVE, abi.IPPROTO_UDP);
  putFrontend(m, { id: 2, vip: '10.96.0.10', port: 80, slots: [1, 2] });
  putFrontend(m, { id: 1, vip: '10.96.0.53', port: 53, proto: abi.IPPROTO_UDP, flags: abi.KBP_SVC_F_CLUSTER_IP | abi.KBP_SVC_F_AFFINITY, affinity: 10800, slots: [4] });
  putVipMarker(m, '10.96.0.10');
  putVipMarker(m, '10.96.0.53');
}

const names = (id: number) =>
  id === 2
    ? { id, frontend: '10.96.0.10:80/TCP', service: { namespace: 'web', name: 'my-nginx', portName: 'http' } }
    : id === 1
      ? { id, frontend: '10.96.0.53:53/UDP', service: { namespace: 'kube-system', name: 'dns', portName: 'dns' } }
      : undefined;

const desired: DesiredFrontendLike[] = [
  { vip: '10.96.0.10', port: 80, proto: 6, scope: 0, flags: 1, affinityTimeout: 0, service: { namespace: 'web', name: 'my-nginx', portName: 'http' }, active: ['10.244.1.5:8080/TCP', '10.244.2.7:8080/TCP'] },
  { vip: '10.96.0.53', port: 53, proto: 17, scope: 0, flags: 17, affinityTimeout: 10800, service: { namespace: 'kube-system', name: 'dns', portName: 'dns' }, active: ['10.244.1.9:5353/UDP'] },
];

t.test('GET /healthz: kube-proxy body; 503 before ready, after the first sync, and when the last sync is stale', async (t) => {
  const { app, state } = await build(t, { healthStaleMs: 60_000 });
  let r = await get(t, app, '/healthz');
  t.equal(r.statusCode, 200);
  t.same(r.json(), { lastUpdated: '2026-01-02T03:04:05.000Z', currentTime: '2026-01-02T03:04:06.000Z', nodeName: NODE, nodeEligible: true });
  state.ready = false;
  r = await get(t, app, '/healthz');
  t.equal(r.statusCode, 503, 'devices not attached yet');
  state.ready = true;
  state.lastUpdated = undefined;
  r = await get(t, app, '/healthz');
  t.equal(r.statusCode, 503, 'never synced');
  t.equal(r.json().lastUpdated, null);
  state.lastUpdated = new Date('2026-01-02T03:03:05.000Z'); // 61 s before now
  r = await get(t, app, '/healthz');
  t.equal(r.statusCode, 503, 'last successful sync older than the stale limit');
  state.lastUpdated = new Date('2026-01-02T03:03:07.000Z'); // 59 s
  t.equal((await get(t, app, '/healthz')).statusCode, 200);
});

t.test('GET /readyz', async (t) => {
  const { app, state } = await build(t);
  let r = await get(t, app, '/readyz');
  t.equal(r.statusCode, 200);
  t.same(r.json(), { ready: true, lastUpdated: '2026-01-02T03:04:05.000Z', currentTime: '2026-01-02T03:04:06.000Z' });
  state.ready = false;
  r = await get(t, app, '/readyz');
  t.equal(r.statusCode, 503);
  t.equal(r.json().ready, false);
});

t.test('GET /v1/services: what the kernel holds, names from the syncer, no drift when it matches the desired state', async (t) => {
  const { app, maps } = await build(t, { frontend: names, desired: () => desired });
  program(maps);
  const r = await get(t, app, '/v1/services');
  t.equal(r.statusCode, 200);
  t.same((await get(t, app, '/v1/drift')).json(), { desiredKnown: true, inSync: true, drifting: [], missing: [] });
  t.same(r.json(), [
      {
        id: 2,
        vip: '10.96.0.10',
        port: 80,
        protocol: 'TCP',
        scope: 0,
        namespace: 'web',
        name: 'my-nginx',
        portName: 'http',
        flags: ['cluster-ip'],
        affinityTimeout: 0,
        backends: [
          { slot: 1, id: 1, ip: '10.244.1.5', port: 8080, protocol: 'TCP', state: 'active' },
          { slot: 2, id: 2, ip: '10.244.2.7', port: 8080, protocol: 'TCP', state: 'active' },
        ],
        drift: [],
      },
      {
        id: 1,
        vip: '10.96.0.53',
        port: 53,
        protocol: 'UDP',
        scope: 0,
        namespace: 'kube-system',
        name: 'dns',
        portName: 'dns',
        flags: ['cluster-ip', 'affinity'],
        affinityTimeout: 10800,
        backends: [{ slot: 1, id: 4, ip: '10.244.1.9', port: 5353, protocol: 'UDP', state: 'active' }],
        drift: [],
      },
  ]);
});

t.test('GET /v1/services: drift is flagged per frontend, missing frontends listed', async (t) => {
  const { app, maps } = await build(t, { frontend: names, desired: () => [...desired, { ...desired[0]!, vip: '10.96.0.11', service: { namespace: 'web', name: 'other', portName: '' } }] });
  program(maps);
  // Outside writes: a slot now names the terminating backend, the UDP frontend lost its
  // affinity, a frontend nobody wants, and a count beyond its slots.
  putFrontend(maps, { id: 2, vip: '10.96.0.10', port: 80, slots: [1, 3] });
  putFrontend(maps, { id: 1, vip: '10.96.0.53', port: 53, proto: abi.IPPROTO_UDP, slots: [4] });
  putFrontend(maps, { id: 77, vip: '10.96.0.99', port: 443, slots: [99], count: 2 });
  const items = (await get(t, app, '/v1/services')).json();
  const body = (await get(t, app, '/v1/drift')).json();
  t.equal(body.inSync, false);
  t.same(body.drifting.map((i: { id: number }) => i.id).sort(), [1, 2, 77]);
  const drift = Object.fromEntries(items.map((i: { id: number; drift: string[] }) => [i.id, i.drift]));
  t.same(drift, {
    2: ['backends missing: 10.244.2.7:8080/TCP', 'backends not desired: 10.244.1.6:8080/TCP'],
    1: ['flags: desired cluster-ip,affinity', 'affinity timeout: desired 10800'],
    77: ['not desired'],
  });
  const unknown = items.find((i: { id: number }) => i.id === 77);
  t.same(unknown.backends, [
    { slot: 1, id: 99, ip: null, port: null, protocol: null, state: null },
    { slot: 2, id: 0, ip: null, port: null, protocol: null, state: null },
  ]);
  t.equal(unknown.name, null, 'an id the syncer does not know has no name');
  t.same(body.missing, [{ vip: '10.96.0.11', port: 80, protocol: 'TCP', scope: 0, namespace: 'web', name: 'other', portName: '' }]);
});

t.test('GET /v1/services without a desired state: nothing compared', async (t) => {
  const { app, maps } = await build(t, { frontend: names });
  program(maps);
  t.equal((await get(t, app, '/v1/services')).json().length, 2);
  t.same((await get(t, app, '/v1/drift')).json(), { desiredKnown: false, inSync: null, drifting: [], missing: [] });
});

t.test('GET /v1/services/{id}: one frontend; 404 and 400 from the catalog', async (t) => {
  const { app, maps } = await build(t, { frontend: names });
  program(maps);
  let r = await get(t, app, '/v1/services/1', '/v1/services/{id}');
  t.equal(r.statusCode, 200);
  t.equal(r.json().name, 'dns');
  r = await get(t, app, '/v1/services/5', '/v1/services/{id}');
  t.equal(r.statusCode, 404);
  t.same(r.json(), { statusCode: 404, code: 'KBP_SERVICE_NOT_FOUND', message: 'no frontend with this id in the maps' });
  r = await get(t, app, '/v1/services/abc', '/v1/services/{id}');
  t.equal(r.statusCode, 400);
  t.equal(r.json().code, 'KBP_BAD_REQUEST');
});

t.test('GET /v1/backends: every backend entry and the frontends that pick it', async (t) => {
  const { app, maps } = await build(t);
  program(maps);
  const r = await get(t, app, '/v1/backends');
  t.equal(r.statusCode, 200);
  t.same(r.json().items, [
    { id: 1, ip: '10.244.1.5', port: 8080, protocol: 'TCP', state: 'active', frontends: [2] },
    { id: 2, ip: '10.244.2.7', port: 8080, protocol: 'TCP', state: 'active', frontends: [2] },
    { id: 3, ip: '10.244.1.6', port: 8080, protocol: 'TCP', state: 'terminating', frontends: [] },
    { id: 4, ip: '10.244.1.9', port: 5353, protocol: 'UDP', state: 'active', frontends: [1] },
  ]);
});

function flows(m: FakeMaps, n: number): void {
  for (let i = 0; i < n; i++) {
    const backend = (i % 2) + 1;
    putFlow(m, {
      client: `10.244.1.${100 + (i % 3)}`,
      sport: 40000 + i,
      vip: '10.96.0.10',
      port: 80,
      backendIp: backend === 1 ? '10.244.1.5' : '10.244.2.7',
      backendPort: 8080,
      svc: 2,
      backend,
      createdNs: 40_000_000_000n,
      lastNs: 97_500_000_000n,
    });
  }
}

t.test('GET /v1/conntrack: decoded entries, filters, pages that follow the kernel cursor', async (t) => {
  const { app, maps } = await build(t);
  program(maps);
  flows(maps, 10); // 20 entries
  let r = await get(t, app, '/v1/conntrack?limit=1');
  t.equal(r.statusCode, 200);
  t.same(r.json().items, [
    {
      direction: 'forward',
      protocol: 'TCP',
      src: '10.244.1.100:40000',
      dst: '10.96.0.10:80',
      client: '10.244.1.100',
      serviceId: 2,
      backendId: 1,
      flags: [],
      tcpFlags: ['SYN', 'ACK'],
      ageSeconds: 60,
      idleSeconds: 2.5,
    },
  ]);

  // Walk every page of 3: 20 entries, each once, in the kernel's order.
  const seen: string[] = [];
  let token: string | null = null;
  let pages = 0;
  do {
    r = await get(t, app, `/v1/conntrack?limit=3${token ? `&continue=${token}` : ''}`);
    const body = r.json();
    t.ok(body.items.length <= 3);
    seen.push(...body.items.map((i: { src: string; dst: string }) => `${i.src}>${i.dst}`));
    token = body.continue;
    pages++;
  } while (token);
  t.equal(pages, 7);
  t.equal(seen.length, 20);
  t.equal(new Set(seen).size, 20, 'no entry repeated');

  // Filters: by client (forward and reply directions), backend, service.
  r = await get(t, app, '/v1/conntrack?client=10.244.1.101&limit=100');
  t.equal(r.json().items.length, 6, '3 flows of that client, both directions');
  t.ok(r.json().items.every((i: { client: string }) => i.client === '10.244.1.101'));
  t.equal(r.json().continue, null);
  r = await get(t, app, '/v1/conntrack?backend=2&limit=100');
  t.equal(r.json().items.length, 10);
  r = await get(t, app, '/v1/conntrack?service=3');
  t.same(r.json(), { items: [], continue: null, scanned: 20 });

  // A filtered page continues with its own filter only.
  r = await get(t, app, '/v1/conntrack?backend=2&limit=2');
  const tok = r.json().continue as string;
  t.equal((await get(t, app, `/v1/conntrack?backend=2&limit=2&continue=${tok}`)).statusCode, 200);
  for (const bad of [`backend=1&continue=${tok}`, 'continue=garbage', `continue=${Buffer.from('{"v":1,"m":"kbp_ct4_v2","s":-1,"q":"[null,null,null]"}').toString('base64url')}`]) {
    r = await get(t, app, `/v1/conntrack?${bad}`);
    t.equal(r.statusCode, 400, bad);
    t.equal(r.json().code, 'KBP_BAD_CONTINUE');
  }
  for (const bad of ['limit=0', 'limit=5001', 'client=10.0.0.256', 'service=x']) {
    r = await get(t, app, `/v1/conntrack?${bad}`);
    t.equal(r.statusCode, 400, bad);
    t.equal(r.json().code, 'KBP_BAD_REQUEST');
  }
});

t.test('GET /v1/conntrack: a page never asks the kernel for the whole map', async (t) => {
  const { app, maps } = await build(t);
  flows(maps, 3000); // 6000 entries
  const r = await get(t, app, '/v1/conntrack?limit=10');
  t.equal(r.json().items.length, 10);
  t.ok(maps.ct.batches.every((n) => n <= 1024), `batch sizes ${[...new Set(maps.ct.batches)]}`);
  t.equal(maps.ct.batches.length, 1, 'one batch syscall for a 10-item page');
});

t.test('GET /v1/affinity', async (t) => {
  const { app, maps } = await build(t);
  program(maps);
  maps.affinity.set(abi.affinityKey.encode({ client: '10.244.1.100', svc_id: 1 }), abi.affinityValue.encode({ last_used_ns: 99_000_000_000n, backend_id: 4, slot: 1 }));
  maps.affinity.set(abi.affinityKey.encode({ client: '10.244.1.101', svc_id: 1 }), abi.affinityValue.encode({ last_used_ns: 90_000_000_000n, backend_id: 4, slot: 1 }));
  let r = await get(t, app, '/v1/affinity');
  t.equal(r.statusCode, 200);
  t.same(r.json().items, [
    { client: '10.244.1.100', serviceId: 1, backendId: 4, slot: 1, idleSeconds: 1 },
    { client: '10.244.1.101', serviceId: 1, backendId: 4, slot: 1, idleSeconds: 10 },
  ]);
  r = await get(t, app, '/v1/affinity?client=10.244.1.101');
  t.equal(r.json().items.length, 1);
  r = await get(t, app, '/v1/affinity?service=2');
  t.equal(r.json().items.length, 0);
});

t.test('GET /v1/maps and /v1/maps/{name}', async (t) => {
  const { app, maps } = await build(t);
  program(maps);
  flows(maps, 2);
  let r = await get(t, app, '/v1/maps');
  t.equal(r.statusCode, 200);
  t.same(r.json().items, [
    { name: 'kbp_affinity_v1', type: 'lru_hash', keySize: 8, valueSize: 16, maxEntries: 1024, entries: 0 },
    { name: 'kbp_backend_v2', type: 'hash', keySize: 4, valueSize: 12, maxEntries: 1024, entries: 4 },
    { name: 'kbp_ct4_v2', type: 'lru_hash', keySize: 16, valueSize: 40, maxEntries: 1 << 20, entries: 4 },
    { name: 'kbp_revnat_v1', type: 'hash', keySize: 4, valueSize: 8, maxEntries: 1024, entries: 2 },
    { name: 'kbp_stats_v2', type: 'percpu_array', keySize: 4, valueSize: 16, maxEntries: abi.KBP_STAT_SLOTS, entries: abi.KBP_STAT_SLOTS },
    { name: 'kbp_svc_v1', type: 'hash', keySize: 12, valueSize: 16, maxEntries: 1024, entries: 7 },
  ]);

  r = await get(t, app, '/v1/maps/kbp_backend_v2?limit=1', '/v1/maps/{name}');
  t.same(r.json().items, [{ key: { id: 1 }, value: { ip: '10.244.1.5', port: 8080, proto: 6, state: 0, flags: abi.KBP_BACKEND_F_LOCAL, protocol: 'TCP', stateName: 'active' } }]);
  t.type(r.json().continue, 'string');
  r = await get(t, app, '/v1/maps/kbp_ct4_v2?limit=1', '/v1/maps/{name}');
  t.same(r.json().items[0], {
    key: { saddr: '10.244.1.100', daddr: '10.96.0.10', sport: 40000, dport: 80, proto: 6, dir: 0, protocol: 'TCP', dirName: 'forward' },
    value: { created_ns: '40000000000', last_seen_ns: '97500000000', backend_id: 1, svc_id: 2, nat_addr: '0.0.0.0', nat_port: 0, flags: 0, tcp_flags: 18, client_port: 0, flagNames: '-' },
  });
  r = await get(t, app, '/v1/maps/kbp_svc_v1?limit=100', '/v1/maps/{name}');
  t.equal(r.json().items.length, 7);
  t.ok(r.json().items.some((i: { value: { flagNames: string } }) => i.value.flagNames === 'vip-marker'));

  putStat(maps, I, [[3, 300], [4, 400]]);
  r = await get(t, app, '/v1/maps/kbp_stats_v2?limit=1', '/v1/maps/{name}');
  t.same(r.json().items, [{ key: { index: 0, name: 'new_flow' }, value: { packets: '7', bytes: '700' } }]);

  r = await get(t, app, '/v1/maps/kbp_nope_v1', '/v1/maps/{name}');
  t.equal(r.statusCode, 404);
  t.equal(r.json().code, 'KBP_MAP_NOT_FOUND');
  r = await get(t, app, '/v1/maps/not-a-name!', '/v1/maps/{name}');
  t.equal(r.statusCode, 400);
});

t.test('GET /v1/stats: per-CPU counters summed', async (t) => {
  const { app, maps } = await build(t);
  putStat(maps, abi.KBP_STAT_NEW_FLOW, [[3, 300], [4, 400]]);
  putStat(maps, abi.KBP_STAT_DROP_NO_BACKEND, [[0, 0], [2, 120]]);
  const r = await get(t, app, '/v1/stats');
  t.equal(r.statusCode, 200);
  const body = r.json();
  t.equal(body.cpus, 2);
  t.equal(body.items.length, abi.KBP_STAT_MAX);
  t.same(body.items[0], { index: 0, name: 'new_flow', packets: 7, bytes: 700 });
  t.same(body.items[abi.KBP_STAT_DROP_NO_BACKEND], { index: 4, name: 'drop_no_backend', packets: 2, bytes: 120 });
});

t.test('GET /metrics: Prometheus text with sync, map and datapath series', async (t) => {
  const stats: SyncerStats = {
    syncs: 5,
    fullSyncs: 2,
    failures: 1,
    mapFull: 1,
    lastSuccess: new Date('2026-01-02T03:04:05.000Z'),
    lastError: undefined,
    lastResult: { ok: true, full: false, updates: 3, deletes: 0, durationMs: 12 } as SyncerStats['lastResult'],
    mapWrites: { kbp_svc_v1: 7, kbp_backend_v2: 2, kbp_revnat_v1: 0 },
  };
  const { app, maps } = await build(t, { syncStats: () => stats });
  program(maps);
  flows(maps, 3);
  putStat(maps, abi.KBP_STAT_DROP_UNKNOWN_PORT, [[1, 60], [1, 60]]);
  const r = await get(t, app, '/metrics');
  t.equal(r.statusCode, 200);
  t.match(r.headers['content-type'], /^text\/plain/);
  const text = r.body;
  for (const line of [
    'kbp_sync_total 5',
    'kbp_sync_full_total 2',
    'kbp_sync_failures_total 1',
    'kbp_sync_map_full_errors_total 1',
    'kbp_sync_duration_seconds_count 1',
    'kbp_sync_last_success_timestamp_seconds 1767323045',
    'kbp_map_writes_total{map="kbp_svc_v1"} 7',
    'kbp_map_writes_total{map="kbp_revnat_v1"} 0',
    'kubeproxy_sync_proxy_rules_duration_seconds_count 1',
    'kubeproxy_sync_proxy_rules_last_timestamp_seconds 1767323045',
    'kubeproxy_network_programming_duration_seconds_count 0',
    'kbp_map_entries{map="kbp_ct4_v2"} 6',
    'kbp_map_entries{map="kbp_svc_v1"} 7',
    'kbp_map_max_entries{map="kbp_backend_v2"} 1024',
    'kbp_datapath_packets_total{reason="drop_unknown_port"} 2',
    'kbp_datapath_bytes_total{reason="drop_unknown_port"} 120',
    'kbp_datapath_packets_total{reason="new_flow"} 0',
  ]) {
    t.ok(text.split('\n').includes(line), line);
  }
  t.match(text, /process_resident_memory_bytes \d+/);
  // A second scrape does not observe the same sync twice, and counters follow the syncer.
  stats.syncs = 6;
  const again = (await get(t, app, '/metrics')).body.split('\n');
  t.ok(again.includes('kbp_sync_total 6'));
  t.ok(again.includes('kbp_sync_duration_seconds_count 1'));
});

t.test('GET /metrics: every sync observed through the syncer listener, not sampled at scrape time', async (t) => {
  const stats: SyncerStats = { syncs: 0, fullSyncs: 0, failures: 0, mapFull: 0, lastSuccess: undefined, lastError: undefined, lastResult: undefined, mapWrites: { kbp_svc_v1: 0 } };
  const listeners = new Set<SyncListener>();
  const { app } = await build(t, {
    syncStats: () => stats,
    onSync: (fn) => {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
  });
  const emit = (r: Partial<SyncResult>) => {
    const full: SyncResult = { ok: true, full: false, complete: false, removedBackends: [], updates: 0, deletes: 0, writes: {}, programmed: [], endedAt: 0, durationMs: 0, ...r };
    stats.syncs++;
    stats.lastResult = full;
    for (const fn of listeners) fn(full);
  };
  const scrape = async () => (await get(t, app, '/metrics')).body.split('\n');
  let lines = await scrape();
  t.ok(lines.includes('kbp_map_writes_total{map="kbp_svc_v1"} 0'), 'write counters exist before the first write');
  t.ok(lines.includes('kubeproxy_sync_proxy_rules_duration_seconds_count 0'));
  // Three syncs between two scrapes: all three observed.
  emit({ durationMs: 3, endedAt: 1_700_000_000_000, programmed: [1_700_000_000_000 - 20, 1_700_000_000_000 - 4] });
  emit({ durationMs: 700, endedAt: 1_700_000_001_000, programmed: [1_700_000_001_000 - 2000] });
  emit({ ok: false, durationMs: 1, endedAt: 1_700_000_002_000 });
  stats.mapWrites.kbp_svc_v1 = 12;
  lines = await scrape();
  for (const line of [
    'kubeproxy_sync_proxy_rules_duration_seconds_count 3',
    'kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.004"} 2',
    'kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="1.024"} 3',
    'kbp_sync_duration_seconds_count 3',
    'kubeproxy_sync_proxy_rules_last_timestamp_seconds 1700000001',
    'kubeproxy_network_programming_duration_seconds_count 3',
    'kubeproxy_network_programming_duration_seconds_bucket{le="0.005"} 1',
    'kubeproxy_network_programming_duration_seconds_bucket{le="0.025"} 2',
    'kubeproxy_network_programming_duration_seconds_bucket{le="1"} 2',
    'kubeproxy_network_programming_duration_seconds_bucket{le="2"} 3',
    'kbp_map_writes_total{map="kbp_svc_v1"} 12',
  ]) {
    t.ok(lines.includes(line), line);
  }
  t.ok(lines.includes('# TYPE kubeproxy_network_programming_duration_seconds histogram'));
  // A scrape without new syncs observes nothing more; closing the API unsubscribes.
  lines = await scrape();
  t.ok(lines.includes('kubeproxy_sync_proxy_rules_duration_seconds_count 3'));
  await app.close();
  t.equal(listeners.size, 0, 'unsubscribed on close');
});

t.test('errors come from the catalog; 5xx bodies do not leak internals', async (t) => {
  const { app, maps } = await build(t);
  maps.svc.fail = Object.assign(new Error('secret /sys/fs/bpf/kbp detail'), { code: 'EPERM' });
  maps.ct.fail = maps.svc.fail;
  for (const url of ['/v1/services', '/v1/backends', '/v1/conntrack', '/v1/maps', '/v1/maps/kbp_svc_v1']) {
    const r = await get(t, app, url, url.startsWith('/v1/maps/') ? '/v1/maps/{name}' : undefined);
    t.equal(r.statusCode, 503, url);
    t.same(r.json(), { statusCode: 503, code: 'KBP_MAPS_UNAVAILABLE', message: 'the datapath maps cannot be read' });
    t.notMatch(r.body, /secret/);
  }
  let r = await app.inject({ method: 'GET', url: '/nope' });
  t.equal(r.statusCode, 404);
  t.equal(r.json().code, 'KBP_NOT_FOUND');

  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH'] as const) {
    r = await app.inject({ method, url: '/v1/services', payload: { x: 1 } });
    t.equal(r.statusCode, 405, method);
    t.equal(r.json().code, 'KBP_METHOD_NOT_ALLOWED');
    t.equal(r.headers.allow, 'GET, HEAD');
  }

  const broken = await build(t, {
    health: () => {
      throw new Error('secret');
    },
  });
  r = await broken.app.inject({ method: 'GET', url: '/healthz' });
  t.equal(r.statusCode, 500);
  t.same(r.json(), { statusCode: 500, code: 'KBP_INTERNAL', message: 'internal error' });

  // Without maps (an agent that passes only a reader), the map routes say so.
  const bare = await build(t, { maps: undefined });
  for (const url of ['/v1/conntrack', '/v1/stats', '/v1/maps', '/v1/services']) {
    r = await bare.app.inject({ method: 'GET', url });
    t.equal(r.statusCode, 503, url);
    t.equal(r.json().code, 'KBP_MAPS_UNAVAILABLE');
  }
});

t.test('rate limit: 429 past the burst, per client address', async (t) => {
  const { app } = await build(t, {}, { rateLimit: { perSecond: 0.001, burst: 3 } });
  const codes = [];
  for (let i = 0; i < 5; i++) codes.push((await app.inject({ method: 'GET', url: '/readyz' })).statusCode);
  t.same(codes, [200, 200, 200, 429, 429]);
  const r = await app.inject({ method: 'GET', url: '/readyz' });
  t.same(r.json(), { statusCode: 429, code: 'KBP_RATE_LIMITED', message: 'too many requests, retry later' });
  t.ok(r.headers['retry-after']);
  t.equal((await app.inject({ method: 'GET', url: '/readyz', remoteAddress: '10.0.0.9' })).statusCode, 200, 'another client has its own bucket');
});

t.test('rate limit: the client table forgets the least recently seen client first, a client asking again and again included', async (t) => {
  const allow = rateLimiter(0, 1, () => 0, 2); // no refill, a burst of one, two clients remembered
  t.same(['a', 'b', 'a', 'a'].map(allow), [true, true, false, false], 'a is now the most recent, twice');
  t.equal(allow('c'), true, 'a third client: b, the least recent, is forgotten');
  t.equal(allow('a'), false, 'a is still remembered (its bucket is empty)');
  t.equal(allow('b'), true, 'b starts again with a full bucket');
});

t.test('the OpenAPI document: every route, every parameter, every status code, schemas that compile', async (t) => {
  const { app } = await build(t);
  const r = await app.inject({ method: 'GET', url: '/openapi.json' });
  t.equal(r.statusCode, 200);
  const doc = r.json();
  t.equal(doc.openapi, '3.1.0');
  t.same(Object.keys(doc.paths).sort(), [
    '/healthz',
    '/metrics',
    '/readyz',
    '/v1/affinity',
    '/v1/backends',
    '/v1/conntrack',
    '/v1/drift',
    '/v1/maps',
    '/v1/maps/{name}',
    '/v1/services',
    '/v1/services/{id}',
    '/v1/stats',
  ]);
  const ids = new Set<string>();
  for (const [p, item] of Object.entries(doc.paths as Record<string, Record<string, Record<string, unknown>>>)) {
    t.same(Object.keys(item), ['get'], `${p}: GET only`);
    const op = item.get!;
    t.type(op.operationId, 'string');
    t.notOk(ids.has(op.operationId as string), 'operationId unique');
    ids.add(op.operationId as string);
    t.type(op.summary, 'string', `${p} has a summary`);
    const params = op.parameters as Array<{ name: string; in: string; required: boolean; schema: object }>;
    for (const m of p.matchAll(/\{(\w+)\}/g)) t.ok(params.some((x) => x.in === 'path' && x.name === m[1] && x.required), `${p}: path parameter ${m[1]}`);
    for (const x of params) t.doesNotThrow(() => ajv.compile(x.schema), `${p} ${x.name} schema compiles`);
    const responses = op.responses as Record<string, { description: string; content: Record<string, { schema: object }> }>;
    t.ok(responses['200'] && responses['500'], `${p}: 200 and 500 documented`);
    for (const [code, resp] of Object.entries(responses)) {
      t.ok(/^[1-5]\d\d$/.test(code) && resp.description, `${p} ${code}`);
      for (const media of Object.values(resp.content)) t.doesNotThrow(() => ajv.compile(media.schema), `${p} ${code} schema compiles`);
    }
  }
  t.same(
    (doc.paths['/v1/conntrack'].get.parameters as Array<{ name: string }>).map((x) => x.name),
    ['limit', 'continue', 'service', 'backend', 'client'],
  );
  t.match(doc.info.description, /TokenReview/);
});

t.test('parseListen', async (t) => {
  t.same(parseListen('127.0.0.1:10256'), { host: '127.0.0.1', port: 10256 });
  t.same(parseListen('[::1]:80'), { host: '::1', port: 80 });
  t.throws(() => parseListen('127.0.0.1'), /HOST:PORT/);
  t.throws(() => parseListen('h:70000'), /HOST:PORT/);
});
