// InformerSource against a fake API server: a tiny HTTP server on 127.0.0.1
// speaking list and watch JSON for Services, EndpointSlices and Nodes. It
// checks the list-then-watch flow, synced only once every kind has listed,
// a watch that ends (dropped connection) being resumed from its
// resourceVersion, a 410 Gone answered with a re-list (deletes reported for
// what vanished meanwhile), and a failing list retried with backoff.
//
// Address conventions: ClusterIPs 10.96.0.x, pods 10.244.<node>.<pod>.

import t from 'tap';
import http from 'node:http';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { InformerSource } from '../../src/k8s/informers.js';
import type { SourceHandler } from '../../src/k8s/source.js';
import { memoryLogger } from '../../src/log.js';

type Obj = { metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string> }; [k: string]: unknown };

/** One kind's state on the fake server: objects, a resourceVersion counter, open watches. */
class FakeKind {
  objects = new Map<string, Obj>();
  watches = new Set<http.ServerResponse>();
  lists = 0;
  watchQueries: string[] = [];
  failLists = 0;
  goneNextWatch = false;
  /** The next list request that carries a continue token answers 410 (the token expired), after running this. */
  expireNextContinue: (() => void) | undefined;
  /** Each list request's limit and continue parameters. */
  listQueries: Array<{ limit: string | null; cont: string | null }> = [];
  constructor(
    readonly listKind: string,
    private readonly rv: { n: number },
  ) {}
  put(o: Obj, notify = true): void {
    o.metadata.resourceVersion = String(++this.rv.n);
    const type = this.objects.has(key(o)) ? 'MODIFIED' : 'ADDED';
    this.objects.set(key(o), o);
    if (notify) this.send(type, o);
  }
  del(o: Obj, notify = true): void {
    this.objects.delete(key(o));
    o.metadata.resourceVersion = String(++this.rv.n);
    if (notify) this.send('DELETED', o);
  }
  send(type: string, o: unknown): void {
    for (const w of this.watches) w.write(JSON.stringify({ type, object: o }) + '\n');
  }
  dropWatches(): void {
    for (const w of this.watches) w.destroy();
    this.watches.clear();
  }
}
const key = (o: Obj) => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;

async function fakeApi() {
  const rv = { n: 100 };
  const kinds: Record<string, FakeKind> = {
    '/api/v1/services': new FakeKind('ServiceList', rv),
    '/apis/discovery.k8s.io/v1/endpointslices': new FakeKind('EndpointSliceList', rv),
    '/api/v1/nodes': new FakeKind('NodeList', rv),
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    const k = kinds[url.pathname];
    if (!k) {
      res.writeHead(404).end();
      return;
    }
    const field = url.searchParams.get('fieldSelector');
    const match = (o: Obj) => !field || field === `metadata.name=${o.metadata.name}`;
    if (url.searchParams.get('watch') === 'true') {
      k.watchQueries.push(url.searchParams.get('resourceVersion') ?? '');
      res.writeHead(200, { 'content-type': 'application/json' });
      if (k.goneNextWatch) {
        k.goneNextWatch = false;
        res.end(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Expired', code: 410, message: 'too old resource version' } }) + '\n');
        return;
      }
      k.watches.add(res);
      res.on('close', () => k.watches.delete(res));
      return;
    }
    k.lists++;
    const limit = url.searchParams.get('limit');
    const cont = url.searchParams.get('continue');
    k.listQueries.push({ limit, cont });
    if (cont && k.expireNextContinue) {
      k.expireNextContinue();
      k.expireNextContinue = undefined;
      res.writeHead(410, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', code: 410, reason: 'Expired', message: 'continue token expired' }));
      return;
    }
    if (k.failLists > 0) {
      k.failLists--;
      res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', code: 500, message: 'injected' }));
      return;
    }
    // Pages as the API server cuts them: `limit` objects, a continue token while more remain (here: the offset).
    const all = [...k.objects.values()].filter(match);
    const from = cont ? Number(cont) : 0;
    const to = limit ? from + Number(limit) : all.length;
    const metadata = { resourceVersion: String(rv.n), ...(to < all.length ? { continue: String(to) } : {}) };
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: k.listKind, apiVersion: 'v1', metadata, items: all.slice(from, to) }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kbp-fakeapi-'));
  const kubeconfig = path.join(dir, 'kubeconfig');
  await fs.writeFile(
    kubeconfig,
    `apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "http://127.0.0.1:${port}", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: fake, user: u}}]
current-context: c
`,
  );
  return {
    kinds,
    services: kinds['/api/v1/services']!,
    slices: kinds['/apis/discovery.k8s.io/v1/endpointslices']!,
    nodes: kinds['/api/v1/nodes']!,
    kubeconfig,
    async close() {
      for (const k of Object.values(kinds)) k.dropWatches();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

function recorder() {
  const events: string[] = [];
  let synced = 0;
  const h: SourceHandler = {
    service: (k, s) => events.push(`service ${k} ${s ? `port=${s.spec.ports?.[0]?.port}` : 'deleted'}`),
    endpointSlice: (k, s) => events.push(`slice ${k} ${s ? s.endpoints.map((e) => e.addresses[0]).join(',') : 'deleted'}`),
    node: (n) => events.push(`node ${n ? `${n.metadata.name} zone=${n.metadata.labels?.['topology.kubernetes.io/zone'] ?? '-'}` : 'deleted'}`),
    synced: () => {
      synced++;
      events.push('synced');
    },
  };
  return { h, events, synced: () => synced };
}

async function until(what: string, fn: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const service = (name: string, port: number): Obj => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'web', managedFields: [{ manager: 'kubectl' }] } as Obj['metadata'],
  spec: { clusterIP: '10.96.0.10', ports: [{ port, targetPort: 8080, protocol: 'TCP' }] },
});
const eps = (name: string, ips: string[]): Obj => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name, namespace: 'web', labels: { 'kubernetes.io/service-name': 'a' } },
  addressType: 'IPv4',
  endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
  ports: [{ name: '', port: 8080, protocol: 'TCP' }],
});

t.test('list, then watch; synced once all kinds listed; dropped watch resumed; 410 re-lists', async (t) => {
  const api = await fakeApi();
  t.teardown(() => api.close());
  api.services.put(service('a', 80));
  api.slices.put(eps('a-1', ['10.244.1.1']));
  api.nodes.put({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-1', labels: { 'topology.kubernetes.io/zone': 'z1' } } });
  api.nodes.put({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-2' } });
  const { log, lines } = memoryLogger('info');
  const src = new InformerSource({ kubeconfig: api.kubeconfig, nodeName: 'node-1', log, backoff: { initialMs: 50, maxMs: 200 } });
  t.teardown(() => src.close());
  const r = recorder();
  await src.start(r.h);
  await until('synced', () => r.synced() === 1);
  t.same(r.events.slice().sort(), ['node node-1 zone=z1', 'service web/a port=80', 'slice web/a-1 10.244.1.1', 'synced'], 'only this node; synced after every list');
  t.equal(r.events[r.events.length - 1], 'synced', 'synced comes after the listed objects');
  await until('watches open', () => api.services.watches.size === 1 && api.slices.watches.size === 1 && api.nodes.watches.size === 1);
  r.events.length = 0;

  api.slices.put(eps('a-1', ['10.244.1.1', '10.244.1.2']));
  await until('slice event', () => r.events.length === 1);
  t.same(r.events, ['slice web/a-1 10.244.1.1,10.244.1.2']);

  // Dropped watch: resumed from the last resourceVersion, no re-list.
  const listsBefore = api.slices.lists;
  const lastRv = api.slices.objects.get('web/a-1')!.metadata.resourceVersion!;
  api.slices.dropWatches();
  await until('watch resumed', () => api.slices.watches.size === 1, 5000);
  t.equal(api.slices.watchQueries[api.slices.watchQueries.length - 1], lastRv, 'watch resumed at the last resourceVersion');
  t.equal(api.slices.lists, listsBefore, 'no re-list after a dropped watch');
  api.slices.put(eps('a-1', ['10.244.1.2']));
  await until('event after resume', () => r.events.length === 2);
  t.same(r.events[1], 'slice web/a-1 10.244.1.2');

  // 410 Gone: the history is gone; a re-list reports what changed meanwhile, deletions included.
  r.events.length = 0;
  api.services.goneNextWatch = true;
  // Changed while the watch was down, and the server compacted past our resourceVersion.
  api.services.del(api.services.objects.get('web/a')!, false);
  api.services.put(service('b', 81), false);
  api.services.dropWatches();
  await until('re-list after 410', () => r.events.includes('service web/a deleted') && r.events.includes('service web/b port=81'), 5000);
  t.ok(api.services.lists >= 2, 're-listed');
  t.equal(r.synced(), 1, 'synced is reported once');
  t.match(lines.join('\n'), /msg=re-listed component=\S* ?kind=Service|msg=re-listed kind=Service/);
});

t.test('a failing list is retried with backoff; nothing is synced before it succeeds', async (t) => {
  const api = await fakeApi();
  t.teardown(() => api.close());
  api.services.put(service('a', 80));
  api.slices.failLists = 2;
  const { log, lines } = memoryLogger('info');
  const src = new InformerSource({ kubeconfig: api.kubeconfig, nodeName: 'node-1', log, backoff: { initialMs: 50, maxMs: 200 } });
  t.teardown(() => src.close());
  const r = recorder();
  await src.start(r.h);
  await until('synced', () => r.synced() === 1, 5000);
  t.equal(api.slices.lists, 3, 'two failures, then a list that works');
  t.equal(lines.filter((l) => /msg="informer failed, restarting" kind=EndpointSlice/.test(l)).length, 2);
  t.same(r.events.slice().sort(), ['service web/a port=80', 'synced'], 'no Node: synced all the same');
});

t.test('slices carry their last-change-trigger-time; the cache keeps slim objects and still compares resourceVersions', async (t) => {
  const api = await fakeApi();
  t.teardown(() => api.close());
  const TRIGGER = 'endpoints.kubernetes.io/last-change-trigger-time';
  const stamped = (name: string, ips: string[], at?: string): Obj => {
    const o = eps(name, ips);
    (o.metadata as Record<string, unknown>).annotations = { ...(at ? { [TRIGGER]: at } : {}), 'kubectl.kubernetes.io/last-applied-configuration': 'x'.repeat(1000) };
    (o.metadata as Record<string, unknown>).managedFields = [{ manager: 'endpointslice-controller' }];
    return o;
  };
  api.services.put(service('a', 80));
  api.slices.put(stamped('a-1', ['10.244.1.1'], '2026-01-02T03:04:05.123456789Z'));
  const src = new InformerSource({ kubeconfig: api.kubeconfig, nodeName: 'node-1', log: memoryLogger('info').log, backoff: { initialMs: 50, maxMs: 200 } });
  t.teardown(() => src.close());
  const seen: Array<{ key: string; trigger: number | undefined; obj: unknown }> = [];
  const r = recorder();
  await src.start({
    ...r.h,
    endpointSlice: (key, s, trigger) => {
      seen.push({ key, trigger, obj: s });
      r.h.endpointSlice(key, s);
    },
    service: (key, s) => {
      seen.push({ key, trigger: undefined, obj: s });
      r.h.service(key, s);
    },
  });
  await until('synced', () => r.synced() === 1);
  await until('watches open', () => api.services.watches.size === 1 && api.slices.watches.size === 1);
  t.equal(seen.find((x) => x.key === 'web/a-1')?.trigger, Date.parse('2026-01-02T03:04:05.123Z'), 'listed slice: trigger time (ms precision)');

  api.slices.put(stamped('a-1', ['10.244.1.2'], '2026-01-02T03:04:06Z'));
  api.slices.put(stamped('a-2', ['10.244.1.3']));
  await until('watch events', () => seen.filter((x) => x.key.startsWith('web/a-')).length === 3);
  t.same(seen.filter((x) => x.key.startsWith('web/a-')).slice(1).map((x) => [x.key, x.trigger]), [['web/a-1', Date.parse('2026-01-02T03:04:06Z')], ['web/a-2', undefined]], 'watch events: trigger time when annotated');
  for (const x of seen) t.notMatch(JSON.stringify(x.obj), /managedFields|last-applied|resourceVersion/, `${x.key}: the handler sees the projection only`);

  // A re-list (410) with nothing changed: same resourceVersions, so no update reaches the handler; a deletion does.
  const before = seen.length;
  api.slices.del(api.slices.objects.get('web/a-2')!, false);
  api.slices.goneNextWatch = true;
  api.slices.dropWatches();
  await until('deletion after re-list', () => r.events.includes('slice web/a-2 deleted'), 5000);
  t.same(seen.slice(before).map((x) => [x.key, x.obj === undefined]), [['web/a-2', true]], 'only the deletion: the unchanged slice is not redelivered');
});

t.test('lists in pages, handing each page over on the first list; an expired continue token starts the list over', async (t) => {
  const api = await fakeApi();
  t.teardown(() => api.close());
  for (let i = 0; i < 7; i++) api.services.put(service(`s${i}`, 80 + i));
  // The token expires after the first page was handed over, and s1 is deleted meanwhile.
  api.services.expireNextContinue = () => api.services.del(api.services.objects.get('web/s1')!, false);
  const { log, lines } = memoryLogger('info');
  const src = new InformerSource({ kubeconfig: api.kubeconfig, nodeName: 'node-1', log, backoff: { initialMs: 50, maxMs: 200 }, listPageSize: 3 });
  t.teardown(() => src.close());
  const r = recorder();
  await src.start(r.h);
  await until('synced', () => r.synced() === 1, 5000);
  t.same(
    api.services.listQueries,
    [
      { limit: '3', cont: null },
      { limit: '3', cont: '3' }, // 410: the token expired
      { limit: '3', cont: null },
      { limit: '3', cont: '3' }, // six left: two pages
    ],
    'pages of 3; after the 410 the list starts over',
  );
  t.equal(lines.filter((l) => /msg="informer failed, restarting" kind=Service .*status=410/.test(l)).length, 1, 'the expired token is logged with its status');
  const svcEvents = r.events.filter((e) => e.startsWith('service'));
  t.same(svcEvents.slice(0, 3), ['service web/s0 port=80', 'service web/s1 port=81', 'service web/s2 port=82'], 'the first page was handed over before the list failed');
  t.same(
    svcEvents.slice(3),
    ['service web/s0 port=80', 'service web/s2 port=82', 'service web/s3 port=83', 'service web/s4 port=84', 'service web/s5 port=85', 'service web/s6 port=86', 'service web/s1 deleted'],
    'the retry hands every page over again, then reports what the failed attempt handed over and is gone now',
  );
  t.ok(r.events.indexOf('synced') > r.events.indexOf('service web/s1 deleted'), 'synced after the deletion');

  // Once synced, a re-list (410 on the watch) goes through ListWatch: only what changed is delivered.
  r.events.length = 0;
  api.services.put(service('s7', 87), false);
  api.services.goneNextWatch = true;
  api.services.dropWatches();
  await until('re-list', () => r.events.includes('service web/s7 port=87'), 5000);
  await new Promise((res) => setTimeout(res, 100));
  t.same(r.events, ['service web/s7 port=87'], 're-list after sync: the new object only, no re-delivery of unchanged ones');
});
