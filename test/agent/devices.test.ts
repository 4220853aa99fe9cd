// DeviceAttacher over a scripted link table (no kernel): idempotent attach,
// repeated and lost events, vanished devices. The kernel path is covered by
// test/agent/agent.test.ts.

import t from 'tap';
import { DeviceAttacher, globToRegExp, parseGlobs, type LinkNative } from '../../src/agent/devices.js';
import { parseAgentArgs, parseDuration } from '../../src/agent/options.js';
import { memoryLogger } from '../../src/log.js';
import type { BpfProgram, LinkEvent, NativeError } from '../../src/native/binding.js';

const errno = (code: string) => Object.assign(new Error(code), { code, errno: 1 }) as NativeError;

function fakeLinks(initial: Array<[number, string]>) {
  const links = new Map<number, string>(initial);
  const attaches: string[] = [];
  const failNext = new Map<string, string>();
  let onEvent: ((ev: LinkEvent) => void) | undefined;
  let onError: ((err: NativeError) => void) | undefined;
  let closed = false;
  const native: LinkNative = {
    async listLinks() {
      return [...links].map(([ifindex, name]) => ({ ifindex, name, up: true }));
    },
    watchLinks(_ns, ev, err) {
      onEvent = ev;
      onError = err;
      return { close: () => (closed = true) };
    },
    async tcAttach(target) {
      return attach(target.ifindex!, '');
    },
    async xdpAttach(target) {
      return { ...(await attach(target.ifindex!, 'xdp:')), replaced: false };
    },
  };
  async function attach(ifindex: number, prefix: string) {
    const name = links.get(ifindex) ?? '?';
    const code = failNext.get(prefix + name);
    if (code) {
      failNext.delete(prefix + name);
      throw errno(code);
    }
    attaches.push(prefix + name);
    return { ifindex, progId: 42 };
  }
  return {
    native,
    links,
    attaches,
    failNext,
    emit: (ev: LinkEvent) => onEvent!(ev),
    error: (code: string) => onError!(errno(code)),
    get closed() {
      return closed;
    },
  };
}

const prog = { name: 'kbp_from_pod', fd: 3, info: { id: 42, name: 'kbp_from_pod', type: 3, tag: '' } } as BpfProgram;

t.test('globs', async (t) => {
  const m = (g: string, s: string) => globToRegExp(g).test(s);
  t.ok(m('veth*', 'veth1a2b'));
  t.notOk(m('veth*', 'xveth1'), 'whole name');
  t.ok(m('lxc?', 'lxc1'));
  t.notOk(m('lxc?', 'lxc12'));
  t.ok(m('eth[0-3]', 'eth2'));
  t.notOk(m('eth[!0-3]', 'eth2'));
  t.ok(m('a.b', 'a.b'));
  t.notOk(m('a.b', 'axb'), 'dots are literal');
  t.same(parseGlobs(' veth* , cali*').map(String), ['/^veth.*$/', '/^cali.*$/']);
  t.throws(() => parseGlobs(' , '), /no pattern/);
});

t.test('attaches matching links at start and new ones from events, once each', async (t) => {
  const f = fakeLinks([[1, 'lo'], [2, 'eth0'], [3, 'veth-a'], [4, 'cali123']]);
  const { log, lines } = memoryLogger();
  const d = new DeviceAttacher({ native: f.native, prog, patterns: parseGlobs('veth*,cali*'), log });
  await d.start();
  t.same(f.attaches.sort(), ['cali123', 'veth-a']);

  f.links.set(5, 'veth-b');
  for (let i = 0; i < 3; i++) f.emit({ type: 'add', ifindex: 5, name: 'veth-b', up: i > 0 }); // repeated RTM_NEWLINK
  f.emit({ type: 'add', ifindex: 6, name: 'docker0', up: true });
  await d.idle();
  t.same(f.attaches.sort(), ['cali123', 'veth-a', 'veth-b'], 'one attach per device');

  // Deleted, then the ifindex comes back: attach again.
  f.links.delete(5);
  f.emit({ type: 'del', ifindex: 5, name: 'veth-b', up: false });
  t.notOk(d.attached.has(5));
  f.links.set(5, 'veth-c');
  f.emit({ type: 'add', ifindex: 5, name: 'veth-c', up: true });
  await d.idle();
  t.same([...d.attached].sort((a, b) => a[0] - b[0]), [[3, 'veth-a'], [4, 'cali123'], [5, 'veth-c']]);
  t.match(lines.join('\n'), /msg="attached tc ingress" device=veth-c ifindex=5 prog=kbp_from_pod progId=42/);
  d.close();
  t.ok(f.closed, 'watcher closed');
});

t.test('lost events (ENOBUFS) trigger a re-list; failures are logged and retried later', async (t) => {
  const f = fakeLinks([[3, 'veth-a']]);
  const { log, lines } = memoryLogger();
  const d = new DeviceAttacher({ native: f.native, prog, patterns: parseGlobs('veth*'), log });
  f.failNext.set('veth-a', 'EBUSY');
  await d.start();
  t.same(f.attaches, []);
  t.match(lines.join('\n'), /level=warn msg="cannot attach tc ingress; will retry/);
  // Links appeared while the socket overflowed: no events for them.
  f.links.set(7, 'veth-x');
  f.error('ENOBUFS');
  await d.idle();
  t.same(f.attaches.sort(), ['veth-a', 'veth-x'], 're-list attached both (the failed one too)');
  t.match(lines.join('\n'), /level=info msg="link watch error; re-listing devices" code=ENOBUFS/);

  f.links.set(8, 'veth-gone');
  f.failNext.set('veth-gone', 'ENODEV');
  f.emit({ type: 'add', ifindex: 8, name: 'veth-gone', up: true });
  await d.idle();
  t.match(lines.join('\n'), /level=debug msg="device vanished before attach" device=veth-gone/);
  d.close();
});

t.test('agent flags: defaults and errors', async (t) => {
  const c = parseAgentArgs(['--manifests', '/m']);
  t.match(c, { source: { kind: 'manifests', dir: '/m' }, podDevices: 'veth*,lxc*,cali*', bpffs: '/sys/fs/bpf/kbp', api: { listen: { host: '127.0.0.1', port: 10256 }, auth: false }, logLevel: 'info', minSyncMs: 100, syncPeriodMs: 60_000, ctGcIntervalMs: 30_000 });
  t.ok(c.nodeName.length > 0, 'node name defaults to the host name');
  t.same(parseAgentArgs(['--manifests', '/m', '--api-listen', 'off', '--node-name', 'n1']).api, null);
  t.throws(() => parseAgentArgs([], {}), /give --kubeconfig PATH or --manifests DIR/);
  t.same(parseAgentArgs(['--kubeconfig', '/k']).source, { kind: 'kubeconfig', path: '/k' });
  t.same(parseAgentArgs([], { KUBERNETES_SERVICE_HOST: '10.96.0.1' }).source, { kind: 'in-cluster' }, 'in a pod: the in-cluster config');
  t.same(parseAgentArgs(['--manifests', '/m'], { KUBERNETES_SERVICE_HOST: '10.96.0.1' }).source, { kind: 'manifests', dir: '/m' }, 'an explicit source wins');
  t.throws(() => parseAgentArgs(['--manifests', '/m', '--kubeconfig', '/k']), /exclude each other/);
  t.throws(() => parseAgentArgs(['--manifests', '/m', '--bogus']), /Unknown option/);
  t.throws(() => parseAgentArgs(['--manifests', '/m', '--log-level', 'loud']), /--log-level/);
  t.throws(() => parseAgentArgs(['--manifests', '/m', '--api-listen', 'localhost']), /HOST:PORT/);
  t.throws(() => parseAgentArgs(['--manifests', '/m', '--min-sync-period', '2m', '--sync-period', '1m']), /sync-period/);
  t.match(c, { nodeDevices: '', nodeDevicePatterns: [], nodeIps: [] }, 'no uplinks by default');
  const up = parseAgentArgs(['--manifests', '/m', '--node-devices', 'eth*, bond0', '--node-ip', '172.18.0.11,192.0.2.11']);
  t.same(up.nodeIps, ['172.18.0.11', '192.0.2.11']);
  t.same(up.nodeDevicePatterns.map((r) => ['eth0', 'bond0', 'veth1'].filter((d) => r.test(d))), [['eth0'], ['bond0']]);
  t.throws(() => parseAgentArgs(['--manifests', '/m', '--node-devices', ',']), /--node-devices: no pattern given/);
  t.throws(() => parseAgentArgs(['--manifests', '/m', '--node-ip', 'fd00::1']), /--node-ip: "fd00::1" is not an IPv4 address/);
  t.equal(parseDuration('250ms', 'x'), 250);
  t.equal(parseDuration('1.5s', 'x'), 1500);
  t.equal(parseDuration('2m', 'x'), 120_000);
  t.equal(parseDuration('40', 'x'), 40);
  t.throws(() => parseDuration('fast', '--x'), /--x: expected a duration/);
});

t.test('XDP: a device whose driver refuses native XDP is declined once and stays on tc; transient errors are retried', async (t) => {
  const f = fakeLinks([[2, 'eth0'], [3, 'eth1'], [4, 'eth2']]);
  const { log, lines } = memoryLogger();
  f.failNext.set('xdp:eth0', 'EOPNOTSUPP');
  f.failNext.set('xdp:eth1', 'EAGAIN');
  const d = new DeviceAttacher({ native: f.native, prog, patterns: parseGlobs('eth*'), log, hook: 'xdp' });
  await d.start();
  t.same(f.attaches, ['xdp:eth2'], 'only XDP attaches, no tc');
  t.same([...d.declined.values()], ['eth0']);
  const declines = () => lines.filter((l) => l.includes('msg="XDP not available on this device'));
  t.equal(declines().length, 1);
  t.match(declines()[0], /device=eth0 ifindex=2 code=EOPNOTSUPP/, 'the refusal is logged with device and reason');
  t.ok(lines.some((l) => /msg="cannot attach xdp; will retry.*device=eth1/.test(l)), 'a transient error is a retry');

  f.failNext.set('xdp:eth0', 'EOPNOTSUPP');
  await d.relist();
  t.same(f.attaches.sort(), ['xdp:eth1', 'xdp:eth2'], 're-list retries eth1, not the declined eth0');
  t.equal(declines().length, 1, 'no repeated warning');

  // The device is re-created (another ifindex): it may support XDP now.
  f.failNext.delete('xdp:eth0');
  f.links.delete(2);
  f.emit({ type: 'del', ifindex: 2, name: 'eth0', up: false });
  f.links.set(7, 'eth0');
  f.emit({ type: 'add', ifindex: 7, name: 'eth0', up: true });
  await d.idle();
  t.ok(f.attaches.includes('xdp:eth0'), 'a new eth0 is tried again');
  t.same([...d.declined.keys()], [], 'nothing declined any more');
  d.close();
});

t.test('--nodeport-acceleration', async (t) => {
  const base = ['--manifests', '/tmp/m'];
  t.equal(parseAgentArgs(base).nodePortAcceleration, 'none', 'default none');
  t.equal(parseAgentArgs([...base, '--node-devices', 'eth0', '--nodeport-acceleration', 'xdp']).nodePortAcceleration, 'xdp');
  t.throws(() => parseAgentArgs([...base, '--nodeport-acceleration', 'xdp']), /needs --node-devices/);
  t.equal(parseAgentArgs([...base, '--node-devices', 'eth0', '--nodeport-acceleration', 'xdp-tx']).nodePortAcceleration, 'xdp-tx');
  t.throws(() => parseAgentArgs([...base, '--node-devices', 'eth0', '--nodeport-acceleration', 'dpdk']), /expected one of none, xdp, xdp-tx/);
});
