// computeDesired for traffic from outside the cluster: NodePort on every node
// address, LoadBalancer ingress IPs, externalIPs; externalTrafficPolicy Local
// vs Cluster; healthCheckNodePort; no VIP markers for these addresses.
//
// Address conventions: ClusterIPs 10.96.0.x, pods 10.244.<node>.<pod> (node 1 =
// "node-1" = this node), node addresses 172.18.0.11 (InternalIP) and
// 192.0.2.11 (ExternalIP), load balancer IPs 172.18.1.x, externalIPs 172.18.2.x.
// Goldens list frontends in Service order, then backends, VIPs, problems.

import t from 'tap';
import type { Node } from '../../src/k8s/types.js';
import { computeDesired, computeService, nodeAddresses, nodeContext, type NodeContext } from '../../src/proxy/desired.js';
import { DesiredAssembler } from '../../src/proxy/desired.js';
import { ProxyState } from '../../src/proxy/state.js';
import { NODE, formatDesired, slice, svc } from './fixtures.js';
import * as abi from '../../src/maps/abi.js';

const node1: Node = {
  apiVersion: 'v1',
  kind: 'Node',
  metadata: { name: NODE },
  status: {
    addresses: [
      { type: 'Hostname', address: 'node-1' },
      { type: 'ExternalIP', address: '192.0.2.11' },
      { type: 'InternalIP', address: '172.18.0.11' },
      { type: 'InternalIP', address: 'fd00::11' },
    ],
  },
};
const CTX: NodeContext = nodeContext(NODE, node1);

// Two endpoints: 10.244.1.5 on this node, 10.244.2.7 on node-2.
const eps = () => [slice('web-1', 'web', [{ port: 8080 }], ['10.244.1.5', '10.244.2.7'])];

t.test('node addresses: InternalIP first, then ExternalIP, IPv4 only; --node-ip overrides', async (t) => {
  t.same(nodeAddresses(node1), ['172.18.0.11', '192.0.2.11']);
  t.same(nodeAddresses(node1, ['10.0.0.1']), ['10.0.0.1']);
  t.same(nodeAddresses(undefined), []);
  t.same(CTX, { name: NODE, addresses: ['172.18.0.11', '192.0.2.11'] });
});

t.test('NodePort, externalTrafficPolicy Cluster: a frontend per node address, every endpoint, no VIP marker for node addresses', async (t) => {
  const d = computeDesired([svc('web', '10.96.0.10', [{ port: 80, targetPort: 8080, nodePort: 30080 }], { type: 'NodePort' })], eps(), CTX);
  t.same(formatDesired(d), [
    'frontend 10.96.0.10:80/TCP web/web:- flags=cluster-ip affinity=0 active=[10.244.1.5:8080/TCP 10.244.2.7:8080/TCP]',
    'frontend 172.18.0.11:30080/TCP web/web:- flags=node-port,masquerade affinity=0 active=[10.244.1.5:8080/TCP 10.244.2.7:8080/TCP]',
    'frontend 192.0.2.11:30080/TCP web/web:- flags=node-port,masquerade affinity=0 active=[10.244.1.5:8080/TCP 10.244.2.7:8080/TCP]',
    'backend 10.244.1.5:8080/TCP active',
    'backend 10.244.2.7:8080/TCP active',
    'vip 10.96.0.10',
  ]);
  const local = [...d.backends.values()].filter((b) => b.flags & 1).map((b) => b.key);
  t.same(local, ['10.244.1.5:8080/TCP'], 'only the endpoint on this node is flagged local');
});

t.test('NodePort without known node addresses: ClusterIP only', async (t) => {
  const d = computeDesired([svc('web', '10.96.0.10', [{ port: 80, targetPort: 8080, nodePort: 30080 }], { type: 'NodePort' })], eps(), NODE);
  t.same(
    formatDesired(d).filter((l) => l.startsWith('frontend')),
    ['frontend 10.96.0.10:80/TCP web/web:- flags=cluster-ip affinity=0 active=[10.244.1.5:8080/TCP 10.244.2.7:8080/TCP]'],
  );
});

t.test('LoadBalancer, externalTrafficPolicy Local: external frontends get this node\'s endpoints only, the ClusterIP all; health check counts local endpoints', async (t) => {
  const s = svc('web', '10.96.0.10', [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }, { name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353, nodePort: 30053 }], {
    type: 'LoadBalancer',
    externalTrafficPolicy: 'Local',
    healthCheckNodePort: 32000,
    externalIPs: ['172.18.2.9'],
  });
  s.status = { loadBalancer: { ingress: [{ ip: '172.18.1.50' }, { hostname: 'lb.example' }, { ip: '172.18.1.51', ipMode: 'Proxy' }] } };
  const slices = [
    slice('web-1', 'web', [{ name: 'http', port: 8080 }, { name: 'dns', port: 5353, protocol: 'UDP' }], [
      '10.244.1.5',
      '10.244.2.7',
      { addresses: ['10.244.1.6'], nodeName: NODE, conditions: { ready: false, serving: true, terminating: true } },
    ]),
  ];
  const d = computeDesired([s], slices, { name: NODE, addresses: ['172.18.0.11'] });
  t.same(formatDesired(d), [
    'frontend 10.96.0.10:80/TCP web/web:http flags=cluster-ip affinity=0 active=[10.244.1.5:8080/TCP 10.244.2.7:8080/TCP] kept=[10.244.1.6:8080/TCP]',
    'frontend 172.18.0.11:30080/TCP web/web:http flags=node-port,internal-scope affinity=0 active=[10.244.1.5:8080/TCP] kept=[10.244.1.6:8080/TCP 10.244.2.7:8080/TCP]',
    'frontend 172.18.0.11:30080/TCP (internal) web/web:http flags=node-port affinity=0 active=[10.244.1.5:8080/TCP 10.244.2.7:8080/TCP] kept=[10.244.1.6:8080/TCP]',
    'frontend 172.18.1.50:80/TCP web/web:http flags=load-balancer,internal-scope affinity=0 active=[10.244.1.5:8080/TCP] kept=[10.244.1.6:8080/TCP 10.244.2.7:8080/TCP]',
    'frontend 172.18.1.50:80/TCP (internal) web/web:http flags=load-balancer affinity=0 active=[10.244.1.5:8080/TCP 10.244.2.7:8080/TCP] kept=[10.244.1.6:8080/TCP]',
    'frontend 172.18.2.9:80/TCP web/web:http flags=external-ip,internal-scope affinity=0 active=[10.244.1.5:8080/TCP] kept=[10.244.1.6:8080/TCP 10.244.2.7:8080/TCP]',
    'frontend 172.18.2.9:80/TCP (internal) web/web:http flags=external-ip affinity=0 active=[10.244.1.5:8080/TCP 10.244.2.7:8080/TCP] kept=[10.244.1.6:8080/TCP]',
    'frontend 10.96.0.10:53/UDP web/web:dns flags=cluster-ip affinity=0 active=[10.244.1.5:5353/UDP 10.244.2.7:5353/UDP] kept=[10.244.1.6:5353/UDP]',
    'frontend 172.18.0.11:30053/UDP web/web:dns flags=node-port,internal-scope affinity=0 active=[10.244.1.5:5353/UDP] kept=[10.244.1.6:5353/UDP 10.244.2.7:5353/UDP]',
    'frontend 172.18.0.11:30053/UDP (internal) web/web:dns flags=node-port affinity=0 active=[10.244.1.5:5353/UDP 10.244.2.7:5353/UDP] kept=[10.244.1.6:5353/UDP]',
    'frontend 172.18.1.50:53/UDP web/web:dns flags=load-balancer,internal-scope affinity=0 active=[10.244.1.5:5353/UDP] kept=[10.244.1.6:5353/UDP 10.244.2.7:5353/UDP]',
    'frontend 172.18.1.50:53/UDP (internal) web/web:dns flags=load-balancer affinity=0 active=[10.244.1.5:5353/UDP 10.244.2.7:5353/UDP] kept=[10.244.1.6:5353/UDP]',
    'frontend 172.18.2.9:53/UDP web/web:dns flags=external-ip,internal-scope affinity=0 active=[10.244.1.5:5353/UDP] kept=[10.244.1.6:5353/UDP 10.244.2.7:5353/UDP]',
    'frontend 172.18.2.9:53/UDP (internal) web/web:dns flags=external-ip affinity=0 active=[10.244.1.5:5353/UDP 10.244.2.7:5353/UDP] kept=[10.244.1.6:5353/UDP]',
    'backend 10.244.1.5:5353/UDP active',
    'backend 10.244.1.5:8080/TCP active',
    'backend 10.244.1.6:5353/UDP terminating',
    'backend 10.244.1.6:8080/TCP terminating',
    'backend 10.244.2.7:5353/UDP active',
    'backend 10.244.2.7:8080/TCP active',
    'vip 10.96.0.10',
    'debug Service web/web: load balancer ingress 172.18.1.51 has ipMode Proxy: traffic arrives for the node, not for it',
  ]);
  const r = computeService(s, slices, { name: NODE, addresses: ['172.18.0.11'] });
  t.same(r.healthCheck, { port: 32000, namespace: 'web', name: 'web', localEndpoints: 2 }, 'one ready local endpoint x two ports, as kube-proxy counts');
});

t.test('no endpoints at all: every frontend of the port rejects (kube-proxy REJECT); Local policies that filtered endpoints out drop', async (t) => {
  const lb = (name: string, ip: string, spec: Record<string, unknown> = {}) => {
    const s = svc(name, ip, [{ port: 80, targetPort: 8080, nodePort: 30080 }], { type: 'LoadBalancer', ...spec });
    s.status = { loadBalancer: { ingress: [{ ip: '172.18.1.70' }] } };
    return s;
  };
  const none = computeDesired([lb('none', '10.96.0.30')], [slice('none-1', 'none', [{ port: 8080 }], [])], CTX);
  t.same(formatDesired(none).filter((l) => l.startsWith('frontend')), [
    'frontend 10.96.0.30:80/TCP web/none:- flags=cluster-ip,reject affinity=0 active=[]',
    'frontend 172.18.0.11:30080/TCP web/none:- flags=node-port,reject,masquerade affinity=0 active=[]',
    'frontend 192.0.2.11:30080/TCP web/none:- flags=node-port,reject,masquerade affinity=0 active=[]',
    'frontend 172.18.1.70:80/TCP web/none:- flags=load-balancer,reject,masquerade affinity=0 active=[]',
  ]);
  // Only a not-ready, not-serving endpoint: nothing to send new flows to either.
  const notReady = computeDesired([lb('nr', '10.96.0.31')], [slice('nr-1', 'nr', [{ port: 8080 }], [{ addresses: ['10.244.2.7'], conditions: { ready: false, serving: false }, nodeName: 'node-2' }])], CTX);
  t.ok([...notReady.frontends.values()].every((f) => f.flags & abi.KBP_SVC_F_REJECT), 'a not-ready endpoint does not count');
  // Both policies Local and the only endpoint on another node: kube-proxy's
  // reachable set is empty, so it rejects here too.
  const bothLocal = computeDesired([lb('bl', '10.96.0.32', { internalTrafficPolicy: 'Local', externalTrafficPolicy: 'Local' })], [slice('bl-1', 'bl', [{ port: 8080 }], ['10.244.2.7'])], CTX);
  t.ok([...bothLocal.frontends.values()].every((f) => f.flags & abi.KBP_SVC_F_REJECT), 'internal and external Local, no local endpoint: reject');
  // externalTrafficPolicy Local only: the ClusterIP has endpoints, so the external frontends drop.
  const extLocal = computeDesired([lb('el', '10.96.0.33', { externalTrafficPolicy: 'Local' })], [slice('el-1', 'el', [{ port: 8080 }], ['10.244.2.7'])], CTX);
  t.ok([...extLocal.frontends.values()].every((f) => !(f.flags & abi.KBP_SVC_F_REJECT)), 'externalTrafficPolicy Local with remote endpoints: drop, not reject');
});

t.test('externalTrafficPolicy Local on a node without local endpoints: external frontends with no slot (dropped), their internal-scope entries (pods) every endpoint, health check 0', async (t) => {
  const s = svc('web', '10.96.0.10', [{ port: 80, targetPort: 8080, nodePort: 30080 }], { type: 'LoadBalancer', externalTrafficPolicy: 'Local', healthCheckNodePort: 32000 });
  const slices = [slice('web-1', 'web', [{ port: 8080 }], ['10.244.2.7'])];
  const d = computeDesired([s], slices, CTX);
  t.same(formatDesired(d), [
    'frontend 10.96.0.10:80/TCP web/web:- flags=cluster-ip affinity=0 active=[10.244.2.7:8080/TCP]',
    'frontend 172.18.0.11:30080/TCP web/web:- flags=node-port,internal-scope affinity=0 active=[] kept=[10.244.2.7:8080/TCP]',
    'frontend 172.18.0.11:30080/TCP (internal) web/web:- flags=node-port affinity=0 active=[10.244.2.7:8080/TCP]',
    'frontend 192.0.2.11:30080/TCP web/web:- flags=node-port,internal-scope affinity=0 active=[] kept=[10.244.2.7:8080/TCP]',
    'frontend 192.0.2.11:30080/TCP (internal) web/web:- flags=node-port affinity=0 active=[10.244.2.7:8080/TCP]',
    'backend 10.244.2.7:8080/TCP active',
    'vip 10.96.0.10',
  ]);
  t.same(computeService(s, slices, CTX).healthCheck, { port: 32000, namespace: 'web', name: 'web', localEndpoints: 0 });
});

t.test('internalTrafficPolicy Local, externalTrafficPolicy Cluster: the ClusterIP local only, external frontends every endpoint', async (t) => {
  const s = svc('web', '10.96.0.10', [{ port: 80, targetPort: 8080, nodePort: 30080 }], { type: 'NodePort', internalTrafficPolicy: 'Local', sessionAffinity: 'ClientIP' });
  const d = computeDesired([s], eps(), { name: NODE, addresses: ['172.18.0.11'] });
  t.same(formatDesired(d).slice(0, 2), [
    'frontend 10.96.0.10:80/TCP web/web:- flags=cluster-ip,affinity affinity=10800 active=[10.244.1.5:8080/TCP] kept=[10.244.2.7:8080/TCP]',
    'frontend 172.18.0.11:30080/TCP web/web:- flags=node-port,affinity,masquerade affinity=10800 active=[10.244.1.5:8080/TCP 10.244.2.7:8080/TCP]',
  ]);
});

t.test('externalIPs on a ClusterIP Service; loadBalancerSourceRanges on the LB frontends only (normalized; bad and IPv6 ones skipped); invalid addresses skip the Service', async (t) => {
  const ok = svc('a', '10.96.0.20', [{ port: 443, targetPort: 8443 }], { externalIPs: ['172.18.2.1', 'fd00::1'] });
  const lb = svc('b', '10.96.0.21', [{ port: 80, targetPort: 8080, nodePort: 30081 }], { type: 'LoadBalancer', loadBalancerSourceRanges: ['203.0.113.7/24', 'bogus', '2001:db8::/32', '198.51.100.1', '203.0.113.0/24'] });
  lb.status = { loadBalancer: { ingress: [{ ip: '172.18.1.60' }] } };
  const bad = svc('c', '10.96.0.22', [{ port: 80 }], { externalIPs: ['not-an-ip'] });
  const d = computeDesired([ok, lb, bad], [slice('a-1', 'a', [{ port: 8443 }], ['10.244.2.3']), slice('b-1', 'b', [{ port: 8080 }], ['10.244.1.4'])], {
    name: NODE,
    addresses: ['172.18.0.11'],
  });
  t.same(formatDesired(d), [
    'frontend 10.96.0.20:443/TCP web/a:- flags=cluster-ip affinity=0 active=[10.244.2.3:8443/TCP]',
    'frontend 172.18.2.1:443/TCP web/a:- flags=external-ip,masquerade affinity=0 active=[10.244.2.3:8443/TCP]',
    'frontend 10.96.0.21:80/TCP web/b:- flags=cluster-ip affinity=0 active=[10.244.1.4:8080/TCP]',
    'frontend 172.18.0.11:30081/TCP web/b:- flags=node-port,masquerade affinity=0 active=[10.244.1.4:8080/TCP]',
    'frontend 172.18.1.60:80/TCP web/b:- flags=load-balancer,source-ranges,masquerade affinity=0 active=[10.244.1.4:8080/TCP] ranges=[198.51.100.1/32 203.0.113.0/24]',
    'backend 10.244.1.4:8080/TCP active',
    'backend 10.244.2.3:8443/TCP active',
    'vip 10.96.0.20',
    'vip 10.96.0.21',
    'debug Service web/a: IPv6 externalIPs fd00::1 skipped (IPv4 only)',
    'warn Service web/b: loadBalancerSourceRange "bogus" is not a CIDR: skipped',
    'debug Service web/b: IPv6 loadBalancerSourceRange 2001:db8::/32 skipped (IPv4 only)',
    'warn Service web/c: invalid spec, Service skipped: externalIPs: "not-an-ip" is not an IP address',
  ]);
});

t.test('assembler: a VIP marker only while a ClusterIP frontend uses the address; health checks follow Services', async (t) => {
  const asm = new DesiredAssembler();
  const ctx = { name: NODE, addresses: ['172.18.0.11'] };
  const s = svc('web', '10.96.0.10', [{ port: 80, targetPort: 8080, nodePort: 30080 }], { type: 'LoadBalancer', externalTrafficPolicy: 'Local', healthCheckNodePort: 32000 });
  asm.set('web/web', computeService(s, eps(), ctx));
  let c = asm.takeChanges();
  t.same([...asm.state.vips], ['10.96.0.10'], 'no marker for the node address');
  t.equal(c.healthChecks, true);
  t.same([...asm.healthChecks().values()], [{ port: 32000, namespace: 'web', name: 'web', localEndpoints: 1 }]);
  asm.set('web/web', computeService({ ...s, spec: { ...s.spec, externalTrafficPolicy: 'Cluster', healthCheckNodePort: undefined } }, eps(), ctx));
  c = asm.takeChanges();
  t.equal(c.healthChecks, true, 'the health check went away');
  t.same([...asm.healthChecks()], []);
  t.same([...c.vips], [], 'the marker did not move');
});

t.test('ProxyState: a Node address change recomputes every Service; --node-ip wins over the Node', async (t) => {
  const st = new ProxyState(NODE);
  st.onService('web/web', svc('web', '10.96.0.10', [{ port: 80, targetPort: 8080, nodePort: 30080 }], { type: 'NodePort' }));
  st.onEndpointSlice('web/web-1', eps()[0]);
  let r = st.compute();
  t.same([...r.desired.frontends.keys()], ['10.96.0.10:80/TCP#0'], 'no Node yet: ClusterIP only');
  t.equal(st.onNode(node1), true);
  r = st.compute();
  t.same([...r.changes.frontends].sort(), ['10.96.0.10:80/TCP#0', '172.18.0.11:30080/TCP#0', '192.0.2.11:30080/TCP#0'], 'every Service recomputed');
  t.same(st.addresses, ['172.18.0.11', '192.0.2.11']);
  t.equal(st.onNode({ ...node1, status: { addresses: [{ type: 'InternalIP', address: '172.18.0.21' }] } }), true);
  r = st.compute();
  t.same([...r.desired.frontends.keys()].sort(), ['10.96.0.10:80/TCP#0', '172.18.0.21:30080/TCP#0']);

  const pinned = new ProxyState(NODE);
  pinned.useNodeIps(['10.0.0.9']);
  pinned.onService('web/web', svc('web', '10.96.0.10', [{ port: 80, targetPort: 8080, nodePort: 30080 }], { type: 'NodePort' }));
  pinned.onNode(node1);
  t.same([...pinned.compute().desired.frontends.keys()].sort(), ['10.0.0.9:30080/TCP#0', '10.96.0.10:80/TCP#0']);
  t.equal(pinned.onNode({ ...node1, status: { addresses: [{ type: 'InternalIP', address: '172.18.0.21' }] } }), false, 'Node addresses do not matter with --node-ip');
});

t.test('loadBalancerSourceRanges with no usable IPv4 range: the load balancer IP takes every client (as kube-proxy)', async (t) => {
  const lb = svc('v6', '10.96.0.25', [{ port: 80, targetPort: 8080 }], { type: 'LoadBalancer', loadBalancerSourceRanges: ['2001:db8::/32', 'nonsense'] });
  lb.status = { loadBalancer: { ingress: [{ ip: '172.18.1.61' }] } };
  const d = computeDesired([lb], [slice('v6-1', 'v6', [{ port: 8080 }], ['10.244.1.4'])], CTX);
  const f = [...d.frontends.values()].find((x) => x.vip === '172.18.1.61')!;
  t.equal(f.flags & abi.KBP_SVC_F_SOURCE_RANGES, 0, 'no source-ranges flag');
  t.equal(f.sourceRanges, undefined);
});
