// The agent against a real kube-apiserver (etcd + kube-apiserver built from
// the published modules, src/testbed/apiserver.ts), running in a node
// network namespace with --kubeconfig pointing at a relay of the API into
// that namespace. There is no controller manager and no kubelet: the test
// creates the Node, the Service and its EndpointSlice through the API, as the
// EndpointSlice controller would.
//
// Checks, each seen in the datapath (traffic from the client pod, and the
// kernel maps through the agent's API): traffic to the ClusterIP reaches both
// backends; removing an endpoint from the slice stops new requests to it
// within 1 s; scaling up and down; an endpoint marked terminating keeps its
// established flows while new flows avoid it; sessionAffinity ClientIP pins
// one client to one backend, and back to None spreads again; a restart of the
// agent writes nothing to the maps (kbp_map_writes_total stays 0) and no
// request fails meanwhile; a restart of kube-apiserver under the running
// agent: it reconnects without writing anything, then converges on changes
// made right after the restart, with no stale backend left.
//
// Address conventions: ClusterIPs 10.96.0.50 and .51 (the API server's
// 10.96.0.0/12 range), pods 10.244.1.x on node "node-1", client 10.244.1.100.
// Needs root, a built tree (make build) and the Kubernetes binaries (make
// k8s-bins; skipped with a reason when they cannot be built).

import t from 'tap';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { ensureK8sBins, K8sBinsUnavailable, relayInto, startControlPlane, type ControlPlane } from '../../src/testbed/apiserver.js';
import { Testbed } from '../../src/testbed/netns.js';
import { Cluster, POD_DEVICE_GLOB } from '../../src/testbed/topology.js';
import { Probe, childEnv, startPodServer } from '../../src/testbed/programs.js';
import { agentEnv, agentNodeArgs, kbpBin } from '../../src/testbed/agent.js';
import type { HttpResult } from '../../src/testbed/probe-protocol.js';

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const VIP = '10.96.0.50';
const VIP2 = '10.96.0.51';
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

const slice = (endpoints: Array<{ ip: string; pod: string; terminating?: boolean }>, service = 'web', name = 'web-abc12', port = 8080) => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name, namespace: NS, labels: { 'kubernetes.io/service-name': service, 'endpointslice.kubernetes.io/managed-by': 'kbp-test' } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port, protocol: 'TCP' }],
  endpoints: endpoints.map((e) => ({
    addresses: [e.ip],
    conditions: e.terminating ? { ready: false, serving: true, terminating: true } : { ready: true, serving: true, terminating: false },
    nodeName: NODE,
    targetRef: { kind: 'Pod', namespace: NS, name: e.pod },
  })),
});

// Runs in the client pod: opens N TCP connections to HOST:PORT and keeps them
// idle (the datapath has picked a backend for each); on a line "go" on stdin
// sends one GET on each and prints which pod answered, as one JSON line.
const HELD_CONNECTIONS = `
const net = require('node:net');
const [host, port, n] = process.argv.slice(1);
const socks = [];
let open = 0;
for (let i = 0; i < Number(n); i++) {
  const s = net.connect(Number(port), host, () => { if (++open === Number(n)) console.log('connected'); });
  s.on('error', () => {});
  socks.push(s);
}
require('node:readline').createInterface({ input: process.stdin }).on('line', async () => {
  const out = await Promise.all(socks.map((s) => new Promise((resolve) => {
    let body = '';
    const t = setTimeout(() => resolve({ ok: false, pod: null, error: 'timeout' }), 3000);
    s.on('data', (c) => (body += c));
    s.on('close', () => { clearTimeout(t); const m = /"pod":"([^"]+)"/.exec(body); resolve({ ok: !!m, pod: m ? m[1] : null, error: m ? null : body.slice(0, 100) || 'closed' }); });
    s.write('GET / HTTP/1.1\\r\\nHost: web\\r\\n\\r\\n');
  })));
  console.log(JSON.stringify(out));
  process.exit(0);
});
`;

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
  const c = await cluster.addPod('web-c', '10.244.1.13');
  for (const p of [a, b, c]) await startPodServer(tb, p.ns, p.name, 8080);
  // web2's port on web-a: its flows never share a reply tuple (web-a:8080 -> client:port)
  // with the thousands of earlier flows to web, whose closed entries the datapath
  // keeps for a while (a new flow on such a tuple gets another client port).
  await startPodServer(tb, a.ns, a.name, 8081);
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
      agentNodeArgs(kbpBin(), ['--host-services-cgroup', 'off', '--kubeconfig', relay.kubeconfigPath, '--node-name', NODE, '--pod-devices', POD_DEVICE_GLOB, '--bpffs', cluster.bpffs, '--api-listen', '127.0.0.1:10256', '--log-level', 'debug']),
      { logFile, env: agentEnv(childEnv()), stopTimeoutMs: 5000 },
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
  const get = (count: number, timeoutMs = 2000, vip = VIP) => clientProbe.http(vip, 80, { count, timeoutMs });
  const failures = (rs: HttpResult[]) => rs.filter((r) => !r.ok).map((r) => r.error);
  const backendsSeen = (rs: HttpResult[]) => [...new Set(rs.map((r) => r.backend))].sort();
  const agentApi = async (p: string): Promise<string> => {
    const r = await nodeProbe.get(`http://127.0.0.1:10256${p}`, 5000);
    if (!r.ok || r.status !== 200) throw new Error(`GET ${p}: ${r.status} ${r.error ?? r.body.slice(0, 200)}`);
    return r.body;
  };
  /** The backend map as the agent reads it from the kernel: "ip:port state", sorted. */
  const backendMap = async () =>
    ((JSON.parse(await agentApi('/v1/backends')) as { items: Array<{ ip: string; port: number; state: string }> }).items.map((x) => `${x.ip}:${x.port} ${x.state}`)).sort();
  /** Slots of the ClusterIP's frontend (what new flows can pick), and its flags. */
  const frontendOf = async (vip = VIP) => {
    const items = (JSON.parse(await agentApi('/v1/services')) as Array<{ vip: string; port: number; flags: string[]; affinityTimeout: number; backends: Array<{ ip: string | null }> }>);
    const f = items.find((x) => x.vip === vip && x.port === 80);
    return f && { flags: f.flags, affinityTimeout: f.affinityTimeout, slots: f.backends.map((x) => x.ip).sort() };
  };
  /** kbp_map_writes_total summed over maps, from the agent's /metrics. */
  const mapWrites = async () => {
    const text = await agentApi('/metrics');
    const lines = text.split('\n').filter((l) => l.startsWith('kbp_map_writes_total{'));
    if (lines.length === 0) throw new Error('no kbp_map_writes_total in /metrics');
    return { total: lines.reduce((n, l) => n + Number(l.split(' ').at(-1)), 0), text };
  };
  /** Polls `check` (returning a reason while not yet true) until it holds. */
  const until = async (what: string, check: () => Promise<true | string>, timeoutMs = 10_000) => {
    const end = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < end) {
      const r = await check();
      if (r === true) return;
      last = r;
      await sleep(50);
    }
    throw new Error(`${what}: not within ${timeoutMs} ms (last: ${last})`);
  };
  const putSlice = (body: ReturnType<typeof slice>) => must(cp, 'PUT', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices/${body.metadata.name}`, body);
  const putService = async (name: string, spec: Record<string, unknown>) => {
    const cur = (await must(cp, 'GET', `/api/v1/namespaces/${NS}/services/${name}`)) as { spec: Record<string, unknown> };
    await must(cp, 'PUT', `/api/v1/namespaces/${NS}/services/${name}`, { ...cur, spec: { ...cur.spec, ...spec } });
  };

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

  await t.test('scale up to three endpoints, then down to two: seen in the maps and in traffic', async (t) => {
    await putSlice(slice([a, b, c].map((p) => ({ ip: p.ip, pod: p.name }))));
    await until('three slots', async () => ((await frontendOf())?.slots.length === 3 ? true : JSON.stringify(await frontendOf())));
    t.same(await backendMap(), [`${a.ip}:8080 active`, `${b.ip}:8080 active`, `${c.ip}:8080 active`], 'backend map: three active backends');
    let rs = await get(40);
    t.same(failures(rs), []);
    t.same(backendsSeen(rs), [a.name, b.name, c.name], 'all three answer');

    await putSlice(slice([a, c].map((p) => ({ ip: p.ip, pod: p.name }))));
    await until('two slots', async () => ((await frontendOf())?.slots.length === 2 ? true : JSON.stringify(await frontendOf())));
    t.same((await frontendOf())?.slots, [a.ip, c.ip].sort());
    t.same(await backendMap(), [`${a.ip}:8080 active`, `${c.ip}:8080 active`], 'the removed backend is gone from the backend map');
    rs = await get(30);
    t.same(failures(rs), []);
    t.same(backendsSeen(rs), [a.name, c.name], 'only the remaining two answer');
  });

  await t.test('an endpoint marked terminating: established flows to it keep working, new flows avoid it', async (t) => {
    // Twelve idle connections through the ClusterIP: with two backends, some are on web-c (all on web-a: p = 1/4096).
    const held = tb.spawn(client.ns, [process.execPath, '-e', HELD_CONNECTIONS, VIP, '80', '12'], { env: childEnv(), stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: held.stdout! });
    const nextLine = () => new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('held connections: no output within 10 s')), 10_000);
      lines.once('line', (l) => {
        clearTimeout(timer);
        resolve(l);
      });
    });
    t.equal(await nextLine(), 'connected');

    await putSlice(slice([{ ip: a.ip, pod: a.name }, { ip: c.ip, pod: c.name, terminating: true }]));
    await until('one slot', async () => ((await frontendOf())?.slots.length === 1 ? true : JSON.stringify(await frontendOf())));
    t.same((await frontendOf())?.slots, [a.ip], 'new flows can pick only the ready endpoint');
    t.same(await backendMap(), [`${a.ip}:8080 active`, `${c.ip}:8080 terminating`], 'the terminating backend stays in the backend map');

    const rs = await get(30);
    t.same(failures(rs), []);
    t.same(backendsSeen(rs), [a.name], 'new connections avoid the terminating endpoint');

    held.stdin!.write('go\n');
    const out = JSON.parse(await nextLine()) as Array<{ ok: boolean; pod: string | null; error: string | null }>;
    t.same(out.filter((x) => !x.ok).map((x) => x.error), [], 'every established connection still works');
    const onC = out.filter((x) => x.pod === c.name).length;
    t.ok(onC > 0, `established connections answered by the terminating endpoint: ${onC} of ${out.length}`);
    t.ok(out.every((x) => x.pod === a.name || x.pod === c.name));
  });

  await t.test('sessionAffinity ClientIP pins the client to one backend; back to None spreads again', async (t) => {
    await putSlice(slice([a, c].map((p) => ({ ip: p.ip, pod: p.name }))));
    await until('two slots', async () => ((await frontendOf())?.slots.length === 2 ? true : JSON.stringify(await frontendOf())));
    await putService('web', { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } } });
    await until('affinity flag', async () => ((await frontendOf())?.flags.includes('affinity') ? true : JSON.stringify(await frontendOf())));
    t.equal((await frontendOf())?.affinityTimeout, 600, 'timeout programmed');
    let rs = await get(30);
    t.same(failures(rs), []);
    t.equal(backendsSeen(rs).length, 1, `30 new connections from one client hit one backend (${backendsSeen(rs).join(', ')})`);
    const aff = (JSON.parse(await agentApi('/v1/affinity')) as { items: Array<{ client: string }> }).items;
    t.ok(aff.some((x) => x.client === client.ip), 'the affinity map holds the client');

    await putService('web', { sessionAffinity: 'None', sessionAffinityConfig: null });
    await until('affinity off', async () => (!(await frontendOf())?.flags.includes('affinity') ? true : JSON.stringify(await frontendOf())));
    rs = await get(40);
    t.same(failures(rs), []);
    t.same(backendsSeen(rs), [a.name, c.name], 'both backends answer again');

    // Back to the state the restart test expects: web-a alone.
    await putSlice(slice([{ ip: a.ip, pod: a.name }]));
    await until('one slot', async () => (JSON.stringify((await frontendOf())?.slots) === JSON.stringify([a.ip]) ? true : JSON.stringify(await frontendOf())));
    await until('backend map', async () => (JSON.stringify(await backendMap()) === JSON.stringify([`${a.ip}:8080 active`]) ? true : JSON.stringify(await backendMap())));
  });

  let current = first;
  const top = t; // the agent started by the next test outlives it
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
    top.teardown(() => (second.child.exitCode === null ? void second.child.kill('SIGKILL') : undefined));
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
    const w = await mapWrites();
    t.equal(w.total, 0, 'kbp_map_writes_total of the new agent stays 0');
    t.match(w.text, /kubeproxy_sync_proxy_rules_duration_seconds_count [1-9]/, 'syncs observed');
    current = second;
  });

  await t.test('kube-apiserver restarted under the agent: reconnects writing nothing, then converges on changes made meanwhile', async (t) => {
    const before = await mapWrites();
    const relisted = async () => ((await current.log()).match(/msg=re-listed/g) ?? []).length;
    const relistedBefore = await relisted();
    await cp.restartApiServer();
    // Every informer lists again (its watch broke while the server was down).
    await until('informers re-listed', async () => ((await relisted()) - relistedBefore >= 3 ? true : `${(await relisted()) - relistedBefore} re-listed`), 60_000);
    await sleep(300);
    t.equal((await mapWrites()).total, before.total, 'nothing written by the reconnect (same cluster)');
    t.match(await current.log(), /msg="informer failed, restarting"/, 'the informers saw the server go away');

    // Stop the API server again and change the cluster right after it is back,
    // before the agent's backoff lets it reconnect.
    const relisted2 = await relisted();
    await cp.restartApiServer();
    await putSlice(slice([b, c].map((p) => ({ ip: p.ip, pod: p.name }))));
    await must(cp, 'POST', `/api/v1/namespaces/${NS}/services`, {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web2', namespace: NS },
      spec: { clusterIP: VIP2, ports: [{ name: 'http', port: 80, targetPort: 8081, protocol: 'TCP' }] },
    });
    await must(cp, 'POST', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, slice([{ ip: a.ip, pod: a.name }], 'web2', 'web2-xyz89', 8081));
    await until('converged', async () => {
      const bm = JSON.stringify(await backendMap());
      const want = JSON.stringify([`${a.ip}:8081 active`, `${b.ip}:8080 active`, `${c.ip}:8080 active`]);
      const f1 = await frontendOf();
      const f2 = await frontendOf(VIP2);
      return bm === want && JSON.stringify(f1?.slots) === JSON.stringify([b.ip, c.ip].sort()) && JSON.stringify(f2?.slots) === JSON.stringify([a.ip]) ? true : `${bm} ${JSON.stringify(f1)} ${JSON.stringify(f2)}`;
    }, 60_000);
    t.ok((await relisted()) > relisted2, 'reconnected');
    let rs = await get(30);
    t.same(failures(rs), []);
    t.same(backendsSeen(rs), [b.name, c.name], 'web: only the endpoints set while the agent was disconnected');
    rs = await get(10, 2000, VIP2);
    t.same(failures(rs), []);
    t.same(backendsSeen(rs), [a.name], 'web2, created meanwhile, answers');
    current.child.kill('SIGTERM');
    await new Promise((r) => current.child.once('exit', r));
  });
});
