// BpfMap.lookupBatchInto, the addon call the API's walks use: the kernel
// writes each batch into the caller's buffers. On the datapath's own
// conntrack map and on a map type without kernel batch lookup (the
// per-element walk), it returns the same entries as lookupBatch, in place;
// buffers that cannot hold what is asked are refused before the kernel is
// called. (An addon test; it lives beside the API's, which are its user.)

import t from 'tap';
import { existsSync } from 'node:fs';
import * as abi from '../../src/maps/abi.js';
import { native, type BatchBuffers, type BpfMap } from '../../src/native/binding.js';
import { bpfObjectPath } from '../../src/paths.js';
import { compileFixture, mountBpffs, rejection } from '../addon/helpers.js';
import { fill } from './ctfill.js';

/** Every entry as "key hex=value hex", by walking with lookupBatch or lookupBatchInto. */
async function walk(map: BpfMap, count: number, into?: BatchBuffers): Promise<{ entries: string[]; batches: number }> {
  const ks = map.info.keySize;
  const vs = map.valueBufferSize;
  const entries: string[] = [];
  let cursor: Buffer | null = null;
  for (let batches = 1; ; batches++) {
    if (into) {
      const r = await map.lookupBatchInto!(cursor, count, into);
      for (let i = 0; i < r.count; i++) entries.push(`${into.keys.toString('hex', i * ks, (i + 1) * ks)}=${into.values.toString('hex', i * vs, (i + 1) * vs)}`);
      if (!r.next) return { entries, batches };
      cursor = into.next.subarray(0, r.next); // a view of the buffer the next cursor is written to: copied when the call is made
    } else {
      const p = await map.lookupBatch(cursor, count);
      for (let i = 0; i < p.count; i++) entries.push(`${p.keys.toString('hex', i * ks, (i + 1) * ks)}=${p.values.toString('hex', i * vs, (i + 1) * vs)}`);
      if (!p.next) return { entries, batches };
      cursor = p.next;
    }
  }
}

const buffers = (map: BpfMap, entries: number, next = 1 + Math.max(map.info.keySize, 8)): BatchBuffers => ({
  keys: Buffer.alloc(entries * map.info.keySize),
  values: Buffer.alloc(entries * map.valueBufferSize),
  next: Buffer.alloc(next),
});

const objPath = bpfObjectPath('kbp_pod');
if (process.getuid?.() !== 0) t.plan(0, 'needs root (bpffs, BPF maps)');
else if (!existsSync(objPath)) t.plan(0, `needs a build (${objPath}): make build`);
else {
  t.test('conntrack: the same entries as lookupBatch, written into the caller buffers', async (t) => {
    const pinRoot = await mountBpffs(t);
    const obj = await native().openObject(objPath, { pinRoot });
    t.teardown(() => obj.close());
    const ct = obj.map(abi.KBP_MAP_CT);
    const n = 5000;
    await fill(ct, n);
    const plain = await walk(ct, 700);
    const into = buffers(ct, 700);
    const placed = await walk(ct, 700, into);
    t.equal(placed.entries.length, n, 'every entry');
    t.equal(new Set(placed.entries).size, n, 'each once');
    t.same([...placed.entries].sort(), [...plain.entries].sort(), 'keys and values as lookupBatch returns them');
    t.ok(placed.batches >= Math.ceil(n / 700), `${placed.batches} batches`);

    // A larger buffer than asked for is fine; a smaller one is refused before the kernel is called.
    t.equal((await ct.lookupBatchInto!(null, 10, buffers(ct, 50))).count, 10, 'no more than maxCount (the buckets here are small)');
    t.match(await rejection(ct.lookupBatchInto!(null, 11, buffers(ct, 10))), { code: 'EINVAL', syscall: 'bpf_map_lookup_batch' }, 'maxCount beyond the buffers');
    t.match(await rejection(ct.lookupBatchInto!(null, 10, buffers(ct, 10, 4))), { code: 'EINVAL' }, 'a next buffer too short for the cursor');
    t.match(await rejection(ct.lookupBatchInto!(null, 10, { keys: Buffer.alloc(160) } as unknown as BatchBuffers)), { code: 'EINVAL' }, 'buffers missing');
    t.match(await rejection(ct.lookupBatchInto!(Buffer.from('nope'), 10, buffers(ct, 10))), { code: 'EINVAL' }, 'a foreign cursor');

    const empty = obj.map(abi.KBP_MAP_AFFINITY);
    t.same(await empty.lookupBatchInto!(null, 10, buffers(empty, 10)), { count: 0, next: 0 }, 'an empty map: nothing, and no next cursor');
  });

  t.test('a map type without kernel batch lookup: the per-element walk writes into the buffers too', async (t) => {
    const pinRoot = await mountBpffs(t);
    const obj = await native().openObject(await compileFixture(t, 'kbp_addon_extra'), { pinRoot });
    t.teardown(() => obj.close());
    const devmap = obj.map('kbp_t_devmap');
    const key = (i: number) => Buffer.from([i & 255, 0, 0, 0]);
    const idx = Array.from({ length: 10 }, (_, i) => i);
    const lo = Buffer.from([1, 0, 0, 0]); // ifindex 1
    await devmap.updateBatch(Buffer.concat(idx.map(key)), Buffer.concat(idx.map(() => lo)), idx.length);
    const plain = await walk(devmap, 3);
    const placed = await walk(devmap, 3, buffers(devmap, 3));
    t.equal(placed.entries.length, 10);
    t.same([...placed.entries].sort(), [...plain.entries].sort());
  });
}
