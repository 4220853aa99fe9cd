// BpfMap: element operations, batch operations (with the per-element
// fallbacks), paging with lookupBatch, per-CPU values and errno errors, on
// the datapath's own maps (kbp_pod.bpf.o or the maps.h fixture) and on a
// fixture with map types the kernel has no batch operations for.
import t, { type Test } from 'tap';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { native, type BpfMap, type BpfObject } from '../../src/native/binding.js';
import { compileFixture, mapsObject, mountBpffs, rejection, SMALL_MAPS } from './helpers.js';

const BPF_NOEXIST = 1;
const BPF_EXIST = 2;

async function openMaps(t: Test): Promise<BpfObject> {
  const pinRoot = await mountBpffs(t);
  const obj = await native().openObject(await mapsObject(t), { pinRoot, maxEntries: SMALL_MAPS });
  t.teardown(() => obj.close());
  return obj;
}

// Records built from the exported layout, never from hand-copied offsets.
const layout = native().layout();
function field(struct: string, name: string): { offset: number; size: number } {
  const f = layout[struct]?.fields[name];
  if (!f) throw new Error(`no ${struct}.${name}`);
  return f;
}
function svcKey(i: number): Buffer {
  const b = Buffer.alloc(layout.kbp_svc_key?.size ?? 0);
  b.writeUInt32BE((10 << 24) | (96 << 16) | (i >>> 8), field('kbp_svc_key', 'vip').offset);
  b.writeUInt16BE(80 + (i & 0xff), field('kbp_svc_key', 'port').offset);
  b.writeUInt8(6, field('kbp_svc_key', 'proto').offset);
  b.writeUInt16LE(i % 3, field('kbp_svc_key', 'slot').offset);
  return b;
}
function svcValue(i: number): Buffer {
  const b = Buffer.alloc(layout.kbp_svc_value?.size ?? 0);
  b.writeUInt32LE(i, field('kbp_svc_value', 'backend_id').offset);
  b.writeUInt32LE(i + 1, field('kbp_svc_value', 'svc_id').offset);
  return b;
}
function backendKey(id: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(id, field('kbp_backend_key', 'id').offset);
  return b;
}
function backendValue(id: number): Buffer {
  const b = Buffer.alloc(layout.kbp_backend?.size ?? 0);
  b.writeUInt32BE(0x0af40000 + id, field('kbp_backend', 'ip').offset);
  b.writeUInt16BE(8080, field('kbp_backend', 'port').offset);
  b.writeUInt8(6, field('kbp_backend', 'proto').offset);
  return b;
}

async function readAll(map: BpfMap, pageSize: number): Promise<{ keys: Buffer[]; values: Buffer[]; pages: number[] }> {
  const keys: Buffer[] = [];
  const values: Buffer[] = [];
  const pages: number[] = [];
  const { keySize } = map.info;
  const valueSize = map.valueBufferSize;
  let cursor: Buffer | null = null;
  for (let guard = 0; guard < 100000; guard++) {
    const page = await map.lookupBatch(cursor, pageSize);
    pages.push(page.count);
    for (let i = 0; i < page.count; i++) {
      keys.push(page.keys.subarray(i * keySize, (i + 1) * keySize));
      values.push(page.values.subarray(i * valueSize, (i + 1) * valueSize));
    }
    if (page.keys.length !== page.count * keySize) throw new Error('keys buffer length');
    if (page.values.length !== page.count * valueSize) throw new Error('values buffer length');
    if (page.next === null) return { keys, values, pages };
    cursor = page.next;
  }
  throw new Error('lookupBatch never reached the end');
}

t.test('element operations on a hash map', async (t) => {
  const svc = (await openMaps(t)).map('kbp_svc_v1');
  t.equal(svc.valueBufferSize, 16);
  t.equal(await svc.lookup(svcKey(1)), null, 'absent: null');
  await svc.update(svcKey(1), svcValue(1));
  t.same(await svc.lookup(svcKey(1)), svcValue(1));
  await svc.update(svcKey(1), svcValue(7), BPF_EXIST);
  t.same(await svc.lookup(svcKey(1)), svcValue(7), 'overwritten');
  t.match(await rejection(svc.update(svcKey(1), svcValue(1), BPF_NOEXIST)), { code: 'EEXIST', errno: 17, syscall: 'bpf_map_update_elem' });
  t.match(await rejection(svc.update(svcKey(2), svcValue(2), BPF_EXIST)), { code: 'ENOENT', errno: 2 });
  t.equal(await svc.delete(svcKey(1)), true);
  t.equal(await svc.delete(svcKey(1)), false, 'absent: false');
  t.equal(await svc.lookup(svcKey(1)), null);
});

t.test('wrong sizes are EINVAL before anything reaches the kernel', async (t) => {
  const svc = (await openMaps(t)).map('kbp_svc_v1');
  t.match(await rejection(svc.lookup(Buffer.alloc(4))), { code: 'EINVAL', errno: 22, syscall: 'bpf_map_lookup_elem' });
  t.match(await rejection(svc.update(svcKey(1), Buffer.alloc(8))), { code: 'EINVAL', syscall: 'bpf_map_update_elem' });
  t.match(await rejection(svc.delete(Buffer.alloc(13))), { code: 'EINVAL' });
  t.match(await rejection(svc.updateBatch(Buffer.alloc(12), Buffer.alloc(16), 2)), { code: 'EINVAL' }, 'count beyond the buffers');
  t.match(await rejection(svc.lookupBatch(Buffer.from('nope'), 10)), { code: 'EINVAL' }, 'a foreign cursor');
  t.match(await rejection(svc.lookupBatch(null, 0)), { code: 'EINVAL' });
});

t.test('nextKey walks every key once', async (t) => {
  const backends = (await openMaps(t)).map('kbp_backend_v2');
  t.equal(await backends.nextKey(null), null, 'empty map');
  for (const id of [3, 5, 9]) await backends.update(backendKey(id), backendValue(id));
  const seen: number[] = [];
  for (let k = await backends.nextKey(null); k; k = await backends.nextKey(k)) seen.push(k.readUInt32LE(0));
  t.same(seen.sort(), [3, 5, 9]);
});

t.test('updateBatch and deleteBatch (absent keys are skipped)', async (t) => {
  const backends = (await openMaps(t)).map('kbp_backend_v2');
  const ids = Array.from({ length: 1000 }, (_, i) => i + 1);
  const n = await backends.updateBatch(Buffer.concat(ids.map(backendKey)), Buffer.concat(ids.map(backendValue)), ids.length);
  t.equal(n, 1000);
  t.same(await backends.lookup(backendKey(1)), backendValue(1));
  t.same(await backends.lookup(backendKey(1000)), backendValue(1000));
  t.match(await rejection(backends.updateBatch(backendKey(1), backendValue(1), 1, BPF_NOEXIST)), { code: 'EEXIST' });

  // Every odd id, plus absent ids in between and at both ends.
  const del = [5000, ...ids.filter((id) => id % 2 === 1).flatMap((id) => [id, 2000 + id]), 6000];
  t.equal(await backends.deleteBatch(Buffer.concat(del.map(backendKey)), del.length), 500, 'only present keys count');
  t.equal(await backends.deleteBatch(Buffer.concat(del.map(backendKey)), del.length), 0, 'nothing left to delete');
  const { keys } = await readAll(backends, 64);
  t.same(keys.map((k) => k.readUInt32LE(0)).sort((a, b) => a - b), ids.filter((id) => id % 2 === 0));
  t.equal(await backends.updateBatch(Buffer.alloc(0), Buffer.alloc(0), 0), 0, 'empty batch');
});

t.test('lookupBatch pages through 10k entries, every key exactly once', async (t) => {
  const svc = (await openMaps(t)).map('kbp_svc_v1');
  const count = 10000;
  const idx = Array.from({ length: count }, (_, i) => i);
  t.equal(await svc.updateBatch(Buffer.concat(idx.map(svcKey)), Buffer.concat(idx.map(svcValue)), count), count);
  const { keys, values, pages } = await readAll(svc, 97);
  t.ok(pages.every((c) => c <= 97), 'no page larger than asked');
  t.ok(pages.length >= Math.ceil(count / 97), `paged (${pages.length} pages)`);
  const seen = new Map<string, number>();
  let mismatched = 0;
  keys.forEach((k, i) => {
    const hex = k.toString('hex');
    seen.set(hex, (seen.get(hex) ?? 0) + 1);
    const backendId = values[i]?.readUInt32LE(0) ?? -1;
    if (!svcKey(backendId).equals(k)) mismatched++;
  });
  t.equal(keys.length, count, 'as many entries as written');
  t.equal(seen.size, count, 'no duplicates');
  t.ok(idx.every((i) => seen.get(svcKey(i).toString('hex')) === 1), 'every key exactly once');
  t.equal(mismatched, 0, 'each value belongs to its key');
  t.equal(await svc.deleteBatch(Buffer.concat(idx.map(svcKey)), count), count);
  t.same(await svc.lookupBatch(null, 10), { keys: Buffer.alloc(0), values: Buffer.alloc(0), count: 0, next: null }, 'empty map');
});

t.test('LRU hash: element and batch operations', async (t) => {
  const ct = (await openMaps(t)).map('kbp_ct4_v2');
  const key = (i: number) => { const b = Buffer.alloc(16); b.writeUInt32BE(0x0af40102, 0); b.writeUInt16BE(40000 + i, 8); b[12] = 6; return b; };
  const value = (i: number) => { const b = Buffer.alloc(40); b.writeUInt32LE(i, 16); return b; };
  await ct.update(key(0), value(0));
  t.same(await ct.lookup(key(0)), value(0));
  const idx = Array.from({ length: 100 }, (_, i) => i + 1);
  t.equal(await ct.updateBatch(Buffer.concat(idx.map(key)), Buffer.concat(idx.map(value)), idx.length), 100);
  const { keys } = await readAll(ct, 7);
  t.equal(keys.length, 101);
  t.equal(await ct.deleteBatch(Buffer.concat([0, ...idx].map(key)), 101), 101);
  t.equal(await ct.nextKey(null), null);
});

t.test('per-CPU array: one 8-byte aligned slot per possible CPU', async (t) => {
  const stats = (await openMaps(t)).map('kbp_stats_v2');
  const ncpu = native().numPossibleCpus();
  t.equal(stats.info.valueSize, 16);
  t.equal(stats.valueBufferSize, ncpu * 16);
  const key = Buffer.alloc(4);
  key.writeUInt32LE(3);
  const zero = await stats.lookup(key);
  t.equal(zero?.length, ncpu * 16);
  const value = Buffer.alloc(ncpu * 16);
  for (let cpu = 0; cpu < ncpu; cpu++) {
    value.writeBigUInt64LE(BigInt(cpu + 1), cpu * 16); // packets
    value.writeBigUInt64LE(BigInt(100 * (cpu + 1)), cpu * 16 + 8); // bytes
  }
  await stats.update(key, value);
  t.same(await stats.lookup(key), value, 'each CPU slot as written');
  t.match(await rejection(stats.update(key, Buffer.alloc(16))), { code: 'EINVAL' }, 'a single-CPU value is refused');
  const { keys, values } = await readAll(stats, 4);
  t.equal(keys.length, 64, 'arrays list every index');
  t.same(values[keys.findIndex((k) => k.readUInt32LE(0) === 3)], value);
  t.match(await rejection(stats.delete(key)), { code: 'EINVAL' }, 'array elements cannot be deleted');
});

t.test('map types without kernel batch operations fall back to per-element calls', async (t) => {
  const pinRoot = await mountBpffs(t);
  const obj = await native().openObject(await compileFixture(t, 'kbp_addon_extra'), { pinRoot });
  t.teardown(() => obj.close());
  t.ok(existsSync(path.join(pinRoot, 'kbp_t_devmap')) && existsSync(path.join(pinRoot, 'kbp_t_pcpu')), 'pinned by name');
  t.notOk(existsSync(path.join(pinRoot, 'kbp_t_unpinned')), 'maps without LIBBPF_PIN_BY_NAME are not pinned');

  // The kernel has no batch operations for devmaps (ENOTSUPP).
  const devmap = obj.map('kbp_t_devmap');
  const key = (i: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(1000 + i); return b; };
  const lo = Buffer.from([1, 0, 0, 0]); // ifindex 1
  const idx = Array.from({ length: 10 }, (_, i) => i);
  t.equal(await devmap.updateBatch(Buffer.concat(idx.map(key)), Buffer.concat(idx.map(() => lo)), 10), 10);
  const { keys, values, pages } = await readAll(devmap, 3);
  t.same(pages.slice(0, 3), [3, 3, 3]);
  t.same(keys.map((k) => k.readUInt32LE(0)).sort((a, b) => a - b), idx.map((i) => 1000 + i));
  t.ok(values.every((v) => v.equals(lo)), 'values');
  t.equal(await devmap.deleteBatch(Buffer.concat([key(1), key(42), key(2)]), 3), 2, 'absent keys skipped');
  t.equal((await readAll(devmap, 100)).keys.length, 8);
  t.match(await rejection(devmap.updateBatch(key(20), Buffer.from([0xff, 0xff, 0, 0]), 1)), { code: 'EINVAL', syscall: 'bpf_map_update_elem' },
    'a failure of the per-element fallback names the per-element call (no such ifindex)');

  const pcpu = obj.map('kbp_t_pcpu');
  const ncpu = native().numPossibleCpus();
  t.equal(pcpu.valueBufferSize, ncpu * 8, '4-byte values take 8 bytes per CPU');
  const v = Buffer.alloc(ncpu * 8);
  for (let cpu = 0; cpu < ncpu; cpu++) v.writeUInt32LE(cpu + 10, cpu * 8);
  t.equal(await pcpu.updateBatch(Buffer.concat([key(1), key(2)]), Buffer.concat([v, v]), 2), 2);
  const all = await readAll(pcpu, 10);
  t.equal(all.keys.length, 2);
  t.same(all.values, [v, v]);
});

t.test('a map opened from its pin is closed by close()', async (t) => {
  const pinRoot = await mountBpffs(t);
  const obj = await native().openObject(await mapsObject(t), { pinRoot, maxEntries: SMALL_MAPS });
  t.teardown(() => obj.close());
  const pinned = await native().openPinnedMap(path.join(pinRoot, 'kbp_revnat_v1'));
  t.equal(pinned.info.id, obj.map('kbp_revnat_v1').info.id);
  await pinned.update(Buffer.alloc(4, 1), Buffer.alloc(8, 2));
  t.same(await obj.map('kbp_revnat_v1').lookup(Buffer.alloc(4, 1)), Buffer.alloc(8, 2));
  pinned.close();
  t.match(await rejection(pinned.lookup(Buffer.alloc(4, 1))), { code: 'EBADF', errno: 9 });
  t.same(await obj.map('kbp_revnat_v1').lookup(Buffer.alloc(4, 1)), Buffer.alloc(8, 2), 'the map itself lives on');
  await pinned.pin(path.join(pinRoot, 'x')).catch(() => undefined);
  t.notOk(existsSync(path.join(pinRoot, 'x')), 'a closed map cannot be pinned');
});
