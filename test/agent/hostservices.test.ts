// --host-services-cgroup: parsing, and what the agent does at start when host
// services are off or the cgroup is no cgroup v2 (fake addon; the real
// attach is covered by test/bpf/sock.test.ts and
// test/integration/hostservices.test.ts).

import t, { type Test } from 'tap';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseAgentArgs } from '../../src/agent/options.js';
import { DEFAULT_HOST_SERVICES_CGROUP, LINKS_DIR, detachHostServices, loadHostServices } from '../../src/agent/hostservices.js';
import { memoryLogger } from '../../src/log.js';
import type { Native, NativeError } from '../../src/native/binding.js';

const notCgroup = (p: string) => Object.assign(new Error(`fstatfs: ${p} is not a cgroup v2 directory (ENOTDIR)`), { code: 'ENOTDIR', errno: 20 }) as NativeError;

/** A fake addon: no path is a cgroup v2; linkDetach records its pins. */
function fake() {
  const detached: string[] = [];
  const n = {
    cgroupQuery: async (target: { path: string }) => {
      throw notCgroup(target.path);
    },
    linkDetach: async (pin: string) => {
      detached.push(path.basename(pin));
      return true;
    },
    openObject: async () => {
      throw new Error('must not load anything');
    },
  } as unknown as Native;
  return { n, detached };
}

async function bpffsWithLinks(t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kbp-hostsvc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, LINKS_DIR));
  for (const f of ['cgroup_connect4', 'cgroup_recvmsg4']) await writeFile(path.join(dir, LINKS_DIR, f), '');
  return dir;
}

t.test('flag: default root, explicit path, off, relative paths refused', async (t) => {
  t.same(parseAgentArgs(['--manifests', '/m']).hostServices, { cgroup: DEFAULT_HOST_SERVICES_CGROUP, explicit: false });
  t.equal(DEFAULT_HOST_SERVICES_CGROUP, '/sys/fs/cgroup');
  t.same(parseAgentArgs(['--manifests', '/m', '--host-services-cgroup', '/run/kbp/cgroup']).hostServices, { cgroup: '/run/kbp/cgroup', explicit: true });
  t.equal(parseAgentArgs(['--manifests', '/m', '--host-services-cgroup', 'off']).hostServices, null);
  t.throws(() => parseAgentArgs(['--manifests', '/m', '--host-services-cgroup', 'cgroup']), /--host-services-cgroup: expected an absolute path or "off"/);
});

t.test('off: links an earlier agent pinned are detached and unpinned, nothing is loaded', async (t) => {
  const bpffs = await bpffsWithLinks(t);
  const { n, detached } = fake();
  const { log, lines } = memoryLogger('info');
  t.equal(await loadHostServices(n, { bpffs, hostServices: null }, log), undefined);
  t.same(detached, ['cgroup_connect4', 'cgroup_recvmsg4']);
  t.same(await readdir(bpffs), [], 'links folder gone');
  t.match(lines.join('\n'), /host services off: detached and unpinned .*cgroup_connect4/);
});

t.test('the default cgroup that is no cgroup v2: a warning, links removed, the agent goes on', async (t) => {
  const bpffs = await bpffsWithLinks(t);
  const { n, detached } = fake();
  const { log, lines } = memoryLogger('info');
  t.equal(await loadHostServices(n, { bpffs, hostServices: { cgroup: '/sys/fs/cgroup', explicit: false } }, log), undefined);
  t.match(lines.join('\n'), /level=warn msg="host services off: the node's own sockets do not reach ClusterIPs.*cgroup=\/sys\/fs\/cgroup/);
  t.equal(detached.length, 2);
});

t.test('an explicit cgroup that is no cgroup v2 fails the start and removes nothing', async (t) => {
  const bpffs = await bpffsWithLinks(t);
  const { n, detached } = fake();
  const { log } = memoryLogger('info');
  await t.rejects(loadHostServices(n, { bpffs, hostServices: { cgroup: '/run/kbp/cgroup', explicit: true } }, log), /--host-services-cgroup \/run\/kbp\/cgroup: .*not a cgroup v2 directory/);
  t.same(detached, []);
  t.same(await readdir(path.join(bpffs, LINKS_DIR)), ['cgroup_connect4', 'cgroup_recvmsg4']);
});

t.test('detachHostServices without a links folder does nothing', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kbp-hostsvc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { n, detached } = fake();
  t.same(await detachHostServices(n, dir), []);
  t.same(detached, []);
});
