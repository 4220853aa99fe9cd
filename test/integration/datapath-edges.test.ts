// End to end across two nodes (src/testbed/multinode.ts, one `kbp agent
// --manifests DIR --node-devices eth0` per node): what the datapath answers
// with ICMP, and pods reaching Services in ways that loop back.
//   - a Service without endpoints refuses connections (ICMP port unreachable,
//     as kube-proxy's REJECT): from a pod through the ClusterIP, from the
//     external client through a NodePort, TCP and connected UDP;
//   - a backend's ICMP port unreachable for a UDP flow reaches the client as
//     ECONNREFUSED: pod -> ClusterIP (backend on the other node), and external
//     client -> NodePort (masqueraded);
//   - hairpin: a pod that is the only endpoint of its Service reaches itself
//     through the ClusterIP and through its node's NodePort;
//   - pods reach NodePorts on their own node's and the other node's address;
//   - a client port reused for a second Service with the same backend, while
//     the backend holds the first connection in TIME_WAIT: the new flow gets
//     another source port (as netfilter's NAT picks one), so no SYN meets the
//     old connection;
//   - path MTU discovery through translated flows: the backend 'big' sits
//     behind a host veth with MTU 1300 (its own side 1500, so it advertises
//     MSS 1460); node2's "fragmentation needed" for full-size segments must
//     reach the client translated, or large requests black-hole;
//   - loadBalancerSourceRanges: a load balancer IP (routed to node1) takes new
//     connections only from clients inside its ranges (the external client, a pod).
//
//   node1 172.18.0.11  pods 10.244.1.0/24: self 10.244.1.10 (server :8080), client c1 10.244.1.100
//   node2 172.18.0.12  pods 10.244.2.0/24: web-b 10.244.2.10 (server :8080, nothing on :9999),
//                      big 10.244.2.20 (server :8080, host veth MTU 1300)
//   external client 172.18.0.100; load balancer IPs 172.18.1.70 (ranges: the
//   external client) and 172.18.1.71 (ranges: node1's pods), routed via node1
//
// Needs root and a build (make build).

import t, { type Test } from 'tap';
import type { Agent } from '../../src/testbed/agent.js';
import { writeNode, writeService, type ServiceSpec } from '../../src/testbed/manifests.js';
import { MultiNodeCluster } from '../../src/testbed/multinode.js';
import { cleanupStale, ip, Testbed } from '../../src/testbed/netns.js';
import { Probe, startPodServer } from '../../src/testbed/programs.js';
import { failureReasons as failures, seenAddresses } from '../../src/testbed/scenario.js';

const WEB_B = { podName: 'web-b', ip: '10.244.2.10', nodeName: 'node2' };
const BIG = { podName: 'big', ip: '10.244.2.20', nodeName: 'node2' };
const SELF = { podName: 'self', ip: '10.244.1.10', nodeName: 'node1' };
const CLIENT_POD_IP = '10.244.1.100';
const HAIRPIN_ADDR = '169.254.42.1';

const empty: ServiceSpec = {
  name: 'empty',
  namespace: 'default',
  clusterIP: '10.96.0.60',
  type: 'NodePort',
  ports: [
    { name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30090 },
    { name: 'dns', port: 53, targetPort: 8080, protocol: 'UDP', nodePort: 30091 },
  ],
  endpoints: [],
};
// targetPort 9999: web-b has no socket there, so its kernel answers port unreachable.
const closed: ServiceSpec = {
  name: 'closed',
  namespace: 'default',
  clusterIP: '10.96.0.61',
  type: 'NodePort',
  ports: [{ name: 'udp', port: 5400, targetPort: 9999, protocol: 'UDP', nodePort: 30092 }],
  endpoints: [WEB_B],
};
const self: ServiceSpec = {
  name: 'self',
  namespace: 'default',
  clusterIP: '10.96.0.62',
  type: 'NodePort',
  ports: [
    { name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30093 },
    { name: 'udp', port: 5300, targetPort: 8080, protocol: 'UDP', nodePort: 30095 },
  ],
  endpoints: [SELF],
};
const web: ServiceSpec = {
  name: 'web',
  namespace: 'default',
  clusterIP: '10.96.0.63',
  type: 'NodePort',
  ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30094 }],
  endpoints: [WEB_B],
};
// A second ClusterIP on web-b alone: a client port reused for it right after
// a connection to `web` closed gives the flow web's reply tuple.
const web2: ServiceSpec = {
  name: 'web2',
  namespace: 'default',
  clusterIP: '10.96.0.67',
  ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
  endpoints: [WEB_B],
};

const mtu: ServiceSpec = {
  name: 'mtu',
  namespace: 'default',
  clusterIP: '10.96.0.66',
  type: 'NodePort',
  ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30098 }],
  endpoints: [BIG],
};
// Two LoadBalancer Services on web-b whose ranges admit one client each.
const rangeExternal: ServiceSpec = {
  name: 'lb-external',
  namespace: 'default',
  clusterIP: '10.96.0.64',
  type: 'LoadBalancer',
  loadBalancerIPs: ['172.18.1.70'],
  loadBalancerSourceRanges: ['172.18.0.100/32'],
  ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30096 }],
  endpoints: [WEB_B],
};
const rangePods: ServiceSpec = {
  ...rangeExternal,
  name: 'lb-pods',
  clusterIP: '10.96.0.65',
  loadBalancerIPs: ['172.18.1.71'],
  loadBalancerSourceRanges: ['10.244.1.0/24', '192.0.2.0/24'],
  ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30097 }],
};

const now = () => performance.timeOrigin + performance.now();

if (process.getuid?.() !== 0) {
  t.plan(0, 'needs root (network namespaces, bpffs, tc)');
} else {
  await cleanupStale();
  const tb = Testbed.create();
  let mc!: MultiNodeCluster;
  const agents: Agent[] = [];
  let external!: Probe;
  let podProbe!: Probe;
  let selfProbe!: Probe;
  let healthy = false;

  t.teardown(async () => {
    if (!t.passing()) for (const a of agents) process.stderr.write(`${a.cluster.nodeName}: ${await a.logTail(60)}\n`);
    await tb.teardown();
  });

  t.before(async () => {
    mc = await MultiNodeCluster.create(tb);
    const [n1, n2] = [mc.node(1), mc.node(2)];
    const webB = await n2.cluster.addPod(WEB_B.podName, WEB_B.ip);
    await startPodServer(tb, webB.ns, webB.name, 8080);
    const big = await n2.cluster.addPod(BIG.podName, BIG.ip);
    await startPodServer(tb, big.ns, big.name, 8080);
    await ip('-n', n2.cluster.nodeNs, 'link', 'set', big.hostVeth, 'mtu', '1300');
    const selfPod = await n1.cluster.addPod(SELF.podName, SELF.ip);
    await startPodServer(tb, selfPod.ns, selfPod.name, 8080);
    const clientPod = await n1.cluster.addPod('c1', CLIENT_POD_IP);
    const dir = await tb.tempDir('manifests');
    for (const s of [empty, closed, self, web, web2, mtu, rangeExternal, rangePods]) await writeService(dir, s);
    for (const n of mc.nodes) await writeNode(dir, n.name, n.ip);
    [external, podProbe, selfProbe] = await Promise.all([Probe.start(tb, mc.clientNs), Probe.start(tb, clientPod.ns), Probe.start(tb, selfPod.ns)]);
    agents.push(...(await mc.startAgents(dir)));
  });

  const withAgents = (name: string, fn: (t: Test) => Promise<void>) =>
    t.test(name, async (t) => {
      if (!healthy) {
        t.fail('agents are not healthy');
        return;
      }
      await fn(t);
    });

  /** The datapath counter `name` of node n's agent (GET /v1/stats). */
  const stat = (n: number, name: string): Promise<number> => agents[n - 1]!.stat(name);

  t.test('both agents become healthy', async () => {
    await Promise.all(agents.map((a) => a.waitHealthy(90_000))); // generous: the machine may be shared
    healthy = true;
  });

  withAgents('a Service without endpoints refuses connections at once (ECONNREFUSED), from a pod and from outside', async (t) => {
    const n1 = mc.node(1);
    const before = await stat(1, 'reject');
    const viaClusterIp = await podProbe.http(empty.clusterIP, 80, { count: 3, timeoutMs: 3000 });
    const viaNodePort = await external.http(n1.ip, 30090, { count: 3, timeoutMs: 3000 });
    for (const [what, rs] of [['pod -> ClusterIP:80', viaClusterIp], [`external -> ${n1.ip}:30090`, viaNodePort]] as const) {
      t.same(rs.map((r) => r.error?.split(':')[0]), ['ECONNREFUSED', 'ECONNREFUSED', 'ECONNREFUSED'], `${what}: every connect refused`);
      t.comment(`${what}: refused after ${rs.map((r) => (r.end - r.start).toFixed(1)).join(', ')} ms`);
    }
    const u = await podProbe.udp(empty.clusterIP, 53, { connect: true, timeoutMs: 3000 });
    t.match(u.error, /ECONNREFUSED/, 'connected UDP from a pod: ECONNREFUSED');
    const ux = await external.udp(n1.ip, 30091, { connect: true, timeoutMs: 3000 });
    t.match(ux.error, /ECONNREFUSED/, 'connected UDP from outside through the NodePort: ECONNREFUSED');
    // One rejected packet per attempt: every first SYN was answered, none retransmitted (a
    // timeout-then-refusal would show up here as more than one packet per connect).
    t.equal((await stat(1, 'reject')) - before, 8, 'node1 rejected exactly 6 SYNs and 2 datagrams');
  });

  withAgents("a backend's port unreachable reaches the client translated: pod -> ClusterIP, external -> NodePort (masqueraded)", async (t) => {
    const n1 = mc.node(1);
    const before = await stat(1, 'icmp_revnat');
    const start = now();
    const u = await podProbe.udp(closed.clusterIP, 5400, { connect: true, timeoutMs: 3000 });
    t.match(u.error, /ECONNREFUSED/, `pod -> ${closed.clusterIP}:5400 (web-b on node2, nothing on 9999): ECONNREFUSED after ${(now() - start).toFixed(1)} ms`);
    const ux = await external.udp(n1.ip, 30092, { connect: true, timeoutMs: 3000 });
    t.match(ux.error, /ECONNREFUSED/, `external -> ${n1.ip}:30092 (SNAT to node1): ECONNREFUSED`);
    t.equal((await stat(1, 'icmp_revnat')) - before, 2, 'node1 translated both errors at its uplink');
  });

  withAgents('hairpin: the only endpoint of a Service reaches itself through the ClusterIP and its NodePort', async (t) => {
    const n1 = mc.node(1);
    const viaClusterIp = await selfProbe.http(self.clusterIP, 80, { count: 5, timeoutMs: 2000 });
    t.same(failures(viaClusterIp), [], '5/5 through the ClusterIP');
    t.same([...new Set(viaClusterIp.map((r) => r.backend))], [SELF.podName], 'answered by itself');
    t.same(seenAddresses(viaClusterIp), [HAIRPIN_ADDR], `it saw the connection come from ${HAIRPIN_ADDR}`);
    const viaNodePort = await selfProbe.http(n1.ip, 30093, { count: 5, timeoutMs: 2000 });
    t.same(failures(viaNodePort), [], `5/5 through its own node's NodePort ${n1.ip}:30093`);
    t.same(seenAddresses(viaNodePort), [n1.ip], `via the NodePort (externalTrafficPolicy Cluster) it is masqueraded to ${n1.ip}, as kube-proxy does`);
    const u = await selfProbe.udp(self.clusterIP, 5300, { timeoutMs: 2000 });
    t.same(u.from, { address: self.clusterIP, port: 5300 }, 'UDP: the reply comes from the ClusterIP');
    t.equal((JSON.parse(u.body) as { remoteAddress: string }).remoteAddress, HAIRPIN_ADDR);
  });

  withAgents("pods reach NodePorts on their own node's and the other node's address", async (t) => {
    const [n1, n2] = [mc.node(1), mc.node(2)];
    for (const n of [n1, n2]) {
      const rs = await podProbe.http(n.ip, 30094, { count: 5, timeoutMs: 2000 });
      t.same(failures(rs), [], `c1 on node1 -> ${n.ip}:30094 (backend on node2): 5/5`);
      t.same([...new Set(rs.map((r) => r.backend))], [WEB_B.podName]);
      t.same(seenAddresses(rs), [n.ip], `the backend saw ${n.ip}: externalTrafficPolicy Cluster masquerades pods too, as kube-proxy does`);
    }
    // The only endpoint on node1 through node2's NodePort: masqueraded to node2 and back.
    const rs = await selfProbe.http(n2.ip, 30093, { count: 3, timeoutMs: 2000 });
    t.same(failures(rs), [], `self on node1 -> ${n2.ip}:30093 (its own Service, via the other node): 3/3`);
    t.same(seenAddresses(rs), [n2.ip], 'node2 masqueraded it (remote backend)');
  });

  withAgents('a client port reused for another Service with the same backend: the backend sees another port, every connection completes', async (t) => {
    const before = await stat(1, 'port_remap');
    const rounds = 6;
    const seen: string[][] = [];
    for (let i = 0; i < rounds; i++) {
      const localPort = 42100 + i;
      // web-b closes first (Connection: close), so it keeps TIME_WAIT for c1:localPort.
      const [first] = await podProbe.http(web.clusterIP, 80, { localPort, timeoutMs: 3000 });
      await new Promise((r) => setTimeout(r, 100));
      const [second] = await podProbe.http(web2.clusterIP, 80, { localPort, timeoutMs: 3000 });
      t.same(failures([first!, second!]), [], `round ${i}: both connections from port ${localPort} complete`);
      seen.push([first!.seenFrom ?? '-', second!.seenFrom ?? '-', `${Math.round(second!.end - second!.start)} ms`]);
      t.equal(first!.seenFrom, `${CLIENT_POD_IP}:${localPort}`, `round ${i}: web-b saw the first from the client's own port`);
      const [addr, port] = (second!.seenFrom ?? ':0').split(':');
      t.ok(addr === CLIENT_POD_IP && Number(port) >= 61000 && Number(port) <= 65535, `round ${i}: and the second from the client's address, another port (${second!.seenFrom})`);
    }
    t.comment(`seen by web-b (first, second, second's duration): ${seen.map((r) => r.join(' ')).join('; ')}`);
    t.ok((await stat(1, 'port_remap')) - before >= rounds, `node1 counted ${(await stat(1, 'port_remap')) - before} remapped flows`);
  });

  withAgents('path MTU discovery works through translated flows: fragmentation needed reaches the client translated', async (t) => {
    const n1 = mc.node(1);
    const before = await stat(1, 'icmp_revnat');
    const path = `/${'x'.repeat(6000)}`; // a request of several full-size segments
    const ext = await external.http(n1.ip, 30098, { count: 3, timeoutMs: 5000, path });
    t.same(failures(ext), [], `external client -> ${n1.ip}:30098 (masqueraded to node1, backend behind MTU 1300): 3/3 with a 6 kB request`);
    const pod = await podProbe.http(mtu.clusterIP, 80, { count: 3, timeoutMs: 5000, path });
    t.same(failures(pod), [], `pod c1 -> ${mtu.clusterIP}:80 (backend on node2): 3/3 with a 6 kB request`);
    t.ok((await stat(1, 'icmp_revnat')) - before >= 2, `node1 translated node2's "fragmentation needed" (${(await stat(1, 'icmp_revnat')) - before} errors)`);
  });

  withAgents('loadBalancerSourceRanges: each load balancer IP serves the client inside its ranges and drops the other', async (t) => {
    const [lbExt, lbPods] = [rangeExternal.loadBalancerIPs![0]!, rangePods.loadBalancerIPs![0]!];
    for (const ip of [lbExt, lbPods]) await mc.routeFromClient(`${ip}/32`, 1);
    const before = await stat(1, 'drop_source_range');
    const allowedExt = await external.http(lbExt, 80, { count: 5, timeoutMs: 2000 });
    t.same(failures(allowedExt), [], `external client (172.18.0.100, inside 172.18.0.100/32) -> ${lbExt}: 5/5`);
    t.same(seenAddresses(allowedExt), [mc.node(1).ip], 'masqueraded to node1 (backend on node2)');
    const allowedPod = await podProbe.http(lbPods, 80, { count: 5, timeoutMs: 2000 });
    t.same(failures(allowedPod), [], `pod c1 (inside 10.244.1.0/24) -> ${lbPods}: 5/5`);
    const [deniedExt] = await external.http(lbPods, 80, { count: 1, timeoutMs: 1000 });
    t.match(deniedExt?.error, /ETIMEDOUT/, `external client -> ${lbPods} (outside its ranges): dropped`);
    const [deniedPod] = await podProbe.http(lbExt, 80, { count: 1, timeoutMs: 1000 });
    t.match(deniedPod?.error, /ETIMEDOUT/, `pod c1 -> ${lbExt} (outside its ranges): dropped`);
    t.ok((await stat(1, 'drop_source_range')) - before >= 2, 'node1 counted the dropped SYNs');
    // The NodePort of the same Service is not filtered (kube-proxy filters load balancer IPs only).
    const viaNodePort = await external.http(mc.node(1).ip, 30097, { count: 2, timeoutMs: 2000 });
    t.same(failures(viaNodePort), [], 'its NodePort still takes the external client');
  });
}
