// `kbp bench compare`: kbp side by side with the real kube-proxy in iptables
// mode, and with talking to the pods directly, on the same workload.
//
// Topology: two node namespaces built identically (src/testbed/topology.ts),
// each with 10 backend pods 10.244.1.10-19 and two spare pods .20/.21 running
// `loadgen serve`, and client pods running `loadgen client`. Every measured
// target (mode, N, Service) gets a client pod of its own (10.244.1.100 and
// up): a client that has just made tens of thousands of short connections
// through one Service reuses its source ports through the next one, and the
// backends still hold TIME_WAIT for those (client address, port) pairs from
// a different destination as the client saw it; the first runs of this
// benchmark showed that as 1 s SYN retransmits and failed connections for
// kube-proxy and kbp alike, so fresh client addresses keep one measurement
// from seeding the next. Endpoint changes are timed from one more client.
// One node ("kpnode") only ever runs kube-proxy; the other ("kbpnode") runs
// nothing for the direct mode and kbp for the kbp mode, so kbp and direct are
// measured on a node that never had iptables rules (no conntrack, no nat
// hooks left behind), and kube-proxy on one that has them, as a real node
// would. Both proxies watch the same kube-apiserver; only one proxy runs at a
// time (the other is stopped, its rules or programs removed).
//
// For each N (ascending; Services are added through the API, N Services x 10
// endpoints pointing at the shared backend pods, plus Service "prog" with one
// endpoint):
//   iptables  kube-proxy started fresh; full sync (spawn → first sync), RSS;
//             targets: the Service KUBE-SERVICES matches last (read from
//             iptables-save after the sync) and a random one
//   direct    no proxy: the client cycles over the 10 pod IPs itself
//   kbp       kbp agent started fresh; same targets as iptables
// and per mode and target, `repetitions` times: new-connection latency at
// concurrency 1, short-connection rate at fixed concurrency (with machine CPU
// from /proc/stat and the generator's own CPU); once: keep-alive rate and
// latency; programming latency: Service prog's endpoint flipped between the
// spare pods through the API, time from just before the write to the first
// answer from the new pod (the generator polls from before the write), one
// change at a time, at least 1.1 s apart (kube-proxy's minSyncPeriod is 1 s).

import { readFile } from 'node:fs/promises';
import os from 'node:os';
import https from 'node:https';
import { apiRequest, relayInto, startControlPlane, type ControlPlane } from '../../testbed/apiserver.js';
import { iptablesSave, kubeServicesOrder } from '../../testbed/kubeproxy.js';
import { nodeObject } from '../../testbed/manifests.js';
import type { Testbed } from '../../testbed/netns.js';
import { Cluster } from '../../testbed/topology.js';
import { LoadClient, startBackend, type Dist, type LoadResult } from './loadgen.js';
import { procCpuSeconds, startProxy, type ProxyKind, type ProxyNode, type RunningProxy } from './proxies.js';

export type Mode = 'direct' | ProxyKind;
export const MODES: Mode[] = ['iptables', 'direct', 'kbp'];

export interface CompareOptions {
  scales: number[];
  endpoints: number;
  /** Rate and keep-alive runs, ms each. */
  durationMs: number;
  /** Concurrency-1 latency runs, ms each. */
  latencyMs: number;
  concurrency: number;
  /** Endpoint changes timed per mode and N. */
  changes: number;
  repetitions: number;
  progress: (s: string) => void;
}

export const FULL: Omit<CompareOptions, 'progress'> = { scales: [100, 1000, 5000, 10_000], endpoints: 10, durationMs: 3000, latencyMs: 2000, concurrency: 8, changes: 20, repetitions: 3 };
export const QUICK: Omit<CompareOptions, 'progress'> = { scales: [100], endpoints: 10, durationMs: 1000, latencyMs: 1000, concurrency: 4, changes: 5, repetitions: 1 };

export interface CpuShare {
  /** Fractions of the machine's total CPU time during the rate run. */
  user: number;
  system: number;
  softirq: number;
  busy: number;
}

export interface Run {
  services: number;
  mode: Mode;
  /** 'last': the Service kube-proxy matches last; 'random': another one; 'pods': direct. */
  target: 'last' | 'random' | 'pods';
  target_service: string | null;
  connect_p50_ms: number;
  connect_p90_ms: number;
  connect_p99_ms: number;
  request_p50_ms: number;
  request_p99_ms: number;
  conn_per_s: number;
  keepalive_req_per_s: number | null;
  keepalive_p50_ms: number | null;
  keepalive_p99_ms: number | null;
  programming_p50_ms: number | null;
  programming_p99_ms: number | null;
  full_sync_ms: number | null;
  rss_mb: number | null;
  errors: number;
  /** Connections completed over all repetitions (latency and rate runs). */
  connections: number;
  cpu: CpuShare;
  /** Generator CPU seconds per second of the rate run (1 = one core busy). */
  loadgen_cpu_cores: number;
  /** Across repetitions: min and max of the per-repetition figures. */
  spread: { connect_p99_ms: [number, number]; conn_per_s: [number, number] };
  backends_reached: number;
  /** kbp only: datapath packet counters (kbp stats) that grew during this target's runs, by outcome/drop reason. */
  kbp_counters: Record<string, number> | null;
}

export interface CompareResult {
  runs: Run[];
  /** Loopback ceiling of the generator in the client pod (client and server in the same namespace). */
  loadgen_ceiling: { conn_per_s: number; connect_p99_ms: number; cpu_cores: number };
  kube_services_order_check: Record<number, { last: string; rules: number }>;
  conditions: Record<string, unknown>;
  duration_s: number;
}

const NS = 'bench';
const PROG = 'prog';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.timeOrigin + performance.now();
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2 : NaN;
};
export const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
};

const podAddr = (j: number) => `10.244.1.${10 + j}`;
const SPARES = ['10.244.1.20', '10.244.1.21'];

/** /proc/stat's cpu line: jiffies per state. */
async function cpuStat(): Promise<number[]> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!;
  return line.trim().split(/\s+/).slice(1, 9).map(Number);
}
function cpuShare(a: number[], b: number[]): CpuShare {
  const d = b.map((x, i) => x - a[i]!);
  const total = d.reduce((s, x) => s + x, 0) || 1;
  // user nice system idle iowait irq softirq steal
  return { user: (d[0]! + d[1]!) / total, system: d[2]! / total, softirq: (d[5]! + d[6]!) / total, busy: 1 - (d[3]! + d[4]!) / total };
}

/** The admin client over one keep-alive agent; retries 429/5xx. */
class Api {
  private readonly agent: https.Agent;
  constructor(
    private readonly cp: ControlPlane,
    sockets: number,
  ) {
    const c = cp.credentials;
    this.agent = new https.Agent({ keepAlive: true, maxSockets: sockets, ca: c.caPem, cert: c.certPem, key: c.keyPem });
  }
  async must(method: string, apiPath: string, body?: unknown): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      const r = await apiRequest(this.cp.url, this.cp.credentials, method, apiPath, body, 30_000, this.agent);
      if (r.status >= 200 && r.status < 300) return r.json;
      if ((r.status === 429 || r.status >= 500) && attempt < 5) {
        await sleep(100 * 2 ** attempt);
        continue;
      }
      throw new Error(`${method} ${apiPath}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
    }
  }
  close(): void {
    this.agent.destroy();
  }
}

const serviceObj = (name: string) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: NS }, spec: { ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] } });
const sliceObj = (name: string, ips: string[]) => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `${name}-bench`, namespace: NS, labels: { 'kubernetes.io/service-name': name, 'endpointslice.kubernetes.io/managed-by': 'kbp-bench' } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true, serving: true, terminating: false } })),
});

/** One node namespace with its backends, spares and clients. */
interface BenchNode {
  proxyNode: ProxyNode;
  /** Times endpoint changes (programming latency); also the loopback ceiling. */
  progClient: LoadClient;
  /** A client in a new pod (next address from 10.244.1.101). */
  newClient(): Promise<LoadClient>;
  /** Pod name answering at each address. */
  nameAt: Map<string, string>;
}

async function buildNode(tb: Testbed, cp: ControlPlane, bin: string, nodeName: string, tag: string, endpoints: number): Promise<BenchNode> {
  const cluster = await Cluster.create(tb, { nodeName });
  const nameAt = new Map<string, string>();
  const addrs = [...Array.from({ length: endpoints }, (_, j) => podAddr(j)), ...SPARES];
  for (const [j, ip] of addrs.entries()) {
    const name = `${tag}${j}`;
    const pod = await cluster.addPod(name, ip);
    await startBackend(tb, bin, pod.ns, name);
    nameAt.set(ip, name);
  }
  const progPod = await cluster.addPod(`${tag}c`, '10.244.1.100');
  const progClient = await LoadClient.start(tb, bin, progPod.ns);
  let next = 1;
  const newClient = async () => {
    const k = next++;
    if (k > 150) throw new Error('out of client addresses');
    const pod = await cluster.addPod(`${tag}c${k}`, `10.244.1.${100 + k}`);
    return LoadClient.start(tb, bin, pod.ns);
  };
  const relay = await relayInto(tb, cluster.nodeNs, cp);
  return { proxyNode: { cluster, relay }, progClient, newClient, nameAt };
}

interface Measured {
  connect: Dist;
  request: Dist;
  rate: number;
  cpu: CpuShare;
  loadgenCores: number;
  errors: number;
  backends: number;
  /** Connections completed in the latency and rate runs. */
  connections: number;
}

async function measureOnce(client: LoadClient, targets: string[], o: CompareOptions): Promise<Measured> {
  const lat = await client.run({ op: 'conn', targets, concurrency: 1, durationMs: o.latencyMs });
  if (lat.error) throw new Error(`latency run: ${lat.error}`);
  const s0 = await cpuStat();
  const rate = await client.run({ op: 'conn', targets, concurrency: o.concurrency, durationMs: o.durationMs });
  const s1 = await cpuStat();
  if (rate.error) throw new Error(`rate run: ${rate.error}`);
  return {
    connect: lat.connectMs!,
    request: lat.requestMs!,
    rate: rate.perSecond,
    cpu: cpuShare(s0, s1),
    loadgenCores: rate.cpuSeconds / rate.seconds,
    errors: lat.errors + rate.errors,
    backends: Object.keys({ ...lat.backends, ...rate.backends }).length,
    connections: lat.requests + rate.requests,
  };
}

/** Programming latency: prog's single endpoint flipped between the spares `changes` times. */
async function programming(api: Api, node: BenchNode, vip: string, changes: number, current: { ip: string }): Promise<number[]> {
  const out: number[] = [];
  for (let n = 0; n < changes; n++) {
    const next = current.ip === SPARES[0] ? SPARES[1]! : SPARES[0]!;
    const pending = node.progClient.run({ op: 'until', target: `${vip}:80`, want: node.nameAt.get(next)!, timeoutMs: 60_000, pauseUs: 200 });
    // The generator is polling before the write starts.
    await sleep(20);
    const t0 = now();
    await api.must('PUT', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices/${PROG}-bench`, sliceObj(PROG, [next]));
    const r: LoadResult = await pending;
    if (r.error || !r.foundAt) throw new Error(`programming change ${n}: ${r.error ?? 'no answer'}`);
    out.push(r.foundAt - t0);
    current.ip = next;
    // Past kube-proxy's minSyncPeriod (1 s) since this sync, for both proxies.
    await sleep(1100);
  }
  return out;
}

export async function runCompare(tb: Testbed, bin: string, o: CompareOptions): Promise<CompareResult> {
  const started = now();
  const p = o.progress;
  p('starting etcd and kube-apiserver');
  const cp = await startControlPlane(tb, { apiServerArgs: ['--max-requests-inflight=1000', '--max-mutating-requests-inflight=1000'] });
  const api = new Api(cp, 32);
  try {
    p(`building two identical node namespaces (${o.endpoints} backend pods + 2 spares + a client each, loadgen serve/client)`);
    const kbpNode = await buildNode(tb, cp, bin, 'kbpnode', 'b', o.endpoints);
    const kpNode = await buildNode(tb, cp, bin, 'kpnode', 'k', o.endpoints);
    for (const n of ['kbpnode', 'kpnode']) await api.must('POST', '/api/v1/nodes', nodeObject(n, '172.18.0.11'));
    await api.must('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
    const progSvc = (await api.must('POST', `/api/v1/namespaces/${NS}/services`, serviceObj(PROG))) as { spec: { clusterIP: string } };
    const progVip = progSvc.spec.clusterIP;
    const progAt = { ip: SPARES[0]! };
    await api.must('POST', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, sliceObj(PROG, [progAt.ip]));

    // The generator's ceiling: client and a server in the client pod itself, over loopback.
    const ceilingServer = await startBackend(tb, bin, kbpNode.progClient.ns, 'loopback', [18080]);
    const ceil = await kbpNode.progClient.run({ op: 'conn', targets: ['127.0.0.1:18080'], concurrency: o.concurrency, durationMs: o.durationMs });
    ceilingServer.kill('SIGTERM');
    p(`generator loopback ceiling: ${ceil.perSecond.toFixed(0)} conn/s at concurrency ${o.concurrency} (generator ${(ceil.cpuSeconds / ceil.seconds).toFixed(2)} cores)`);

    const podIps = Array.from({ length: o.endpoints }, (_, j) => podAddr(j));
    const vips: string[] = [];
    const runs: Run[] = [];
    const orderCheck: CompareResult['kube_services_order_check'] = {};
    let seed = 20_251_122;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;

    for (const n of [...o.scales].sort((a, b) => a - b)) {
      p(`N=${n}: creating Services ${vips.length}..${n - 1} (${o.endpoints} endpoints each) through the API`);
      const t0 = now();
      let next = vips.length;
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (next < n) {
            const i = next++;
            const svc = (await api.must('POST', `/api/v1/namespaces/${NS}/services`, serviceObj(`svc-${i}`))) as { spec: { clusterIP: string } };
            vips[i] = svc.spec.clusterIP;
            await api.must('POST', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, sliceObj(`svc-${i}`, podIps));
          }
        }),
      );
      p(`N=${n}: created in ${((now() - t0) / 1000).toFixed(1)} s`);
      const randomIdx = Math.floor(rand() * n);
      let lastIdx = n - 1;

      for (const mode of MODES) {
        const node = mode === 'iptables' ? kpNode : kbpNode;
        // Fresh clients, one per target, made before the proxy starts (kbp
        // attaches to the devices present at start; later ones follow its link watch).
        const clients: LoadClient[] = [];
        for (let i = 0; i < (mode === 'direct' ? 1 : 2); i++) clients.push(await node.newClient());
        let proxy: RunningProxy | null = null;
        if (mode !== 'direct') {
          p(`N=${n} ${mode}: starting ${mode === 'iptables' ? 'kube-proxy' : 'the kbp agent'}`);
          proxy = await startProxy(mode, tb, node.proxyNode, { expectServices: [`${NS}/${PROG}:http`, `${NS}/svc-${n - 1}:http`], timeoutMs: 900_000 });
          p(`N=${n} ${mode}: full sync ${proxy.fullSyncMs.toFixed(0)} ms after start, RSS ${(await proxy.rssMb()).toFixed(0)} MB`);
        }
        try {
          if (mode === 'iptables') {
            const order = kubeServicesOrder(await iptablesSave(node.proxyNode.cluster.nodeNs, 'nat')).filter((s) => s.startsWith(`${NS}/svc-`));
            lastIdx = Number(/svc-(\d+):/.exec(order[order.length - 1] ?? '')?.[1] ?? n - 1);
            orderCheck[n] = { last: order[order.length - 1] ?? '', rules: order.length };
            p(`N=${n} iptables: KUBE-SERVICES sends ${order.length} bench Services; the last is svc-${lastIdx}`);
          }
          const rssMb = proxy ? await proxy.rssMb() : null;
          const targets: Array<{ target: Run['target']; idx: number | null }> = mode === 'direct' ? [{ target: 'pods', idx: null }] : [{ target: 'last', idx: lastIdx }, { target: 'random', idx: randomIdx }];
          let progLat: number[] = [];
          let keep: LoadResult | null = null;
          const rows: Array<{ t: (typeof targets)[number]; reps: Measured[]; counters: Record<string, number> | null }> = [];
          let countersBefore = mode === 'kbp' ? await proxy!.counters() : {};
          for (const [ti, t] of targets.entries()) {
            const addrs = t.idx === null ? podIps.map((ip) => `${ip}:8080`) : [`${vips[t.idx]}:80`];
            const reps: Measured[] = [];
            const client = clients[ti]!;
            for (let r = 0; r < o.repetitions; r++) {
              reps.push(await measureOnce(client, addrs, o));
              const m = reps[reps.length - 1]!;
              p(`N=${n} ${mode} ${t.target}${t.idx === null ? '' : ` (svc-${t.idx})`} rep ${r + 1}/${o.repetitions}: connect p50 ${m.connect.p50.toFixed(3)} p99 ${m.connect.p99.toFixed(3)} ms, ${m.rate.toFixed(0)} conn/s, ${m.errors} errors, machine busy ${(m.cpu.busy * 100).toFixed(0)}% (sys ${(m.cpu.system * 100).toFixed(0)}%, softirq ${(m.cpu.softirq * 100).toFixed(0)}%), generator ${m.loadgenCores.toFixed(2)} cores`);
            }
            let counters: Record<string, number> | null = null;
            if (mode === 'kbp') {
              const after = await proxy!.counters();
              const grown: Record<string, number> = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (countersBefore[k] ?? 0)]).filter(([, v]) => (v as number) > 0));
              countersBefore = after;
              counters = grown;
              p(`N=${n} kbp ${t.target}: datapath counters ${JSON.stringify(grown)}`);
            }
            rows.push({ t, reps, counters });
            if (t.target !== 'last') {
              keep = await client.run({ op: 'keepalive', targets: addrs, concurrency: o.concurrency, durationMs: o.durationMs });
              p(`N=${n} ${mode}: keep-alive ${keep.perSecond.toFixed(0)} req/s, p50 ${keep.requestMs!.p50.toFixed(3)} p99 ${keep.requestMs!.p99.toFixed(3)} ms`);
            }
          }
          if (mode !== 'direct') {
            p(`N=${n} ${mode}: ${o.changes} endpoint changes (API write → first answer from the new pod)`);
            progLat = await programming(api, node, progVip, o.changes, progAt);
            p(`N=${n} ${mode}: programming p50 ${pct(progLat, 50).toFixed(1)} ms, p99 ${pct(progLat, 99).toFixed(1)} ms`);
          }
          for (const { t, reps, counters } of rows) {
            const med = (f: (m: Measured) => number) => median(reps.map(f));
            const range = (f: (m: Measured) => number): [number, number] => [Math.min(...reps.map(f)), Math.max(...reps.map(f))];
            runs.push({
              services: n,
              mode,
              target: t.target,
              target_service: t.idx === null ? null : `svc-${t.idx}`,
              connect_p50_ms: med((m) => m.connect.p50),
              connect_p90_ms: med((m) => m.connect.p90),
              connect_p99_ms: med((m) => m.connect.p99),
              request_p50_ms: med((m) => m.request.p50),
              request_p99_ms: med((m) => m.request.p99),
              conn_per_s: med((m) => m.rate),
              keepalive_req_per_s: keep?.perSecond ?? null,
              keepalive_p50_ms: keep?.requestMs?.p50 ?? null,
              keepalive_p99_ms: keep?.requestMs?.p99 ?? null,
              programming_p50_ms: progLat.length ? pct(progLat, 50) : null,
              programming_p99_ms: progLat.length ? pct(progLat, 99) : null,
              full_sync_ms: proxy?.fullSyncMs ?? null,
              rss_mb: rssMb,
              errors: reps.reduce((s, m) => s + m.errors, 0),
              connections: reps.reduce((s, m) => s + m.connections, 0),
              cpu: { user: med((m) => m.cpu.user), system: med((m) => m.cpu.system), softirq: med((m) => m.cpu.softirq), busy: med((m) => m.cpu.busy) },
              loadgen_cpu_cores: med((m) => m.loadgenCores),
              spread: { connect_p99_ms: range((m) => m.connect.p99), conn_per_s: range((m) => m.rate) },
              backends_reached: Math.max(...reps.map((m) => m.backends)),
              kbp_counters: counters,
            });
          }
        } finally {
          if (proxy) {
            const cpu = await procCpuSeconds(proxy.pid).catch(() => NaN);
            const left = await proxy.stop();
            p(`N=${n} ${mode}: stopped (${cpu.toFixed(1)} CPU s used)${left.leftChains ? `; kube-proxy left ${left.leftChains.nat.length} nat + ${left.leftChains.filter.length} filter chains, removed` : ''}`);
          }
        }
      }
    }
    const cpus = os.cpus();
    const load = os.loadavg();
    return {
      runs,
      loadgen_ceiling: { conn_per_s: ceil.perSecond, connect_p99_ms: ceil.connectMs!.p99, cpu_cores: ceil.cpuSeconds / ceil.seconds },
      kube_services_order_check: orderCheck,
      conditions: {
        kernel: os.release(),
        cpu: cpus[0]?.model ?? 'unknown',
        cpus: cpus.length,
        node: process.version,
        kube_proxy: cp.version,
        N: o.scales,
        endpoints_per_service: o.endpoints,
        repetitions: o.repetitions,
        spread: 'min and max over repetitions (spread field of each run); the figures are medians over repetitions',
        concurrency: o.concurrency,
        rate_run_ms: o.durationMs,
        latency_run_ms: o.latencyMs,
        latency_concurrency: 1,
        changes: o.changes,
        change_spacing: '>= 1.1 s (kube-proxy minSyncPeriod 1 s; kbp --min-sync-period 100 ms)',
        load_average_at_end: load.map((x) => Number(x.toFixed(2))),
        date: new Date().toISOString(),
      },
      duration_s: (now() - started) / 1000,
    };
  } finally {
    api.close();
    await cp.stop();
  }
}
