// `kbp bench cluster`: the real agent against a real kube-apiserver (etcd +
// kube-apiserver from src/testbed/apiserver.ts, on loopback), at 1k and 10k
// Services x 10 endpoints created through the API.
//
// The agent runs as its own process in the root network namespace with a
// private bpffs and no device to attach (the pod-device pattern matches
// nothing), so the figures are the agent's: informers, change trackers,
// desired state, syncer and the kernel maps — and its memory.
//
//   full sync:   from the agent's "objects listed" (every informer has synced)
//                to its first "maps synced" (every entry written), both from
//                its log; the syncer's own share is the ms= of that line
//   RSS:         VmRSS (and the peak, VmHWM) of the agent from /proc/PID/status
//                once it is ready (the budget's figure), and VmRSS again after
//                the endpoint changes, once V8 had time to collect what the
//                first list and sync left behind (reported, not judged)
//   one change:  one endpoint address of a random Service replaced through the
//                API (PUT of its EndpointSlice, stamped with
//                endpoints.kubernetes.io/last-change-trigger-time), then the
//                pinned maps polled through the addon (the frontend's slots,
//                then their backends) until the new address is there: write
//                to datapath, p50/p99/max; one change at a time, each 150 ms
//                after the previous one showed (past the runner's default
//                --min-sync-period of 100 ms, which a burst waits for). The agent's
//                own kubeproxy_network_programming_duration_seconds (same
//                span, measured inside the agent) is reported as its mean.
//
// Repetitions (`repeat`) and other builds of the agent (`agents`: the
// kbp.js of another checkout, e.g. main next to a branch) are measured
// against the same API server and objects, one agent at a time, so a
// comparison does not pay for creating 10k Services again (minutes on a busy
// VM) and sees the same cluster; the figures are reported per run and as
// medians per agent.
//
// Needs root (bpffs) and the Kubernetes binaries (make k8s-bins). Not a test:
// it prints what it measured against the budgets, nothing asserts them.

import https from 'node:https';
import os from 'node:os';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import * as abi from '../maps/abi.js';
import { native, type BpfMap } from '../native/binding.js';
import { apiRequest, freePort, startControlPlane, type ApiResponse, type ControlPlane } from '../testbed/apiserver.js';
import { Testbed } from '../testbed/netns.js';
import { childEnv } from '../testbed/programs.js';
import { kbpBin } from '../testbed/agent.js';
import { AGENT_NODE_FLAGS, agentEnv } from '../agent/nodeflags.js';

export interface ClusterBenchOptions {
  json: boolean;
  /** Service counts, ascending (each scale adds Services to the previous one). */
  scales?: number[];
  endpoints?: number;
  /** Single-endpoint changes measured per scale. */
  changes?: number;
  /** Concurrent API requests while creating objects. */
  concurrency?: number;
  /** Run the agent with --cpu-prof / --heap-prof into this folder. */
  profileDir?: string;
  /** Write a V8 heap snapshot of the agent into this folder once it is ready (after the RSS is read). */
  snapshotDir?: string;
  /** Agent starts per scale and agent build (default 1). */
  repeat?: number;
  /** Agent builds to measure, each a kbp.js (default: this checkout's, labelled "this"), optionally with other node flags than AGENT_NODE_FLAGS. */
  agents?: AgentBuild[];
}

export interface ClusterScaleResult {
  agent: string;
  run: number;
  services: number;
  endpoints_per_service: number;
  create_s: number;
  list_ms: number;
  full_sync_ms: number;
  full_sync_syncer_ms: number;
  full_sync_updates: number;
  rss_mb: number;
  peak_rss_mb: number;
  rss_after_changes_mb: number;
  changes: number;
  one_endpoint_p50_ms: number;
  one_endpoint_p99_ms: number;
  one_endpoint_max_ms: number;
  api_write_p50_ms: number;
  programming_metric_mean_ms: number;
  /** The machine's 1-minute load average when the agent was ready (other jobs share the VM). */
  load_avg_1m: number;
}

const NS = 'bench';
const NODE = 'bench-node';
const TRIGGER_TIME = 'endpoints.kubernetes.io/last-change-trigger-time';
const SPACING_MS = 150;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.timeOrigin + performance.now();

/** Pod addresses: 10.128.0.0/10, 16 per Service (gen > 0: replacements, in 10.192.0.0/10). */
const podIp = (i: number, j: number, gen = 0) => abi.numberToIPv4((gen === 0 ? abi.ipv4ToNumber('10.128.0.0') : abi.ipv4ToNumber('10.192.0.0')) + ((gen * 100_003 + i * 16 + j) % 0x400000));

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
};

/** The harness's apiRequest over one keep-alive agent: 10k objects are created through it. */
class Api {
  private readonly agent: https.Agent;
  constructor(
    private readonly cp: ControlPlane,
    sockets: number,
  ) {
    const c = cp.credentials;
    this.agent = new https.Agent({ keepAlive: true, maxSockets: sockets, ca: c.caPem, cert: c.certPem, key: c.keyPem });
  }

  request(method: string, apiPath: string, body?: unknown): Promise<ApiResponse> {
    return apiRequest(this.cp.url, this.cp.credentials, method, apiPath, body, 30_000, this.agent);
  }

  async must(method: string, apiPath: string, body?: unknown): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      const r = await this.request(method, apiPath, body);
      if (r.status >= 200 && r.status < 300) return r.json;
      // 429/5xx under load: retry a few times.
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

function service(i: number) {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name: `svc-${i}`, namespace: NS }, spec: { ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] } };
}

function slice(i: number, endpoints: number, gen = 0, triggerTime?: string) {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `svc-${i}-abcde`,
      namespace: NS,
      labels: { 'kubernetes.io/service-name': `svc-${i}`, 'endpointslice.kubernetes.io/managed-by': 'kbp-bench' },
      ...(triggerTime ? { annotations: { [TRIGGER_TIME]: triggerTime } } : {}),
    },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: Array.from({ length: endpoints }, (_, j) => ({
      addresses: [podIp(i, j, j === 0 ? gen : 0)],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: `node-${j % 3}`,
      targetRef: { kind: 'Pod', namespace: NS, name: `svc-${i}-pod-${j}` },
    })),
  };
}

/** Runs `fn(i)` for i in [from, to) with `n` in flight. */
async function pool(from: number, to: number, n: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = from;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < to) await fn(next++);
    }),
  );
}

const logTime = (line: string | undefined) => (line ? Date.parse(/^time=(\S+)/.exec(line)?.[1] ?? '') : NaN);

interface RunningAgent {
  pid: number;
  logFile: string;
  apiPort: number;
  bpffs: string;
  stop(): Promise<void>;
}

/** An agent to measure: a kbp.js, and the node flags to start it with (default: the agent's own, AGENT_NODE_FLAGS and AGENT_ENV; given flags: those, in the harness's plain environment plus `env`). */
export interface AgentBuild {
  label: string;
  bin: string;
  nodeFlags?: readonly string[];
  env?: Readonly<Record<string, string>>;
}

async function startAgent(tb: Testbed, kubeconfig: string, build: AgentBuild, label: string, profileDir: string | undefined, snapshotDir: string | undefined): Promise<RunningAgent> {
  const bpffs = await tb.mountBpffs();
  const apiPort = await freePort();
  const logFile = path.join(await tb.tempDir('bench-agent'), `${label}.log`);
  const prof = [
    ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, '--heap-prof', `--heap-prof-dir=${profileDir}`] : []),
    ...(snapshotDir ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${snapshotDir}`] : []),
  ];
  const child = tb.spawn(
    null,
    [process.execPath, ...(build.nodeFlags ?? AGENT_NODE_FLAGS), ...prof, build.bin, 'agent', '--host-services-cgroup', 'off', '--kubeconfig', kubeconfig, '--node-name', NODE, '--pod-devices', 'kbpbench-nomatch-*', '--bpffs', bpffs, '--api-listen', `127.0.0.1:${apiPort}`, '--log-level', 'info'],
    { logFile, env: build.nodeFlags ? { ...childEnv(), ...build.env } : agentEnv(childEnv()), stopTimeoutMs: 10_000 },
  );
  const end = Date.now() + 600_000;
  for (;;) {
    const text = await readFile(logFile, 'utf8').catch(() => '');
    if (text.includes('msg=ready')) break;
    if (child.exitCode !== null || Date.now() > end) throw new Error(`agent ${child.exitCode !== null ? `exited ${child.exitCode}` : 'not ready in 600 s'}:\n${text.split('\n').slice(-20).join('\n')}`);
    await sleep(20);
  }
  return {
    pid: child.pid!,
    logFile,
    apiPort,
    bpffs,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** SIGUSR2 to an agent started with --heapsnapshot-signal: the file it writes into `dir`, once complete (node blocks while writing it). */
async function heapSnapshot(pid: number, dir: string): Promise<string> {
  const ours = async () => (await readdir(dir)).filter((f) => f.endsWith('.heapsnapshot') && f.includes(`.${pid}.`));
  const had = new Set(await ours());
  process.kill(pid, 'SIGUSR2');
  const end = Date.now() + 120_000;
  let last = -1;
  while (Date.now() < end) {
    await sleep(500);
    const f = (await ours()).find((x) => !had.has(x));
    if (!f) continue;
    const size = (await stat(path.join(dir, f))).size;
    // Still growing: the agent is writing it.
    if (size > 0 && size === last && (await procState(pid)) !== 'R') return path.join(dir, f);
    last = size;
  }
  throw new Error(`no heap snapshot of ${pid} in ${dir} after 120 s`);
}

async function procState(pid: number): Promise<string> {
  return /^State:\s+(\S)/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '?';
}

async function procStatusMb(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1]);
  return kb / 1024;
}

/** The backend addresses new flows to vip:80/TCP can pick, read from the pinned maps. */
async function programmedAddresses(svcMap: BpfMap, backendMap: BpfMap, vip: string): Promise<string[]> {
  const base = { vip, port: 80, proto: abi.IPPROTO_TCP, scope: abi.KBP_SCOPE_EXTERNAL };
  const entry = await svcMap.lookup(abi.svcKey.encode({ ...base, slot: 0 }));
  if (!entry) return [];
  const count = abi.svcValue.decode(entry).count;
  const slots = await Promise.all(Array.from({ length: count }, (_, s) => svcMap.lookup(abi.svcKey.encode({ ...base, slot: s + 1 }))));
  const ids = slots.flatMap((v) => (v ? [abi.svcValue.decode(v).backend_id] : []));
  const backends = await Promise.all(ids.map((id) => backendMap.lookup(abi.backendKey.encode({ id }))));
  return backends.flatMap((v) => (v ? [abi.backendValue.decode(v).ip] : []));
}

async function metricsText(port: number): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) });
  return r.text();
}

const metricValue = (text: string, name: string) => Number(text.split('\n').find((l) => l.startsWith(`${name} `))?.split(' ')[1] ?? NaN);

async function measureScale(
  agentBuild: AgentBuild,
  run: number,
  tb: Testbed,
  cp: ControlPlane,
  api: Api,
  services: number,
  endpoints: number,
  changes: number,
  vips: string[],
  createS: number,
  profileDir: string | undefined,
  snapshotDir: string | undefined,
  progress: (s: string) => void,
): Promise<ClusterScaleResult> {
  progress(`${services} Services: starting the agent (${agentBuild.label}, run ${run + 1})`);
  const agent = await startAgent(tb, cp.kubeconfigPath, agentBuild, `agent-${services}-${agentBuild.label}-${run + 1}`, profileDir, snapshotDir);
  try {
    const rss = await procStatusMb(agent.pid, 'VmRSS');
    if (snapshotDir) progress(`${services} Services: heap snapshot ${await heapSnapshot(agent.pid, snapshotDir)}`);
    const load = os.loadavg()[0]!;
    const lines = (await readFile(agent.logFile, 'utf8')).split('\n');
    const started = lines.find((l) => l.includes('msg=starting'));
    const listed = lines.find((l) => l.includes('msg="objects listed"'));
    const synced = lines.find((l, i) => i > lines.indexOf(listed!) && l.includes('msg="maps synced"'));
    if (!listed || !synced) throw new Error(`agent log lacks "objects listed" / "maps synced":\n${lines.slice(-20).join('\n')}`);
    const fullSyncMs = logTime(synced) - logTime(listed);
    const syncerMs = Number(/ ms=([\d.]+)/.exec(synced)?.[1]);
    const updates = Number(/ updates=(\d+)/.exec(synced)?.[1]);

    // One endpoint at a time, through the API, until the datapath shows it.
    const svcMap = await native().openPinnedMap(path.join(agent.bpffs, abi.KBP_MAP_SERVICES));
    const backendMap = await native().openPinnedMap(path.join(agent.bpffs, abi.KBP_MAP_BACKENDS));
    const gens = new Map<number, number>();
    let seed = 4242;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const lat: number[] = [];
    const writeMs: number[] = [];
    progress(`${services} Services: ${changes} single-endpoint changes`);
    const before = await metricsText(agent.apiPort);
    for (let n = 0; n < changes; n++) {
      // Each change on its own: past the runner's --min-sync-period (100 ms) since the last sync.
      await sleep(SPACING_MS);
      const i = Math.floor(rand() * services);
      const gen = (gens.get(i) ?? 0) + 1;
      gens.set(i, gen);
      const want = podIp(i, 0, gen);
      const t0 = now();
      await api.must('PUT', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices/svc-${i}-abcde`, slice(i, endpoints, gen, new Date(t0).toISOString()));
      writeMs.push(now() - t0);
      for (;;) {
        if ((await programmedAddresses(svcMap, backendMap, vips[i]!)).includes(want)) break;
        if (now() - t0 > 10_000) throw new Error(`svc-${i}: ${want} not in the maps after 10 s`);
        await new Promise((r) => setImmediate(r));
      }
      lat.push(now() - t0);
    }
    // The changes' own observations (the first list's slices, without a trigger time, are measured from their arrival).
    const after = await metricsText(agent.apiPort);
    const delta = (name: string) => metricValue(after, name) - metricValue(before, name);
    const progSum = delta('kubeproxy_network_programming_duration_seconds_sum');
    const progCount = delta('kubeproxy_network_programming_duration_seconds_count');
    const peak = await procStatusMb(agent.pid, 'VmHWM');
    const rssAfter = await procStatusMb(agent.pid, 'VmRSS');
    return {
      agent: agentBuild.label,
      run: run + 1,
      services,
      endpoints_per_service: endpoints,
      create_s: createS,
      list_ms: logTime(listed) - logTime(started),
      full_sync_ms: fullSyncMs,
      full_sync_syncer_ms: syncerMs,
      full_sync_updates: updates,
      rss_mb: rss,
      peak_rss_mb: peak,
      rss_after_changes_mb: rssAfter,
      changes,
      one_endpoint_p50_ms: pct(lat, 50),
      one_endpoint_p99_ms: pct(lat, 99),
      one_endpoint_max_ms: Math.max(...lat),
      api_write_p50_ms: pct(writeMs, 50),
      programming_metric_mean_ms: progCount > 0 ? (progSum / progCount) * 1000 : NaN,
      load_avg_1m: load,
    };
  } finally {
    await agent.stop();
  }
}

export async function runClusterBench(opts: ClusterBenchOptions): Promise<ClusterScaleResult[]> {
  if (process.getuid?.() !== 0) throw new Error('kbp bench cluster needs root (bpffs)');
  const scales = opts.scales ?? [1000, 10_000];
  const endpoints = opts.endpoints ?? 10;
  const changes = opts.changes ?? 200;
  const concurrency = opts.concurrency ?? 32;
  const repeat = opts.repeat ?? 1;
  const agents = opts.agents ?? [{ label: 'this', bin: kbpBin() }];
  const progress = (s: string) => process.stderr.write(`bench cluster: ${s}\n`);
  const tb = Testbed.create({ prefix: 'kbpbench' });
  const out: ClusterScaleResult[] = [];
  let cp: ControlPlane | undefined;
  try {
    progress('starting etcd and kube-apiserver');
    cp = await startControlPlane(tb, { apiServerArgs: ['--max-requests-inflight=1000', '--max-mutating-requests-inflight=1000'] });
    const api = new Api(cp, concurrency);
    try {
      await api.must('POST', '/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE, labels: { 'topology.kubernetes.io/zone': 'zone-a' } } });
      await api.must('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
      const vips: string[] = [];
      let created = 0;
      for (const n of [...scales].sort((a, b) => a - b)) {
        progress(`creating Services ${created}..${n - 1} with ${endpoints} endpoints each (${concurrency} requests in flight)`);
        const t0 = now();
        await pool(created, n, concurrency, async (i) => {
          const svc = (await api.must('POST', `/api/v1/namespaces/${NS}/services`, service(i))) as { spec: { clusterIP: string } };
          vips[i] = svc.spec.clusterIP;
          await api.must('POST', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, slice(i, endpoints));
        });
        const createS = (now() - t0) / 1000;
        created = n;
        for (let run = 0; run < repeat; run++) {
          for (const a of agents) out.push(await measureScale(a, run, tb, cp, api, n, endpoints, changes, vips, createS, opts.profileDir, opts.snapshotDir, progress));
        }
      }
    } finally {
      api.close();
    }
  } finally {
    await cp?.stop();
    await tb.teardown();
  }

  if (opts.json) {
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    return out;
  }
  const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');
  process.stdout.write(`kbp cluster benchmark: the agent against kube-apiserver ${cp!.version} (etcd, loopback); Node ${process.version}\n`);
  process.stdout.write(`single-endpoint changes one at a time, ${SPACING_MS} ms apart (past --min-sync-period 100 ms); latency = API write to the new address in the pinned maps\n`);
  const median = (xs: number[]) => pct(xs, 50);
  const rows: ClusterScaleResult[] = [...out];
  if (repeat > 1) {
    // Medians per agent and scale (run 0), after the single runs.
    for (const a of agents) {
      for (const n of scales) {
        const rs = out.filter((r) => r.agent === a.label && r.services === n);
        if (!rs.length) continue;
        const m = { ...rs[0]!, run: 0 } as ClusterScaleResult;
        for (const k of Object.keys(m) as Array<keyof ClusterScaleResult>) {
          if (typeof m[k] === 'number' && k !== 'run' && k !== 'services' && k !== 'endpoints_per_service' && k !== 'changes') (m[k] as number) = median(rs.map((r) => r[k] as number));
        }
        rows.push(m);
      }
    }
  }
  process.stdout.write(`run 0 = median of ${repeat} runs\n`);
  process.stdout.write('agent     run  services  eps/svc  create s  list ms  full sync ms  (syncer ms)  updates  RSS MB  peak MB  RSS after MB  changes  1-ep p50 ms  1-ep p99 ms  1-ep max ms  API write p50 ms  prog. metric mean ms  load 1m\n');
  for (const r of rows) {
    process.stdout.write(
      `${r.agent.padEnd(8)}  ${String(r.run).padStart(3)}  ${String(r.services).padStart(8)}  ${String(r.endpoints_per_service).padStart(7)}  ${f(r.create_s).padStart(8)}  ${f(r.list_ms, 0).padStart(7)}  ${f(r.full_sync_ms, 0).padStart(12)}  ${f(r.full_sync_syncer_ms, 0).padStart(11)}  ${String(r.full_sync_updates).padStart(7)}` +
        `  ${f(r.rss_mb, 0).padStart(6)}  ${f(r.peak_rss_mb, 0).padStart(7)}  ${f(r.rss_after_changes_mb, 0).padStart(12)}  ${String(r.changes).padStart(7)}  ${f(r.one_endpoint_p50_ms).padStart(11)}  ${f(r.one_endpoint_p99_ms).padStart(11)}  ${f(r.one_endpoint_max_ms).padStart(11)}` +
        `  ${f(r.api_write_p50_ms).padStart(16)}  ${f(r.programming_metric_mean_ms).padStart(20)}  ${f(r.load_avg_1m).padStart(7)}\n`,
    );
  }
  const verdict = (ok: boolean) => (ok ? 'within budget' : 'OVER BUDGET');
  for (const a of agents) {
    const big = rows.filter((r) => r.agent === a.label).pop()!;
    process.stdout.write(`\n${a.label}${repeat > 1 ? ` (median of ${repeat} runs)` : ''} at ${big.services} Services x ${big.endpoints_per_service} endpoints:\n`);
    process.stdout.write(`  full sync from informer sync ≤ 1 s:        ${f(big.full_sync_ms, 0)} ms — ${verdict(big.full_sync_ms <= 1000)}\n`);
    process.stdout.write(`  one endpoint change, API write to map p99 ≤ 50 ms: ${f(big.one_endpoint_p99_ms)} ms — ${verdict(big.one_endpoint_p99_ms <= 50)}\n`);
    process.stdout.write(`  agent RSS ≤ 150 MB:                        ${f(big.rss_mb, 0)} MB (peak ${f(big.peak_rss_mb, 0)}, ${f(big.rss_after_changes_mb, 0)} after the changes) — ${verdict(big.rss_mb <= 150)}\n`);
  }
  return out;
}
