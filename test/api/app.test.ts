// The agent API over maps programmed by the real syncer into a FakeMapWriter.
//
// Address conventions: ClusterIPs 10.96.0.x, pods 10.244.<node>.<pod>
// (node-1 = this node).

import t, { type Test } from 'tap';
import * as abi from '../../src/maps/abi.js';
import { FakeMapWriter } from '../../src/maps/writer.js';
import { buildApi, parseListen, type ApiDeps } from '../../src/api/app.js';
import { computeDesired } from '../../src/proxy/desired.js';
import { Syncer } from '../../src/proxy/syncer.js';
import { silentLogger } from '../../src/log.js';
import { NODE, slice, svc } from '../proxy/fixtures.js';

const S = abi.KBP_MAP_SERVICES;
const B = abi.KBP_MAP_BACKENDS;
const R = abi.KBP_MAP_REVNAT;

async function build(t: Test, over: Partial<ApiDeps> = {}) {
  const maps = new FakeMapWriter({ [S]: { keySize: 12, valueSize: 16 }, [B]: { keySize: 4, valueSize: 8 }, [R]: { keySize: 4, valueSize: 8 } });
  const syncer = new Syncer({ writer: maps, log: silentLogger(), now: () => new Date('2026-01-02T03:04:05.000Z') });
  let ready = false;
  const app = await buildApi({
    nodeName: NODE,
    reader: maps,
    frontend: (id) => syncer.frontend(id),
    health: () => ({ ready, lastUpdated: syncer.stats.lastSuccess }),
    now: () => new Date('2026-01-02T03:04:06.000Z'),
    ...over,
  });
  t.teardown(() => app.close());
  return { app, maps, syncer, setReady: (r: boolean) => (ready = r) };
}

t.test('GET /healthz: 503 before the first sync and attach, 200 after', async (t) => {
  const { app, syncer, setReady } = await build(t);
  let r = await app.inject({ method: 'GET', url: '/healthz' });
  t.equal(r.statusCode, 503);
  t.same(r.json(), { lastUpdated: null, currentTime: '2026-01-02T03:04:06.000Z', nodeName: 'node-1' });
  await syncer.sync(computeDesired([], [], NODE));
  r = await app.inject({ method: 'GET', url: '/healthz' });
  t.equal(r.statusCode, 503, 'synced but devices not attached yet');
  setReady(true);
  r = await app.inject({ method: 'GET', url: '/healthz' });
  t.equal(r.statusCode, 200);
  t.same(r.json(), { lastUpdated: '2026-01-02T03:04:05.000Z', currentTime: '2026-01-02T03:04:06.000Z', nodeName: 'node-1' });
});

t.test('GET /v1/services: frontends and slot backends decoded from the maps, names from the syncer', async (t) => {
  const { app, maps, syncer } = await build(t);
  await syncer.sync(
    computeDesired(
      [
        svc('my-nginx', '10.96.0.10', [{ port: 80, targetPort: 8080 }]),
        svc('dns', '10.96.0.53', [{ name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 }], { sessionAffinity: 'ClientIP' }, 'kube-system'),
      ],
      [slice('my-nginx-1', 'my-nginx', [{ port: 8080 }], ['10.244.1.5', '10.244.2.7'])],
      NODE,
    ),
  );
  // A frontend the maps hold but this agent has no name for (left by an earlier run).
  await maps.update(S, abi.svcKey.encode({ vip: '10.96.0.99', port: 443, proto: 6, scope: 0, slot: 0 }), abi.svcValue.encode({ backend_id: 0, svc_id: 77, count: 1, flags: 1, affinity_timeout: 0 }));
  await maps.update(S, abi.svcKey.encode({ vip: '10.96.0.99', port: 443, proto: 6, scope: 0, slot: 1 }), abi.svcValue.encode({ backend_id: 99, svc_id: 77, count: 0, flags: 0, affinity_timeout: 0 }));
  const r = await app.inject({ method: 'GET', url: '/v1/services' });
  t.equal(r.statusCode, 200);
  t.same(r.json(), [
    {
      id: 2,
      vip: '10.96.0.10',
      port: 80,
      protocol: 'TCP',
      scope: 0,
      namespace: 'web',
      name: 'my-nginx',
      portName: '',
      flags: ['cluster-ip'],
      affinityTimeout: 0,
      backends: [
        { slot: 1, id: 1, ip: '10.244.1.5', port: 8080, protocol: 'TCP', state: 'active' },
        { slot: 2, id: 2, ip: '10.244.2.7', port: 8080, protocol: 'TCP', state: 'active' },
      ],
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
      backends: [],
    },
    {
      id: 77,
      vip: '10.96.0.99',
      port: 443,
      protocol: 'TCP',
      scope: 0,
      namespace: null,
      name: null,
      portName: null,
      flags: ['cluster-ip'],
      affinityTimeout: 0,
      backends: [{ slot: 1, id: 99, ip: null, port: null, protocol: null, state: null }],
    },
  ]);
});

t.test('errors come from the catalog and do not leak internals', async (t) => {
  const { app, maps } = await build(t);
  maps.failWith = () => Object.assign(new Error('secret /sys/fs/bpf/kbp detail'), { code: 'EPERM' });
  let r = await app.inject({ method: 'GET', url: '/v1/services' });
  t.equal(r.statusCode, 503);
  t.same(r.json(), { statusCode: 503, code: 'KBP_MAPS_UNAVAILABLE', message: 'the datapath maps cannot be read' });
  r = await app.inject({ method: 'GET', url: '/nope' });
  t.equal(r.statusCode, 404);
  t.equal(r.json().code, 'KBP_NOT_FOUND');

  const broken = await build(t, {
    health: () => {
      throw new Error('secret');
    },
  });
  r = await broken.app.inject({ method: 'GET', url: '/healthz' });
  t.equal(r.statusCode, 500);
  t.same(r.json(), { statusCode: 500, code: 'KBP_INTERNAL', message: 'internal error' });
});

t.test('parseListen', async (t) => {
  t.same(parseListen('127.0.0.1:10256'), { host: '127.0.0.1', port: 10256 });
  t.same(parseListen('[::1]:80'), { host: '::1', port: 80 });
  t.throws(() => parseListen('127.0.0.1'), /HOST:PORT/);
  t.throws(() => parseListen('h:70000'), /HOST:PORT/);
});
