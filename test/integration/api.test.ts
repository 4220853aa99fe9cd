// End to end over the agent's REST API (issue 5): `kbp agent` runs in a node
// namespace with the real datapath maps, a client pod makes TCP and UDP
// requests to the seed example's ClusterIP and to a second Service with
// sessionAffinity: ClientIP, and every dump route is checked against what the
// manifests asked for and what the kernel holds: the pinned maps are read
// independently with bpftool (src/testbed/mapdump.ts). The `kbp` commands
// then print the same from inside the node namespace.
//
// Needs root and a build (make build: bin/kbp.js, dist/, the BPF object and
// the addon).

import t from 'tap';
import path from 'node:path';
import { stringify } from 'yaml';
import * as abi from '../../src/maps/abi.js';
import { formatMap } from '../../src/maps/format.js';
import type { MapEntry } from '../../src/maps/writer.js';
import { projectRoot } from '../../src/paths.js';
import { Agent, kbpInNode } from '../../src/testbed/agent.js';
import { dumpPinnedMap, pinnedEntries } from '../../src/testbed/mapdump.js';
import { manifestFile, readServiceSpec, serviceObjects, writeFileAtomic, type ServiceSpec } from '../../src/testbed/manifests.js';
import { cleanupStale, listNamespaces, Testbed } from '../../src/testbed/netns.js';
import type { HttpResult } from '../../src/testbed/probe-protocol.js';
import { CLIENT_IP, serviceScenario, tally, type ServiceScenario } from '../../src/testbed/scenario.js';

const UDP_PORT = 5300;
const STICKY_VIP = '10.96.0.51';
const STICKY_TIMEOUT = 600;
const TCP_REQUESTS = 24;
const UDP_REQUESTS = 12;
const STICKY_REQUESTS = 10;

interface SlotBackend { slot: number; id: number; ip: string | null; port: number | null; protocol: string | null; state: string | null }
interface Frontend {
  id: number; vip: string; port: number; protocol: string; scope: number; namespace: string | null; name: string | null; portName: string | null;
  flags: string[]; affinityTimeout: number; backends: SlotBackend[]; drift: string[];
}
interface Backend { id: number; ip: string; port: number; protocol: string; state: string; frontends: number[] }
interface Ct { direction: 'forward' | 'reply'; protocol: string; src: string; dst: string; client: string; serviceId: number; backendId: number; flags: string[]; tcpFlags: string[]; ageSeconds: number; idleSeconds: number }
interface Affinity { client: string; serviceId: number; backendId: number; slot: number; idleSeconds: number }
interface Page<T> { items: T[]; continue: string | null; scanned: number }
interface Decoded { key: Record<string, unknown>; value: Record<string, unknown> }
interface MapInfo { name: string; type: string; keySize: number; valueSize: number; maxEntries: number; entries: number }
interface Stat { index: number; name: string; packets: number; bytes: number }

/** What mapdump.ts prints for a conntrack entry, from the API's view of it. */
const ctLine = (c: Ct): string =>
  `${c.direction === 'forward' ? 'forward' : 'reply  '} ${c.src} -> ${c.dst}/${c.protocol} -> backend=${c.backendId} svc=${c.serviceId} flags=${c.flags.join(',') || '-'}`;
/** Identity of a conntrack entry (its key). */
const ctKeyOf = (c: Ct): string => `${c.direction} ${c.protocol} ${c.src} ${c.dst}`;

/** A decoded entry of /v1/maps/{name} encoded back through the same codec (u64 came as decimal strings). */
function reencode(codec: abi.StructCodec<object>, fields: Record<string, unknown>): Buffer {
  const v: Record<string, unknown> = { ...fields };
  for (const f of codec.fields) if (f.kind === 'u64') v[f.name] = BigInt(v[f.name] as string);
  return codec.encode(v);
}

if (process.getuid?.() !== 0) {
  t.plan(0, 'needs root (network namespaces, bpffs, tc)');
} else {
  await cleanupStale();
  const example = await readServiceSpec(path.join(projectRoot, 'examples', 'my-nginx'));
  const http = example.ports.find((p) => p.protocol === 'TCP' && p.name === 'http');
  if (!http) throw new Error('examples/my-nginx: no TCP port named http');
  const spec: ServiceSpec = { ...example, ports: [...example.ports, { name: 'echo', port: UDP_PORT, targetPort: http.targetPort, protocol: 'UDP' }] };
  // The same pods behind a second ClusterIP with sessionAffinity: ClientIP.
  const sticky: ServiceSpec = { ...example, name: `${example.name}-sticky`, clusterIP: STICKY_VIP, ports: [http] };
  const podOfIp = new Map(spec.endpoints.map((e) => [e.ip, e.podName]));

  const tb = Testbed.create();
  let sc!: ServiceScenario;
  let agent!: Agent;
  const pin = (name: string) => path.join(sc.cluster.bpffs, name);
  const get = <T>(p: string) => agent.getJson(p) as Promise<T>;
  const kbp = async (...args: string[]) => {
    const r = await kbpInNode(sc.cluster, [...args, '--api', agent.apiUrl]);
    return r.stdout;
  };
  async function all<T>(p: string, limit: number): Promise<{ items: T[]; pages: number }> {
    const items: T[] = [];
    let token: string | null = null;
    let pages = 0;
    do {
      const page: Page<T> = await get<Page<T>>(`${p}${p.includes('?') ? '&' : '?'}limit=${limit}${token ? `&continue=${encodeURIComponent(token)}` : ''}`);
      if (page.items.length > limit) throw new Error(`${p}: a page of ${page.items.length} items above limit ${limit}`);
      items.push(...page.items);
      token = page.continue;
      pages++;
    } while (token);
    return { items, pages };
  }

  t.teardown(async () => {
    if (!t.passing() && agent) process.stderr.write(`${await agent.logTail(80)}\n`);
    await tb.teardown();
  });

  const failed = (rs: HttpResult[]) => rs.filter((r) => !r.ok).map((r) => r.error ?? `HTTP ${r.status}`);
  let tcp: HttpResult[] = [];
  const udpPods: string[] = [];
  let stuck: HttpResult[] = [];
  let services: Frontend[] = [];
  let backends: Backend[] = [];
  t.before(async () => {
    sc = await serviceScenario(tb, spec);
    const [svcObj, sliceObj] = serviceObjects(sticky);
    Object.assign(svcObj.spec as object, { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: STICKY_TIMEOUT } } });
    await writeFileAtomic(manifestFile(sc.manifestsDir, sticky), [svcObj, sliceObj].map((o) => stringify(o)).join('---\n'));
    agent = await Agent.start(tb, sc.cluster, sc.nodeProbe, { manifestsDir: sc.manifestsDir });
    await agent.waitHealthy(30_000);

    // ---- client traffic: TCP on new connections, UDP from new sockets, and the sticky Service
    tcp = await sc.clientProbe.http(spec.clusterIP, http.port, { count: TCP_REQUESTS, timeoutMs: 2000 });
    for (let i = 0; i < UDP_REQUESTS; i++) {
      const r = await sc.clientProbe.udp(spec.clusterIP, UDP_PORT);
      udpPods.push(r.ok ? (JSON.parse(r.body) as { pod: string }).pod : '(failed)');
    }
    stuck = await sc.clientProbe.http(STICKY_VIP, http.port, { count: STICKY_REQUESTS, timeoutMs: 2000 });

    services = await get<Frontend[]>('/v1/services');
    backends = (await get<{ items: Backend[] }>('/v1/backends')).items;
  });

  t.test('client traffic went through the ClusterIPs', async (t) => {
    t.same(failed(tcp), [], `${TCP_REQUESTS} TCP requests succeeded`);
    t.notOk(udpPods.includes('(failed)'), `${UDP_REQUESTS} UDP requests answered`);
    t.same(failed(stuck), [], `${STICKY_REQUESTS} requests to the sticky Service succeeded`);
    t.equal(tally(stuck).size, 1, 'sessionAffinity ClientIP: one backend answered them all');
  });

  // ---- services and backends: the manifests
  const frontend = (vip: string, port: number, protocol: string): Frontend => {
    const f = services.find((s) => s.vip === vip && s.port === port && s.protocol === protocol);
    if (!f) throw new Error(`no frontend ${vip}:${port}/${protocol} in ${JSON.stringify(services)}`);
    return f;
  };
  const feHttp = () => frontend(spec.clusterIP, http.port, 'TCP');
  const feUdp = () => frontend(spec.clusterIP, UDP_PORT, 'UDP');
  const feSticky = () => frontend(STICKY_VIP, http.port, 'TCP');
  const backendPod = (id: number) => podOfIp.get(backends.find((b) => b.id === id)?.ip ?? '') ?? `(backend ${id})`;

  t.test('/v1/services: every frontend of the manifests, with their endpoints, no drift', async (t) => {
    const want = [
      ...spec.ports.map((p) => ({ svc: spec, p })),
      ...sticky.ports.map((p) => ({ svc: sticky, p })),
    ];
    t.same(
      services.map((f) => `${f.vip}:${f.port}/${f.protocol} ${f.namespace}/${f.name}:${f.portName}`).sort(),
      want.map(({ svc, p }) => `${svc.clusterIP}:${p.port}/${p.protocol} ${svc.namespace}/${svc.name}:${p.name}`).sort(),
      'frontends = the Services ports',
    );
    for (const { svc, p } of want) {
      const f = frontend(svc.clusterIP, p.port, p.protocol);
      t.same(
        f.backends.map((b) => `${b.ip}:${b.port}/${b.protocol} ${b.state}`).sort(),
        svc.endpoints.map((e) => `${e.ip}:${p.targetPort}/${p.protocol} active`).sort(),
        `${f.vip}:${f.port}/${f.protocol}: backends = the EndpointSlice`,
      );
      t.same(f.drift, [], `${f.vip}:${f.port}/${f.protocol}: no drift`);
      t.ok(f.flags.includes('cluster-ip'), 'flagged cluster-ip');
    }
    t.ok(feSticky().flags.includes('affinity'), 'the sticky Service is flagged affinity');
    t.equal(feSticky().affinityTimeout, STICKY_TIMEOUT, 'with its timeout');
    t.equal(feHttp().affinityTimeout, 0, 'the other is not');
    const drift = await get<{ desiredKnown: boolean; inSync: boolean | null }>('/v1/drift');
    t.same(drift, { ...drift, desiredKnown: true, inSync: true }, '/v1/drift: in sync');
  });

  t.test('/v1/services/{id} is the listed frontend', async (t) => {
    for (const f of services) t.same(await get<Frontend>(`/v1/services/${f.id}`), f, `frontend ${f.id}`);
    const r = await sc.nodeProbe.get(`${agent.apiUrl}/v1/services/${Math.max(...services.map((f) => f.id)) + 1000}`);
    t.equal(r.status, 404, 'an unknown id is 404');
  });

  t.test('/v1/backends: one per endpoint and protocol, naming the frontends that pick it', async (t) => {
    t.same(
      backends.map((b) => `${b.ip}:${b.port}/${b.protocol} ${b.state}`).sort(),
      [...new Set(spec.endpoints.flatMap((e) => ['TCP', 'UDP'].map((p) => `${e.ip}:${http.targetPort}/${p} active`)))].sort(),
    );
    for (const f of services) {
      for (const s of f.backends) t.ok(backends.find((b) => b.id === s.id)?.frontends.includes(f.id), `backend ${s.id} lists frontend ${f.id}`);
    }
  });

  // ---- conntrack: the client's flows, with the backends that answered
  t.test('/v1/conntrack: the client flows, their backends, filters and paging', async (t) => {
    const { items: ct } = await all<Ct>('/v1/conntrack', 5000);
    const forward = (fe: Frontend) => ct.filter((c) => c.direction === 'forward' && c.serviceId === fe.id);
    const byPod = (cs: Ct[]) => {
      const m = new Map<string, number>();
      for (const c of cs) m.set(backendPod(c.backendId), (m.get(backendPod(c.backendId)) ?? 0) + 1);
      return Object.fromEntries([...m].sort());
    };
    const answered = (pods: string[]) => {
      const m = new Map<string, number>();
      for (const p of pods) m.set(p, (m.get(p) ?? 0) + 1);
      return Object.fromEntries([...m].sort());
    };
    // One forward entry per connection / UDP socket, on the backend that answered it.
    t.same(byPod(forward(feHttp())), answered(tcp.map((r) => r.backend ?? '')), `TCP: ${TCP_REQUESTS} flows, on the backends that answered`);
    t.same(byPod(forward(feUdp())), answered(udpPods), `UDP: ${UDP_REQUESTS} flows, on the backends that answered`);
    t.same(byPod(forward(feSticky())), answered(stuck.map((r) => r.backend ?? '')), `sticky: ${STICKY_REQUESTS} flows on its one backend`);
    for (const c of ct) {
      const fe = services.find((f) => f.id === c.serviceId);
      t.ok(fe?.backends.some((b) => b.id === c.backendId), `${ctKeyOf(c)}: backend ${c.backendId} is a backend of frontend ${c.serviceId}`);
      t.equal(c.client, CLIENT_IP, `${ctKeyOf(c)}: client ${CLIENT_IP}`);
    }
    for (const c of forward(feHttp())) t.equal(c.dst, `${spec.clusterIP}:${http.port}`, 'a forward TCP entry is the tuple the client sent');
    t.ok(ct.some((c) => c.direction === 'reply' && c.protocol === 'TCP' && c.flags.includes('seen-reply')), 'reply entries exist and replies were seen');

    // Filters select exactly the matching entries.
    const keys = (cs: Ct[]) => cs.map(ctKeyOf).sort();
    for (const fe of [feHttp(), feUdp(), feSticky()]) {
      t.same(keys((await all<Ct>(`/v1/conntrack?service=${fe.id}`, 5000)).items), keys(ct.filter((c) => c.serviceId === fe.id)), `?service=${fe.id}`);
    }
    for (const id of new Set(ct.map((c) => c.backendId))) {
      t.same(keys((await all<Ct>(`/v1/conntrack?backend=${id}`, 5000)).items), keys(ct.filter((c) => c.backendId === id)), `?backend=${id}`);
    }
    t.same(keys((await all<Ct>(`/v1/conntrack?client=${CLIENT_IP}`, 5000)).items), keys(ct), `?client=${CLIENT_IP}: all of them`);
    t.same((await all<Ct>('/v1/conntrack?client=10.244.1.199', 5000)).items, [], '?client= another address: none');

    // Small pages: each entry exactly once.
    const paged = await all<Ct>('/v1/conntrack', 3);
    t.same(keys(paged.items), keys(ct), `limit=3: every entry exactly once over ${paged.pages} pages`);
    t.ok(paged.pages >= Math.ceil(ct.length / 3), 'in pages of at most 3');
    const filtered = await all<Ct>(`/v1/conntrack?service=${feHttp().id}`, 2);
    t.same(keys(filtered.items), keys(ct.filter((c) => c.serviceId === feHttp().id)), 'filtered, limit=2: each once');

    // The kernel's own copy, read with bpftool: the same entries.
    t.same(ct.map(ctLine).sort(), await dumpPinnedMap(pin(abi.KBP_MAP_CT)), 'the same entries as the pinned kbp_ct (bpftool)');
  });

  t.test('/v1/affinity: the client is pinned to the backend that answered', async (t) => {
    const { items } = await all<Affinity>('/v1/affinity', 100);
    t.equal(items.length, 1, 'one entry: one client, one sticky Service');
    const a = items[0]!;
    t.equal(a.client, CLIENT_IP);
    t.equal(a.serviceId, feSticky().id, 'for the sticky frontend');
    t.equal(backendPod(a.backendId), stuck[0]?.backend, 'naming the backend that answered');
    t.equal(feSticky().backends.find((b) => b.id === a.backendId)?.slot, a.slot, 'and its slot');
    t.ok(a.idleSeconds >= 0 && a.idleSeconds < STICKY_TIMEOUT, `idle ${a.idleSeconds} s`);
    t.same((await all<Affinity>(`/v1/affinity?service=${feHttp().id}`, 100)).items, [], 'none for the non-sticky Service');
    const idle = ({ idleSeconds: _, ...rest }: Affinity) => rest; // the clock moves between reads
    t.same((await all<Affinity>(`/v1/affinity?client=${CLIENT_IP}&service=${feSticky().id}`, 100)).items.map(idle), items.map(idle), 'filtered by client and service');
    t.same((await all<Affinity>(`/v1/affinity?backend=${a.backendId}`, 100)).items.map(idle), items.map(idle), 'filtered by backend');
  });

  t.test('/v1/maps and /v1/maps/{name}: the pinned maps', async (t) => {
    const { items: maps } = await get<{ items: MapInfo[] }>('/v1/maps');
    t.same(maps.map((m) => m.name), [...abi.DATAPATH_MAPS].sort(), 'every map the datapath pins');
    t.same(abi.DATAPATH_MAPS.filter((n) => n !== abi.KBP_MAP_STATS && !(n in abi.MAP_CODECS)), [], 'each with a codec');
    // The maps without a formatter of their own: every decoded entry, encoded
    // back, is byte for byte an entry bpftool reads from the pin.
    for (const name of [abi.KBP_MAP_CONFIG, abi.KBP_MAP_HOST_NS, abi.KBP_MAP_SNAT, abi.KBP_MAP_SRC_RANGES, abi.KBP_MAP_SOCK_REVNAT]) {
      const codec = abi.MAP_CODECS[name as keyof typeof abi.MAP_CODECS] as unknown as { key: abi.StructCodec<object>; value: abi.StructCodec<object> };
      const { items } = await all<Decoded>(`/v1/maps/${name}`, 4);
      const line = (k: Buffer, v: Buffer) => `${k.toString('hex')}=${v.toString('hex')}`;
      const raw = (await pinnedEntries(pin(name))).map((e) => line(e.key, e.value)).sort();
      t.same(items.map((e) => line(reencode(codec.key, e.key), reencode(codec.value, e.value))).sort(), raw, `${name}: decoded entries, encoded back, = the pinned map (${raw.length} entries)`);
      t.equal(maps.find((m) => m.name === name)?.keySize, codec.key.size, `${name}: key size`);
    }
    for (const name of [abi.KBP_MAP_SERVICES, abi.KBP_MAP_BACKENDS, abi.KBP_MAP_REVNAT]) {
      const codec = abi.MAP_CODECS[name as keyof typeof abi.MAP_CODECS] as unknown as { key: abi.StructCodec<object>; value: abi.StructCodec<object> };
      const { items } = await all<Decoded>(`/v1/maps/${name}`, 4);
      const entries: MapEntry[] = items.map((e) => ({ key: reencode(codec.key, e.key), value: reencode(codec.value, e.value) }));
      const pinned = await dumpPinnedMap(pin(name));
      t.same(formatMap(name, entries), pinned, `${name}: decoded entries, encoded back, = the pinned map (${pinned.length} entries)`);
      t.equal(maps.find((m) => m.name === name)?.entries, pinned.length, `${name}: entries = the pinned map's`);
      t.equal(maps.find((m) => m.name === name)?.keySize, codec.key.size, `${name}: key size`);
      t.equal(maps.find((m) => m.name === name)?.valueSize, codec.value.size, `${name}: value size`);
    }
    const ctPinned = await dumpPinnedMap(pin(abi.KBP_MAP_CT));
    const ctInfo = maps.find((m) => m.name === abi.KBP_MAP_CT);
    t.equal(ctInfo?.entries, ctPinned.length, 'kbp_ct: entries = the pinned map\'s');
    t.equal(ctInfo?.type, 'lru_hash', 'kbp_ct is an LRU hash');
    const { items: ctDecoded } = await all<Decoded>(`/v1/maps/${abi.KBP_MAP_CT}`, 5);
    const lines = ctDecoded
      .map((e) => {
        const k = e.key as { dirName: string; saddr: string; sport: number; daddr: string; dport: number; protocol: string };
        const v = e.value as { backend_id: number; svc_id: number; flagNames: string };
        return `${k.dirName === 'forward' ? 'forward' : 'reply  '} ${k.saddr}:${k.sport} -> ${k.daddr}:${k.dport}/${k.protocol} -> backend=${v.backend_id} svc=${v.svc_id} flags=${v.flagNames}`;
      })
      .sort();
    t.same(lines, ctPinned, 'kbp_ct decoded page by page = the pinned map');
    const r = await sc.nodeProbe.get(`${agent.apiUrl}/v1/maps/kbp_nosuch`);
    t.equal(r.status, 404, 'an unknown map is 404');
  });

  t.test('/v1/stats and /metrics: the datapath counters', async (t) => {
    const before = await get<{ cpus: number; items: Stat[] }>('/v1/stats');
    const pinned = await dumpPinnedMap(pin(abi.KBP_MAP_STATS));
    const after = await get<{ cpus: number; items: Stat[] }>('/v1/stats');
    const stat = (s: { items: Stat[] }, name: string) => s.items.find((i) => i.name === name)?.packets ?? -1;
    t.same(before.items.map((s) => s.name), [...abi.STAT_NAMES], 'every counter this build names, in order');
    const flows = TCP_REQUESTS + UDP_REQUESTS + STICKY_REQUESTS;
    t.ok(stat(before, 'new_flow') >= flows, `new_flow ${stat(before, 'new_flow')} >= ${flows} flows`);
    // Every TCP connection sends at least its ACK and request after the SYN; each flow gets at least one reply.
    t.ok(stat(before, 'established') >= 2 * (TCP_REQUESTS + STICKY_REQUESTS), `established ${stat(before, 'established')} >= ${2 * (TCP_REQUESTS + STICKY_REQUESTS)}`);
    t.ok(stat(before, 'revnat') >= flows, `revnat ${stat(before, 'revnat')} >= ${flows}`);
    // bpftool read between two API reads: each counter in between.
    for (const line of pinned) {
      const m = /^(\w+): (\d+) packets/.exec(line);
      if (!m) continue;
      const n = Number(m[2]);
      t.ok(stat(before, m[1]!) <= n && n <= stat(after, m[1]!), `${m[1]}: API ${stat(before, m[1]!)}..${stat(after, m[1]!)}, pinned ${n}`);
    }
    const r = await sc.nodeProbe.get(`${agent.apiUrl}/metrics`);
    t.equal(r.status, 200);
    for (const name of ['new_flow', 'established', 'revnat']) {
      const m = new RegExp(`^kbp_datapath_packets_total\\{reason="${name}"\\} (\\d+)$`, 'm').exec(r.body);
      t.ok(m && Number(m[1]) >= stat(after, name), `/metrics: kbp_datapath_packets_total{reason="${name}"} ${m?.[1]} >= ${stat(after, name)}`);
    }
  });

  t.test('/openapi.json is served and names every route', async (t) => {
    const doc = await get<{ openapi: string; paths: Record<string, unknown> }>('/openapi.json');
    t.match(doc.openapi, /^3\./);
    for (const p of ['/v1/services', '/v1/services/{id}', '/v1/backends', '/v1/conntrack', '/v1/affinity', '/v1/maps', '/v1/maps/{name}', '/v1/stats', '/metrics', '/healthz']) {
      t.ok(p in doc.paths, p);
    }
  });

  t.test('kbp services|conntrack|maps|stats print tables (in the node namespace)', async (t) => {
    const svc = await kbp('services');
    t.match(svc, /^ID\s+FRONTEND\s+SERVICE/m, 'services: a table');
    t.match(svc, `${spec.clusterIP}:${http.port}/TCP`, 'with the programmed frontend');
    t.match(svc, `${STICKY_VIP}:${http.port}/TCP`, 'and the sticky one');
    t.match(svc, `${spec.namespace}/${spec.name}:${http.name}`);
    const ct = await kbp('conntrack', '--service', String(feHttp().id));
    t.match(ct, /^DIR\s+PROTO\s+SOURCE\s+DESTINATION/m, 'conntrack: a table');
    t.match(ct, `${CLIENT_IP}:`, 'with the client');
    t.match(ct, `${spec.clusterIP}:${http.port}`, 'to the frontend');
    const maps = await kbp('maps');
    t.match(maps, /^NAME\s+TYPE\s+KEY\s+VALUE/m, 'maps: a table');
    t.match(maps, new RegExp(`^${abi.KBP_MAP_CT}\\s+lru_hash`, 'm'));
    const svcMap = await kbp('maps', abi.KBP_MAP_SERVICES);
    t.match(svcMap, `vip=${spec.clusterIP}`, 'maps NAME: decoded entries with the frontend');
    const stats = await kbp('stats');
    t.match(stats, /^COUNTER\s+PACKETS\s+BYTES/m, 'stats: a table');
    t.match(stats, /^new_flow\s+\d+/m);
  });

  t.test('teardown leaves no namespace behind', async (t) => {
    await agent.stop();
    await tb.teardown();
    t.same((await listNamespaces()).filter((n) => n.startsWith(tb.prefix)), []);
  });
}
