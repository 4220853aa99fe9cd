// `kbp agent` and `kbp detach` against the real kernel, in a network
// namespace of their own (the root namespace is never touched): a node
// namespace with veth devices, a private bpffs, manifests in a temp folder.
// The test reads the pinned maps directly through the codecs and asks the
// kernel which program sits on each tc hook.
//
// Address conventions: ClusterIP 10.96.0.10, pods 10.244.1.x (node "n1");
// no packets are sent here (test/integration does that).
//
// Needs root and a built tree (make build: dist/, the addon, build/bpf).

import t, { type Test } from 'tap';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Testbed, ip, nsExec, waitExit } from '../../src/testbed/netns.js';
import { childEnv } from '../../src/testbed/programs.js';
import { native } from '../../src/native/binding.js';
import { projectRoot } from '../../src/paths.js';
import * as abi from '../../src/maps/abi.js';
import { BpfMapWriter } from '../../src/maps/writer.js';
import { formatMap } from '../../src/maps/format.js';

const kbp = path.join(projectRoot, 'bin', 'kbp.js');
const API = '127.0.0.1:10299';

const manifest = (ips: string[]) => `apiVersion: v1
kind: Service
metadata: {name: my-nginx, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: my-nginx-1, namespace: default, labels: {kubernetes.io/service-name: my-nginx}}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
${ips.map((i) => `  - addresses: [${i}]`).join('\n')}
`;

/** The agent runs from dist/ (bin/kbp.js); a missing build fails the test rather than skipping it. */
function built(t: Test): boolean {
  const ok = existsSync(path.join(projectRoot, 'dist', 'cli.js'));
  t.ok(ok, 'dist/cli.js is built (make build)');
  return ok;
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('agent and detach on a real kernel', async (t) => {
  if (!built(t)) return;
  const tb = Testbed.create();
  t.teardown(() => tb.teardown());
  const ns = await tb.addNamespace('agent');
  const netns = `/var/run/netns/${ns}`;
  await ip('-n', ns, 'link', 'add', 'veth-a', 'type', 'veth', 'peer', 'name', 'pa');
  await ip('-n', ns, 'link', 'add', 'other0', 'type', 'veth', 'peer', 'name', 'po');
  const bpffs = await tb.mountBpffs();
  const dir = await tb.tempDir('manifests');
  const logs = await tb.tempDir('logs');
  await fs.writeFile(path.join(dir, 'nginx.yaml'), manifest(['10.244.1.2', '10.244.1.3']));

  const n = native();
  const hook = async (dev: string) => {
    const id = await n.tcQuery({ ifname: dev, netns }).catch(() => null);
    return id === null ? null : (await n.progInfo(id)).name;
  };
  const startAgent = (label: string, extra: string[] = []) => {
    const logFile = path.join(logs, `${label}.log`);
    const child = tb.spawn(
      ns,
      [process.execPath, kbp, 'agent', '--host-services-cgroup', 'off', '--manifests', dir, '--node-name', 'n1', '--pod-devices', 'veth-*', '--bpffs', bpffs, '--api-listen', API, ...extra],
      { logFile, env: childEnv() },
    );
    const log = () => fs.readFile(logFile, 'utf8').catch(() => '');
    return { child, log, ready: () => until(`${label} ready`, async () => (await log()).includes('msg=ready') || (child.exitCode !== null && Promise.reject(new Error(`agent exited: ${await log()}`)))) };
  };
  const api = async (p: string) => {
    const r = await nsExec(ns, process.execPath, ['-e', `fetch('http://${API}${p}').then(async r => console.log(JSON.stringify({status: r.status, body: await r.json()})))`], { env: childEnv() });
    return JSON.parse(r.stdout) as { status: number; body: unknown };
  };

  // ---- first start: maps programmed, then matching devices attached
  const a1 = startAgent('first');
  await a1.ready();
  const text1 = await a1.log();
  t.ok(text1.indexOf('msg="maps synced"') < text1.indexOf('msg="attached tc ingress"'), 'maps are synced before any device is attached');

  const maps = new Map(await Promise.all([abi.KBP_MAP_SERVICES, abi.KBP_MAP_BACKENDS, abi.KBP_MAP_REVNAT].map(async (m) => [m, await n.openPinnedMap(path.join(bpffs, m))] as const)));
  t.teardown(() => maps.forEach((m) => m.close()));
  const pinned = new BpfMapWriter(maps);
  const dump = async () => (await Promise.all([...maps.keys()].map(async (m) => formatMap(m, await pinned.entries(m)).map((l) => `${m} ${l}`)))).flat();
  t.same(await dump(), [
    'kbp_svc_v1 10.96.0.10:0/0 scope=0 slot=0 -> svc=0 count=0 flags=vip-marker affinity=0',
    'kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=0 -> svc=1 count=2 flags=cluster-ip affinity=0',
    'kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=1 -> svc=1 backend=1',
    'kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=2 -> svc=1 backend=2',
    'kbp_backend_v2 backend=1 -> 10.244.1.2:8080/TCP active',
    'kbp_backend_v2 backend=2 -> 10.244.1.3:8080/TCP active',
    'kbp_revnat_v1 svc=1 -> 10.96.0.10:80',
  ]);
  t.equal(await hook('veth-a'), 'kbp_from_pod', 'veth-a attached');
  t.equal(await hook('other0'), null, 'a device not matching --pod-devices is left alone');

  const health = await api('/healthz');
  t.equal(health.status, 200);
  t.match(health.body, { nodeName: 'n1', lastUpdated: String });
  const svcs = await api('/v1/services');
  t.match(svcs.body, [{ vip: '10.96.0.10', port: 80, protocol: 'TCP', namespace: 'default', name: 'my-nginx', backends: [{ ip: '10.244.1.2' }, { ip: '10.244.1.3' }] }]);

  // ---- a device created later is attached from the link watch
  await ip('-n', ns, 'link', 'add', 'veth-b', 'type', 'veth', 'peer', 'name', 'pb');
  await until('veth-b attached', async () => (await hook('veth-b')) === 'kbp_from_pod', 2000);
  t.pass('veth-b attached after it appeared');

  // ---- a manifest change reaches the maps within 1 s
  const t0 = Date.now();
  await fs.writeFile(path.join(dir, 'nginx.yaml'), manifest(['10.244.1.3']));
  await until('backend removed', async () => (await pinned.entries(abi.KBP_MAP_BACKENDS)).length === 1, 3000);
  const ms = Date.now() - t0;
  t.ok(ms <= 1000, `maps updated ${ms} ms after the file changed`);
  const afterRemoval = await dump();
  t.same(afterRemoval.filter((l) => l.includes('backend')), [
    'kbp_svc_v1 10.96.0.10:80/TCP scope=0 slot=1 -> svc=1 backend=2',
    'kbp_backend_v2 backend=2 -> 10.244.1.3:8080/TCP active',
  ]);

  // ---- SIGTERM: exit 0, hooks and pins stay
  a1.child.kill('SIGTERM');
  t.same(await waitExit(a1.child), { code: 0, signal: null }, 'exit 0 on SIGTERM');
  t.match(await a1.log(), /msg="stopping; programs stay attached and maps stay pinned" signal=SIGTERM/);
  t.equal(await hook('veth-a'), 'kbp_from_pod', 'still attached after exit');
  t.same(await dump(), afterRemoval, 'maps untouched by the exit');

  // ---- restart: ids restored, nothing rewritten
  const a2 = startAgent('second', ['--log-level', 'debug', '--conntrack-gc-interval', '200ms']);
  await a2.ready();
  const text2 = await a2.log();
  t.match(text2, /msg="maps read" component=syncer frontends=1 slots=1 backends=1 revnat=1/);
  t.match(text2, /msg="maps synced" component=syncer full=false complete=true updates=0 deletes=0/, 'the first sync after a restart writes nothing');
  t.same(await dump(), afterRemoval);

  // ---- conntrack garbage collection: an ended flow's entry goes, a live one stays
  const ct = await n.openPinnedMap(path.join(bpffs, abi.KBP_MAP_CT));
  t.teardown(() => ct.close());
  const now = process.hrtime.bigint();
  const entry = (sport: number, lastSeen: bigint) => ({
    key: abi.ctKey.encode({ saddr: '10.244.1.9', daddr: '10.96.0.10', sport, dport: 80, proto: abi.IPPROTO_UDP, dir: abi.KBP_CT_FORWARD }),
    value: abi.ctValue.encode({ created_ns: lastSeen, last_seen_ns: lastSeen, backend_id: 2, svc_id: 1, nat_addr: '0.0.0.0', nat_port: 0, flags: 0, tcp_flags: 0, client_port: 0 }),
  });
  const ended = entry(5001, now - BigInt(abi.KBP_CT_LIFETIME_OTHER_NS) - 1_000_000_000n);
  const live = entry(5002, now);
  await ct.update(ended.key, ended.value);
  await ct.update(live.key, live.value);
  await until('ended flow collected', async () => (await ct.lookup(ended.key)) === null, 5000);
  t.not(await ct.lookup(live.key), null, 'the live flow is kept');
  t.match(await a2.log(), /msg="collected ended flows" component=conntrack ctScanned=\d+ ctDeleted=1/);
  a2.child.kill('SIGKILL');
  await waitExit(a2.child);

  // ---- detach: hooks first, then pins; idempotent
  const d1 = await nsExec(ns, process.execPath, [kbp, 'detach', '--bpffs', bpffs], { env: childEnv() });
  t.same(d1.stdout.trim().split('\n').map((l) => l.replace(/prog id \d+/, 'prog id N')), [
    'detached kbp_from_pod (prog id N) from tc ingress of veth-a',
    'detached kbp_from_pod (prog id N) from tc ingress of veth-b',
    `unpinned ${bpffs}/kbp_affinity_v1`,
    `unpinned ${bpffs}/kbp_backend_v2`,
    `unpinned ${bpffs}/kbp_config_v1`,
    `unpinned ${bpffs}/kbp_ct4_v2`,
    `unpinned ${bpffs}/kbp_hostns_v1`,
    `unpinned ${bpffs}/kbp_revnat_v1`,
    `unpinned ${bpffs}/kbp_snat4_v1`,
    `unpinned ${bpffs}/kbp_sockrev_v1`,
    `unpinned ${bpffs}/kbp_srcrange_v1`,
    `unpinned ${bpffs}/kbp_stats_v2`,
    `unpinned ${bpffs}/kbp_svc_v1`,
  ]);
  t.equal(await hook('veth-a'), null);
  t.equal(await hook('veth-b'), null);
  t.same((await fs.readdir(bpffs)).filter((f) => f.startsWith('kbp_')), []);
  const d2 = await nsExec(ns, process.execPath, [kbp, 'detach', '--bpffs', bpffs], { env: childEnv() });
  t.equal(d2.stdout.trim(), 'nothing to remove');
});

t.test('agent refuses a --bpffs that is not a bpffs, and says how to mount one', async (t) => {
  if (!built(t)) return;
  const tb = Testbed.create();
  t.teardown(() => tb.teardown());
  const dir = await tb.tempDir('plain');
  const m = await tb.tempDir('m');
  const child = tb.spawn(null, [process.execPath, kbp, 'agent', '--host-services-cgroup', 'off', '--manifests', m, '--bpffs', dir, '--api-listen', 'off'], { env: childEnv() });
  let err = '';
  child.stderr!.on('data', (b) => (err += b));
  const exit = await waitExit(child);
  t.equal(exit.code, 1);
  t.match(err, `--bpffs ${dir} is not on a BPF filesystem (bpffs); mount one with: mkdir -p ${dir} && mount -t bpf bpf ${dir}`);
  const missing = path.join(dir, 'sub', 'kbp');
  const c2 = tb.spawn(null, [process.execPath, kbp, 'agent', '--host-services-cgroup', 'off', '--manifests', m, '--bpffs', missing, '--api-listen', 'off'], { env: childEnv() });
  let err2 = '';
  c2.stderr!.on('data', (b) => (err2 += b));
  t.equal((await waitExit(c2)).code, 1);
  t.match(err2, `does not exist and ${path.dirname(missing)} is not a BPF filesystem`);
  t.notOk(existsSync(missing), 'nothing created');
});
