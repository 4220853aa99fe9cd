// `kbp bench packet`: per-packet cost of the pod datapath through
// BPF_PROG_TEST_RUN, as a ratio to a no-op tc program measured in the same run.
//
// Method. A tc test run keeps rewriting the same skb when repeat > 1, so after
// the first DNAT every further iteration would measure the miss path. Every
// sample is therefore one run with repeat = 1 on a fresh packet, looped in the
// addon (testRunEach) so JavaScript stays out of the way, and the no-op
// baseline is sampled the same way in chunks interleaved with the service
// samples, so both carry the same fixed timer overhead.
//   new flow:     each sample a fresh 5-tuple (conntrack miss, backend choice,
//                 two conntrack inserts, DNAT)
//   established:  tuples whose flow already exists (conntrack hit, DNAT)
// The budgeted figures target one frontend (the last of the N written), so the
// rows differ only in how many services the maps hold. The "spread" figures
// target up to 1024 random frontends, for how the cost grows once the working
// set no longer stays in cache.
//
// The uplink table: one NodePort frontend (node address:30080, a local
// backend: DNAT only) beside the N ClusterIPs, through kbp_from_node at tc
// (ratio to the tc no-op) and through kbp_xdp_node (--nodeport-acceleration
// xdp; ratio to an XDP no-op, sampled the same way). The two hooks' test runs
// have different fixed costs (an skb against an xdp_buff), so compare each to
// its own no-op, and the absolute nanoseconds of the program's own work.

import os from 'node:os';
import { native, type BpfProgram } from '../native/binding.js';
import { bpfObjectPath } from '../paths.js';
import { DatapathFixture, TC_ACT_OK, XDP_PASS, type FixtureFrontend } from './fixtures.js';
import { buildPacket, pseudoHeaderOnly, TCP_ACK, TCP_SYN } from './packets.js';
import { ipv4ToNumber, KBP_STAT_ESTABLISHED, KBP_STAT_NEW_FLOW, KBP_SVC_F_NODE_PORT, numberToIPv4 } from '../maps/abi.js';

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
  /** Medians with targets spread over up to 1024 random frontends. */
  new_flow_spread_ns: number;
  established_spread_ns: number;
  /** The NodePort frontend on an uplink: tc (kbp_from_node) and XDP (kbp_xdp_node). */
  nodeport: UplinkResult;
}

export interface UplinkResult {
  tc_noop_ns: number;
  tc_new_flow_ns: number;
  tc_established_ns: number;
  xdp_noop_ns: number;
  xdp_new_flow_ns: number;
  xdp_established_ns: number;
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
const NODE_IP = '172.18.0.11';
const NODE_PORT = 30080;

/** The uplink table's frontend: a NodePort with one backend on this node. */
const NODEPORT_FRONTEND: FixtureFrontend = {
  svcId: 0x7fff0000,
  vip: NODE_IP,
  port: NODE_PORT,
  proto: 'tcp',
  backends: [{ id: BACKEND_POOL + 1, ip: numberToIPv4(POD_BASE + 255), port: 8080 }],
  flags: KBP_SVC_F_NODE_PORT,
};

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

const CHUNK = 500;

interface Sampled {
  ns: number[];
  noopNs: number[];
}

/** A program under measurement, the verdict every sample must give, and the no-op of its hook. */
interface Hook {
  prog: BpfProgram;
  verdict: number;
  noop: BpfProgram;
  /** XDP: flows one of whose packets has a checksum that looks like a pseudo-header sum are left
   * out (XDP hands those to tc, so they would measure the pass path). */
  xdp?: boolean;
}

/** Run every packet once, in chunks interleaved with as many no-op runs. */
async function sampleInterleaved(hook: Hook, packets: Buffer[], noopPacket: Buffer): Promise<Sampled> {
  const out: Sampled = { ns: [], noopNs: [] };
  for (let i = 0; i < packets.length; i += CHUNK) {
    const chunk = packets.slice(i, i + CHUNK);
    out.noopNs.push(...(await hook.noop.testRunEach(chunk.map(() => noopPacket))).durationsNs);
    const r = await hook.prog.testRunEach(chunk);
    const bad = r.retvals.findIndex((v) => v !== hook.verdict);
    if (bad >= 0) throw new Error(`${hook.prog.name} sample ${i + bad}: verdict ${r.retvals[bad]}, expected ${hook.verdict}`);
    out.ns.push(...r.durationsNs);
  }
  return out;
}

/** New-flow then established samples of `samples` distinct flows to the given frontends. */
async function sampleFlows(dp: DatapathFixture, hook: Hook, targets: FixtureFrontend[], clientBase: number, samples: number, noopPacket: Buffer) {
  const flows = Array.from({ length: samples }, (_, i) => {
    const f = { saddr: numberToIPv4(clientBase + Math.floor(i / 50000)), sport: 10000 + (i % 50000), fe: targets[i % targets.length] as FixtureFrontend };
    const packet = (flags: number) => buildPacket({ saddr: f.saddr, daddr: f.fe.vip, proto: 'tcp', sport: f.sport, dport: f.fe.port, tcpFlags: flags });
    return { syn: packet(TCP_SYN), ack: packet(TCP_ACK) };
  }).filter((f) => !hook.xdp || !(pseudoHeaderOnly(f.syn) || pseudoHeaderOnly(f.ack)));
  samples = flows.length;
  const before = await dp.readStats();
  const fresh = await sampleInterleaved(hook, flows.map((f) => f.syn), noopPacket);
  const est = await sampleInterleaved(hook, flows.map((f) => f.ack), noopPacket);
  const after = await dp.readStats();
  // The samples must have taken the paths they are reported as.
  if (after[KBP_STAT_NEW_FLOW]!.packets - before[KBP_STAT_NEW_FLOW]!.packets !== BigInt(samples)) throw new Error('new-flow samples did not all create a flow');
  if (after[KBP_STAT_ESTABLISHED]!.packets - before[KBP_STAT_ESTABLISHED]!.packets !== BigInt(samples)) throw new Error('established samples did not all follow conntrack');
  return { fresh, est };
}

interface Noops {
  tc: BpfProgram;
  xdp: BpfProgram;
}

async function measureRow(n: number, samples: number, noops: Noops): Promise<PacketBenchResult> {
  const dp = await DatapathFixture.open();
  try {
    const frontends = syntheticFrontends(n);
    await dp.program([...frontends, NODEPORT_FRONTEND]);
    const noopPacket = buildPacket({ saddr: '10.245.0.1', daddr: '10.244.0.1', proto: 'tcp', sport: 1, dport: 2, tcpFlags: TCP_ACK });
    const pod: Hook = { prog: dp.prog, verdict: TC_ACT_OK, noop: noops.tc };
    const one = await sampleFlows(dp, pod, [frontends[n - 1] as FixtureFrontend], CLIENT_BASE, samples, noopPacket);
    const spreadTargets = Array.from({ length: Math.min(n, MAX_TARGETS) }, () => frontends[Math.floor(Math.random() * n)] as FixtureFrontend);
    const spread = await sampleFlows(dp, pod, spreadTargets, CLIENT_BASE + 256, samples, noopPacket);
    // Distinct clients per hook, so each measures its own new flows.
    const tc = await sampleFlows(dp, { prog: dp.nodeProg, verdict: TC_ACT_OK, noop: noops.tc }, [NODEPORT_FRONTEND], CLIENT_BASE + 512, samples, noopPacket);
    const xdp = await sampleFlows(dp, { prog: dp.xdpProg, verdict: XDP_PASS, noop: noops.xdp, xdp: true }, [NODEPORT_FRONTEND], CLIENT_BASE + 768, samples, noopPacket);

    const med = (xs: number[]): number => quantile(sortNum(xs), 0.5);
    const p90 = (xs: number[]): number => quantile(sortNum(xs), 0.9);
    const noopMed = med([...one.fresh.noopNs, ...one.est.noopNs]);
    return {
      services: n,
      new_flow_ns: med(one.fresh.ns),
      established_ns: med(one.est.ns),
      new_flow_ratio: med(one.fresh.ns) / noopMed,
      established_ratio: med(one.est.ns) / noopMed,
      noop_ns: noopMed,
      new_flow_p90_ns: p90(one.fresh.ns),
      established_p90_ns: p90(one.est.ns),
      new_flow_spread_ns: med(spread.fresh.ns),
      established_spread_ns: med(spread.est.ns),
      nodeport: {
        tc_noop_ns: med([...tc.fresh.noopNs, ...tc.est.noopNs]),
        tc_new_flow_ns: med(tc.fresh.ns),
        tc_established_ns: med(tc.est.ns),
        xdp_noop_ns: med([...xdp.fresh.noopNs, ...xdp.est.noopNs]),
        xdp_new_flow_ns: med(xdp.fresh.ns),
        xdp_established_ns: med(xdp.est.ns),
      },
    };
  } finally {
    await dp.close();
  }
}

export async function packetBench(opts: Omit<PacketBenchOptions, 'json'> = {}): Promise<PacketBenchReport> {
  const counts = opts.services ?? [1, 1000, 100000];
  const samples = opts.samples ?? 20000;
  if (samples > 100000) throw new Error('at most 100000 samples per path (client address space of the fixture)');
  const noopObj = await native().openObject(bpfObjectPath('kbp_noop'));
  const xdpNoopObj = await native().openObject(bpfObjectPath('kbp_noop_xdp')).catch((err: unknown) => {
    noopObj.close();
    throw err;
  });
  try {
    const noops = { tc: noopObj.program('kbp_noop'), xdp: xdpNoopObj.program('kbp_noop_xdp') };
    const results: PacketBenchResult[] = [];
    for (const n of counts) results.push(await measureRow(n, samples, noops));
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
        statistic: 'median of repeat=1 test runs looped in the addon; no-op interleaved in chunks of ' + CHUNK,
        target_frontends: `budget rows: the last frontend written; spread columns: min(N, ${MAX_TARGETS}) random`,
        backends_per_service: BACKENDS_PER_SERVICE,
      },
    };
  } finally {
    noopObj.close();
    xdpNoopObj.close();
  }
}

function verdict(ok: boolean): string {
  return ok ? 'within budget' : 'OVER BUDGET';
}

export function formatPacketReport(r: PacketBenchReport): string {
  const lines: string[] = [];
  lines.push(`kbp per-packet benchmark (BPF_PROG_TEST_RUN, kernel ${r.conditions.kernel}, ${r.conditions.cpu})`);
  lines.push(`no-op tc program: ${r.noop_ns} ns (median); ${r.conditions.samples_per_path} samples per path and row`);
  lines.push(`columns: one target frontend; "spread": up to ${MAX_TARGETS} random frontends (ns, median)`);
  lines.push('');
  const head = ['services', 'new flow ns', 'x no-op', 'p90', 'established ns', 'x no-op', 'p90', 'new spread', 'est spread'];
  const rows = r.results.map((x) => [
    String(x.services),
    String(x.new_flow_ns),
    x.new_flow_ratio.toFixed(2),
    String(x.new_flow_p90_ns),
    String(x.established_ns),
    x.established_ratio.toFixed(2),
    String(x.established_p90_ns),
    String(x.new_flow_spread_ns),
    String(x.established_spread_ns),
  ]);
  lines.push(...table(head, rows));
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
  lines.push('');
  lines.push(`uplink: NodePort ${NODE_IP}:${NODE_PORT} -> a local backend (DNAT), tc kbp_from_node vs XDP kbp_xdp_node (ns, median; x: ratio to that hook's no-op)`);
  const x = (ns: number, noop: number): string => (ns / noop).toFixed(2);
  lines.push(
    ...table(
      ['services', 'tc no-op', 'tc new', 'x', 'tc est', 'x', 'xdp no-op', 'xdp new', 'x', 'xdp est', 'x'],
      r.results.map(({ services, nodeport: u }) => [
        String(services),
        String(u.tc_noop_ns),
        String(u.tc_new_flow_ns),
        x(u.tc_new_flow_ns, u.tc_noop_ns),
        String(u.tc_established_ns),
        x(u.tc_established_ns, u.tc_noop_ns),
        String(u.xdp_noop_ns),
        String(u.xdp_new_flow_ns),
        x(u.xdp_new_flow_ns, u.xdp_noop_ns),
        String(u.xdp_established_ns),
        x(u.xdp_established_ns, u.xdp_noop_ns),
      ]),
    ),
  );
  return lines.join('\n');
}

/** Right-aligned columns. */
function table(head: string[], rows: string[][]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] as string).length)));
  const fmt = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i] as number)).join('  ');
  return [fmt(head), ...rows.map(fmt)];
}

export async function runPacketBench(opts: PacketBenchOptions): Promise<void> {
  const report = await packetBench(opts);
  if (opts.json) process.stdout.write(JSON.stringify(report) + '\n');
  else process.stdout.write(formatPacketReport(report) + '\n');
}
