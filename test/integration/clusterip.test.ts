// Black-box acceptance of ClusterIP load balancing, driven only through
// `kbp agent --manifests DIR` in a node namespace (see src/testbed/topology.ts
// for the wiring): the seed example's Service (examples/my-nginx) plus a UDP
// port, its 2 replicas and a client pod.
//
// Needs root and a build (make build: bin/kbp.js, dist/, the BPF object and
// the addon).

import t, { type Test } from 'tap';
import { readdir } from 'node:fs/promises';
import { Agent, kbpDetach } from '../../src/testbed/agent.js';
import { writeService } from '../../src/testbed/manifests.js';
import { cleanupStale, listNamespaces, Testbed } from '../../src/testbed/netns.js';
import { Probe } from '../../src/testbed/programs.js';
import type { HttpResult } from '../../src/testbed/probe-protocol.js';
import { exampleWithUdp, serviceScenario, tally, type ServiceScenario } from '../../src/testbed/scenario.js';

const UDP_PORT = 5300; // frontend port of the Service's UDP echo port
const UNKNOWN_PORT = 81; // a port the Service does not have

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

if (process.getuid?.() !== 0) {
  t.plan(0, 'needs root (network namespaces, bpffs, tc)');
} else {
  await cleanupStale();
  const { spec, http, vip, podA, podB } = await exampleWithUdp(UDP_PORT);

  const tb = Testbed.create();
  let sc!: ServiceScenario;
  let agent!: Agent;
  let healthy = false;

  t.teardown(async () => {
    if (!t.passing() && agent) process.stderr.write(`${await agent.logTail(80)}\n`);
    await tb.teardown();
  });

  t.before(async () => {
    sc = await serviceScenario(tb, spec);
    agent = await Agent.start(tb, sc.cluster, sc.nodeProbe, { manifestsDir: sc.manifestsDir });
  });

  const get = (count: number, opts: { port?: number; timeoutMs?: number; probe?: Probe } = {}) =>
    (opts.probe ?? sc.clientProbe).http(vip, opts.port ?? http.port, { count, timeoutMs: opts.timeoutMs ?? 2000 });

  // Later checks are meaningless (and slow: every request times out) when the
  // agent never came up; they fail at once instead.
  const withAgent = (name: string, fn: (t: Test) => Promise<void>) =>
    t.test(name, async (t) => {
      if (!healthy) {
        t.fail('agent is not healthy');
        return;
      }
      await fn(t);
    });

  const failures = (rs: HttpResult[]) => rs.filter((r) => !r.ok).map((r) => r.error ?? `HTTP ${r.status}`);

  t.test('the agent becomes healthy and programs the ClusterIP', async (t) => {
    const start = now();
    await agent.waitHealthy(30_000);
    healthy = true;
    t.comment(`healthy ${Math.round(now() - start)} ms after start`);
    const services = JSON.stringify(await agent.services());
    t.match(services, vip, `GET /v1/services lists ${vip}`);
  });

  withAgent('50 requests on new connections all succeed and reach every backend', async (t) => {
    const results = await get(50);
    t.same(failures(results), [], 'no request failed');
    const counts = tally(results);
    t.comment(`spread: ${[...counts].map(([k, v]) => `${k}=${v}`).join(' ')}`);
    t.ok((counts.get(podA) ?? 0) >= 1, `${podA} answered`);
    t.ok((counts.get(podB) ?? 0) >= 1, `${podB} answered`);
    t.same([...counts.keys()].filter((k) => k !== podA && k !== podB), [], 'only the Service backends answered');
    const seen = new Set(results.map((r) => r.seenFrom?.split(':')[0]));
    t.same([...seen], [sc.client.ip], 'backends saw the client pod address (no masquerade)');
  });

  withAgent('UDP replies come from the ClusterIP and the Service port', async (t) => {
    const backends = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const r = await sc.clientProbe.udp(vip, UDP_PORT);
      if (!r.ok) {
        t.fail(`UDP request ${i} failed: ${r.error}`);
        return;
      }
      t.same(r.from, { address: vip, port: UDP_PORT }, `reply ${i} source is ${vip}:${UDP_PORT}`);
      const hello = JSON.parse(r.body) as { pod: string; remoteAddress: string };
      t.equal(hello.remoteAddress, sc.client.ip);
      backends.add(hello.pod);
    }
    t.same([...backends].sort(), [podA, podB].sort(), 'UDP flows are balanced too');
  });

  withAgent('a port the Service does not have is dropped on the ClusterIP', async (t) => {
    const [r] = await get(1, { port: UNKNOWN_PORT, timeoutMs: 1000 });
    t.equal(r?.ok, false, `TCP ${vip}:${UNKNOWN_PORT} fails`);
    // Without the drop the node would answer "net unreachable" at once.
    t.match(r?.error, /ETIMEDOUT/, 'by timing out (dropped), not by an ICMP error');
    const u = await sc.clientProbe.udp(vip, UNKNOWN_PORT, { timeoutMs: 500 });
    t.equal(u.ok, false, `UDP ${vip}:${UNKNOWN_PORT} gets no reply`);
    const [again] = await get(1);
    t.equal(again?.ok, true, 'the Service port still works');
  });

  withAgent('a pod created after the agent started is attached and can use the ClusterIP', async (t) => {
    const late = await sc.cluster.addPod('late', '10.244.1.101');
    const appeared = now();
    let filters = '';
    while (!filters && now() - appeared < 5000) {
      filters = await sc.cluster.ingressFilters(late.hostVeth);
      if (!filters) await sleep(20);
    }
    t.not(filters, '', `tc ingress filter on ${late.hostVeth}`);
    t.comment(`${late.hostVeth} attached within ${Math.round(now() - appeared)} ms of the pod being set up`);
    const probe = await Probe.start(tb, late.ns);
    const [first] = await get(1, { probe, timeoutMs: 1000 });
    t.equal(first?.ok, true, `request from the new pod succeeded (${first?.error ?? first?.backend})`);
    const more = await get(10, { probe });
    t.same(failures(more), [], 'and keeps working');
  });

  withAgent(`removing ${podB} from the manifests stops new requests to it within 1 s`, async (t) => {
    const written = now();
    await writeService(sc.manifestsDir, { ...spec, endpoints: spec.endpoints.filter((e) => e.podName !== podB) });
    const results: HttpResult[] = [];
    let streak = 0;
    while (streak < 20 && now() - written < 10_000) {
      for (const r of await get(5)) {
        results.push(r);
        streak = r.ok && r.backend !== podB ? streak + 1 : 0;
      }
    }
    t.same(failures(results), [], 'no request failed during the change');
    t.ok(streak >= 20, '20 consecutive requests avoided the removed backend');
    const lastHit = results.filter((r) => r.backend === podB).at(-1);
    const firstAfter = lastHit ? results.find((r) => r.start > lastHit.start) : results[0];
    const stoppedMs = firstAfter ? firstAfter.start - written : Infinity;
    t.comment(
      `time from manifest write to the first request of the avoiding run: ${stoppedMs.toFixed(1)} ms ` +
        `(${results.length} requests, ${results.filter((r) => r.backend === podB).length} still to ${podB})`,
    );
    t.ok(stoppedMs <= 1000, `stopped using ${podB} within 1 s (${stoppedMs.toFixed(0)} ms)`);
    const services = JSON.stringify(await agent.services());
    const removedIp = spec.endpoints.find((e) => e.podName === podB)!.ip;
    t.notMatch(services, removedIp, `GET /v1/services no longer lists ${removedIp}`);
  });

  withAgent('after the agent is killed (SIGKILL) traffic keeps flowing', async (t) => {
    const exit = await agent.kill('SIGKILL');
    t.equal(exit.signal, 'SIGKILL');
    const results = await get(20);
    t.same(failures(results), [], 'all 20 requests succeeded');
    t.same([...tally(results).keys()], [podA], `all to the remaining backend ${podA}`);
    const u = await sc.clientProbe.udp(vip, UDP_PORT);
    t.same(u.from, { address: vip, port: UDP_PORT }, 'UDP replies still come from the ClusterIP');
  });

  withAgent('kbp detach removes every hook and pin; the ClusterIP stops working', async (t) => {
    await kbpDetach(sc.cluster);
    const [r] = await get(1, { timeoutMs: 1000 });
    t.equal(r?.ok, false, `request to ${vip} fails after detach (${r?.error})`);
    for (const pod of sc.cluster.listPods()) {
      t.equal(await sc.cluster.ingressFilters(pod.hostVeth), '', `no tc ingress filter on ${pod.hostVeth}`);
    }
    const pins = (await readdir(sc.cluster.bpffs)).filter((f) => f.startsWith('kbp_'));
    t.same(pins, [], 'no kbp_* pins left in the bpffs');
  });

  t.test('teardown leaves no namespace behind', async (t) => {
    await tb.teardown();
    t.same((await listNamespaces()).filter((n) => n.startsWith(tb.prefix)), []);
  });
}
