// The agent against a real kube-apiserver (etcd + kube-apiserver built from
// the published modules, src/testbed/apiserver.ts), running in a node
// network namespace with --kubeconfig pointing at a relay of the API into
// that namespace. There is no controller manager and no kubelet: the test
// creates the Node, the Service and its EndpointSlice through the API, as the
// EndpointSlice controller would.
//
// Checks: traffic to the ClusterIP reaches both backends; removing an
// endpoint from the slice stops new requests to it within 1 s; a restart of
// the agent writes nothing to the maps and no request fails meanwhile.
//
// Address conventions: ClusterIP 10.96.0.50 (the API server's 10.96.0.0/12
// range), pods 10.244.1.x on node "node-1", client 10.244.1.100.
// Needs root, a built tree (make build) and the Kubernetes binaries (make
// k8s-bins; skipped with a reason when they cannot be built).

import t from 'tap';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ensureK8sBins, K8sBinsUnavailable, relayInto, startControlPlane, type ControlPlane } from '../../src/testbed/apiserver.js';
import { Testbed } from '../../src/testbed/netns.js';
import { Cluster, POD_DEVICE_GLOB } from '../../src/testbed/topology.js';
import { Probe, childEnv, startPodServer } from '../../src/testbed/programs.js';
import { kbpBin } from '../../src/testbed/agent.js';
import type { HttpResult } from '../../src/testbed/probe-protocol.js';

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const VIP = '10.96.0.50';
const NODE = 'node-1';
const NS = 'default';

let skip: string | false = process.getuid?.() !== 0 ? 'needs root (network namespaces, bpffs, tc)' : false;
if (!skip) {
  try {
    await ensureK8sBins();
  } catch (err) {
    if (!(err instanceof K8sBinsUnavailable)) throw err;
    skip = `Kubernetes binaries unavailable: ${err.message}`;
  }
}

const slice = (endpoints: Array<{ ip: string; pod: string }>) => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: 'web-abc12', namespace: NS, labels: { 'kubernetes.io/service-name': 'web', 'endpointslice.kubernetes.io/managed-by': 'kbp-test' } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: endpoints.map((e) => ({
    addresses: [e.ip],
    conditions: { ready: true, serving: true, terminating: false },
    nodeName: NODE,
    targetRef: { kind: 'Pod', namespace: NS, name: e.pod },
  })),
});

async function must(cp: ControlPlane, method: string, apiPath: string, body?: unknown): Promise<unknown> {
  const r = await cp.request(method, apiPath, body);
  if (r.status < 200 || r.status >= 300) throw new Error(`${method} ${apiPath}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  return r.json;
}

t.test('agent with --kubeconfig against a real API server', { skip }, async (t) => {
  const tb = Testbed.create();
  t.teardown(() => tb.teardown());
  const cp = await startControlPlane(tb);
  const cluster = await Cluster.create(tb, { nodeName: NODE });
  const a = await cluster.addPod('web-a', '10.244.1.11');
  const b = await cluster.addPod('web-b', '10.244.1.12');
  for (const p of [a, b]) await startPodServer(tb, p.ns, p.name, 8080);
  const client = await cluster.addPod('client', '10.244.1.100');
  const [clientProbe, nodeProbe] = await Promise.all([Probe.start(tb, client.ns), Probe.start(tb, cluster.nodeNs)]);
  const relay = await relayInto(tb, cluster.nodeNs, cp);

  // As a kubelet and the EndpointSlice controller would: the Node, then the Service and its slice.
  await must(cp, 'POST', '/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE, labels: { 'topology.kubernetes.io/zone': 'zone-a' } } });
  await must(cp, 'POST', `/api/v1/namespaces/${NS}/services`, {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: NS },
    spec: { clusterIP: VIP, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
  });
  await must(cp, 'POST', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, slice([{ ip: a.ip, pod: a.name }, { ip: b.ip, pod: b.name }]));

  const logDir = await tb.tempDir('agent');
  const startAgent = (label: string) => {
    const logFile = path.join(logDir, `${label}.log`);
    const child = tb.spawn(
      cluster.nodeNs,
      [process.execPath, kbpBin(), 'agent', '--kubeconfig', relay.kubeconfigPath, '--node-name', NODE, '--pod-devices', POD_DEVICE_GLOB, '--bpffs', cluster.bpffs, '--api-listen', '127.0.0.1:10256', '--log-level', 'debug'],
      { logFile, env: childEnv(), stopTimeoutMs: 5000 },
    );
    const log = () => readFile(logFile, 'utf8').catch(() => '');
    const ready = async () => {
      const end = Date.now() + 30_000;
      while (Date.now() < end) {
        const text = await log();
        if (text.includes('msg=ready')) return text;
        if (child.exitCode !== null) throw new Error(`agent exited ${child.exitCode}\n${text}`);
        await sleep(50);
      }
      throw new Error(`agent not ready within 30 s\n${(await log()).split('\n').slice(-30).join('\n')}`);
    };
    return { child, log, ready };
  };
  const get = (count: number, timeoutMs = 2000) => clientProbe.http(VIP, 80, { count, timeoutMs });
  const failures = (rs: HttpResult[]) => rs.filter((r) => !r.ok).map((r) => r.error);

  const first = startAgent('first');
  t.teardown(() => (first.child.exitCode === null ? void first.child.kill('SIGKILL') : undefined));
  const text = await first.ready();
  t.match(text, /msg="informer synced" component=informers kind=Service items=2/, 'Services listed (web and the default kubernetes Service)');
  t.match(text, /msg="informer synced" component=informers kind=Node items=1/);
  t.ok(text.indexOf('msg="objects listed"') < text.indexOf('msg="maps synced"'), 'no sync before every informer has synced');

  await t.test('traffic to the ClusterIP reaches both backends', async (t) => {
    const rs = await get(30);
    t.same(failures(rs), [], 'no request failed');
    const seen = new Set(rs.map((r) => r.backend));
    t.ok(seen.has(a.name) && seen.has(b.name), `both backends answered (${[...seen].join(', ')})`);
    const h = await nodeProbe.get('http://127.0.0.1:10256/v1/services', 2000);
    t.match(h.body, VIP, 'the agent API lists the ClusterIP');
  });

  await t.test('an endpoint removed from the slice stops new requests within 1 s', async (t) => {
    const written = now();
    await must(cp, 'PUT', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices/web-abc12`, {
      ...slice([{ ip: a.ip, pod: a.name }]),
      metadata: { ...slice([]).metadata, resourceVersion: undefined },
    });
    const results: HttpResult[] = [];
    let streak = 0;
    while (streak < 20 && now() - written < 10_000) {
      for (const r of await get(5)) {
        results.push(r);
        streak = r.ok && r.backend !== b.name ? streak + 1 : 0;
      }
    }
    t.same(failures(results), [], 'no request failed during the change');
    t.ok(streak >= 20, '20 consecutive requests avoided the removed backend');
    const lastHit = results.filter((r) => r.backend === b.name).at(-1);
    const firstAfter = lastHit ? results.find((r) => r.start > lastHit.start) : results[0];
    const stoppedMs = firstAfter ? firstAfter.start - written : Infinity;
    t.comment(`API write to the first request of the avoiding run: ${stoppedMs.toFixed(1)} ms`);
    t.ok(stoppedMs <= 1000, `stopped using ${b.name} within 1 s (${stoppedMs.toFixed(0)} ms)`);
  });

  await t.test('an agent restart writes nothing and traffic keeps flowing', async (t) => {
    let stop = false;
    const loop = (async () => {
      const rs: HttpResult[] = [];
      while (!stop) rs.push(...(await get(1)));
      return rs;
    })();
    first.child.kill('SIGTERM');
    await new Promise((r) => first.child.once('exit', r));
    const second = startAgent('second');
    t.teardown(() => (second.child.exitCode === null ? void second.child.kill('SIGKILL') : undefined));
    const text2 = await second.ready();
    await sleep(300);
    stop = true;
    const rs = await loop;
    t.same(failures(rs), [], `no request failed during the restart (${rs.length} requests)`);
    t.same([...new Set(rs.map((r) => r.backend))], [a.name], 'all to the remaining backend');
    t.match(text2, /msg="maps read" component=syncer frontends=2 slots=1 backends=1 revnat=2/, 'ids restored from the pinned maps (web with one backend, and the default kubernetes Service)');
    const synced = text2.split('\n').filter((l) => l.includes('msg="maps synced"'));
    t.ok(synced.length >= 1, 'synced at least once');
    t.match(synced[0], /full=false complete=true updates=0 deletes=0/, 'the first sync after the restart writes nothing');
    second.child.kill('SIGTERM');
    await new Promise((r) => second.child.once('exit', r));
  });
});
