// The real kube-proxy (iptables mode) inside a node namespace against the
// real kube-apiserver, relayed into that namespace: a ClusterIP Service
// created through the API is reachable from a client pod through kube-proxy's
// rules, both backends answer and see the client's own address; kube-proxy
// stopped leaves its KUBE-* chains behind, `--cleanup` removes them, and
// afterwards the ClusterIP no longer answers (so it was kube-proxy's rules
// that carried the traffic, not something else in the namespace).
//
// Address conventions: ClusterIP 10.96.0.60, pods 10.244.1.x on node
// "node-1", client 10.244.1.100. Needs root and the Kubernetes binaries
// (skipped with a reason when they cannot be built).

import t from 'tap';
import { ensureK8sBins, K8sBinsUnavailable, relayInto, startControlPlane } from '../../src/testbed/apiserver.js';
import { iptablesSave, KubeProxy, kubeChainsIn, kubeServicesOrder } from '../../src/testbed/kubeproxy.js';
import { nodeObject, serviceObjects } from '../../src/testbed/manifests.js';
import { Testbed } from '../../src/testbed/netns.js';
import { Probe, startPodServer } from '../../src/testbed/programs.js';
import { Cluster } from '../../src/testbed/topology.js';

const VIP = '10.96.0.60';
const NODE = 'node-1';

let skip: string | false = process.getuid?.() !== 0 ? 'needs root (network namespaces, iptables in them)' : false;
if (!skip) {
  try {
    await ensureK8sBins();
  } catch (err) {
    if (!(err instanceof K8sBinsUnavailable)) throw err;
    skip = `Kubernetes binaries unavailable: ${err.message}`;
  }
}

t.test('kube-proxy iptables mode carries a ClusterIP in a node namespace', { skip, timeout: 180_000 }, async (t) => {
  const tb = Testbed.create();
  t.teardown(() => tb.teardown());
  const cp = await startControlPlane(tb);
  const cluster = await Cluster.create(tb, { nodeName: NODE });
  const backends = [
    { name: 'web-a', ip: '10.244.1.11' },
    { name: 'web-b', ip: '10.244.1.12' },
  ];
  for (const b of backends) {
    const pod = await cluster.addPod(b.name, b.ip);
    await startPodServer(tb, pod.ns, b.name, 8080);
  }
  const client = await cluster.addPod('client', '10.244.1.100');
  const probe = await Probe.start(tb, client.ns);

  const must = async (method: string, p: string, body: unknown) => {
    const r = await cp.request(method, p, body);
    if (r.status >= 300) throw new Error(`${method} ${p}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  };
  await must('POST', '/api/v1/nodes', nodeObject(NODE, '172.18.0.11'));
  const [svc, slice] = serviceObjects({
    name: 'web',
    namespace: 'default',
    clusterIP: VIP,
    ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
    endpoints: backends.map((b) => ({ ip: b.ip, podName: b.name, nodeName: NODE })),
  });
  await must('POST', '/api/v1/namespaces/default/services', svc);
  await must('POST', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices', slice);

  // Before kube-proxy runs nothing answers on the ClusterIP.
  const before = await probe.http(VIP, 80, { timeoutMs: 500 });
  t.notOk(before[0]!.ok, 'no answer on the ClusterIP before kube-proxy runs');

  const relay = await relayInto(tb, cluster.nodeNs, cp);
  const kp = await KubeProxy.start(tb, cluster.nodeNs, { nodeName: NODE, kubeconfigPath: relay.kubeconfigPath });
  const syncMs = await kp.waitSynced({ services: ['default/web:http'], timeoutMs: 60_000 });
  t.ok(syncMs > 0 && syncMs < 60_000, `first sync ${Math.round(syncMs)} ms after start`);
  t.ok((await kp.rssMb()) > 1, 'RSS readable');
  t.same(kubeServicesOrder(await iptablesSave(cluster.nodeNs, 'nat')), ['default/web:http'], 'KUBE-SERVICES holds the Service (the apiserver\'s own kubernetes Service has no endpoints)');

  const results = await probe.http(VIP, 80, { count: 30 });
  const failed = results.filter((r) => !r.ok);
  t.equal(failed.length, 0, `all 30 requests answered${failed[0] ? ` (first error: ${failed[0].error})` : ''}`);
  t.same([...new Set(results.map((r) => r.backend))].sort(), ['web-a', 'web-b'], 'both backends reached');
  t.same([...new Set(results.map((r) => r.seenFrom?.split(':')[0]))], ['10.244.1.100'], 'backends see the client pod address (no masquerade)');

  const left = await kp.stop();
  t.ok(left.nat.includes('KUBE-SERVICES') && left.nat.some((c) => c.startsWith('KUBE-SVC-')) && left.nat.some((c) => c.startsWith('KUBE-SEP-')),
    `after SIGTERM kube-proxy leaves its chains: nat ${left.nat.length}, filter ${left.filter.length}, mangle ${left.mangle.length}`);
  t.comment(`chains left: ${JSON.stringify(left)}`);
  const leftByCleanup = await kp.cleanup();
  t.comment(`kube-proxy --cleanup left: ${JSON.stringify(leftByCleanup)} (removed by KubeProxy.cleanup)`);
  const none = { nat: [], filter: [], mangle: [] };
  t.same(kubeChainsIn(await iptablesSave(cluster.nodeNs)), none, 'no KUBE-* chain left in iptables after cleanup');
  t.same(kubeChainsIn(await iptablesSave(cluster.nodeNs, undefined, 'ip6')), none, 'nor in ip6tables');
  const after = await probe.http(VIP, 80, { timeoutMs: 500 });
  t.notOk(after[0]!.ok, 'no answer on the ClusterIP once the rules are gone');
});
