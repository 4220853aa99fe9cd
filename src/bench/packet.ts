// `kbp bench packet`: per-packet cost of the pod datapath through
// BPF_PROG_TEST_RUN, as a ratio to a no-op tc program measured in the same run.
//
// Method. A tc test run keeps rewriting the same skb when repeat > 1, so after
// the first DNAT every further iteration would measure the miss path. Every
// sample is therefore one run with repeat = 1 on a fresh packet, and the no-op
// baseline is sampled the same way, interleaved with the service samples, so
// both carry the same fixed timer overhead. Targets are spread over up to 1024
// random frontends of the N programmed, so larger maps are not measured cache-hot.
//   new flow:     each sample a fresh 5-tuple (conntrack miss, backend choice,
//                 two conntrack inserts, DNAT)
//   established:  tuples whose flow already exists (conntrack hit, DNAT)

import os from 'node:os';
import { native } from '../native/binding.js';
import { bpfObjectPath } from '../paths.js';
import { DatapathFixture, TC_ACT_OK, type FixtureFrontend } from './fixtures.js';
import { buildPacket, TCP_ACK, TCP_SYN } from './packets.js';
import { numberToIPv4, ipv4ToNumber } from '../maps/abi.js';

export interface PacketBenchOptions {
  json: boolean;
  /** Service counts to measure (default 1, 1k, 100k). */
  services?: number[];
  /** Samples per path and service count (default 20000). */
  samples?: number;
}

export interface PacketBenchResult {
  services: number;
  new_flow_ns: number;
  established_ns: number;
  new_flow_ratio: number;
  established_ratio: number;
  noop_ns: number; // baseline interleaved with this row's samples
  new_flow_p90_ns: number;
  established_p90_ns: number;
}

export interface PacketBenchReport {
  noop_ns: number;
  results: PacketBenchResult[];
  budget: { new_flow_ratio_max: number; established_ratio_max: number; growth_max: number };
  growth: { new_flow: number; established: number };
  conditions: Record<string, string | number>;
}

const BACKENDS_PER_SERVICE = 2;
const BACKEND_POOL = 1000;
const MAX_TARGETS = 1024;
const CLUSTER_IP_BASE = ipv4ToNumber('10.96.0.0');
const POD_BASE = ipv4ToNumber('10.244.0.0');
const CLIENT_BASE = ipv4ToNumber('10.245.0.0');

function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

const sortNum = (xs: number[]): number[] => [...xs].sort((a, b) => a - b);

/** N ClusterIP frontends (tcp/80 -> 8080), each with two backends from a shared pool. */
export function syntheticFrontends(n: number): FixtureFrontend[] {
  const out: FixtureFrontend[] = [];
  for (let i = 0; i < n; i++) {
    const backends = [];
    for (let j = 0; j < BACKENDS_PER_SERVICE; j++) {
      const b = (i * BACKENDS_PER_SERVICE + j) % BACKEND_POOL;
      backends.push({ id: b + 1, ip: numberToIPv4(POD_BASE + 256 + b), port: 8080 });
    }
    out.push({ svcId: i + 1, vip: numberToIPv4(CLUSTER_IP_BASE + 10 + i), port: 80, proto: 'tcp', backends });
  }
  return out;
}

async function measureRow(
  n: number,
  samples: number,
  noop: (pkt: Buffer) => Promise<number>,
): Promise<PacketBenchResult> {
  const dp = await DatapathFixture.open();
  try {
    const frontends = syntheticFrontends(n);
    await dp.program(frontends);
    const targets: FixtureFrontend[] = [];
    for (let i = 0; i < Math.min(n, MAX_TARGETS); i++) targets.push(frontends[Math.floor(Math.random() * n)] as FixtureFrontend);

    const flows = Array.from({ length: samples }, (_, i) => ({
      saddr: numberToIPv4(CLIENT_BASE + Math.floor(i / 50000)),
      sport: 10000 + (i % 50000),
      fe: targets[i % targets.length] as FixtureFrontend,
    }));
    const baseline = buildPacket({ saddr: '10.245.0.1', daddr: '10.244.0.1', proto: 'tcp', sport: 1, dport: 2, tcpFlags: TCP_ACK });

    const noopNs: number[] = [];
    const newNs: number[] = [];
    for (const f of flows) {
      const pkt = buildPacket({ saddr: f.saddr, daddr: f.fe.vip, proto: 'tcp', sport: f.sport, dport: 80, tcpFlags: TCP_SYN });
      const r = await dp.run(pkt);
      if (r.retval !== TC_ACT_OK) throw new Error(`new flow to ${f.fe.vip}: verdict ${r.retval}`);
      newNs.push(r.durationNs);
      noopNs.push(await noop(baseline));
    }
    const estNs: number[] = [];
    for (const f of flows) {
      const pkt = buildPacket({ saddr: f.saddr, daddr: f.fe.vip, proto: 'tcp', sport: f.sport, dport: 80, tcpFlags: TCP_ACK });
      const r = await dp.run(pkt);
      if (r.retval !== TC_ACT_OK) throw new Error(`established flow to ${f.fe.vip}: verdict ${r.retval}`);
      estNs.push(r.durationNs);
      noopNs.push(await noop(baseline));
    }
    const stats = await dp.readStats();
    if (stats[1]!.packets < BigInt(samples)) throw new Error('established samples did not take the established path');

    const noopS = sortNum(noopNs);
    const newS = sortNum(newNs);
    const estS = sortNum(estNs);
    const noopMed = quantile(noopS, 0.5);
    return {
      services: n,
      new_flow_ns: quantile(newS, 0.5),
      established_ns: quantile(estS, 0.5),
      new_flow_ratio: quantile(newS, 0.5) / noopMed,
      established_ratio: quantile(estS, 0.5) / noopMed,
      noop_ns: noopMed,
      new_flow_p90_ns: quantile(newS, 0.9),
      established_p90_ns: quantile(estS, 0.9),
    };
  } finally {
    dp.close();
  }
}

export async function packetBench(opts: Omit<PacketBenchOptions, 'json'> = {}): Promise<PacketBenchReport> {
  const counts = opts.services ?? [1, 1000, 100000];
  const samples = opts.samples ?? 20000;
  const noopObj = await native().openObject(bpfObjectPath('kbp_noop'));
  try {
    const noopProg = noopObj.program('kbp_noop');
    const noop = async (pkt: Buffer): Promise<number> => (await noopProg.testRun({ data: pkt })).durationNs;
    const results: PacketBenchResult[] = [];
    for (const n of counts) results.push(await measureRow(n, samples, noop));
    const all = sortNum(results.map((r) => r.noop_ns));
    const first = results[0] as PacketBenchResult;
    const last = results[results.length - 1] as PacketBenchResult;
    const cpus = os.cpus();
    return {
      noop_ns: quantile(all, 0.5),
      results,
      budget: { new_flow_ratio_max: 5, established_ratio_max: 3, growth_max: 0.1 },
      growth: {
        new_flow: last.new_flow_ns / first.new_flow_ns - 1,
        established: last.established_ns / first.established_ns - 1,
      },
      conditions: {
        kernel: os.release(),
        cpu: cpus[0]?.model ?? 'unknown',
        cpus: cpus.length,
        samples_per_path: samples,
        statistic: 'median of repeat=1 test runs; no-op interleaved',
        target_frontends: `min(N, ${MAX_TARGETS}) random`,
        backends_per_service: BACKENDS_PER_SERVICE,
      },
    };
  } finally {
    noopObj.close();
  }
}

function verdict(ok: boolean): string {
  return ok ? 'within budget' : 'OVER BUDGET';
}

export function formatPacketReport(r: PacketBenchReport): string {
  const lines: string[] = [];
  lines.push(`kbp per-packet benchmark (BPF_PROG_TEST_RUN, kernel ${r.conditions.kernel}, ${r.conditions.cpu})`);
  lines.push(`no-op tc program: ${r.noop_ns} ns (median, ${r.conditions.samples_per_path} x 2 samples per row)`);
  lines.push('');
  const head = ['services', 'new flow ns', 'x no-op', 'p90', 'established ns', 'x no-op', 'p90'];
  const rows = r.results.map((x) => [
    String(x.services),
    String(x.new_flow_ns),
    x.new_flow_ratio.toFixed(2),
    String(x.new_flow_p90_ns),
    String(x.established_ns),
    x.established_ratio.toFixed(2),
    String(x.established_p90_ns),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] as string).length)));
  const fmt = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i] as number)).join('  ');
  lines.push(fmt(head));
  for (const row of rows) lines.push(fmt(row));
  lines.push('');
  const maxNew = Math.max(...r.results.map((x) => x.new_flow_ratio));
  const maxEst = Math.max(...r.results.map((x) => x.established_ratio));
  lines.push(`new flow    ≤ ${r.budget.new_flow_ratio_max}x no-op: worst ${maxNew.toFixed(2)}x — ${verdict(maxNew <= r.budget.new_flow_ratio_max)}`);
  lines.push(`established ≤ ${r.budget.established_ratio_max}x no-op: worst ${maxEst.toFixed(2)}x — ${verdict(maxEst <= r.budget.established_ratio_max)}`);
  const g = r.growth;
  const gOk = g.new_flow <= r.budget.growth_max && g.established <= r.budget.growth_max;
  lines.push(
    `growth ${r.results[0]?.services} → ${r.results[r.results.length - 1]?.services} services ≤ ${r.budget.growth_max * 100}%: ` +
      `new flow ${(g.new_flow * 100).toFixed(1)}%, established ${(g.established * 100).toFixed(1)}% — ${verdict(gOk)}`,
  );
  return lines.join('\n');
}

export async function runPacketBench(opts: PacketBenchOptions): Promise<void> {
  const report = await packetBench(opts);
  if (opts.json) process.stdout.write(JSON.stringify(report) + '\n');
  else process.stdout.write(formatPacketReport(report) + '\n');
}
