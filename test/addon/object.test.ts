// openObject/openPinnedMap: loading, pinning by name into a bpffs of our own,
// reuse of pinned maps by a second load, resizing before load, and the errno
// errors (missing files, missing maps, closed objects, verifier rejections).
import t from 'tap';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { native } from '../../src/native/binding.js';
import { bpfObjectPath } from '../../src/paths.js';
import { compileFixture, mapsObject, mountBpffs, rejection, SMALL_MAPS, thrown } from './helpers.js';

const MAP_NAMES = ['kbp_svc_v1', 'kbp_backend_v2', 'kbp_revnat_v1', 'kbp_ct4_v2', 'kbp_stats_v2'] as const;

t.test('load pins every datapath map by name under pinRoot, resized as asked', async (t) => {
  const pinRoot = await mountBpffs(t);
  const objPath = await mapsObject(t);
  const obj = await native().openObject(objPath, { pinRoot, maxEntries: SMALL_MAPS });
  t.teardown(() => obj.close());
  t.equal(obj.path, objPath);

  const c = native().constants();
  t.same(MAP_NAMES, [c.KBP_MAP_SERVICES, c.KBP_MAP_BACKENDS, c.KBP_MAP_REVNAT, c.KBP_MAP_CT, c.KBP_MAP_STATS]);
  const layout = native().layout();
  const expect = {
    kbp_svc_v1: { type: 1, keySize: layout.kbp_svc_key?.size, valueSize: layout.kbp_svc_value?.size },
    kbp_backend_v2: { type: 1, keySize: layout.kbp_backend_key?.size, valueSize: layout.kbp_backend?.size },
    kbp_revnat_v1: { type: 1, keySize: layout.kbp_revnat_key?.size, valueSize: layout.kbp_revnat?.size },
    kbp_ct4_v2: { type: 9, keySize: layout.kbp_ct_key?.size, valueSize: layout.kbp_ct_value?.size },
    kbp_stats_v2: { type: 6, keySize: 4, valueSize: layout.kbp_stat_value?.size, maxEntries: c.KBP_STAT_SLOTS },
  };
  for (const name of MAP_NAMES) {
    t.ok(existsSync(path.join(pinRoot, name)), `${name} pinned`);
    const info = obj.map(name).info;
    t.match(info, { name, ...expect[name] }, `${name} info`);
    t.ok(info.id > 0, `${name} has an id`);
    if (name !== 'kbp_stats_v2') t.equal(info.maxEntries, SMALL_MAPS[name], `${name} resized`);
  }
  t.equal(obj.map('kbp_svc_v1'), obj.map('kbp_svc_v1'), 'the same wrapper every time');
  t.ok(obj.maps().length >= MAP_NAMES.length);
  t.ok(obj.programs().length >= 1, 'has a program');
});

t.test('a second load reuses the pinned maps; pins outlive the objects', async (t) => {
  const pinRoot = await mountBpffs(t);
  const objPath = await mapsObject(t);
  const first = await native().openObject(objPath, { pinRoot, maxEntries: SMALL_MAPS });
  t.teardown(() => first.close());
  const second = await native().openObject(objPath, { pinRoot, maxEntries: SMALL_MAPS });
  t.teardown(() => second.close());
  for (const name of MAP_NAMES) {
    t.equal(second.map(name).info.id, first.map(name).info.id, `${name}: same map id`);
  }
  const key = Buffer.from([1, 2, 3, 4]);
  const value = Buffer.from([10, 0, 0, 1, 0x1f, 0x90, 6, 0, 1, 0, 0, 0]);
  await first.map('kbp_backend_v2').update(key, value);
  t.same(await second.map('kbp_backend_v2').lookup(key), value, 'written by one, read by the other');

  const id = first.map('kbp_backend_v2').info.id;
  first.close();
  second.close();
  const pinned = await native().openPinnedMap(path.join(pinRoot, 'kbp_backend_v2'));
  t.teardown(() => pinned.close());
  t.equal(pinned.info.id, id, 'openPinnedMap opens the same map');
  t.same(await pinned.lookup(key), value, 'entries survive the objects');
});

t.test('a pinned map with other parameters is not silently reused', async (t) => {
  const pinRoot = await mountBpffs(t);
  const objPath = await mapsObject(t);
  const first = await native().openObject(objPath, { pinRoot, maxEntries: SMALL_MAPS });
  t.teardown(() => first.close());
  const err = await rejection(
    native().openObject(objPath, { pinRoot, maxEntries: { ...SMALL_MAPS, kbp_ct4_v2: SMALL_MAPS.kbp_ct4_v2 * 2 } }),
  );
  t.equal(err.code, 'EINVAL');
  t.equal(err.errno, 22);
  t.equal(err.syscall, 'bpf_object__load');
  t.match(err.message, /kbp_ct4_v2/, 'libbpf says which map, in the error message');
});

t.test('maxEntries for a map the object does not have is ENOENT', async (t) => {
  const pinRoot = await mountBpffs(t);
  const err = await rejection(native().openObject(await mapsObject(t), { pinRoot, maxEntries: { kbp_nope: 1 } }));
  t.match(err, { code: 'ENOENT', errno: 2, syscall: 'bpf_object__find_map_by_name' });
});

t.test('errors carry the errno name, number and call', async (t) => {
  const missing = await rejection(native().openObject('/nonexistent/kbp.bpf.o'));
  t.match(missing, { code: 'ENOENT', errno: 2, syscall: 'bpf_object__open_file' });
  t.ok(missing instanceof Error);

  const pinRoot = await mountBpffs(t);
  const obj = await native().openObject(bpfObjectPath('kbp_noop'), { pinRoot });
  t.teardown(() => obj.close());
  t.match(thrown(() => obj.map('kbp_nope')), { code: 'ENOENT', errno: 2 });
  t.match(thrown(() => obj.program('kbp_nope')), { code: 'ENOENT', errno: 2 });

  t.match(await rejection(native().openPinnedMap(path.join(pinRoot, 'nope'))), { code: 'ENOENT', syscall: 'bpf_obj_get' });
  const prog = obj.program('kbp_noop');
  await prog.pin(path.join(pinRoot, 'noop'));
  t.ok(existsSync(path.join(pinRoot, 'noop')), 'program pinned');
  t.match(await rejection(native().openPinnedMap(path.join(pinRoot, 'noop'))), { code: 'EINVAL' }, 'a pinned program is not a map');
  t.match(await rejection(prog.pin(path.join(pinRoot, 'noop'))), { code: 'EEXIST' }, 'pin over an existing pin');
});

t.test('close() releases the object; its maps and programs then reject with EBADF', async (t) => {
  const pinRoot = await mountBpffs(t);
  const obj = await native().openObject(await mapsObject(t), { pinRoot, maxEntries: SMALL_MAPS });
  const map = obj.map('kbp_backend_v2');
  const prog = obj.programs()[0];
  if (!prog) throw new Error('no program');
  const id = prog.info.id;
  const key = Buffer.alloc(4, 1);
  const inflight = map.lookup(key); // queued before close: must still complete
  obj.close();
  obj.close(); // idempotent
  t.equal(await inflight, null, 'work started before close() completes');
  t.match(await rejection(map.lookup(key)), { code: 'EBADF' });
  t.match(await rejection(prog.testRun({ data: Buffer.alloc(64) })), { code: 'EBADF' });
  t.equal(prog.fd, -1);
  // Nothing else holds the program: the kernel frees it once our fds are closed.
  let gone = false;
  for (let i = 0; i < 50 && !gone; i++) {
    gone = (await rejection(native().progInfo(id)).catch(() => ({ code: 'still there' }))).code === 'ENOENT';
    if (!gone) await new Promise((r) => setTimeout(r, 20));
  }
  t.ok(gone, 'program released by the kernel');
});

t.test('a verifier rejection returns the verifier log in the error', async (t) => {
  const pinRoot = await mountBpffs(t);
  const err = await rejection(native().openObject(await compileFixture(t, 'kbp_addon_reject'), { pinRoot }));
  t.equal(err.syscall, 'bpf_object__load');
  t.equal(err.code, 'EACCES', 'the verifier answers EACCES for a bad packet access');
  t.match(err.message, /invalid access to packet|invalid mem access/, 'the verifier reason is in the message');
  t.match(err.message, /kbp_reject/, 'the program is named');
});
