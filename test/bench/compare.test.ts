// `kbp bench compare --quick` as CI runs it: the differential behaviour check
// (kube-proxy iptables vs kbp on the same two-node cluster state) and the
// side-by-side benchmark at N=100 with short runs. Fails on a differential
// mismatch, on a connection error in any mode, on a mode that did not reach
// all ten backends, and on a report without the required fields — never on
// timing.
//
// Needs root, a build (make build), the Kubernetes binaries and Go for the
// load generator (skipped with a reason when they cannot be built).

import t from 'tap';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { benchCompare } from '../../src/bench/compare/index.js';
import { formatDifferential } from '../../src/bench/compare/differential.js';
import { ensureLoadgen } from '../../src/bench/compare/loadgen.js';
import { ensureK8sBins, K8sBinsUnavailable } from '../../src/testbed/apiserver.js';
import { Testbed } from '../../src/testbed/netns.js';

let skip: string | false = process.getuid?.() !== 0 ? 'needs root (network namespaces, bpffs, iptables inside them)' : false;
if (!skip) {
  try {
    await ensureK8sBins();
    await ensureLoadgen();
  } catch (err) {
    if (err instanceof K8sBinsUnavailable || /exit 3/.test((err as Error).message)) skip = `binaries unavailable: ${(err as Error).message}`;
    else throw err;
  }
}

t.test('bench compare --quick', { skip, timeout: 600_000 }, async (t) => {
  const tb = Testbed.create();
  const out = await tb.tempDir('bench-out');
  t.teardown(() => tb.teardown());
  const { report, files } = await benchCompare({ quick: true, diff: true, packet: false, out, json: false, command: 'kbp bench compare --quick' });

  const d = report.differential!;
  t.comment(formatDifferential(d));
  // The check means something only if kube-proxy itself carried the traffic.
  const okCases = d.cases.filter((c) => d.observations.iptables[c]!.outcomes.includes('ok'));
  t.ok(okCases.length >= 15, `kube-proxy answered in ${okCases.length} of ${d.cases.length} cases`);
  t.ok(d.cases.some((c) => !d.observations.iptables[c]!.outcomes.includes('ok')), 'and failed where it should (no endpoints, eTP Local without a local endpoint)');
  t.same(
    d.mismatches.map((m) => m.case),
    [],
    'kbp behaves like kube-proxy iptables in every case',
  );

  const runs = report.compare.runs;
  t.same([...new Set(runs.map((r) => `${r.services} ${r.mode}`))].sort(), ['100 direct', '100 iptables', '100 kbp'], 'a run per mode at N=100');
  for (const r of runs) {
    t.equal(r.errors, 0, `${r.mode} ${r.target}: no connection failed`);
    t.equal(r.backends_reached, 10, `${r.mode} ${r.target}: all 10 backends answered`);
    t.ok(r.conn_per_s > 0 && r.connect_p99_ms > 0, `${r.mode} ${r.target}: ${r.conn_per_s.toFixed(0)} conn/s, connect p99 ${r.connect_p99_ms.toFixed(3)} ms`);
    if (r.mode !== 'direct') t.ok(r.programming_p99_ms! > 0 && r.full_sync_ms! > 0, `${r.mode}: programming p99 ${r.programming_p99_ms!.toFixed(1)} ms, full sync ${r.full_sync_ms!.toFixed(0)} ms`);
  }

  t.same(files.map((f) => path.basename(f)).sort(), ['README.md', 'connect-latency.svg', 'connection-rate.svg', 'latest.json', 'programming-latency.svg']);
  const json = JSON.parse(await readFile(path.join(out, 'latest.json'), 'utf8')) as { runs: Array<Record<string, unknown>>; conditions: Record<string, unknown> };
  for (const k of ['services', 'mode', 'connect_p50_ms', 'connect_p99_ms', 'conn_per_s', 'programming_p99_ms']) t.ok(json.runs.every((r) => k in r), `every run in latest.json has ${k}`);
  for (const k of ['kernel', 'cpu', 'N', 'repetitions', 'spread']) t.ok(k in json.conditions, `conditions carry ${k}`);
  t.match(await readFile(path.join(out, 'connect-latency.svg'), 'utf8'), /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"[\s\S]*<polyline|<circle[\s\S]*<\/svg>\n$/);
});
