// MapWriter implementations. BpfMapWriter is driven over a scripted BpfMap
// stand-in (the kernel path is covered by the agent and integration tests);
// FakeMapWriter is checked for the kernel behaviours the syncer relies on.
//
// Address conventions: ClusterIPs 10.96.0.x, pods 10.244.<node>.<pod>.

import t from 'tap';
import * as abi from '../../src/maps/abi.js';
import { BpfMapWriter, FakeMapWriter, MapFullError, MapOpError, mapError } from '../../src/maps/writer.js';
import { formatMap, formatOp } from '../../src/maps/format.js';
import type { BpfMap, BatchPage, MapInfo } from '../../src/native/binding.js';

const B = abi.KBP_MAP_BACKENDS;
const bkey = (id: number) => abi.backendKey.encode({ id });
const bval = (ip: string, port = 8080) => abi.backendValue.encode({ ip, port, proto: abi.IPPROTO_TCP, state: abi.KBP_BACKEND_ACTIVE, flags: 0 });

function errno(code: string): Error & { code: string } {
  return Object.assign(new Error(`${code} from kernel`), { code });
}

/** A BpfMap over a JS Map, with a script of failures per method. */
function scriptedMap(opts: { batch?: boolean; maxEntries?: number; bucketLimit?: number } = {}) {
  const rows = new Map<string, Buffer>();
  const calls: string[] = [];
  const info: MapInfo = { id: 1, name: B, type: 1, keySize: abi.backendKey.size, valueSize: abi.backendValue.size, maxEntries: opts.maxEntries ?? 100, flags: 0 };
  const put = (k: Buffer, v: Buffer) => {
    if (!rows.has(k.toString('hex')) && rows.size >= info.maxEntries) throw errno('E2BIG');
    rows.set(k.toString('hex'), Buffer.from(v));
  };
  const noBatch = () => {
    if (opts.batch === false) throw errno('EINVAL');
  };
  const m: BpfMap = {
    info,
    valueBufferSize: abi.backendValue.size,
    async lookup(k) {
      calls.push('lookup');
      return rows.get(k.toString('hex')) ?? null;
    },
    async update(k, v) {
      calls.push('update');
      put(k, v);
    },
    async delete(k) {
      calls.push('delete');
      return rows.delete(k.toString('hex'));
    },
    async updateBatch(keys, values, count) {
      calls.push(`updateBatch(${count})`);
      noBatch();
      const ks = abi.backendKey.size;
      const vs = abi.backendValue.size;
      for (let i = 0; i < count; i++) put(keys.subarray(i * ks, i * ks + ks), values.subarray(i * vs, i * vs + vs));
      return count;
    },
    async deleteBatch(keys, count) {
      calls.push(`deleteBatch(${count})`);
      noBatch();
      let n = 0;
      const ks = abi.backendKey.size;
      for (let i = 0; i < count; i++) if (rows.delete(keys.subarray(i * ks, i * ks + ks).toString('hex'))) n++;
      return n;
    },
    async lookupBatch(cursor, maxCount): Promise<BatchPage> {
      calls.push(`lookupBatch(${maxCount})`);
      noBatch();
      if (opts.bucketLimit && maxCount < opts.bucketLimit) throw errno('ENOSPC');
      const all = [...rows];
      const start = cursor ? cursor.readUInt32LE(0) : 0;
      const page = all.slice(start, start + maxCount);
      const end = start + page.length;
      const next = end < all.length ? Buffer.alloc(4) : null;
      next?.writeUInt32LE(end, 0);
      return {
        keys: Buffer.concat(page.map(([k]) => Buffer.from(k, 'hex'))),
        values: Buffer.concat(page.map(([, v]) => v)),
        count: page.length,
        next,
      };
    },
    async nextKey(k) {
      calls.push('nextKey');
      const keys = [...rows.keys()];
      const i = k ? keys.indexOf(k.toString('hex')) + 1 : 0;
      return i < keys.length ? Buffer.from(keys[i]!, 'hex') : null;
    },
    async pin() {},
    close() {},
  };
  return { m, rows, calls };
}

t.test('BpfMapWriter batches in chunks and reads in pages', async (t) => {
  const { m, calls } = scriptedMap();
  const w = new BpfMapWriter(new Map([[B, m]]), { batchSize: 3 });
  await w.updateBatch(B, [1, 2, 3, 4, 5].map((id) => ({ key: bkey(id), value: bval(`10.244.1.${id}`) })));
  t.same(calls, ['updateBatch(3)', 'updateBatch(2)']);
  calls.length = 0;
  const all = await w.entries(B);
  t.same(calls, ['lookupBatch(3)', 'lookupBatch(3)']);
  t.same(formatMap(B, all), [1, 2, 3, 4, 5].map((id) => `backend=${id} -> 10.244.1.${id}:8080/TCP active`));
  calls.length = 0;
  t.equal(await w.deleteBatch(B, [bkey(1), bkey(9), bkey(2)]), 2, 'absent keys are skipped');
  t.same(calls, ['deleteBatch(3)']);
});

t.test('BpfMapWriter falls back to single-entry calls when batches are not supported', async (t) => {
  const { m, calls } = scriptedMap({ batch: false });
  const w = new BpfMapWriter(new Map([[B, m]]));
  await w.updateBatch(B, [{ key: bkey(1), value: bval('10.244.1.1') }, { key: bkey(2), value: bval('10.244.1.2') }]);
  t.same(calls, ['updateBatch(2)', 'update', 'update'], 'one failed batch, then entry by entry');
  calls.length = 0;
  await w.updateBatch(B, [{ key: bkey(3), value: bval('10.244.1.3') }, { key: bkey(4), value: bval('10.244.1.4') }]);
  t.same(calls, ['update', 'update'], 'the map is remembered as batch-less');
  calls.length = 0;
  t.equal((await w.entries(B)).length, 4);
  t.same(calls, ['nextKey', 'lookup', 'nextKey', 'lookup', 'nextKey', 'lookup', 'nextKey', 'lookup', 'nextKey']);
});

t.test('BpfMapWriter writes packed entries in chunks of one buffer each, entry by entry without batch support', async (t) => {
  const packed = (ids: number[]) => ({ keys: Buffer.concat(ids.map(bkey)), values: Buffer.concat(ids.map((id) => bval(`10.244.1.${id}`))), count: ids.length });
  const { m, rows, calls } = scriptedMap();
  const w = new BpfMapWriter(new Map([[B, m]]), { batchSize: 2 });
  await w.updatePacked(B, packed([1, 2, 3, 4, 5]));
  t.same(calls, ['updateBatch(2)', 'updateBatch(2)', 'update'], 'a last chunk of one is a single update');
  t.same(formatMap(B, await w.entries(B)), [1, 2, 3, 4, 5].map((id) => `backend=${id} -> 10.244.1.${id}:8080/TCP active`));
  t.equal(rows.size, 5);

  const old = scriptedMap({ batch: false });
  const w2 = new BpfMapWriter(new Map([[B, old.m]]));
  await w2.updatePacked(B, packed([1, 2, 3]));
  t.same(old.calls, ['updateBatch(3)', 'update', 'update', 'update']);
  t.same(formatMap(B, await w2.entries(B)), [1, 2, 3].map((id) => `backend=${id} -> 10.244.1.${id}:8080/TCP active`));

  // The fake records a packed write as the updateBatch it stands for.
  const f = new FakeMapWriter({ [B]: { keySize: abi.backendKey.size, valueSize: abi.backendValue.size } });
  await f.updatePacked(B, packed([7, 8]));
  t.same(f.ops.map((o) => `${o.op} x${o.keys.length}`), ['updateBatch x2']);
  t.same(formatMap(B, f.snapshot(B)), ['backend=7 -> 10.244.1.7:8080/TCP active', 'backend=8 -> 10.244.1.8:8080/TCP active']);
});

t.test('BpfMapWriter grows the read page when a hash bucket does not fit (ENOSPC)', async (t) => {
  const { m, calls } = scriptedMap({ bucketLimit: 8 });
  const w = new BpfMapWriter(new Map([[B, m]]), { batchSize: 2 });
  await w.updateBatch(B, [{ key: bkey(1), value: bval('10.244.1.1') }]);
  calls.length = 0;
  t.equal((await w.entries(B)).length, 1);
  t.same(calls, ['lookupBatch(2)', 'lookupBatch(4)', 'lookupBatch(8)']);
});

t.test('map full surfaces as MapFullError, other failures as MapOpError', async (t) => {
  const { m } = scriptedMap({ maxEntries: 1 });
  const w = new BpfMapWriter(new Map([[B, m]]));
  await w.update(B, bkey(1), bval('10.244.1.1'));
  await w.update(B, bkey(1), bval('10.244.1.9')).then(() => t.pass('replacing an entry of a full map works'));
  const e1 = await w.update(B, bkey(2), bval('10.244.1.2')).catch((e) => e);
  t.type(e1, MapFullError);
  t.match(e1, { map: B, op: 'update', code: 'E2BIG' });
  const e2 = await w.updateBatch(B, [{ key: bkey(3), value: bval('10.244.1.3') }, { key: bkey(4), value: bval('10.244.1.4') }]).catch((e) => e);
  t.type(e2, MapFullError);
  t.match(e2, { op: 'updateBatch' });
  const e3 = await w.delete('kbp_nope_v1', bkey(1)).catch((e) => e);
  t.type(e3, MapOpError);
  t.notOk(e3 instanceof MapFullError);
  t.match(e3, { code: 'ENOENT' });
  t.ok(mapError(B, 'update', errno('ENOMEM')) instanceof MapFullError, 'ENOMEM on update is map full');
  t.ok(mapError(B, 'update', errno('ENOSPC')) instanceof MapFullError, 'ENOSPC on update is map full');
  t.notOk(mapError(B, 'delete', errno('ENOMEM')) instanceof MapFullError, 'not on delete');
  t.notOk(mapError(B, 'update', errno('EPERM')) instanceof MapFullError);
});

t.test('FakeMapWriter: capacity, partial batches, op log, injected failures', async (t) => {
  const w = new FakeMapWriter({ [B]: { keySize: abi.backendKey.size, valueSize: abi.backendValue.size, maxEntries: 2 } });
  await w.updateBatch(B, [1, 2, 3].map((id) => ({ key: bkey(id), value: bval(`10.244.1.${id}`) }))).then(
    () => t.fail('should be full'),
    (e) => t.type(e, MapFullError),
  );
  t.same(formatMap(B, w.snapshot(B)), ['backend=1 -> 10.244.1.1:8080/TCP active', 'backend=2 -> 10.244.1.2:8080/TCP active'], 'entries before the failure stay');
  t.same(w.ops.flatMap(formatOp), [
    'updateBatch kbp_backend_v2 backend=1 -> 10.244.1.1:8080/TCP active',
    'updateBatch kbp_backend_v2 backend=2 -> 10.244.1.2:8080/TCP active',
    'updateBatch kbp_backend_v2 backend=3 -> 10.244.1.3:8080/TCP active',
  ]);
  w.failWith = (op) => (op.op === 'delete' ? errno('EPERM') : undefined);
  const e = await w.delete(B, bkey(1)).catch((x) => x);
  t.type(e, MapOpError);
  t.match(e, { code: 'EPERM', op: 'delete', map: B });
  t.equal(w.size(B), 2, 'a failed op changes nothing');
  t.equal(w.ops.length, 1, 'a failed op is not logged');
  await t.rejects(w.update(B, Buffer.alloc(3), bval('10.244.1.1')), { code: 'EINVAL' });
});
