// Benchmark (not part of `npx tap`): 1M conntrack entries in the kernel map,
// served page by page through GET /v1/conntrack; prints the agent process's
// RSS growth against the size of one page. Run as root after make build:
//   node --expose-gc --import @isaacs/ts-node-temp-fork-for-pr-2009/import test/api/bench-paging.ts [ENTRIES] [LIMIT]
// (the TypeScript loader tap itself uses)

import * as abi from '../../src/maps/abi.js';
import { native } from '../../src/native/binding.js';
import { bpfObjectPath } from '../../src/paths.js';
import { buildApi } from '../../src/api/app.js';
import { Testbed } from '../../src/testbed/netns.js';
import { fill, watched } from './ctfill.js';

const n = Number(process.argv[2] ?? 1_000_000);
const limit = Number(process.argv[3] ?? 500);
const mb = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;

const tb = Testbed.create();
try {
  const pinRoot = await tb.mountBpffs();
  const obj = await native().openObject(bpfObjectPath('kbp_pod'), { pinRoot, maxEntries: { [abi.KBP_MAP_CT]: Math.max(abi.KBP_CT_MAX, n * 2) } });
  const ct = obj.map(abi.KBP_MAP_CT);
  const t0 = performance.now();
  await fill(ct, n);
  process.stdout.write(`filled ${n} entries with updateBatch in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  const w = watched(ct);
  const app = await buildApi({ nodeName: 'bench', maps: new Map([[abi.KBP_MAP_CT, w.map]]), frontend: () => undefined, health: () => ({ ready: true, lastUpdated: new Date() }) }, { rateLimit: { perSecond: 1e9, burst: 1e9 } });

  const get = async (token: string | null) => {
    const r = await app.inject({ method: 'GET', url: `/v1/conntrack?limit=${limit}${token ? `&continue=${token}` : ''}` });
    if (r.statusCode !== 200) throw new Error(`${r.statusCode} ${r.body}`);
    return { body: r.json() as { items: unknown[]; continue: string | null }, bytes: r.rawPayload.length };
  };
  // Warm up (JIT, schema compilation), then take the baseline.
  let { body, bytes: pageBytes } = await get(null);
  global.gc?.();
  const base = process.memoryUsage().rss;
  const heapBase = process.memoryUsage().heapUsed;
  let peak = base;
  let heapPeak = heapBase;
  let served = body.items.length;
  let pages = 1;
  const t1 = performance.now();
  while (body.continue) {
    ({ body } = await get(body.continue));
    served += body.items.length;
    pages++;
    if (pages % 50 === 0) {
      // Collect first: the question is what the walk retains, not how lazily V8 frees garbage.
      global.gc?.();
      const m = process.memoryUsage();
      peak = Math.max(peak, m.rss);
      heapPeak = Math.max(heapPeak, m.heapUsed);
    }
  }
  peak = Math.max(peak, process.memoryUsage().rss);
  const secs = (performance.now() - t1) / 1000;
  process.stdout.write(
    `served ${served} entries in ${pages} pages of ${limit} in ${secs.toFixed(1)} s (${Math.round(served / secs)} entries/s)\n` +
      `one page: ${mb(pageBytes)} of JSON; largest kernel batch ${w.largest()} entries (${mb(w.largest() * 48)})\n` +
      `RSS: baseline ${mb(base)}, peak ${mb(peak)}, growth ${mb(peak - base)}; JS heap after GC: growth ${mb(heapPeak - heapBase)}\n` +
      `(whole map as JSON would be ~${mb(pageBytes * pages)}; ${global.gc ? 'GC every 50 pages' : 'run with --expose-gc for GC between samples'})\n`,
  );
  await app.close();
  obj.close();
  if (served !== n) throw new Error(`served ${served}, expected ${n}`);
} finally {
  await tb.teardown();
}
