// Giving back what the first list left behind.
//
// Listing 10k Services and their EndpointSlices is a burst: list pages are
// read, parsed and projected, the desired state is computed and encoded for
// the syncer, and most of that is garbage a moment later. V8 grows its heap for
// the burst and, on a process that goes quiet afterwards, may not run a full
// collection for a long time; glibc keeps the freed chunks of the response
// buffers and the addon's batch buffers in its heap. Measured at 10k Services x
// 10 endpoints (kbp bench cluster): ~90 MB of V8 garbage and ~35 MB of freed
// malloc memory still resident once the agent is ready.
//
// So once the first sync has been programmed, the agent runs one
// full V8 collection and then malloc_trim(0). It is a one-off cost (~130 ms of
// main-thread time at 10k Services) paid when nothing is waiting: the
// datapath is already programmed and the runner's next sync waits on the
// event loop anyway.
//
// V8 exposes a full collection to JavaScript only under --expose-gc; the flag
// is set at run time, and the gc function taken from a fresh context (where
// V8 installs it once the flag is set) — the main context is not touched.

import v8 from 'node:v8';
import vm from 'node:vm';
import { native } from '../native/binding.js';

type GcFunction = () => void;
let gcFn: GcFunction | null | undefined;

/** V8's full collection, or null when this runtime does not provide one. */
function fullGc(): GcFunction | null {
  if (gcFn !== undefined) return gcFn;
  try {
    const exposed = (globalThis as { gc?: GcFunction }).gc; // node started with --expose-gc
    if (typeof exposed === 'function') return (gcFn = exposed);
    v8.setFlagsFromString('--expose-gc');
    const fn = vm.runInNewContext('gc') as unknown;
    gcFn = typeof fn === 'function' ? (fn as GcFunction) : null;
  } catch {
    gcFn = null;
  }
  return gcFn;
}

export interface MemoryRelease {
  /** Resident set before and after, MiB. */
  rssBeforeMiB: number;
  rssAfterMiB: number;
  /** V8 heap in use before and after, MiB. */
  heapBeforeMiB: number;
  heapAfterMiB: number;
  ms: number;
  /** What ran: the full collection (false when unavailable) and whether malloc_trim released anything. */
  collected: boolean;
  trimmed: boolean;
}

const mib = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;

/** One full V8 collection, then malloc_trim: what a burst of allocations left resident goes back to the kernel. */
export function releaseMemory(): MemoryRelease {
  const t0 = performance.now();
  const before = process.memoryUsage();
  const gc = fullGc();
  gc?.();
  const trimmed = native().mallocTrim();
  const after = process.memoryUsage();
  return {
    rssBeforeMiB: mib(before.rss),
    rssAfterMiB: mib(after.rss),
    heapBeforeMiB: mib(before.heapUsed),
    heapAfterMiB: mib(after.heapUsed),
    ms: Math.round((performance.now() - t0) * 10) / 10,
    collected: gc !== null,
    trimmed,
  };
}
