// listLinks and watchLinks on a network namespace this test creates: the
// dump matches ip(8), the watcher sees devices created and deleted after it
// started, stops delivering at close(), and never keeps a process alive.
import t from 'tap';
import { execFile } from 'node:child_process';
import { native, type LinkEvent, type NativeError } from '../../src/native/binding.js';
import { addonPath } from '../../src/paths.js';
import { ipIn, makeNetns, rejection, run, thrown } from './helpers.js';

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test('listLinks lists the devices of a namespace as ip(8) does', async (t) => {
  const ns = await makeNetns(t);
  await ipIn(ns, ['link', 'add', 'kl0', 'type', 'veth', 'peer', 'name', 'kl1']);
  await ipIn(ns, ['link', 'set', 'kl0', 'up']);
  const expected = (JSON.parse(await ipIn(ns, ['-j', 'link', 'show'])) as Array<{ ifindex: number; ifname: string; flags: string[] }>)
    .map((l) => ({ ifindex: l.ifindex, name: l.ifname, up: l.flags.includes('UP') }));
  const links = await native().listLinks(ns.path);
  t.same(links.sort((a, b) => a.ifindex - b.ifindex), expected.sort((a, b) => a.ifindex - b.ifindex));
  t.ok(links.some((l) => l.name === 'kl0' && l.up) && links.some((l) => l.name === 'kl1' && !l.up), 'up follows IFF_UP');

  const root = (JSON.parse(await run('ip', ['-j', 'link', 'show'])) as Array<{ ifname: string }>).map((l) => l.ifname).sort();
  t.same((await native().listLinks()).map((l) => l.name).sort(), root, 'no netns: the current namespace');
  t.match(await rejection(native().listLinks('/var/run/netns/kbp-addon-missing')), { code: 'ENOENT', syscall: 'open(netns)' });
});

t.test('watchLinks sees devices added and deleted after it started, and nothing after close()', async (t) => {
  const ns = await makeNetns(t);
  const events: LinkEvent[] = [];
  const errors: NativeError[] = [];
  const watcher = native().watchLinks(ns.path, (ev) => events.push(ev), (err) => errors.push(err));
  t.teardown(() => watcher.close());

  await ipIn(ns, ['link', 'add', 'kw0', 'type', 'veth', 'peer', 'name', 'kw1']);
  const kw0 = (JSON.parse(await ipIn(ns, ['-j', 'link', 'show', 'kw0'])) as Array<{ ifindex: number }>)[0]?.ifindex;
  await waitFor('add kw0/kw1', () => ['kw0', 'kw1'].every((n) => events.some((e) => e.type === 'add' && e.name === n)));
  t.match(events.find((e) => e.name === 'kw0'), { type: 'add', ifindex: kw0, up: false });

  await ipIn(ns, ['link', 'set', 'kw0', 'up']);
  await waitFor('kw0 up', () => events.some((e) => e.type === 'add' && e.name === 'kw0' && e.up));

  await ipIn(ns, ['link', 'del', 'kw0']);
  await waitFor('del kw0', () => events.some((e) => e.type === 'del' && e.name === 'kw0'));
  t.match(events.find((e) => e.type === 'del' && e.name === 'kw0'), { ifindex: kw0 });
  t.ok(events.every((e) => e.name.startsWith('kw')), 'only devices of the watched namespace');
  t.same(errors, []);

  watcher.close();
  watcher.close(); // idempotent
  const seen = events.length;
  await ipIn(ns, ['link', 'add', 'kx0', 'type', 'veth', 'peer', 'name', 'kx1']);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(events.length, seen, 'no events after close()');
});

t.test('watchLinks fails synchronously for a namespace that does not exist', async (t) => {
  const err = thrown(() => native().watchLinks('/var/run/netns/kbp-addon-missing', () => undefined, () => undefined));
  t.match(err, { code: 'ENOENT', errno: 2, syscall: 'open(netns)' });
});

// The watcher must never be what keeps a process running: with or without
// close(), a script whose work is done exits by itself.
for (const closeIt of [true, false]) {
  t.test(`a process with a watcher ${closeIt ? 'closed' : 'left open'} exits`, async (t) => {
    const ns = await makeNetns(t);
    const script = `
      const n = require(${JSON.stringify(addonPath())});
      const w = n.watchLinks(${JSON.stringify(ns.path)}, () => {}, () => {});
      ${closeIt ? 'w.close();' : ''}
      setTimeout(() => console.log('done'), 50);
    `;
    const started = Date.now();
    const out = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, ['-e', script], { timeout: 10000 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
    });
    t.equal(out.trim(), 'done');
    t.ok(Date.now() - started < 5000, 'exited promptly');
  });
}
