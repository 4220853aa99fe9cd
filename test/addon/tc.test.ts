// tcAttach/tcQuery/tcDetach on a veth inside a network namespace this test
// creates, addressed by namespace path. The root namespace must come out
// untouched: its qdiscs are compared before and after, and every libuv pool
// thread is checked to be back in the root namespace afterwards.
import t, { type Test } from 'tap';
import { native, type BpfObject, type BpfProgram } from '../../src/native/binding.js';
import { bpfObjectPath } from '../../src/paths.js';
import { compileFixture, ipIn, makeNetns, mountBpffs, rejection, run, type Netns } from './helpers.js';

interface Setup {
  ns: Netns;
  noop: BpfProgram;
  other: BpfProgram;
  ifindex: number; // of kv0 inside ns
}

async function setup(t: Test): Promise<Setup> {
  const pinRoot = await mountBpffs(t);
  const ns = await makeNetns(t);
  await ipIn(ns, ['link', 'add', 'kv0', 'type', 'veth', 'peer', 'name', 'kv1']);
  await ipIn(ns, ['link', 'set', 'kv0', 'up']);
  const links = JSON.parse(await ipIn(ns, ['-j', 'link', 'show', 'kv0'])) as Array<{ ifindex: number }>;
  const noopObj: BpfObject = await native().openObject(bpfObjectPath('kbp_noop'), { pinRoot });
  t.teardown(() => noopObj.close());
  const otherObj: BpfObject = await native().openObject(await compileFixture(t, 'kbp_addon_extra'), { pinRoot });
  t.teardown(() => otherObj.close());
  return { ns, noop: noopObj.program('kbp_noop'), other: otherObj.program('kbp_extra'), ifindex: links[0]?.ifindex ?? 0 };
}

/** Our filters on kv0's ingress hook as tc(8) sees them inside the namespace. */
async function tcFilters(ns: Netns, dev: string): Promise<string> {
  return run('ip', ['netns', 'exec', ns.name, 'tc', 'filter', 'show', 'dev', dev, 'ingress']);
}

async function rootLinkNames(): Promise<string[]> {
  const links = JSON.parse(await run('ip', ['-j', 'link', 'show'])) as Array<{ ifname: string }>;
  return links.map((l) => l.ifname).sort();
}

t.test('attach, query, replace and detach inside a namespace; the root namespace is untouched', async (t) => {
  const rootQdiscs = await run('tc', ['qdisc', 'show']);
  const rootLinks = await rootLinkNames();
  const { ns, noop, other, ifindex } = await setup(t);
  const c = native().constants();
  t.ok(ifindex > 0);

  t.equal(await native().tcQuery({ ifname: 'kv0', netns: ns.path }), null, 'nothing attached (no clsact yet)');
  t.equal(await native().tcDetach({ ifname: 'kv0', netns: ns.path }), false, 'nothing to detach (no clsact yet)');

  const attached = await native().tcAttach({ ifname: 'kv0', netns: ns.path }, noop);
  t.same(attached, { ifindex, progId: noop.info.id });
  t.equal(await native().tcQuery({ ifindex, netns: ns.path }), noop.info.id, 'query by ifindex');
  const shown = await tcFilters(ns, 'kv0');
  t.match(shown, /kbp_noop/, 'tc(8) in the namespace sees the program');
  t.match(shown, new RegExp(`pref ${c.KBP_TC_PRIORITY} bpf`), 'at KBP_TC_PRIORITY');
  t.match(shown, new RegExp(`handle 0x${(c.KBP_TC_HANDLE as number).toString(16)}`), 'at KBP_TC_HANDLE');

  // Re-attaching replaces our filter in place: still exactly one.
  t.same(await native().tcAttach({ ifindex, netns: ns.path }, other), { ifindex, progId: other.info.id });
  t.equal(await native().tcQuery({ ifname: 'kv0', netns: ns.path }), other.info.id, 'replaced');
  const replaced = await tcFilters(ns, 'kv0');
  t.equal(replaced.match(/ handle 0x/g)?.length, 1, 'one filter, not two');
  t.match(replaced, /kbp_extra/);

  // Someone else's filter (another handle/priority) is left alone.
  await native().tcAttach({ ifname: 'kv0', netns: ns.path, handle: 7, priority: 9 }, noop);
  t.equal(await native().tcDetach({ ifname: 'kv0', netns: ns.path }), true, 'ours detached');
  t.equal(await native().tcDetach({ ifname: 'kv0', netns: ns.path }), false, 'already gone');
  t.equal(await native().tcQuery({ ifname: 'kv0', netns: ns.path }), null);
  t.equal(await native().tcQuery({ ifname: 'kv0', netns: ns.path, handle: 7, priority: 9 }), noop.info.id, 'the other filter stays');
  t.equal(await native().tcDetach({ ifname: 'kv0', netns: ns.path, handle: 7, priority: 9 }), true);
  t.notMatch(await tcFilters(ns, 'kv0'), / handle 0x/, 'no filter left');

  t.equal(await native().tcQuery({ ifname: 'kv1', netns: ns.path }), null, 'the peer was never touched');
  t.equal(await run('tc', ['qdisc', 'show']), rootQdiscs, 'root namespace qdiscs unchanged');
  t.same(await rootLinkNames(), rootLinks, 'root namespace links unchanged');

  // Every pool thread (run many calls at once) answers from the root namespace.
  const lists = await Promise.all(Array.from({ length: 16 }, () => native().listLinks()));
  for (const list of lists) t.same(list.map((l) => l.name).sort(), rootLinks, 'a pool thread is back in the root namespace');
});

t.test('tc errors', async (t) => {
  const { ns, noop } = await setup(t);
  t.match(await rejection(native().tcAttach({ ifname: 'kbpnope0', netns: ns.path }, noop)), {
    code: 'ENODEV',
    errno: 19,
    syscall: 'if_nametoindex',
  });
  // kv0 lives only in the namespace: without netns it is not found.
  t.match(await rejection(native().tcQuery({ ifname: 'kv0' })), { code: 'ENODEV' }, 'names resolve in the target namespace');
  t.match(await rejection(native().tcQuery({ ifname: 'kv0', netns: '/var/run/netns/kbp-addon-missing' })), {
    code: 'ENOENT',
    syscall: 'open(netns)',
  });
  t.match(await rejection(native().tcQuery({ netns: ns.path })), { code: 'EINVAL' }, 'no device');
  t.match(await rejection(native().tcQuery({ ifname: 'kv0', netns: ns.path, priority: 0x10000 })), { code: 'EINVAL' });
  t.match(await rejection(native().tcAttach({ ifname: 'kv0', netns: ns.path }, {} as BpfProgram)), { code: 'EINVAL' }, 'not a program');
});
