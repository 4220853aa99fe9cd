// xdpAttach/xdpQuery/xdpDetach (native mode) on a veth inside a network
// namespace this test creates: attach, atomic replace of our own program,
// detach by name, and another owner's XDP program never replaced or removed.
// The root namespace's links must come out without any XDP program.
import t, { type Test } from 'tap';
import { native, type BpfObject, type BpfProgram } from '../../src/native/binding.js';
import { bpfObjectPath } from '../../src/paths.js';
import { compileFixture, ipIn, makeNetns, mountBpffs, rejection, run, type Netns } from './helpers.js';

interface Setup {
  ns: Netns;
  xdp: BpfProgram;
  noop: BpfProgram;
  foreign: BpfProgram;
  ifindex: number;
}

async function setup(t: Test): Promise<Setup> {
  const pinRoot = await mountBpffs(t);
  const ns = await makeNetns(t);
  await ipIn(ns, ['link', 'add', 'kx0', 'type', 'veth', 'peer', 'name', 'kx1']);
  await ipIn(ns, ['link', 'set', 'kx0', 'up']);
  await ipIn(ns, ['link', 'set', 'kx1', 'up']);
  const links = JSON.parse(await ipIn(ns, ['-j', 'link', 'show', 'kx0'])) as Array<{ ifindex: number }>;
  const objs: BpfObject[] = [];
  t.teardown(() => objs.forEach((o) => o.close()));
  const load = async (path: string) => {
    const o = await native().openObject(path, { pinRoot });
    objs.push(o);
    return o;
  };
  // The datapath's maps first (kbp_xdp reuses their pins), as the agent loads them.
  await load(bpfObjectPath('kbp_pod'));
  const xdp = (await load(bpfObjectPath('kbp_xdp'))).program('kbp_xdp_node');
  const noop = (await load(bpfObjectPath('kbp_noop_xdp'))).program('kbp_noop_xdp');
  const foreign = (await load(await compileFixture(t, 'other_xdp'))).program('other_owner_xdp');
  return { ns, xdp, noop, foreign, ifindex: links[0]?.ifindex ?? 0 };
}

async function rootXdpLinks(): Promise<string[]> {
  const links = JSON.parse(await run('ip', ['-j', 'link', 'show'])) as Array<{ ifname: string; xdp?: unknown }>;
  return links.filter((l) => l.xdp).map((l) => l.ifname);
}

t.test('attach, query, replace and detach by name inside a namespace', async (t) => {
  const rootBefore = await rootXdpLinks();
  const { ns, xdp, noop, ifindex } = await setup(t);
  const target = { ifname: 'kx0', netns: ns.path };
  t.equal(await native().xdpQuery(target), null, 'nothing attached');
  t.equal(await native().xdpDetach(target, 'kbp_xdp_node'), false, 'nothing to detach');

  t.same(await native().xdpAttach(target, xdp), { ifindex, progId: xdp.info.id, replaced: false });
  t.same(await native().xdpQuery({ ifindex, netns: ns.path }), { progId: xdp.info.id, name: 'kbp_xdp_node' });
  t.match(await ipIn(ns, ['link', 'show', 'dev', 'kx0']), new RegExp(`prog/xdp id ${xdp.info.id} name kbp_xdp_node`), 'ip(8) sees it in native mode');

  t.same(await native().xdpAttach(target, xdp), { ifindex, progId: xdp.info.id, replaced: true }, 'attaching again replaces ours');
  t.equal(await native().xdpDetach(target, 'kbp_noop_xdp'), false, 'detach names the program: another name is left');
  t.same(await native().xdpQuery(target), { progId: xdp.info.id, name: 'kbp_xdp_node' });
  t.equal(await native().xdpDetach(target, 'kbp_xdp_node'), true);
  t.equal(await native().xdpQuery(target), null, 'gone');
  t.equal(await native().xdpDetach(target, 'kbp_xdp_node'), false, 'twice is harmless');

  // A program of another name is not ours to replace.
  t.same((await native().xdpAttach(target, noop)).progId, noop.info.id);
  const busy = await rejection(native().xdpAttach(target, xdp));
  t.equal(busy.code, 'EBUSY');
  t.match(busy.message, /runs another XDP program \(kbp_noop_xdp/);
  t.same(await native().xdpQuery(target), { progId: noop.info.id, name: 'kbp_noop_xdp' }, 'left in place');
  t.equal(await native().xdpDetach(target, 'kbp_noop_xdp'), true);

  t.same(await rootXdpLinks(), rootBefore, 'no XDP program appeared in the root namespace');
});

t.test("another owner's XDP program is never replaced or removed", async (t) => {
  const { ns, xdp, foreign } = await setup(t);
  const target = { ifname: 'kx0', netns: ns.path };
  await native().xdpAttach(target, foreign);
  t.equal((await rejection(native().xdpAttach(target, xdp))).code, 'EBUSY');
  t.equal(await native().xdpDetach(target, 'kbp_xdp_node'), false);
  t.same(await native().xdpQuery(target), { progId: foreign.info.id, name: 'other_owner_xdp' });
  await native().xdpDetach(target, 'other_owner_xdp');
});

t.test('errors name the device and carry the errno', async (t) => {
  const { ns, xdp } = await setup(t);
  const missing = await rejection(native().xdpAttach({ ifname: 'nosuch0', netns: ns.path }, xdp));
  t.equal(missing.code, 'ENODEV');
  t.match(missing.message, /nosuch0/);
  t.equal((await rejection(native().xdpDetach({ ifname: 'kx0', netns: ns.path }, 42 as unknown as string))).code, 'EINVAL');
});
