// `kbp bench compare` (and `kbp bench` with no subcommand): the differential
// behaviour check, then the side-by-side benchmark, then the packet
// benchmark; writes the report when --out is given (the full run defaults to
// docs/benchmarks). Exits 1 when the differential check finds a mismatch.

import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { projectRoot } from '../../paths.js';
import { ensureK8sBins } from '../../testbed/apiserver.js';
import { cleanupStale, Testbed } from '../../testbed/netns.js';
import { packetBench, type PacketBenchReport } from '../packet.js';
import { FULL, QUICK, runCompare, type CompareOptions } from './bench.js';
import { formatDifferential, runDifferential, type DifferentialReport } from './differential.js';
import { ensureLoadgen } from './loadgen.js';
import { acceptance, writeReport, type FullReport } from './report.js';

export const compareUsage = `Usage: kbp bench compare [--quick] [--scales 100,1000,5000,10000] [--repetitions N]
                         [--changes N] [--duration MS] [--no-diff] [--no-packet] [--out DIR] [--json]

kbp side by side with the real kube-proxy (iptables mode) and with direct
connections to the pods: new-connection latency, connection rate, keep-alive,
CPU, programming latency, full sync and RSS, for each N Services x 10
endpoints; preceded by the differential behaviour check (exit 1 on any
mismatch). The full run writes docs/benchmarks/ (latest.json, README.md,
SVG charts); --quick (N=100, short runs) writes only with --out.
Needs root, a build (make build) and Go (kube-proxy, kube-apiserver, loadgen).
`;

export interface CompareCommand {
  quick: boolean;
  scales?: number[];
  repetitions?: number;
  changes?: number;
  durationMs?: number;
  diff: boolean;
  packet: boolean;
  out?: string;
  /** Print the report as JSON on stdout (the CLI); otherwise a summary. */
  json: boolean;
  command: string;
}

const uptime = () => {
  try {
    return execFileSync('uptime', { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
};

export async function benchCompare(c: CompareCommand): Promise<{ report: FullReport; files: string[]; ok: boolean }> {
  if (process.getuid?.() !== 0) throw new Error('kbp bench compare needs root (network namespaces, bpffs, iptables inside them)');
  const progress = (s: string) => process.stderr.write(`bench compare: ${s}\n`);
  const t0 = Date.now();
  const up0 = uptime();
  progress(`load: ${up0}`);
  await cleanupStale();
  const bins = await ensureK8sBins();
  const loadgen = await ensureLoadgen();
  progress(`kube-proxy from ${bins.dir}; loadgen ${loadgen}`);

  let differential: DifferentialReport | null = null;
  if (c.diff) {
    const tb = Testbed.create();
    try {
      differential = await runDifferential(tb, { progress });
    } finally {
      await tb.teardown();
    }
    process.stderr.write(`${formatDifferential(differential)}\n`);
  }

  const base = c.quick ? QUICK : FULL;
  const opts: CompareOptions = {
    ...base,
    ...(c.scales ? { scales: c.scales } : {}),
    ...(c.repetitions ? { repetitions: c.repetitions } : {}),
    ...(c.changes ? { changes: c.changes } : {}),
    ...(c.durationMs ? { durationMs: c.durationMs, latencyMs: c.durationMs } : {}),
    progress,
  };
  const tb = Testbed.create();
  let compare;
  try {
    compare = await runCompare(tb, loadgen, opts);
  } finally {
    await tb.teardown();
  }

  let packet: PacketBenchReport | null = null;
  if (c.packet) {
    progress('packet benchmark (BPF_PROG_TEST_RUN)');
    packet = await packetBench(c.quick ? { services: [1, 1000], samples: 5000 } : {});
  }
  const report: FullReport = { compare, differential, packet, command: c.command, uptime: { start: up0, end: uptime() }, total_duration_s: (Date.now() - t0) / 1000 };
  const out = c.out ?? (c.quick ? undefined : path.join(projectRoot, 'docs', 'benchmarks'));
  const files = out ? await writeReport(out, report) : [];
  for (const f of files) progress(`wrote ${path.relative(process.cwd(), f)}`);
  return { report, files, ok: !differential || differential.mismatches.length === 0 };
}

/** `kbp bench compare ARGS`: parses the flags, runs, returns the exit code (1 on a differential mismatch). */
export async function runCompareCli(args: string[]): Promise<number> {
  const { parseArgs } = await import('node:util');
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        quick: { type: 'boolean' },
        scales: { type: 'string' },
        repetitions: { type: 'string' },
        changes: { type: 'string' },
        duration: { type: 'string' },
        'no-diff': { type: 'boolean' },
        'no-packet': { type: 'boolean' },
        out: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${compareUsage}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(compareUsage);
    return 0;
  }
  const ints = (s: string | undefined, flag: string): number[] | undefined => {
    if (s === undefined) return undefined;
    const xs = s.split(',').map(Number);
    if (xs.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`${flag}: expected positive integers, got ${JSON.stringify(s)}`);
    return xs;
  };
  let cmd: CompareCommand;
  try {
    cmd = {
      quick: values.quick ?? false,
      scales: ints(values.scales, '--scales'),
      repetitions: ints(values.repetitions, '--repetitions')?.[0],
      changes: ints(values.changes, '--changes')?.[0],
      durationMs: ints(values.duration, '--duration')?.[0],
      diff: !values['no-diff'],
      packet: !values['no-packet'],
      out: values.out,
      json: values.json ?? false,
      command: ['kbp bench compare', ...args].join(' '),
    };
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${compareUsage}`);
    return 2;
  }
  const { report, ok } = await benchCompare(cmd);
  const acc = acceptance(report.compare.runs);
  if (cmd.json) process.stdout.write(JSON.stringify(report) + '\n');
  else {
    process.stdout.write(`bench compare: ${report.compare.runs.length} runs in ${(report.total_duration_s / 60).toFixed(1)} min\n`);
    for (const r of report.compare.runs) {
      process.stdout.write(
        `  N=${String(r.services).padStart(5)} ${r.mode.padEnd(8)} ${r.target.padEnd(6)} connect p50 ${r.connect_p50_ms.toFixed(3)} p99 ${r.connect_p99_ms.toFixed(3)} ms  ${r.conn_per_s.toFixed(0)} conn/s` +
          `${r.programming_p99_ms !== null ? `  programming p99 ${r.programming_p99_ms.toFixed(1)} ms` : ''}${r.full_sync_ms !== null ? `  full sync ${r.full_sync_ms.toFixed(0)} ms  RSS ${r.rss_mb?.toFixed(0)} MB` : ''}\n`,
      );
    }
    if (acc) process.stdout.write(`  at ${acc.services}: kbp/direct p99 ${acc.p99_ratio.toFixed(3)} (≤ 1.05 ${acc.p99_ok ? 'met' : 'NOT met'}), rate ${acc.rate_ratio.toFixed(3)} (≥ 0.95 ${acc.rate_ok ? 'met' : 'NOT met'})\n`);
    if (report.differential) process.stdout.write(`  differential: ${report.differential.mismatches.length} mismatches in ${report.differential.cases.length} cases\n`);
  }
  return ok ? 0 : 1;
}
