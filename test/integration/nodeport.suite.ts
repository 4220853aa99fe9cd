// Black-box acceptance of NodePort, LoadBalancer and externalTrafficPolicy
// across two nodes (src/testbed/multinode.ts) — the suite, run on tc alone by
// nodeport.test.ts and with --nodeport-acceleration xdp / xdp-tx by
// nodeport-xdp.test.ts / nodeport-xdp-tx.test.ts: one `kbp agent --manifests
// DIR --node-devices eth0` per node namespace, both reading the same folder
// (the Services, their EndpointSlice with nodeName set, and a Node per node for
// its InternalIP). The only backend runs on node2; an external client sits on
// the fabric, a client pod on node1.
//
//   node1 172.18.0.11  pods 10.244.1.0/24   client pod 10.244.1.100
//   node2 172.18.0.12  pods 10.244.2.0/24   backend web-b 10.244.2.10:8080
//   external client 172.18.0.100; load balancer IP 172.18.1.50 routed via node1
//
// Needs root and a build (make build).

import t, { type Test } from 'tap';
import type { NodePortAcceleration } from '../../src/agent/options.js';
import { kbpDetach, type Agent } from '../../src/testbed/agent.js';
import { writeNode, writeService, type ServiceSpec } from '../../src/testbed/manifests.js';
import { MultiNodeCluster, UPLINK } from '../../src/testbed/multinode.js';
import { cleanupStale, listNamespaces, nsExec, Testbed } from '../../src/testbed/netns.js';
import { Probe, startPodServer } from '../../src/testbed/programs.js';
import { failureReasons as failures, seenAddresses, tally } from '../../src/testbed/scenario.js';

const BACKEND = { podName: 'web-b', ip: '10.244.2.10', nodeName: 'node2' };
const TARGET_PORT = 8080;
const LB_IP = '172.18.1.50';

const cluster: ServiceSpec = {
  name: 'web',
  namespace: 'default',
  clusterIP: '10.96.0.50',
  type: 'LoadBalancer',
  loadBalancerIPs: [LB_IP],
  ports: [
    { name: 'http', port: 80, targetPort: TARGET_PORT, protocol: 'TCP', nodePort: 30080 },
    { name: 'echo', port: 5300, targetPort: TARGET_PORT, protocol: 'UDP', nodePort: 30053 },
  ],
  endpoints: [BACKEND],
};
const local: ServiceSpec = {
  name: 'web-local',
  namespace: 'default',
  clusterIP: '10.96.0.51',
  type: 'LoadBalancer',
  externalTrafficPolicy: 'Local',
  healthCheckNodePort: 32081,
  ports: [{ name: 'http', port: 80, targetPort: TARGET_PORT, protocol: 'TCP', nodePort: 30081 }],
  endpoints: [BACKEND],
};

const now = () => performance.timeOrigin + performance.now();

/**
 * The whole suite on one topology, with the agents' --nodeport-acceleration:
 * nodeport.test.ts runs it on tc alone, nodeport-xdp(-tx).test.ts with XDP
 * in front of tc (and asserts on top that XDP did the translating, and with
 * xdp-tx the forwarding).
 */
export async function nodePortSuite(acceleration: NodePortAcceleration): Promise<void> {
  if (process.getuid?.() !== 0) {
    t.plan(0, 'needs root (network namespaces, bpffs, tc)');
  } else {
    await cleanupStale();
    const tb = Testbed.create();
    let mc!: MultiNodeCluster;
    const agents: Agent[] = [];
    let external!: Probe;
    let podProbe!: Probe;
    let healthy = false;
    const xdp = acceleration !== 'none';
    const xdpTx = acceleration === 'xdp-tx';
    const stat = (n: number, name: string): Promise<number> => agents[n - 1]!.stat(name);

    t.teardown(async () => {
      if (!t.passing()) for (const a of agents) process.stderr.write(`${a.cluster.nodeName}: ${await a.logTail(60)}\n`);
      await tb.teardown();
    });

    t.before(async () => {
      mc = await MultiNodeCluster.create(tb);
      const [n1, n2] = [mc.node(1), mc.node(2)];
      const backend = await n2.cluster.addPod(BACKEND.podName, BACKEND.ip);
      await startPodServer(tb, backend.ns, backend.name, TARGET_PORT);
      const clientPod = await n1.cluster.addPod('c1', `${n1.podPrefix}.100`);
      const dir = await tb.tempDir('manifests');
      await writeService(dir, cluster);
      await writeService(dir, local);
      for (const n of mc.nodes) await writeNode(dir, n.name, n.ip);
      [external, podProbe] = await Promise.all([Probe.start(tb, mc.clientNs), Probe.start(tb, clientPod.ns)]);
      if (xdp) await mc.clientChecksumsComplete();
      if (xdpTx) await mc.fabricNapi();
      agents.push(...(await mc.startAgents(dir, ['--nodeport-acceleration', acceleration])));
    });

    const withAgents = (name: string, fn: (t: Test) => Promise<void>) =>
      t.test(name, async (t) => {
        if (!healthy) {
          t.fail('agents are not healthy');
          return;
        }
        await fn(t);
      });

    t.test('both agents become healthy with their uplink attached', async (t) => {
      const start = now();
      await Promise.all(agents.map((a) => a.waitHealthy(30_000)));
      healthy = true;
      t.comment(`both healthy ${Math.round(now() - start)} ms after start`);
      for (const n of mc.nodes) {
        t.match(await n.cluster.ingressFilters(UPLINK), /kbp_from_node/, `${n.name}: kbp_from_node at tc ingress of ${UPLINK}`);
        const link = (await nsExec(n.cluster.nodeNs, 'ip', ['link', 'show', 'dev', UPLINK])).stdout;
        if (xdp) t.match(link, /prog\/xdp id \d+/, `${n.name}: an XDP program on ${UPLINK} (native mode)`);
        else t.notMatch(link, /xdp/, `${n.name}: no XDP program on ${UPLINK}`);
        const { stdout } = await nsExec(n.cluster.nodeNs, 'sysctl', ['-n', 'net.ipv4.conf.all.accept_local']);
        t.equal(stdout.trim(), '1', `${n.name}: the agent turned accept_local on (translated packets carry a node source)`);
      }
      const services = JSON.stringify(await agents[0]!.services());
      t.match(services, `${mc.node(1).ip}`, 'node1 programs NodePort frontends on its address');
    });

    withAgents('external client -> node1:nodePort, backend on node2: 50/50 succeed, the backend sees node1 (SNAT)', async (t) => {
      const n1 = mc.node(1);
      const xdpBefore = await stat(1, 'xdp_forward');
      const txBefore = await stat(1, 'xdp_tx');
      const start = now();
      const results = await external.http(n1.ip, 30080, { count: 50, timeoutMs: 2000 });
      const ms = now() - start;
      const xdpForwarded = (await stat(1, 'xdp_forward')) - xdpBefore;
      // Each request is a new connection: SYN, ACK, request, FIN at least.
      if (xdp) t.ok(xdpForwarded >= 50 * 4, `node1's XDP program translated the requests (${xdpForwarded} packets)`);
      else t.equal(xdpForwarded, 0, 'no XDP translation without --nodeport-acceleration');
      const sentBack = (await stat(1, 'xdp_tx')) - txBefore;
      // The SYN may pass through the stack while node1 resolves node2's MAC.
      if (xdpTx) t.ok(sentBack >= 50 * 3, `node1 sent them on to node2 with XDP_TX (${sentBack} packets)`);
      else t.equal(sentBack, 0, 'no XDP_TX without --nodeport-acceleration xdp-tx');
      t.same(failures(results), [], 'no request failed');
      t.same([...tally(results).keys()], [BACKEND.podName], 'answered by the backend on node2');
      t.same(seenAddresses(results), [n1.ip], 'the backend saw node1\'s address (masqueraded)');
      t.comment(`50 requests on new connections in ${ms.toFixed(0)} ms (${(ms / 50).toFixed(2)} ms each)`);
    });

    withAgents('UDP through node1:nodePort: replies come from node1:nodePort', async (t) => {
      const n1 = mc.node(1);
      for (let i = 0; i < 10; i++) {
        const r = await external.udp(n1.ip, 30053);
        if (!r.ok) {
          t.fail(`UDP request ${i} failed: ${r.error}`);
          return;
        }
        t.same(r.from, { address: n1.ip, port: 30053 }, `reply ${i} source is ${n1.ip}:30053`);
        t.equal((JSON.parse(r.body) as { remoteAddress: string }).remoteAddress, n1.ip, 'the backend saw node1');
      }
    });

    withAgents('externalTrafficPolicy Local: node2 (local endpoint) keeps the client IP, node1 drops', async (t) => {
      const [n1, n2] = [mc.node(1), mc.node(2)];
      const xdpBefore = await stat(2, 'xdp_forward');
      const results = await external.http(n2.ip, 30081, { count: 20, timeoutMs: 2000 });
      t.same(failures(results), [], `20/20 through ${n2.ip}:30081`);
      t.same(seenAddresses(results), [mc.clientIp], 'the backend saw the external client\'s own address');
      if (xdp) t.ok((await stat(2, 'xdp_forward')) - xdpBefore >= 20 * 4, "node2's XDP program translated them");
      const [dropped] = await external.http(n1.ip, 30081, { count: 1, timeoutMs: 1000 });
      t.equal(dropped?.ok, false, `${n1.ip}:30081 (no local endpoint) fails`);
      t.match(dropped?.error, /ETIMEDOUT/, 'by timing out: dropped, as kube-proxy does');
    });

    withAgents('healthCheckNodePort: 200 on the node with the endpoint, 503 on the other', async (t) => {
      const [n1, n2] = [mc.node(1), mc.node(2)];
      const ok = await external.get(`http://${n2.ip}:32081/`);
      t.equal(ok.status, 200, `${n2.ip}:32081 answers 200`);
      t.same(JSON.parse(ok.body), { service: { namespace: 'default', name: 'web-local' }, localEndpoints: 1, serviceProxyHealthy: true });
      const none = await external.get(`http://${n1.ip}:32081/`);
      t.equal(none.status, 503, `${n1.ip}:32081 answers 503`);
      t.same(JSON.parse(none.body), { service: { namespace: 'default', name: 'web-local' }, localEndpoints: 0, serviceProxyHealthy: true });
    });

    withAgents('a pod on node1 reaches a ClusterIP whose backend is on node2 (reverse NAT at node1\'s uplink)', async (t) => {
      const results = await podProbe.http(cluster.clusterIP, 80, { count: 20, timeoutMs: 2000 });
      t.same(failures(results), [], '20/20 succeed');
      t.same(seenAddresses(results), [`${mc.node(1).podPrefix}.100`], 'the backend saw the pod (no masquerade)');
      const u = await podProbe.udp(cluster.clusterIP, 5300);
      t.same(u.from, { address: cluster.clusterIP, port: 5300 }, 'UDP replies come from the ClusterIP');
    });

    withAgents('LoadBalancer IP routed to node1: works, replies from the LB IP, the backend sees node1', async (t) => {
      await mc.routeFromClient(`${LB_IP}/32`, 1);
      const results = await external.http(LB_IP, 80, { count: 20, timeoutMs: 2000 });
      t.same(failures(results), [], `20/20 through ${LB_IP}:80`);
      t.same(seenAddresses(results), [mc.node(1).ip], 'masqueraded to node1 (the configured node IP)');
      const u = await external.udp(LB_IP, 5300);
      t.same(u.from, { address: LB_IP, port: 5300 }, 'UDP replies come from the load balancer IP');
    });

    withAgents('kbp detach after the agents stopped: every XDP program and tc hook goes before the pins', async (t) => {
      for (const a of agents) await a.kill('SIGTERM');
      for (const n of mc.nodes) {
        const { stdout } = await kbpDetach(n.cluster);
        const lines = stdout.trim().split('\n');
        const firstUnpin = lines.findIndex((l) => l.startsWith('unpinned'));
        t.ok(firstUnpin > 0, `${n.name}: pins removed`);
        t.ok(lines.slice(firstUnpin).every((l) => l.startsWith('unpinned')), `${n.name}: every hook removed before the first pin`);
        if (xdp) t.ok(lines.some((l) => l.startsWith(`detached kbp_xdp_node`) && l.endsWith(`XDP of ${UPLINK}`)), `${n.name}: the XDP program was detached`);
        t.notMatch((await nsExec(n.cluster.nodeNs, 'ip', ['link', 'show', 'dev', UPLINK])).stdout, /xdp/, `${n.name}: no XDP program left`);
        t.equal(await n.cluster.ingressFilters(UPLINK), '', `${n.name}: no tc filter left on ${UPLINK}`);
      }
    });

    t.test('teardown leaves no namespace behind', async (t) => {
      await tb.teardown();
      t.same((await listNamespaces()).filter((n) => n.startsWith(tb.prefix)), []);
    });
  }
}
