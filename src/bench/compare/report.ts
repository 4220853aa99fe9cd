// What `kbp bench compare` writes: latest.json (every figure with its
// conditions), README.md (tables, acceptance at the largest N, the
// differential check, the packet benchmark) and SVG charts.

import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { PacketBenchReport } from '../packet.js';
import { formatPacketReport } from '../packet.js';
import type { CompareResult, Mode, Run } from './bench.js';
import { formatDifferential, type DifferentialReport } from './differential.js';
import { lineChart } from './svg.js';

export interface FullReport {
  compare: CompareResult;
  differential: DifferentialReport | null;
  packet: PacketBenchReport | null;
  command: string;
  /** Load on the machine when the run started and ended (uptime). */
  uptime: { start: string; end: string };
  total_duration_s: number;
}

const COLORS: Record<Mode, string> = { direct: '#2a9d3f', iptables: '#d1495b', kbp: '#2e6fd8' };
const f = (x: number | null | undefined, d = 3) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d));

/** The run of `mode` at `n` for the worst-case target ('last'; 'pods' for direct). */
export function primaryRun(runs: Run[], n: number, mode: Mode, target: 'last' | 'random' = 'last'): Run | undefined {
  return runs.find((r) => r.services === n && r.mode === mode && (mode === 'direct' ? r.target === 'pods' : r.target === target));
}

export interface Acceptance {
  services: number;
  p99_ratio: number;
  rate_ratio: number;
  p99_ok: boolean;
  rate_ok: boolean;
}

/** kbp vs direct at the largest N: p99 connect latency ≤ 1.05×, connection rate ≥ 0.95×. */
export function acceptance(runs: Run[]): Acceptance | null {
  const n = Math.max(...runs.map((r) => r.services));
  const d = primaryRun(runs, n, 'direct');
  const k = primaryRun(runs, n, 'kbp');
  if (!d || !k) return null;
  const p99 = k.connect_p99_ms / d.connect_p99_ms;
  const rate = k.conn_per_s / d.conn_per_s;
  return { services: n, p99_ratio: p99, rate_ratio: rate, p99_ok: p99 <= 1.05, rate_ok: rate >= 0.95 };
}

export function charts(runs: Run[]): Record<string, string> {
  const ns = [...new Set(runs.map((r) => r.services))].sort((a, b) => a - b);
  const xLabels = ns.map((n) => (n >= 1000 ? `${n / 1000}k` : String(n)));
  const series = (mode: Mode, pick: (r: Run) => number | null, target: 'last' | 'random' = 'last', dashed = false, suffix = '') => ({
    name: `${mode}${suffix}`,
    color: COLORS[mode],
    dashed,
    values: ns.map((n) => {
      const r = primaryRun(runs, n, mode, target);
      return r ? pick(r) : null;
    }),
  });
  const modes: Mode[] = ['direct', 'iptables', 'kbp'];
  return {
    'connect-latency.svg': lineChart({
      title: 'New-connection latency (connect, concurrency 1), worst-case Service',
      xLabel: 'Services (x 10 endpoints)',
      yLabel: 'ms',
      xLabels,
      series: [...modes.map((m) => series(m, (r) => r.connect_p99_ms, 'last', false, ' p99')), ...modes.map((m) => series(m, (r) => r.connect_p50_ms, 'last', true, ' p50'))],
    }),
    'connection-rate.svg': lineChart({
      title: `Short connections per second (one request each)`,
      xLabel: 'Services (x 10 endpoints)',
      yLabel: 'connections/s',
      xLabels,
      series: modes.map((m) => series(m, (r) => r.conn_per_s)),
    }),
    'programming-latency.svg': lineChart({
      title: 'Programming latency: API write → first answer from the new backend',
      xLabel: 'Services (x 10 endpoints)',
      yLabel: 'ms',
      xLabels,
      series: [
        series('iptables', (r) => r.programming_p99_ms, 'last', false, ' p99'),
        series('kbp', (r) => r.programming_p99_ms, 'last', false, ' p99'),
        series('iptables', (r) => r.programming_p50_ms, 'last', true, ' p50'),
        series('kbp', (r) => r.programming_p50_ms, 'last', true, ' p50'),
      ],
    }),
  };
}

function runsTable(runs: Run[]): string {
  const head = ['N', 'mode', 'target', 'connect p50 ms', 'p90', 'p99 (spread)', 'request p50 ms', 'p99', 'conn/s (spread)', 'keep-alive req/s', 'ka p50 ms', 'ka p99 ms', 'prog p50 ms', 'prog p99 ms', 'full sync ms', 'RSS MB', 'sys %', 'softirq %', 'loadgen cores', 'errors'];
  const rows = runs.map((r) => [
    String(r.services),
    r.mode,
    r.target_service ? `${r.target} (${r.target_service})` : r.target,
    f(r.connect_p50_ms),
    f(r.connect_p90_ms),
    `${f(r.connect_p99_ms)} (${f(r.spread.connect_p99_ms[0])}–${f(r.spread.connect_p99_ms[1])})`,
    f(r.request_p50_ms),
    f(r.request_p99_ms),
    `${f(r.conn_per_s, 0)} (${f(r.spread.conn_per_s[0], 0)}–${f(r.spread.conn_per_s[1], 0)})`,
    f(r.keepalive_req_per_s, 0),
    f(r.keepalive_p50_ms),
    f(r.keepalive_p99_ms),
    f(r.programming_p50_ms, 1),
    f(r.programming_p99_ms, 1),
    f(r.full_sync_ms, 0),
    f(r.rss_mb, 0),
    f(r.cpu.system * 100, 0),
    f(r.cpu.softirq * 100, 0),
    f(r.loadgen_cpu_cores, 2),
    String(r.errors),
  ]);
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

export function markdown(r: FullReport): string {
  const c = r.compare;
  const cond = c.conditions;
  const acc = acceptance(c.runs);
  const lines: string[] = [];
  lines.push('# kbp side by side with kube-proxy (iptables mode)');
  lines.push('');
  lines.push(`Generated by \`${r.command}\` on ${String(cond.date)}; the whole run took ${(r.total_duration_s / 60).toFixed(1)} min.`);
  lines.push('');
  lines.push('## Conditions');
  lines.push('');
  lines.push(`- kernel ${String(cond.kernel)}, ${String(cond.cpu)} × ${String(cond.cpus)}, Node ${String(cond.node)}, kube-proxy/kube-apiserver ${String(cond.kube_proxy)}`);
  lines.push(`- load on the machine (uptime): at start \`${r.uptime.start}\`, at end \`${r.uptime.end}\`. The machine was shared with other jobs; all three modes ran in the same run, one after the other, so they saw comparable (not identical) noise.`);
  lines.push(`- N = ${(cond.N as number[]).join(', ')} Services × ${String(cond.endpoints_per_service)} endpoints, created through the API (EndpointSlices pointing at 10 real pods running \`loadgen serve\`, shared by all Services)`);
  lines.push(`- latency: new connections at concurrency ${String(cond.latency_concurrency)} for ${String(cond.latency_run_ms)} ms; rate: concurrency ${String(cond.concurrency)} for ${String(cond.rate_run_ms)} ms; ${String(cond.repetitions)} repetitions, figures are medians, spread = min–max over repetitions`);
  lines.push(`- programming: ${String(cond.changes)} endpoint changes per mode and N, spaced ${String(cond.change_spacing)}`);
  lines.push('- modes: **direct** = the client picks the 10 pod IPs itself, no proxy on the node; **iptables** = kube-proxy v1.35 iptables mode (default minSyncPeriod 1 s); **kbp** = the kbp agent. direct and kbp run on one node namespace that never had iptables rules, kube-proxy on an identical one.');
  lines.push(`- targets: **last** = the Service kube-proxy's KUBE-SERVICES chain matches last (read from iptables-save after its sync), **random** = a fixed random one.`);
  lines.push('');
  lines.push('### Is the load generator the bottleneck?');
  lines.push('');
  lines.push(`Its loopback ceiling (client and server in the client pod, concurrency ${String(cond.concurrency)}): ${f(c.loadgen_ceiling.conn_per_s, 0)} conn/s using ${f(c.loadgen_ceiling.cpu_cores, 2)} cores. The "loadgen cores" column is the generator's own CPU during each rate run. With 2 vCPUs shared by client, servers, kernel and proxy, the rate figures measure the whole machine's cost per connection; compare modes by their ratio, not by absolute numbers.`);
  lines.push('');
  lines.push('## Acceptance (issue 6)');
  lines.push('');
  if (acc) {
    lines.push(`At ${acc.services} Services, worst-case target: kbp p99 connect latency = ${acc.p99_ratio.toFixed(3)}× direct (budget ≤ 1.05×: ${acc.p99_ok ? 'met' : 'NOT met'}); kbp connection rate = ${acc.rate_ratio.toFixed(3)}× direct (budget ≥ 0.95×: ${acc.rate_ok ? 'met' : 'NOT met'}).`);
    const ipt = primaryRun(c.runs, acc.services, 'iptables');
    const kbp = primaryRun(c.runs, acc.services, 'kbp');
    const d = primaryRun(c.runs, acc.services, 'direct');
    if (ipt && kbp && d) {
      lines.push(`kube-proxy iptables in the same run: p99 connect ${f(ipt.connect_p99_ms)} ms (${(ipt.connect_p99_ms / d.connect_p99_ms).toFixed(3)}× direct), ${f(ipt.conn_per_s, 0)} conn/s (${(ipt.conn_per_s / d.conn_per_s).toFixed(3)}× direct).`);
      lines.push(`Programming latency p99: kube-proxy ${f(ipt.programming_p99_ms, 1)} ms, kbp ${f(kbp.programming_p99_ms, 1)} ms.`);
    }
  } else {
    lines.push('No kbp and direct runs at the same N.');
  }
  lines.push('');
  lines.push('## Charts');
  lines.push('');
  lines.push('![new-connection latency](connect-latency.svg)');
  lines.push('![connection rate](connection-rate.svg)');
  lines.push('![programming latency](programming-latency.svg)');
  lines.push('');
  lines.push('## All runs');
  lines.push('');
  lines.push(runsTable(c.runs));
  lines.push('');
  lines.push('sys % and softirq % are shares of the whole machine\'s CPU time during the rate run (/proc/stat), which includes other jobs on the machine. Full sync = process start to the end of its first complete sync; RSS after that sync.');
  lines.push('');
  const counted = c.runs.filter((x) => x.kbp_counters);
  if (counted.length) {
    lines.push('### kbp datapath counters during the kbp runs');
    lines.push('');
    lines.push('Packets counted by the datapath (`kbp stats`) while each kbp target was measured (latency and rate runs); drop_* are packets kbp dropped, pass are packets it let through untranslated.');
    lines.push('');
    lines.push('| N | target | connections made | counters |');
    lines.push('|---|---|---|---|');
    for (const x of counted) lines.push(`| ${x.services} | ${x.target} (${x.target_service}) | ${x.connections} | ${Object.entries(x.kbp_counters!).map(([k, v]) => `${k} ${v}`).join(', ') || '–'} |`);
    lines.push('');
  }
  lines.push('## Differential behaviour check');
  lines.push('');
  if (r.differential) {
    lines.push('Same cluster state, same connections, kube-proxy iptables then kbp on the same two node namespaces (src/bench/compare/differential.ts). Each line: outcomes of the connections, backends that answered, source address the backends saw.');
    lines.push('');
    lines.push('```');
    lines.push(formatDifferential(r.differential));
    lines.push('```');
  } else {
    lines.push('Not run (--no-diff).');
  }
  lines.push('');
  lines.push('## Packet benchmark (BPF_PROG_TEST_RUN)');
  lines.push('');
  if (r.packet) {
    lines.push('```');
    lines.push(formatPacketReport(r.packet));
    lines.push('```');
  } else {
    lines.push('Not run.');
  }
  lines.push('');
  return lines.join('\n');
}

export async function writeReport(dir: string, r: FullReport): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const files: Record<string, string> = {
    'latest.json': JSON.stringify(
      {
        runs: r.compare.runs,
        loadgen_ceiling: r.compare.loadgen_ceiling,
        kube_services_order: r.compare.kube_services_order_check,
        conditions: { ...r.compare.conditions, uptime_start: r.uptime.start, uptime_end: r.uptime.end, command: r.command, duration_s: r.total_duration_s },
        acceptance: acceptance(r.compare.runs),
        differential: r.differential ? { cases: r.differential.cases.length, mismatches: r.differential.mismatches, observations: r.differential.observations } : null,
        packet: r.packet,
      },
      null,
      2,
    ) + '\n',
    'README.md': markdown(r),
    ...charts(r.compare.runs),
  };
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
  return Object.keys(files).map((n) => path.join(dir, n));
}
