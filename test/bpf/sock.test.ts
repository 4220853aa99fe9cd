// Datapath tests of the host-services socket programs (bpf/kbp_sock.c), with
// the addon's cgroup links (create/update/detach), cgroupQuery and netnsCookie.
//
// BPF_PROG_TEST_RUN does not run cgroup sock_addr programs (the kernel answers
// ENOTSUPP, checked below), so these go through real sockets: a node
// namespace with two backend pods (the testbed server: HTTP and UDP echo on
// 8080, answering with the pod's name), the maps filled here by hand, the
// four programs attached to a cgroup of the test's own, and probes started
// inside that cgroup, one in the node namespace and one in a pod. No tc
// program is attached anywhere: whatever reaches a backend through a
// ClusterIP was translated by the socket programs (the node has no route to
// the ClusterIPs; a pod's packet to one is answered "net unreachable").
//
// Address conventions:
//   backends     10.244.1.10 (be-a), 10.244.1.11 (be-b), port 8080 (TCP and UDP)
//   client pod   10.244.1.100
//   ClusterIPs   10.96.0.10  tcp/80 and udp/5300 -> both backends
//                10.96.0.20  tcp/80, no endpoints (KBP_SVC_F_REJECT)
//                10.96.0.21  tcp/80, no endpoint for this node (no REJECT flag)
//                10.96.0.30  tcp/80, ClientIP affinity (60 s)
//   NodePort     10.96.0.40:80 flagged NODE_PORT only (not a ClusterIP: left alone)
//   node IP      172.18.0.11 in the config map (the affinity client of host sockets)

import t from 'tap';
import path from 'node:path';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, unlink } from 'node:fs/promises';
import os from 'node:os';
import * as abi from '../../src/maps/abi.js';
import { native, type BpfObject, type CgroupHook, type NativeError } from '../../src/native/binding.js';
import { bpfObjectPath } from '../../src/paths.js';
import { TestCgroup } from '../../src/testbed/cgroup.js';
import { cleanupStale, Testbed } from '../../src/testbed/netns.js';
import { Probe, startPodServer } from '../../src/testbed/programs.js';
import { Cluster } from '../../src/testbed/topology.js';
import { HOST_SERVICE_HOOKS } from '../../src/agent/hostservices.js';

const VIP = '10.96.0.10';
const VIP_REJECT = '10.96.0.20';
const VIP_EMPTY = '10.96.0.21';
const VIP_STICKY = '10.96.0.30';
const VIP_NODEPORT = '10.96.0.40';
const NODE_IP = '172.18.0.11';
const UDP_PORT = 5300;
const BACKENDS = [
  { pod: 'be-a', ip: '10.244.1.10' },
  { pod: 'be-b', ip: '10.244.1.11' },
];

if (process.getuid?.() !== 0) {
  t.plan(0, 'needs root (network namespaces, bpffs, cgroups)');
} else if (!existsSync(bpfObjectPath('kbp_sock'))) {
  t.fail(`${bpfObjectPath('kbp_sock')} missing: run make build`);
} else {
  await cleanupStale();
  const n = native();
  const tb = Testbed.create();
  t.teardown(() => tb.teardown());

  const cluster = await Cluster.create(tb);
  const cg = await TestCgroup.create(tb);
  for (const b of BACKENDS) {
    const pod = await cluster.addPod(b.pod, b.ip);
    await startPodServer(tb, pod.ns, pod.name, 8080);
  }
  const clientPod = await cluster.addPod('client', '10.244.1.100');
  const wrap = (argv: string[]) => cg.wrap(argv);
  const [hostProbe, podProbe] = await Promise.all([Probe.start(tb, cluster.nodeNs, { wrap }), Probe.start(tb, clientPod.ns, { wrap })]);

  const obj: BpfObject = await n.openObject(bpfObjectPath('kbp_sock'), { pinRoot: cluster.bpffs });
  tb.defer('kbp_sock object', () => obj.close());
  const m = (name: string) => obj.map(name);
  const nodeCookie = await n.netnsCookie(`/var/run/netns/${cluster.nodeNs}`);

  // ---- maps, as the syncer would write them (backends, slots, revnat, service entry last)
  let nextBackend = 1;
  const backendIds = new Map<string, number>();
  for (const proto of [abi.IPPROTO_TCP, abi.IPPROTO_UDP]) {
    for (const b of BACKENDS) {
      const id = nextBackend++;
      backendIds.set(`${b.ip}/${proto}`, id);
      await m(abi.KBP_MAP_BACKENDS).update(abi.backendKey.encode({ id }), abi.backendValue.encode({ ip: b.ip, port: 8080, proto, state: abi.KBP_BACKEND_ACTIVE, flags: abi.KBP_BACKEND_F_LOCAL }));
    }
  }
  const frontend = async (vip: string, port: number, proto: number, svcId: number, ids: number[], flags: number, affinityTimeout = 0) => {
    for (const [i, id] of ids.entries()) {
      await m(abi.KBP_MAP_SERVICES).update(abi.svcKey.encode({ vip, port, proto, scope: abi.KBP_SCOPE_EXTERNAL, slot: i + 1 }), abi.svcValue.encode({ backend_id: id, svc_id: svcId, count: 0, flags: 0, affinity_timeout: 0 }));
    }
    await m(abi.KBP_MAP_REVNAT).update(abi.revnatKey.encode({ svc_id: svcId }), abi.revnatValue.encode({ vip, port }));
    await m(abi.KBP_MAP_SERVICES).update(
      abi.svcKey.encode({ vip, port, proto, scope: abi.KBP_SCOPE_EXTERNAL, slot: 0 }),
      abi.svcValue.encode({ backend_id: 0, svc_id: svcId, count: ids.length, flags, affinity_timeout: affinityTimeout }),
    );
  };
  const tcpIds = BACKENDS.map((b) => backendIds.get(`${b.ip}/${abi.IPPROTO_TCP}`)!);
  const udpIds = BACKENDS.map((b) => backendIds.get(`${b.ip}/${abi.IPPROTO_UDP}`)!);
  await frontend(VIP, 80, abi.IPPROTO_TCP, 1, tcpIds, abi.KBP_SVC_F_CLUSTER_IP);
  await frontend(VIP, UDP_PORT, abi.IPPROTO_UDP, 2, udpIds, abi.KBP_SVC_F_CLUSTER_IP);
  await frontend(VIP_REJECT, 80, abi.IPPROTO_TCP, 3, [], abi.KBP_SVC_F_CLUSTER_IP | abi.KBP_SVC_F_REJECT);
  await frontend(VIP_EMPTY, 80, abi.IPPROTO_TCP, 4, [], abi.KBP_SVC_F_CLUSTER_IP);
  await frontend(VIP_STICKY, 80, abi.IPPROTO_TCP, 5, tcpIds, abi.KBP_SVC_F_CLUSTER_IP | abi.KBP_SVC_F_AFFINITY, 60);
  await frontend(VIP_NODEPORT, 80, abi.IPPROTO_TCP, 6, tcpIds, abi.KBP_SVC_F_NODE_PORT);
  await m(abi.KBP_MAP_CONFIG).update(abi.statKey(0), abi.configValue.encode({ node_ip: NODE_IP, flags: 0 }));
  const setHostNs = (cookie: bigint) => m(abi.KBP_MAP_HOST_NS).update(abi.statKey(0), abi.hostNsValue.encode({ netns_cookie: cookie, flags: 0 }));
  await setHostNs(nodeCookie);

  const cpus = n.numPossibleCpus();
  const stat = async (i: number) => {
    const v = await m(abi.KBP_MAP_STATS).lookup(abi.statKey(i));
    return v ? Number(abi.decodePerCpuStat(v, cpus).packets) : 0;
  };

  t.test('prog test run does not run sock_addr programs on this kernel (why these tests use real sockets)', async (t) => {
    const err = await obj.program('kbp_sock_connect4').testRun({ data: Buffer.alloc(64) }).then(
      () => null,
      (e: NativeError) => e,
    );
    t.match(err?.code, /^(ENOTSUPP|EINVAL|EOPNOTSUPP)$/, `testRun rejects: ${err?.code}`);
  });

  t.test('netnsCookie: one per namespace, stable', async (t) => {
    const again = await n.netnsCookie(`/var/run/netns/${cluster.nodeNs}`);
    const pod = await n.netnsCookie(`/var/run/netns/${clientPod.ns}`);
    const own = await n.netnsCookie();
    t.equal(typeof nodeCookie, 'bigint');
    t.ok(nodeCookie > 0n, 'non-zero');
    t.equal(again, nodeCookie, 'stable');
    t.not(pod, nodeCookie, 'a pod has another');
    t.not(own, nodeCookie, 'the test process (root namespace) has another');
    await t.rejects(n.netnsCookie('/nonexistent/netns'), { code: 'ENOENT' });
  });

  const linksDir = path.join(cluster.bpffs, 'links');
  await mkdir(linksDir);
  const pin = (name: string) => path.join(linksDir, name);

  t.test('cgroup links: create, update in place, move to another hook, detach; refuses what is no cgroup v2 and unknown hooks', async (t) => {
    const connect = obj.program('kbp_sock_connect4');
    const sendmsg = obj.program('kbp_sock_sendmsg4');
    const target = { path: cg.path, hook: 'connect4' as CgroupHook };
    t.same((await n.cgroupQuery(target)).progIds, [], 'nothing attached to a fresh cgroup');
    const l1 = await n.cgroupLink(target, connect, pin('probe'));
    t.equal(l1.updated, false, 'a new link');
    t.same((await n.cgroupQuery(target)).progIds, [connect.info.id], 'attached');
    const l2 = await n.cgroupLink(target, connect, pin('probe'));
    t.same({ updated: l2.updated, linkId: l2.linkId }, { updated: true, linkId: l1.linkId }, 'the pinned link is updated in place');
    t.same((await n.cgroupQuery(target)).progIds, [connect.info.id], 'still one attachment');
    const l3 = await n.cgroupLink({ path: cg.path, hook: 'sendmsg4' }, sendmsg, pin('probe'));
    t.equal(l3.updated, false, 'a pin of another hook: replaced by a new link');
    t.same((await n.cgroupQuery(target)).progIds, [], 'connect4 is free again');
    t.same((await n.cgroupQuery({ path: cg.path, hook: 'sendmsg4' })).progIds, [sendmsg.info.id], 'sendmsg4 has it');
    t.equal(await n.linkDetach(pin('probe')), true, 'detached');
    t.same((await n.cgroupQuery({ path: cg.path, hook: 'sendmsg4' })).progIds, [], 'nothing attached while the pin still exists');
    t.equal(await n.linkDetach(pin('probe')), false, 'a detached link is not detached twice');
    await unlink(pin('probe'));
    t.equal(await n.linkDetach(pin('probe')), false, 'no pin: false');
    const plain = await mkdtemp(path.join(os.tmpdir(), 'kbp-sock-plain-'));
    try {
      await t.rejects(n.cgroupQuery({ path: plain, hook: 'connect4' }), { code: 'ENOTDIR', message: /not a cgroup v2 directory/ });
    } finally {
      await rm(plain, { recursive: true, force: true });
    }
    await t.rejects(n.cgroupQuery({ path: cg.path, hook: 'bind4' as CgroupHook }), { code: 'EINVAL' });
    await t.rejects(n.cgroupLink({ path: '/nonexistent/cgroup', hook: 'connect4' }, connect, pin('x')), { code: 'ENOENT' });
    await t.rejects(n.cgroupLink(target, connect, '/tmp/not-a-bpffs-pin'), { code: /^(EPERM|EINVAL|ENOENT)$/ }, 'a pin outside a bpffs is refused');
    t.same((await n.cgroupQuery(target)).progIds, [], 'and leaves nothing attached');
  });

  t.test('before attach: the node namespace cannot reach the ClusterIP (the negative control)', async (t) => {
    const [r] = await hostProbe.http(VIP, 80, { timeoutMs: 1000 });
    t.equal(r?.ok, false, `fails: ${r?.error}`);
  });

  // From here on the four programs stay attached (removed with the cgroup).
  t.test('attach all four hooks', async (t) => {
    for (const { hook, program } of HOST_SERVICE_HOOKS) await n.cgroupLink({ path: cg.path, hook }, obj.program(program), pin(hook));
    for (const { hook, program } of HOST_SERVICE_HOOKS) t.same((await n.cgroupQuery({ path: cg.path, hook })).progIds, [obj.program(program).info.id], hook);
  });

  t.test('TCP from the node namespace: 40 new connections, both backends, peer is the ClusterIP', async (t) => {
    const before = await stat(abi.KBP_STAT_SOCK_XLATE);
    const rs = await hostProbe.http(VIP, 80, { count: 40 });
    t.same(rs.filter((r) => !r.ok).map((r) => r.error), [], 'all 40 succeed');
    const by = new Map<string, number>();
    for (const r of rs) by.set(r.backend ?? '?', (by.get(r.backend ?? '?') ?? 0) + 1);
    t.comment(`spread: ${[...by].map(([k, v]) => `${k}=${v}`).join(' ')}`);
    t.same([...by.keys()].sort(), ['be-a', 'be-b'], 'both backends answered');
    t.same([...new Set(rs.map((r) => r.peer))], [`${VIP}:80`], 'getpeername gives the ClusterIP:port');
    t.equal((await stat(abi.KBP_STAT_SOCK_XLATE)) - before, 40, 'sock_xlate counted each connect');
    // No tc program runs here, so no conntrack entry can exist: the socket went to the backend directly.
    t.same(await m(abi.KBP_MAP_CT).nextKey(null), null, 'no conntrack entry');
  });

  t.test('UDP from the node namespace: unconnected and connected, replies from the ClusterIP', async (t) => {
    const seen = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const r = await hostProbe.udp(VIP, UDP_PORT, { payload: `u${i}` });
      if (!r.ok) {
        t.fail(`datagram ${i}: ${r.error}`);
        return;
      }
      t.same(r.from, { address: VIP, port: UDP_PORT }, `reply ${i} source`);
      seen.add((JSON.parse(r.body) as { pod: string }).pod);
    }
    t.same([...seen].sort(), ['be-a', 'be-b'], 'both backends (unconnected, per datagram)');
    const c = await hostProbe.udp(VIP, UDP_PORT, { connect: true });
    t.ok(c.ok, `connected UDP: ${c.error ?? 'ok'}`);
    t.equal(c.peer, `${VIP}:${UDP_PORT}`, 'connected UDP: getpeername gives the ClusterIP');
    t.same(c.from, { address: VIP, port: UDP_PORT }, 'connected UDP: reply source');
    // The reverse entries name the frontend and its id.
    const revs: abi.SockRev[] = [];
    for (let k = await m(abi.KBP_MAP_SOCK_REVNAT).nextKey(null); k; k = await m(abi.KBP_MAP_SOCK_REVNAT).nextKey(k)) {
      const key = abi.sockRevKey.decode(k);
      if (key.proto !== abi.IPPROTO_UDP) continue;
      revs.push(abi.sockRevValue.decode((await m(abi.KBP_MAP_SOCK_REVNAT).lookup(k))!));
      t.ok(BACKENDS.some((b) => b.ip === key.addr) && key.port === 8080 && key.cookie > 0n, `key ${key.addr}:${key.port} cookie ${key.cookie}`);
    }
    t.ok(revs.length >= 2, `${revs.length} UDP reverse entries`);
    t.same([...new Set(revs.map((r) => `${r.vip}:${r.port}/${r.svc_id}`))], [`${VIP}:${UDP_PORT}/2`]);
  });

  t.test('a pod in the same cgroup is not touched by the socket programs', async (t) => {
    const before = await stat(abi.KBP_STAT_SOCK_XLATE);
    t.ok(cg.pids().length >= 2, 'both probes are in the cgroup');
    const [r] = await podProbe.http(VIP, 80, { timeoutMs: 1500 });
    t.equal(r?.ok, false, `untranslated (no tc here): ${r?.error}`);
    const u = await podProbe.udp(VIP, UDP_PORT, { timeoutMs: 500 });
    t.equal(u.ok, false, 'UDP untranslated');
    const [direct] = await podProbe.http(BACKENDS[0]!.ip, 8080);
    t.equal(direct?.ok, true, 'the pod reaches a backend directly (the probe works)');
    t.equal((await stat(abi.KBP_STAT_SOCK_XLATE)) - before, 0, 'sock_xlate did not move');
  });

  t.test('without the node cookie the programs leave the node namespace alone too', async (t) => {
    await setHostNs(0n);
    try {
      const [r] = await hostProbe.http(VIP, 80, { timeoutMs: 1000 });
      t.equal(r?.ok, false, `cookie 0: untranslated (${r?.error})`);
      await setHostNs(await n.netnsCookie(`/var/run/netns/${clientPod.ns}`));
      const [r2] = await hostProbe.http(VIP, 80, { timeoutMs: 1000 });
      t.equal(r2?.ok, false, `another namespace's cookie: untranslated (${r2?.error})`);
    } finally {
      await setHostNs(nodeCookie);
    }
    const [ok] = await hostProbe.http(VIP, 80);
    t.equal(ok?.ok, true, 'the node cookie back: translated again');
  });

  t.test('a ClusterIP without endpoints refuses at once (ECONNREFUSED), with or without the REJECT flag', async (t) => {
    const before = await stat(abi.KBP_STAT_SOCK_REJECT);
    for (const vip of [VIP_REJECT, VIP_EMPTY]) {
      const start = performance.now();
      const [r] = await hostProbe.http(vip, 80, { timeoutMs: 2000 });
      const ms = performance.now() - start;
      t.match(r?.error, /ECONNREFUSED/, `${vip}: ${r?.error}`);
      t.ok(ms < 1000, `${vip}: at once (${ms.toFixed(0)} ms)`);
    }
    t.equal((await stat(abi.KBP_STAT_SOCK_REJECT)) - before, 2, 'sock_reject counted both');
  });

  t.test('ClientIP affinity: the node sticks to one backend, keyed by the node address', async (t) => {
    const rs = await hostProbe.http(VIP_STICKY, 80, { count: 15 });
    t.same(rs.filter((r) => !r.ok).map((r) => r.error), []);
    const backends = [...new Set(rs.map((r) => r.backend))];
    t.equal(backends.length, 1, `one backend for all 15: ${backends.join(',')}`);
    const aff = await m(abi.KBP_MAP_AFFINITY).lookup(abi.affinityKey.encode({ client: NODE_IP, svc_id: 5 }));
    t.ok(aff, `affinity entry for ${NODE_IP}`);
    const be = BACKENDS.find((b) => b.pod === backends[0]);
    t.equal(aff && abi.affinityValue.decode(aff).backend_id, backendIds.get(`${be?.ip}/${abi.IPPROTO_TCP}`), 'it names that backend');
  });

  t.test('frontends that are no ClusterIP are left to the stack', async (t) => {
    const before = await stat(abi.KBP_STAT_SOCK_XLATE);
    const [r] = await hostProbe.http(VIP_NODEPORT, 80, { timeoutMs: 1000 });
    t.equal(r?.ok, false, `NodePort-flagged ${VIP_NODEPORT}:80 untranslated (${r?.error})`);
    const [p] = await hostProbe.http(VIP, 81, { timeoutMs: 1000 });
    t.equal(p?.ok, false, `a port the ClusterIP does not serve is untranslated (${p?.error})`);
    t.equal((await stat(abi.KBP_STAT_SOCK_XLATE)) - before, 0);
  });
}
