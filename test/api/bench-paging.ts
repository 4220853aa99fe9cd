// Benchmark (not part of `npx tap`) of issue 5's criterion "a dump of 1M
// conntrack entries is served page by page without the agent's RSS growing by
// more than the page size".
//
// ENTRIES conntrack entries go into a pinned kernel map; the API, built from
// dist/ as the agent runs it, serves that map from a process of its own
// (bench-paging-agent.mjs, on 127.0.0.1) so its RSS holds nothing but the
// API; this process walks GET /v1/conntrack?limit=LIMIT over HTTP, PASSES
// times, and reads the agent's RSS from /proc:
//
//   cold    the first dump: V8 and malloc grow to their working size here
//           (young generation, old-space allocation limit, arenas);
//   steady  every later dump: peak RSS during the dump (VmHWM, reset through
//           /proc/PID/clear_refs before each) minus RSS when it started.
//
// The criterion is the steady figure against one page (the JSON bytes of a
// full page), for every steady dump; the worst and the median are printed,
// with the agent's GC counts per dump and the load average (the figures are
// noisy on a shared machine: repeat). Run as root after make build:
//   node --import @isaacs/ts-node-temp-fork-for-pr-2009/import test/api/bench-paging.ts \
//     [ENTRIES=1000000] [LIMIT=500] [PASSES=3] [-- NODE_FLAGS...]
// The API process runs with the agent's node flags and environment
// (AGENT_NODE_FLAGS, AGENT_ENV: src/agent/nodeflags.ts), as `kbp agent`
// does, unless `--` gives other flags (then in the bench's own environment):
// `--` alone for none (node's defaults),
// e.g. `-- --max-semi-space-size=1` to bound V8's young generation,
// `-- --expose-gc` to collect garbage before each dump (retained vs lazily freed),
// or `-- --no-concurrent-recompilation` to have TurboFan compile on the main
// thread (the growth of the first dump after the warm-up is V8's concurrent
// compiles: worker threads' malloc arenas and new code pages; see README).
// Each dump also prints the mappings whose resident size changed most.

import { fork } from 'node:child_process';
import os from 'node:os';
import { readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import * as abi from '../../src/maps/abi.js';
import { AGENT_NODE_FLAGS, agentEnv } from '../../src/agent/nodeflags.js';
import { native } from '../../src/native/binding.js';
import { bpfObjectPath, projectRoot } from '../../src/paths.js';
import { Testbed } from '../../src/testbed/netns.js';
import { fill } from './ctfill.js';

// `npx tap test/api` runs every file of the folder: a benchmark is run by hand.
if (process.env.TAP) {
  process.stdout.write('1..0 # a benchmark, run by hand (command in the header)\n');
  process.exit(0);
}

const dash = process.argv.indexOf('--');
const args = dash < 0 ? process.argv.slice(2) : process.argv.slice(2, dash);
const agentFlags = dash < 0 ? [...AGENT_NODE_FLAGS] : process.argv.slice(dash + 1);
// And the agent's environment (MALLOC_ARENA_MAX=1) with its own flags; with others, the bench's plain environment.
const agentEnvironment = dash < 0 ? agentEnv(process.env) : process.env;
const n = Number(args[0] ?? 1_000_000);
const limit = Number(args[1] ?? 500);
const passes = Math.max(2, Number(args[2] ?? 3));
const MiB = 1048576;
const mb = (b: number) => `${(b / MiB).toFixed(2)} MiB`;

/** VmRSS and VmHWM (peak RSS) of a process, in bytes. */
async function rssOf(pid: number): Promise<{ rss: number; hwm: number }> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (f: string) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

interface Mapping {
  size: number;
  rss: number;
  /** The mapped file or [heap]/[stack]/…; '' for anonymous memory. */
  path: string;
  /** Anonymous and aligned like glibc's arenas of threads other than the main one (HEAP_MAX_SIZE, 64 MiB); V8's pages are 256 KiB chunks. */
  arena: boolean;
}

/** Resident bytes per mapping of a process, by start address: which mapping a dump's growth landed in. */
async function residentByMapping(pid: number): Promise<Map<string, Mapping>> {
  const out = new Map<string, Mapping>();
  let cur: Mapping | undefined;
  for (const line of (await readFile(`/proc/${pid}/smaps`, 'utf8')).split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const path = head[3]!;
      cur = { size: parseInt(head[2]!, 16) - parseInt(head[1]!, 16), rss: 0, path, arena: !path && BigInt(`0x${head[1]}`) % (64n << 20n) === 0n };
      out.set(head[1]!, cur);
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss && cur) cur.rss = Number(rss[1]) * 1024;
  }
  return out;
}

/** Resident bytes by kind of mapping: malloc's main heap (brk), anonymous mappings (V8's heap pages, thread arenas, large mallocs), files. */
async function residentByKind(pid: number): Promise<Record<string, number>> {
  const out: Record<string, number> = { '[heap]': 0, anonymous: 0, files: 0, other: 0 };
  for (const m of (await residentByMapping(pid)).values()) {
    const kind = m.path === '' ? 'anonymous' : m.path === '[heap]' ? '[heap]' : m.path.startsWith('/') ? 'files' : 'other';
    out[kind]! += m.rss;
  }
  return out;
}

/** The mappings whose resident size changed between two snapshots, largest change first. */
function mappingGrowth(a: Map<string, Mapping>, b: Map<string, Mapping>): string {
  const label = (m: Mapping) => `${m.path || (m.arena ? 'malloc arena' : 'anon')} ${(m.size / 1024).toFixed(0)}K`;
  const d: [string, number, string][] = [];
  for (const [at, m] of b) {
    const delta = m.rss - (a.get(at)?.rss ?? 0);
    if (delta !== 0) d.push([at, delta, `${label(m)}${a.has(at) ? '' : ' new'}`]);
  }
  for (const [at, m] of a) if (!b.has(at) && m.rss) d.push([at, -m.rss, `${label(m)} gone`]);
  d.sort((x, y) => Math.abs(y[1]) - Math.abs(x[1]));
  return d.slice(0, 6).map(([at, delta, what]) => `${at} ${delta > 0 ? '+' : ''}${(delta / 1024).toFixed(0)}K ${what}`).join('; ') || 'none';
}

/** Resets VmHWM to the current RSS (clear_refs "5", Linux >= 4.0). */
const resetPeak = (pid: number) => writeFile(`/proc/${pid}/clear_refs`, '5');

const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
function get(port: number, url: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: url, agent: keepAlive }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks)) : reject(new Error(`${res.statusCode} ${Buffer.concat(chunks).toString().slice(0, 300)}`))));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

const tb = Testbed.create();
try {
  const pinRoot = await tb.mountBpffs();
  const obj = await native().openObject(bpfObjectPath('kbp_pod'), { pinRoot, maxEntries: { [abi.KBP_MAP_CT]: Math.max(abi.KBP_CT_MAX, n * 2) } });
  const t0 = performance.now();
  await fill(obj.map(abi.KBP_MAP_CT), n);
  process.stdout.write(`filled ${n} conntrack entries in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);

  const agent = fork(path.join(projectRoot, 'test', 'api', 'bench-paging-agent.mjs'), [path.join(pinRoot, abi.KBP_MAP_CT)], { execArgv: agentFlags, env: agentEnvironment, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  try {
    const { port } = await new Promise<{ port: number }>((resolve, reject) => {
      agent.once('message', (m) => resolve(m as { port: number }));
      agent.once('exit', (code) => reject(new Error(`agent exited (${code}) before listening`)));
    });
    const pid = agent.pid!;
    process.stdout.write(`agent pid ${pid}, node flags: ${agentFlags.join(' ') || '(none)'}, MALLOC_ARENA_MAX=${agentEnvironment.MALLOC_ARENA_MAX ?? '(unset)'}\n`);

    let pageBytes = 0;
    const dump = async (): Promise<{ served: number; pages: number; secs: number }> => {
      let token: string | null = null;
      let served = 0;
      let pages = 0;
      const t = performance.now();
      do {
        const body = await get(port, `/v1/conntrack?limit=${limit}${token ? `&continue=${token}` : ''}`);
        const page = JSON.parse(body.toString('utf8')) as { items: unknown[]; continue: string | null };
        if (page.items.length === limit) pageBytes = Math.max(pageBytes, body.length);
        served += page.items.length;
        pages++;
        token = page.continue;
      } while (token);
      return { served, pages, secs: (performance.now() - t) / 1000 };
    };

    const start = await rssOf(pid);
    const load = os.loadavg();
    const rows: string[] = [];
    const steady: number[] = [];
    let warm: Record<string, number> = {};
    let warmRss = 0;
    const collect = agentFlags.includes('--expose-gc');
    const ask = () =>
      new Promise<{ mem: NodeJS.MemoryUsage; spaces: Record<string, number>; heap: { total_heap_size: number; used_heap_size: number }; gcs: { minor: number; major: number } }>((r) => {
        agent.once('message', (m) => r(m as never));
        agent.send('stats');
      });
    for (let p = 1; p <= passes; p++) {
      // With --expose-gc the agent collects before each dump: what remains is retained, not garbage V8 has not needed to collect yet.
      if (collect) {
        agent.send('gc');
        await ask();
      }
      const statsBefore = await ask();
      const mapsBefore = await residentByMapping(pid);
      await resetPeak(pid);
      const before = await rssOf(pid);
      const d = await dump();
      const after = await rssOf(pid);
      const mapsAfter = await residentByMapping(pid);
      const statsAfter = await ask();
      const gcBefore = statsBefore.gcs;
      const gcAfter = statsAfter.gcs;
      // Where the dump's growth went: V8's spaces (committed), and what is outside V8's heap.
      const grew = (k: string) => (statsAfter.spaces[k] ?? 0) - (statsBefore.spaces[k] ?? 0);
      const outsideV8 = after.rss - before.rss - (statsAfter.heap.total_heap_size - statsBefore.heap.total_heap_size);
      if (d.served !== n) throw new Error(`pass ${p}: served ${d.served}, expected ${n}`);
      const growth = after.hwm - before.rss;
      if (p > 1) steady.push(growth);
      if (p === 1) {
        warm = await residentByKind(pid);
        warmRss = after.rss;
      }
      rows.push(
        `  dump ${p} (${p === 1 ? 'cold  ' : 'steady'}): ${d.pages} pages in ${d.secs.toFixed(1)} s (${Math.round(d.served / d.secs)} entries/s); ` +
          `RSS ${mb(before.rss)} -> peak ${mb(after.hwm)}, end ${mb(after.rss)}: growth ${mb(growth)}; ` +
          `GCs ${gcAfter.minor - gcBefore.minor} minor, ${gcAfter.major - gcBefore.major} major; ` +
          `committed +: new ${mb(grew('new_space'))}, old ${mb(grew('old_space'))}, code ${mb(grew('code_space'))}, large ${mb(grew('large_object_space'))}, outside V8 ${mb(outsideV8)} (end RSS)\n` +
          `    resident by mapping: ${mappingGrowth(mapsBefore, mapsAfter)}`,
      );
    }
    const sorted = [...steady].sort((a, b) => a - b);
    const median = sorted[Math.floor((sorted.length - 1) / 2)]!;
    const steadyWorst = sorted[sorted.length - 1]!;
    const end = await rssOf(pid);
    const last = await residentByKind(pid);
    const byKind = Object.keys(last).map((k) => `${k} ${mb(warm[k] ?? 0)} -> ${mb(last[k]!)}`).join(', ');
    const stats = await ask();
    const sp = stats.spaces;
    process.stdout.write(
      `${rows.join('\n')}\n` +
        `agent RSS: ${mb(start.rss)} before the first dump, ${mb(end.rss)} after ${passes} (${passes * n} entries)\n` +
        `agent V8 heap after: ${mb(stats.heap.total_heap_size)} committed, ${mb(stats.heap.used_heap_size)} used ` +
        `(new ${mb(sp.new_space ?? 0)}, old ${mb(sp.old_space ?? 0)}, large objects ${mb(sp.large_object_space ?? 0)}); ` +
        `external ${mb(stats.mem.external)} (array buffers ${mb(stats.mem.arrayBuffers)})\n` +
        `resident after dump 1 -> after dump ${passes}: ${byKind}\n` +
        `load average at the start: ${load.map((l) => l.toFixed(2)).join(', ')}\n` +
        `page size: ${limit} entries = ${mb(pageBytes)} of JSON\n` +
        `RSS growth per ${n}-entry dump after the warm-up dump (${steady.length} dumps): median ${mb(median)}, worst ${mb(steadyWorst)} = ` +
        `${(steadyWorst / pageBytes).toFixed(2)} pages; RSS after the warm-up dump -> after the last: ${mb(warmRss)} -> ${mb(end.rss)}\n` +
        `criterion (every dump after the warm-up grows RSS by <= one page): ${steadyWorst <= pageBytes ? 'MET' : 'NOT met'}\n`,
    );
  } finally {
    agent.send('exit');
    await new Promise((r) => (agent.exitCode !== null ? r(null) : agent.once('exit', r)));
    keepAlive.destroy();
  }
  obj.close();
} finally {
  await tb.teardown();
}
