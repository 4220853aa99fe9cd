// releaseMemory (src/agent/memory.ts): it really runs a full collection (an
// object only a WeakRef points to is gone afterwards) and calls malloc_trim,
// without --expose-gc on the command line.
import t from 'tap';
import { releaseMemory } from '../../src/agent/memory.js';

t.test('a full collection runs and the figures are reported', async (t) => {
  t.equal(typeof (globalThis as { gc?: unknown }).gc, 'undefined', 'the test process has no global gc (no --expose-gc)');
  const ref = (() => new WeakRef({ payload: new Array(1000).fill(7) }))();
  // A WeakRef's target lives at least until the end of the job that made it.
  await new Promise((r) => setImmediate(r));
  t.ok(ref.deref(), 'the object is still there before the collection');
  // deref() keeps it for the rest of this job too.
  await new Promise((r) => setImmediate(r));
  const r = releaseMemory();
  t.equal(r.collected, true, 'a full collection was available');
  t.equal(ref.deref(), undefined, 'the unreachable object was collected');
  t.equal(typeof r.trimmed, 'boolean');
  t.ok(r.rssBeforeMiB > 0 && r.rssAfterMiB > 0 && r.heapAfterMiB > 0, 'memory figures are read');
  t.ok(r.ms >= 0);
  t.equal(typeof (globalThis as { gc?: unknown }).gc, 'undefined', 'the main context still has no global gc');
});
