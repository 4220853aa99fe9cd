// The agent side of bench-paging.ts: the API as the agent builds it (dist/,
// the compiled code `kbp agent` runs), serving one pinned conntrack map on
// 127.0.0.1, in a process of its own so its RSS is the API's alone (no
// client, no TypeScript loader, no map filler). Talks to the bench over the
// IPC channel: 'gc' collects (when started with --expose-gc), anything else
// answers with the process's memory figures and its GC counts so far.
//
//   node [V8 FLAGS] test/api/bench-paging-agent.mjs PINNED_CT_MAP

import v8 from 'node:v8';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { buildApi } from '../../dist/api/app.js';
import { native } from '../../dist/native/binding.js';
import * as abi from '../../dist/maps/abi.js';

const pin = process.argv[2];
if (!pin || !process.send) {
  // `npx tap test/api` runs every file of the folder: this one only runs forked by bench-paging.ts.
  if (process.env.TAP) {
    process.stdout.write('1..0 # the agent side of bench-paging.ts, run by it\n');
    process.exit(0);
  }
  throw new Error('usage: fork(bench-paging-agent.mjs, [PINNED_CT_MAP])');
}
const gcs = { minor: 0, major: 0 };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) gcs.minor++;
    else if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) gcs.major++;
  }
}).observe({ entryTypes: ['gc'] });
const ct = await native().openPinnedMap(pin);
const app = await buildApi(
  { nodeName: 'bench', maps: new Map([[abi.KBP_MAP_CT, ct]]), frontend: () => undefined, health: () => ({ ready: true, lastUpdated: new Date() }) },
  { rateLimit: { perSecond: 1e9, burst: 1e9 } },
);
await app.listen({ host: '127.0.0.1', port: 0 });

process.on('message', (m) => {
  if (m === 'gc') globalThis.gc?.();
  if (m === 'exit') {
    void app.close().then(() => process.exit(0));
    return;
  }
  const mem = process.memoryUsage();
  const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, s.space_size]));
  process.send({ mem, spaces, heap: v8.getHeapStatistics(), gcs });
});
process.send({ port: app.server.address().port, flags: process.execArgv });
