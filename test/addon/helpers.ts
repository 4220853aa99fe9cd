// Shared setup for the addon tests: a private bpffs, private network
// namespaces and BPF fixtures compiled on the fly. Everything is created
// under names of our own and removed in t.teardown, also when a test fails.
// Nothing here touches /sys/fs/bpf or the root network namespace.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { arch, tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { bpfObjectPath, projectRoot } from '../../src/paths.js';
import type { NativeError } from '../../src/native/binding.js';
import { Testbed } from '../../src/testbed/netns.js';

const execFileP = promisify(execFile);

type Test = { teardown(fn: () => unknown): void; comment(...args: unknown[]): void };

export async function run(cmd: string, args: string[]): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { encoding: 'utf8' });
  return stdout;
}

/** A fresh bpffs mounted on a temporary folder, unmounted and removed at teardown. */
export async function mountBpffs(t: Test): Promise<string> {
  const testbed = Testbed.create();
  t.teardown(() => testbed.teardown());
  return testbed.mountBpffs();
}

export interface Netns {
  name: string;
  path: string; // /var/run/netns/NAME
}

/** A network namespace of our own, deleted at teardown (its devices go with it). */
export async function makeNetns(t: Test): Promise<Netns> {
  const name = `kbp-addon-${randomBytes(4).toString('hex')}`;
  t.teardown(() => run('ip', ['netns', 'del', name]).catch(() => undefined));
  await run('ip', ['netns', 'add', name]);
  return { name, path: `/var/run/netns/${name}` };
}

/** `ip -n NS ...` */
export function ipIn(ns: Netns, args: string[]): Promise<string> {
  return run('ip', ['-n', ns.name, ...args]);
}

/** Compiles test/addon/fixtures/NAME.bpf.c like the Makefile compiles bpf/*.c. */
export async function compileFixture(t: Test, name: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'kbp-addon-fixture-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const src = path.join(projectRoot, 'test', 'addon', 'fixtures', `${name}.bpf.c`);
  const out = path.join(dir, `${name}.bpf.o`);
  const archInc = `/usr/include/${arch() === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`;
  await run('clang', [
    '-O2', '-g', '-target', 'bpf', '-Wall', '-Werror',
    `-I${path.join(projectRoot, 'bpf', 'include')}`, `-I${path.join(projectRoot, 'bpf', 'lib')}`, `-I${archInc}`,
    '-c', src, '-o', out,
  ]);
  return out;
}

/**
 * An object holding the datapath maps (kbp_svc_v1, kbp_backend_v2,
 * kbp_revnat_v1, kbp_ct4_v2, kbp_stats_v2): build/bpf/kbp_pod.bpf.o when it
 * has been built, else a fixture compiled from bpf/lib/maps.h.
 */
export async function mapsObject(t: Test): Promise<string> {
  const pod = bpfObjectPath('kbp_pod');
  if (existsSync(pod)) return pod;
  t.comment(`${pod} not built; using the maps.h fixture`);
  return compileFixture(t, 'kbp_maps_fixture');
}

/** Small enough to load quickly, large enough for the paging test. */
export const SMALL_MAPS = { kbp_svc_v1: 16384, kbp_backend_v2: 1024, kbp_revnat_v1: 1024, kbp_ct4_v2: 4096 };

/** The rejection of `p`, which must reject. */
export async function rejection(p: Promise<unknown>): Promise<NativeError> {
  try {
    await p;
  } catch (err) {
    return err as NativeError;
  }
  throw new Error('expected the promise to reject');
}

/** The exception thrown by `fn`, which must throw. */
export function thrown(fn: () => unknown): NativeError {
  try {
    fn();
  } catch (err) {
    return err as NativeError;
  }
  throw new Error('expected the call to throw');
}
