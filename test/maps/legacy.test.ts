// ABI v1 codecs and converters of src/maps/legacy.ts.
//
// The layout part compiles static asserts (sizeof/offsetof of every field the
// codecs declare) against bpf/include/kbp/abi.h as of the last v1 commit,
// taken from git history; it fails, not skips, when the history or clang is
// missing, because then nothing checks the legacy codecs. A deliberately wrong
// offset must fail that compile, so the check is shown able to fail.
//
// Address conventions: ClusterIPs 10.96.0.x, pods 10.244.1.x, clients 10.244.1.100.

import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import * as abi from '../../src/maps/abi.js';
import { backendValueV1, convertBackendV1, convertCtV1, ctValueV1, KBP_STAT_MAX_V1, LEGACY_MAPS, parseMapName } from '../../src/maps/legacy.js';
import { projectRoot } from '../../src/paths.js';

const V1_COMMIT = '9f7111a464b663286863af6787cd6c287bde20da';
const run = promisify(execFile);

t.test('v1 codecs: exact bytes and round trip', async (t) => {
  const be = { ip: '10.244.1.5', port: 8080, proto: abi.IPPROTO_TCP, state: abi.KBP_BACKEND_TERMINATING };
  t.equal(backendValueV1.encode(be).toString('hex'), '0af40105' + '1f90' + '06' + '01');
  t.same(backendValueV1.decode(backendValueV1.encode(be)), be);
  const ct = { created_ns: 0x0102030405060708n, last_seen_ns: 9n, backend_id: 5, svc_id: 3, flags: abi.KBP_CT_F_SEEN_REPLY | abi.KBP_CT_F_CLOSING, tcp_flags: 0x1b };
  t.equal(ctValueV1.encode(ct).toString('hex'), '0807060504030201' + '0900000000000000' + '05000000' + '03000000' + '0300' + '1b' + '0000000000');
  t.same(ctValueV1.decode(ctValueV1.encode(ct)), ct);
});

t.test('converters', async (t) => {
  t.same(convertBackendV1({ ip: '10.244.1.5', port: 8080, proto: 6, state: 0 }), { ip: '10.244.1.5', port: 8080, proto: 6, state: 0, flags: 0 }, 'backend: no locality flag yet');
  const ctx = { revnat: new Map([[3, { vip: '10.96.0.10', port: 80 }]]) };
  const v = { created_ns: 1n, last_seen_ns: 2n, backend_id: 5, svc_id: 3, flags: abi.KBP_CT_F_SEEN_REPLY, tcp_flags: 0x12 };
  const fwd = { saddr: '10.244.1.100', daddr: '10.96.0.10', sport: 40000, dport: 80, proto: 6, dir: abi.KBP_CT_FORWARD };
  const rep = { saddr: '10.244.1.5', daddr: '10.244.1.100', sport: 8080, dport: 40000, proto: 6, dir: abi.KBP_CT_REPLY };
  t.same(convertCtV1(fwd, v, ctx), { ...v, nat_addr: '0.0.0.0', nat_port: 0, client_port: 0 }, 'forward entry: no SNAT fields');
  t.same(convertCtV1(rep, v, ctx), { ...v, nat_addr: '10.96.0.10', nat_port: 80, client_port: 0 }, 'reply entry names the frontend the client addressed (from revnat)');
  t.equal(convertCtV1(rep, { ...v, svc_id: 9 }, ctx), null, 'reply entry of a vanished frontend is left behind');
  // Through the table entry, as migrate.ts calls it.
  const ctMap = LEGACY_MAPS.find((m) => m.name === 'kbp_ct4_v1')!;
  const out = ctMap.convert!(abi.ctKey.encode(rep), ctValueV1.encode(v), ctx)!;
  t.same(abi.ctValue.decode(out.value), { ...v, nat_addr: '10.96.0.10', nat_port: 80, client_port: 0 });
  t.ok(ctMap.newer!(abi.ctValue.encode({ ...v, last_seen_ns: 3n, nat_addr: '0.0.0.0', nat_port: 0, client_port: 0 }), abi.ctValue.encode({ ...v, nat_addr: '0.0.0.0', nat_port: 0, client_port: 0 })), 'a later last_seen is newer');
  t.same(parseMapName('kbp_ct4_v2'), { family: 'ct4', version: 2 });
  t.same(parseMapName('kbp_backend_v10'), { family: 'backend', version: 10 });
  t.equal(parseMapName('kbp_ct4'), null);
  for (const m of LEGACY_MAPS) t.not(parseMapName(m.name)!.version, parseMapName(m.into)!.version, `${m.name} migrates into another version (${m.into})`);
});

t.test('v1 layouts match the v1 header from git history', async (t) => {
  const header = await run('git', ['-C', projectRoot, 'show', `${V1_COMMIT}:bpf/include/kbp/abi.h`], { maxBuffer: 1 << 22 }).catch((err: Error) => {
    throw new Error(`needs the git history with ${V1_COMMIT} (git fetch --unshallow): ${err.message}`);
  });
  const text = header.stdout;
  t.match(text, /#define KBP_ABI_VERSION 1\b/, 'it is ABI v1');
  for (const m of LEGACY_MAPS) t.match(text, new RegExp(`#define KBP_MAP_\\w+\\s+"${m.name}"`), `v1 names its map ${m.name}`);

  const dir = await mkdtemp(path.join(os.tmpdir(), 'kbp-legacy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'kbp'));
  await writeFile(path.join(dir, 'kbp', 'abi.h'), text);
  const asserts = (codecs: Array<abi.StructCodec<unknown>>) =>
    codecs.flatMap((c) => [
      `_Static_assert(sizeof(struct ${c.cName}) == ${c.size}, "${c.cName} size");`,
      ...c.fields.map((f) => `_Static_assert(offsetof(struct ${c.cName}, ${f.name}) == ${f.offset} && sizeof(((struct ${c.cName} *)0)->${f.name}) == ${f.size}, "${c.cName}.${f.name}");`),
    ]);
  const compile = async (lines: string[]) => {
    const file = path.join(dir, 'check.c');
    await writeFile(file, ['#include <stddef.h>', '#include <kbp/abi.h>', ...lines, ''].join('\n'));
    const inc = `/usr/include/${os.arch() === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`;
    return run('clang', ['-fsyntax-only', '-x', 'c', '-I', dir, '-I', inc, file]).then(
      () => '',
      (err: Error & { stderr?: string }) => err.stderr ?? err.message,
    );
  };
  // Keys kept their layout in v2; the v1 values are the legacy codecs.
  const v1 = [backendValueV1, ctValueV1, abi.backendKey, abi.ctKey, abi.statValue] as Array<abi.StructCodec<unknown>>;
  t.equal(await compile([...asserts(v1), `_Static_assert(KBP_STAT_MAX == ${KBP_STAT_MAX_V1}, "stat slots");`]), '', 'every size and offset agrees with the v1 header');
  const wrong = await compile([`_Static_assert(offsetof(struct kbp_ct_value, flags) == 28, "v2's offset");`]);
  t.match(wrong, /v2's offset/, 'a wrong offset fails the same check');
});
