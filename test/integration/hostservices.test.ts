// The node itself reaching a ClusterIP (host network), end to end: `kbp agent
// --manifests DIR --host-services-cgroup <a cgroup of this run>` in the node
// namespace of the one-node testbed (src/testbed/topology.ts), the seed
// example's Service plus a UDP port, its 2 replicas. A probe runs in the
// NODE namespace inside that cgroup (as kubelet or a hostNetwork pod would),
// another in a pod inside the same cgroup.
//
// The node has no route to the ClusterIP range: without the socket programs
// a connect from the node fails with ENETUNREACH at once. A pod's traffic
// keeps going through tc (the backend sees the pod's address and conntrack
// records the flow); the socket programs' counter does not move for it.
//
// Needs root and a build (make build).

import t, { type Test } from 'tap';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import * as abi from '../../src/maps/abi.js';
import { native, type BpfMap } from '../../src/native/binding.js';
import { HOST_SERVICE_HOOKS } from '../../src/agent/hostservices.js';
import { Agent, kbpDetach } from '../../src/testbed/agent.js';
import { TestCgroup } from '../../src/testbed/cgroup.js';
import { cleanupStale, listNamespaces, Testbed } from '../../src/testbed/netns.js';
import { Probe } from '../../src/testbed/programs.js';
import type { HttpResult } from '../../src/testbed/probe-protocol.js';
import { exampleWithUdp, serviceScenario, tally, type ServiceScenario } from '../../src/testbed/scenario.js';

const UDP_PORT = 5300;

if (process.getuid?.() !== 0) {
  t.plan(0, 'needs root (network namespaces, bpffs, tc, cgroups)');
} else {
  await cleanupStale();
  const { spec, http, vip, podA, podB } = await exampleWithUdp(UDP_PORT);

  const n = native();
  const tb = Testbed.create();
  let sc!: ServiceScenario;
  let cg!: TestCgroup;
  let agent!: Agent;
  let hostProbe!: Probe;
  let podProbe!: Probe;
  let healthy = false;

  t.teardown(async () => {
    if (!t.passing() && agent) process.stderr.write(`${await agent.logTail(80)}\n`);
    await tb.teardown();
  });

  t.before(async () => {
    sc = await serviceScenario(tb, spec);
    cg = await TestCgroup.create(tb);
    const wrap = (argv: string[]) => cg.wrap(argv);
    [hostProbe, podProbe] = await Promise.all([Probe.start(tb, sc.cluster.nodeNs, { wrap }), Probe.start(tb, sc.client.ns, { wrap })]);
    agent = await Agent.start(tb, sc.cluster, sc.nodeProbe, { manifestsDir: sc.manifestsDir, hostServicesCgroup: cg.path });
  });

  const withAgent = (name: string, fn: (t: Test) => Promise<void>) =>
    t.test(name, async (t) => {
      if (!healthy) {
        t.fail('agent is not healthy');
        return;
      }
      await fn(t);
    });
  const failures = (rs: HttpResult[]) => rs.filter((r) => !r.ok).map((r) => r.error ?? `HTTP ${r.status}`);
  const attached = async () => Object.fromEntries(await Promise.all(HOST_SERVICE_HOOKS.map(async ({ hook }) => [hook, (await n.cgroupQuery({ path: cg.path, hook })).progIds] as const)));
  let stats: BpfMap | undefined;
  const stat = async (index: number) => {
    stats ??= await n.openPinnedMap(path.join(sc.cluster.bpffs, abi.KBP_MAP_STATS));
    const v = await stats.lookup(abi.statKey(index));
    return v ? Number(abi.decodePerCpuStat(v, n.numPossibleCpus()).packets) : 0;
  };
  t.teardown(() => stats?.close());

  t.test('without the agent the node cannot reach the ClusterIP', async (t) => {
    const [r] = await hostProbe.http(vip, http.port, { timeoutMs: 1000 });
    t.equal(r?.ok, false, `fails: ${r?.error}`);
  });

  t.test('the agent becomes healthy and attaches the four socket hooks to the cgroup', async (t) => {
    await agent.waitHealthy(30_000);
    healthy = true;
    const hooks = await attached();
    for (const { hook } of HOST_SERVICE_HOOKS) t.equal(hooks[hook]?.length, 1, `${hook}: one program`);
    for (const ids of Object.values(hooks)) for (const id of ids) t.match((await n.progInfo(id)).name, /^kbp_sock_/);
    t.match(await agent.logTail(200), /msg="host services attached".*hooks=connect4,sendmsg4,recvmsg4,getpeername4/);
  });

  withAgent('TCP from the node namespace: 50 new connections succeed, both backends, getpeername is the ClusterIP', async (t) => {
    const before = await stat(abi.KBP_STAT_SOCK_XLATE);
    const results = await hostProbe.http(vip, http.port, { count: 50 });
    t.same(failures(results), [], 'no request failed');
    const counts = tally(results);
    t.comment(`spread: ${[...counts].map(([k, v]) => `${k}=${v}`).join(' ')}`);
    t.ok((counts.get(podA) ?? 0) >= 1, `${podA} answered`);
    t.ok((counts.get(podB) ?? 0) >= 1, `${podB} answered`);
    t.same([...new Set(results.map((r) => r.peer))], [`${vip}:${http.port}`], 'the socket names the ClusterIP as its peer');
    t.equal((await stat(abi.KBP_STAT_SOCK_XLATE)) - before, 50, 'every connect was translated by the socket program');
  });

  withAgent('UDP from the node namespace: replies come from the ClusterIP, both backends answer', async (t) => {
    const backends = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const r = await hostProbe.udp(vip, UDP_PORT);
      if (!r.ok) {
        t.fail(`UDP request ${i} failed: ${r.error}`);
        return;
      }
      t.same(r.from, { address: vip, port: UDP_PORT }, `reply ${i} source is ${vip}:${UDP_PORT}`);
      backends.add((JSON.parse(r.body) as { pod: string }).pod);
    }
    t.same([...backends].sort(), [podA, podB].sort(), 'UDP datagrams are balanced too');
    const c = await hostProbe.udp(vip, UDP_PORT, { connect: true });
    t.equal(c.peer, `${vip}:${UDP_PORT}`, 'connected UDP: getpeername is the ClusterIP');
    t.same(c.from, { address: vip, port: UDP_PORT }, 'connected UDP: reply from the ClusterIP');
  });

  withAgent('a pod in the same cgroup goes through tc as before, untouched by the socket programs', async (t) => {
    const before = await stat(abi.KBP_STAT_SOCK_XLATE);
    const newFlows = await stat(abi.KBP_STAT_NEW_FLOW);
    const results = await podProbe.http(vip, http.port, { count: 20 });
    t.same(failures(results), [], 'all 20 succeed');
    t.same([...new Set(results.map((r) => r.seenFrom?.split(':')[0]))], [sc.client.ip], 'backends saw the pod address');
    t.same([...new Set(results.map((r) => r.peer))], [`${vip}:${http.port}`], 'peer is the ClusterIP (the packets were rewritten, not the socket)');
    t.equal((await stat(abi.KBP_STAT_SOCK_XLATE)) - before, 0, 'the socket programs translated nothing');
    t.ok((await stat(abi.KBP_STAT_NEW_FLOW)) - newFlows >= 20, 'the tc program counted the new flows');
  });

  withAgent('after the agent is killed the node keeps reaching the ClusterIP; a restart replaces the programs', async (t) => {
    const old = await attached();
    await agent.kill('SIGKILL');
    const results = await hostProbe.http(vip, http.port, { count: 10 });
    t.same(failures(results), [], 'agent down: 10/10 from the node');
    agent = await Agent.start(tb, sc.cluster, sc.nodeProbe, { manifestsDir: sc.manifestsDir, hostServicesCgroup: cg.path });
    await agent.waitHealthy(30_000);
    const now = await attached();
    for (const { hook } of HOST_SERVICE_HOOKS) {
      t.equal(now[hook]?.length, 1, `${hook}: still one program`);
      t.not(now[hook]?.[0], old[hook]?.[0], `${hook}: the new agent's program replaced the old one`);
    }
    t.match(await agent.logTail(200), /msg="host services attached".*updated=4/, 'the pinned links were updated in place');
    const again = await hostProbe.http(vip, http.port, { count: 10 });
    t.same(failures(again), [], 'after the restart: 10/10');
  });

  withAgent('an agent started with --host-services-cgroup off removes the links; pods are unaffected', async (t) => {
    await agent.stop();
    agent = await Agent.start(tb, sc.cluster, sc.nodeProbe, { manifestsDir: sc.manifestsDir, hostServicesCgroup: 'off' });
    await agent.waitHealthy(30_000);
    const hooks = await attached();
    for (const { hook } of HOST_SERVICE_HOOKS) t.same(hooks[hook], [], `${hook}: nothing attached`);
    t.notOk(existsSync(path.join(sc.cluster.bpffs, 'links')), 'no link pins left');
    const [r] = await hostProbe.http(vip, http.port, { timeoutMs: 1000 });
    t.equal(r?.ok, false, `the node's request fails (${r?.error})`);
    const p = await podProbe.http(vip, http.port, { count: 5 });
    t.same(failures(p), [], 'pods still reach the ClusterIP through tc');
    await agent.stop();
    agent = await Agent.start(tb, sc.cluster, sc.nodeProbe, { manifestsDir: sc.manifestsDir, hostServicesCgroup: cg.path });
    await agent.waitHealthy(30_000);
    const back = await hostProbe.http(vip, http.port, { count: 5 });
    t.same(failures(back), [], 'on again: the node reaches the ClusterIP');
  });

  withAgent('kbp detach removes the socket hooks before the pins; the node no longer reaches the ClusterIP', async (t) => {
    await agent.stop();
    const out = await kbpDetach(sc.cluster);
    t.match(out.stdout, /detached and unpinned \S+\/links\/cgroup_connect4/, 'detach names the socket hooks');
    const hooks = await attached();
    for (const { hook } of HOST_SERVICE_HOOKS) t.same(hooks[hook], [], `${hook}: nothing attached`);
    t.same((await readdir(sc.cluster.bpffs)).filter((f) => f.startsWith('kbp_')), [], 'no kbp_* pins left');
    const [r] = await hostProbe.http(vip, http.port, { timeoutMs: 1000 });
    t.equal(r?.ok, false, `the node's request fails again (${r?.error})`);
  });

  t.test('teardown leaves no namespace or cgroup behind', async (t) => {
    await tb.teardown();
    t.same((await listNamespaces()).filter((x) => x.startsWith(tb.prefix)), []);
    t.notOk(existsSync(cg.path), `${cg.path} removed`);
    t.notOk(existsSync(cg.mount), `${cg.mount} unmounted and removed`);
  });
}
