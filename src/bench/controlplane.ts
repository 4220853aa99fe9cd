// `kbp bench controlplane`: what the control plane costs at scale, with the
// maps in memory (FakeMapWriter), so the figures are the agent's own work:
// change tracking, desired state and the syncer's diff — no syscalls.
//
//   full sync:      every Service and slice delivered to the trackers (as an
//                   informer's first list), then compute + sync into empty maps
//   one endpoint:   one slice of a random Service changes one address (as a
//                   watch event would), then tracker + compute + sync; repeated,
//                   p50 / p99 / max reported
//   recompute-all:  the same one-endpoint change computed the old way
//                   (computeDesired over every object, syncer visiting every
//                   frontend), for comparison
//
// Not a test: nothing here asserts a budget; it prints what it measured.

import * as abi from '../maps/abi.js';
import { FakeMapWriter } from '../maps/writer.js';
import { silentLogger } from '../log.js';
import { ProxyState } from '../proxy/state.js';
import { Syncer } from '../proxy/syncer.js';
import { computeDesired } from '../proxy/desired.js';
import type { EndpointSlice, Service } from '../k8s/types.js';

export interface ControlPlaneBenchOptions {
  json: boolean;
  scales?: Array<{ services: number; endpoints: number }>;
  changes?: number;
}

interface ScaleResult {
  services: number;
  endpoints_per_service: number;
  full_sync_ms: number;
  full_sync_updates: number;
  one_endpoint_p50_ms: number;
  one_endpoint_p99_ms: number;
  one_endpoint_max_ms: number;
  one_endpoint_writes: number;
  recompute_all_p50_ms: number;
  rss_mb: number;
}

function fakeMaps(): FakeMapWriter {
  return new FakeMapWriter({
    [abi.KBP_MAP_SERVICES]: { keySize: abi.svcKey.size, valueSize: abi.svcValue.size },
    [abi.KBP_MAP_BACKENDS]: { keySize: abi.backendKey.size, valueSize: abi.backendValue.size },
    [abi.KBP_MAP_REVNAT]: { keySize: abi.revnatKey.size, valueSize: abi.revnatValue.size },
    [abi.KBP_MAP_SRC_RANGES]: { keySize: abi.srcRangeKey.size, valueSize: abi.srcRangeValue.size },
    [abi.KBP_MAP_CT]: { keySize: abi.ctKey.size, valueSize: abi.ctValue.size },
  });
}

const vipOf = (i: number) => abi.numberToIPv4(abi.ipv4ToNumber('10.96.0.0') + 1 + i);
const podOf = (i: number, j: number, gen = 0) => abi.numberToIPv4(abi.ipv4ToNumber('10.128.0.0') + (i * 16 + j) + gen * 0x200000);

function service(i: number): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: `svc-${i}`, namespace: 'bench' },
    spec: { type: 'ClusterIP', clusterIP: vipOf(i), clusterIPs: [vipOf(i)], ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }], sessionAffinity: 'None' },
  };
}

function slice(i: number, endpoints: number, changed = -1, gen = 0): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `svc-${i}-abcde`, namespace: 'bench', labels: { 'kubernetes.io/service-name': `svc-${i}` } },
    addressType: 'IPv4',
    endpoints: Array.from({ length: endpoints }, (_, j) => ({
      addresses: [podOf(i, j, j === changed ? gen : 0)],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: `node-${j % 3}`,
    })),
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
  };
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? NaN;
};

async function runScale(services: number, endpoints: number, changes: number): Promise<ScaleResult> {
  const log = silentLogger();
  const writer = fakeMaps();
  const syncer = new Syncer({ writer, log });
  const state = new ProxyState('node-0', log);
  const svcs = Array.from({ length: services }, (_, i) => service(i));
  const slices = Array.from({ length: services }, (_, i) => slice(i, endpoints));

  const t0 = performance.now();
  for (const s of svcs) state.onService(`bench/${s.metadata.name}`, s);
  for (const s of slices) state.onEndpointSlice(`bench/${s.metadata.name}`, s);
  const first = state.compute();
  const r0 = await syncer.sync(first.desired, first.changes);
  const fullMs = performance.now() - t0;
  if (!r0.ok) throw r0.error;

  // One endpoint at a time: flip one address of a random Service back and forth.
  const times: number[] = [];
  let writes = 0;
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const gens = new Map<number, number>();
  for (let n = 0; n < changes; n++) {
    const i = Math.floor(rand() * services);
    const gen = (gens.get(i) ?? 0) + 1;
    gens.set(i, gen);
    const next = slice(i, endpoints, 0, gen % 2);
    slices[i] = next;
    const t = performance.now();
    state.onEndpointSlice(`bench/${next.metadata.name}`, next);
    const c = state.compute();
    const r = await syncer.sync(c.desired, c.changes);
    times.push(performance.now() - t);
    if (!r.ok) throw r.error;
    writes += r.updates + r.deletes;
  }

  // The same change computed the old way: everything recomputed, every frontend visited.
  const oldTimes: number[] = [];
  const oldWriter = fakeMaps();
  const oldSyncer = new Syncer({ writer: oldWriter, log });
  await oldSyncer.sync(computeDesired(svcs, slices, 'node-0'));
  for (let n = 0; n < Math.min(changes, 20); n++) {
    const i = Math.floor(rand() * services);
    const gen = (gens.get(i) ?? 0) + 1;
    gens.set(i, gen);
    slices[i] = slice(i, endpoints, 0, gen % 2);
    const t = performance.now();
    const r = await oldSyncer.sync(computeDesired(svcs, slices, 'node-0'));
    oldTimes.push(performance.now() - t);
    if (!r.ok) throw r.error;
  }

  return {
    services,
    endpoints_per_service: endpoints,
    full_sync_ms: fullMs,
    full_sync_updates: r0.updates,
    one_endpoint_p50_ms: pct(times, 50),
    one_endpoint_p99_ms: pct(times, 99),
    one_endpoint_max_ms: Math.max(...times),
    one_endpoint_writes: writes / changes,
    recompute_all_p50_ms: pct(oldTimes, 50),
    rss_mb: process.memoryUsage().rss / 2 ** 20,
  };
}

export async function runControlPlaneBench(opts: ControlPlaneBenchOptions): Promise<ScaleResult[]> {
  const scales = opts.scales ?? [
    { services: 1000, endpoints: 10 },
    { services: 10_000, endpoints: 10 },
  ];
  const changes = opts.changes ?? 500;
  const out: ScaleResult[] = [];
  for (const s of scales) out.push(await runScale(s.services, s.endpoints, changes));
  if (opts.json) {
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    return out;
  }
  const f = (x: number, d = 1) => x.toFixed(d);
  process.stdout.write(`kbp control-plane benchmark (in-memory maps; Node ${process.version}); ${changes} single-endpoint changes per row\n`);
  process.stdout.write('services  eps/svc  full sync ms  writes   1-ep p50 ms  1-ep p99 ms  1-ep max ms  writes/change  recompute-all p50 ms  RSS MB\n');
  for (const r of out) {
    process.stdout.write(
      `${String(r.services).padStart(8)}  ${String(r.endpoints_per_service).padStart(7)}  ${f(r.full_sync_ms).padStart(12)}  ${String(r.full_sync_updates).padStart(6)}` +
        `  ${f(r.one_endpoint_p50_ms, 3).padStart(11)}  ${f(r.one_endpoint_p99_ms, 3).padStart(11)}  ${f(r.one_endpoint_max_ms, 3).padStart(11)}  ${f(r.one_endpoint_writes).padStart(13)}` +
        `  ${f(r.recompute_all_p50_ms).padStart(20)}  ${f(r.rss_mb, 0).padStart(6)}\n`,
    );
  }
  const big = out[out.length - 1]!;
  process.stdout.write(`\none endpoint change at ${big.services} Services: p99 ${f(big.one_endpoint_p99_ms, 3)} ms in the control plane (budget for the whole path to the datapath: 50 ms)\n`);
  return out;
}
