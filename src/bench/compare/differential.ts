// Differential behaviour check: one cluster state, the same connections
// driven through the real kube-proxy (iptables mode) and through kbp, one
// after the other on the same two node namespaces (never both active: the
// first is stopped and its rules or programs removed before the second
// starts). For every (client, target) the observation is which outcomes the
// connections had (ok, refused, timeout, …), which backends answered, which
// source address each backend saw, and for UDP which address the reply came
// from. Any difference between the two is a mismatch.
//
//   node1 172.18.0.11  a1 10.244.1.10 (8080, 9090)          client pod c1 10.244.1.100
//   node2 172.18.0.12  b1 10.244.2.10 (8080, 9090), b2 10.244.2.11 (8080)   c2 10.244.2.100
//   external client 172.18.0.100 on the fabric
//
// Services (created through the API as a controller would, with their slices):
//   tcpudp     10.96.0.70  http 80/TCP→8080, dns 53/UDP→8080       a1, b1
//   multi      10.96.0.71  web 80→8080, alt 8000→9090 (targetPort) a1, b1
//   np-cluster 10.96.0.72  NodePort 30080, eTP Cluster              a1, b2
//   np-local   10.96.0.73  NodePort 30081, eTP Local                b1
//   empty      10.96.0.74  80→8080, no endpoints
//   sticky     10.96.0.75  sessionAffinity ClientIP                 a1, b1, b2
// sticky is observed as "how many backends one client reached" (1 with
// affinity), since which one is random in both proxies. The last pod case
// reuses one client source port for tcpudp then multi (PORT_REUSE).

import { relayInto, startControlPlane, type ControlPlane } from '../../testbed/apiserver.js';
import { nodeObject, serviceObjects, type EndpointSpec, type ServiceSpec } from '../../testbed/manifests.js';
import { MultiNodeCluster, UPLINK } from '../../testbed/multinode.js';
import { nsExec, type Testbed } from '../../testbed/netns.js';
import type { HttpResult, UdpResult } from '../../testbed/probe-protocol.js';
import { childEnv, Probe, startPodServer } from '../../testbed/programs.js';
import { startProxy, type ProxyKind, type ProxyNode } from './proxies.js';

export interface Observation {
  outcomes: string[];
  backends: string[];
  /** Source addresses the backends saw. */
  seen: string[];
  /** UDP: where replies came from (address:port). */
  replyFrom?: string[];
}

export interface Mismatch {
  case: string;
  iptables: Observation;
  kbp: Observation;
}

export interface DifferentialReport {
  cases: string[];
  observations: Record<ProxyKind, Record<string, Observation>>;
  mismatches: Mismatch[];
  /** KUBE-* chains kube-proxy left behind when stopped (before cleanup). */
  kubeProxyLeftChains: Record<string, number>;
  durationMs: number;
}

interface Target {
  label: string;
  /** reuse: one source port for `host` then `host2` (see PORT_REUSE). */
  proto: 'tcp' | 'udp' | 'reuse';
  host: string;
  port: number;
  host2?: string;
  count: number;
  /** Count distinct backends instead of naming them (session affinity). */
  distinctOnly?: boolean;
}

const NODE_IPS = ['172.18.0.11', '172.18.0.12'];
const ep = (podName: string, ip: string, nodeName: string): EndpointSpec => ({ podName, ip, nodeName });
const A1 = ep('a1', '10.244.1.10', 'node1');
const B1 = ep('b1', '10.244.2.10', 'node2');
const B2 = ep('b2', '10.244.2.11', 'node2');

const SERVICES: Array<ServiceSpec & { sessionAffinity?: 'ClientIP' }> = [
  { name: 'tcpudp', namespace: 'default', clusterIP: '10.96.0.70', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }, { name: 'dns', port: 53, targetPort: 8080, protocol: 'UDP' }], endpoints: [A1, B1] },
  { name: 'multi', namespace: 'default', clusterIP: '10.96.0.71', ports: [{ name: 'web', port: 80, targetPort: 8080, protocol: 'TCP' }, { name: 'alt', port: 8000, targetPort: 9090, protocol: 'TCP' }], endpoints: [A1, B1] },
  { name: 'np-cluster', namespace: 'default', clusterIP: '10.96.0.72', type: 'NodePort', externalTrafficPolicy: 'Cluster', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30080 }], endpoints: [A1, B2] },
  { name: 'np-local', namespace: 'default', clusterIP: '10.96.0.73', type: 'NodePort', externalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30081 }], endpoints: [B1] },
  { name: 'empty', namespace: 'default', clusterIP: '10.96.0.74', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }], endpoints: [] },
  { name: 'sticky', namespace: 'default', clusterIP: '10.96.0.75', sessionAffinity: 'ClientIP', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }], endpoints: [A1, B1, B2] },
];

/** "ns/name:port" for every Service port that has endpoints: what KUBE-SERVICES must hold. */
const EXPECTED_KUBE_SERVICES = SERVICES.filter((s) => s.endpoints.length > 0).flatMap((s) => s.ports.map((p) => `${s.namespace}/${s.name}:${p.name}`));

const podTargets: Target[] = [
  { label: 'tcpudp 10.96.0.70:80/tcp', proto: 'tcp', host: '10.96.0.70', port: 80, count: 16 },
  { label: 'tcpudp 10.96.0.70:53/udp', proto: 'udp', host: '10.96.0.70', port: 53, count: 12 },
  { label: 'multi 10.96.0.71:80 (→8080)', proto: 'tcp', host: '10.96.0.71', port: 80, count: 16 },
  { label: 'multi 10.96.0.71:8000 (→9090)', proto: 'tcp', host: '10.96.0.71', port: 8000, count: 16 },
  { label: 'np-cluster ClusterIP 10.96.0.72:80', proto: 'tcp', host: '10.96.0.72', port: 80, count: 16 },
  { label: 'np-local ClusterIP 10.96.0.73:80', proto: 'tcp', host: '10.96.0.73', port: 80, count: 6 },
  { label: 'empty 10.96.0.74:80 (no endpoints)', proto: 'tcp', host: '10.96.0.74', port: 80, count: 2 },
  { label: 'sticky 10.96.0.75:80 (ClientIP)', proto: 'tcp', host: '10.96.0.75', port: 80, count: 12, distinctOnly: true },
  { label: 'one source port to tcpudp:80 then multi:80 (same backends)', proto: 'reuse', host: '10.96.0.70', host2: '10.96.0.71', port: 80, count: 8 },
  // eTP Cluster NodePorts from a pod: masqueraded by both (KUBE-EXT).
  ...NODE_IPS.map((ip, i) => ({ label: `np-cluster NodePort node${i + 1} ${ip}:30080`, proto: 'tcp' as const, host: ip, port: 30080, count: 12 })),
  // eTP Local NodePorts from a pod: every endpoint, also through a node
  // without a local one (kube-proxy's "pod traffic for external destinations").
  ...NODE_IPS.map((ip, i) => ({ label: `np-local NodePort node${i + 1} ${ip}:30081`, proto: 'tcp' as const, host: ip, port: 30081, count: 6 })),
];

// Runs in a client pod: for i < count, a GET to HOST1:PORT from source port
// BASE+i (the server closes first, so it keeps TIME_WAIT for that client
// address and port), then, once the client side has closed, a GET to
// HOST2:PORT from the same source port. Two Services with the same backends
// may land on the same backend address and port, so the second flow's reply
// tuple is one a just-ended flow of another frontend used, and the backend may
// still hold it in TIME_WAIT. netfilter's NAT gives such a flow another source
// port; a proxy that reused the tuple would see the backend refuse some SYNs
// ("slow", or a timeout). Prints, one JSON
// line, each second connection's outcome: "ok" (connected in < 500 ms),
// "slow" (connected later: SYN retransmitted) or the error code.
const PORT_REUSE = `
const net = require('node:net');
const [h1, h2, port, count, base] = process.argv.slice(1);
const get = (host, localPort) => new Promise((resolve) => {
  const t0 = Date.now();
  let connected = 0;
  const s = net.connect({ host, port: Number(port), localPort, timeout: 4000 }, () => {
    connected = Date.now() - t0;
    // No half-close: the server closes first, as after a complete answer.
    s.write('GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n');
  });
  s.on('data', () => {});
  s.on('end', () => {
    s.end();
    resolve(connected < 500 ? 'ok' : 'slow');
  });
  s.on('timeout', () => { s.destroy(); resolve('ETIMEDOUT'); });
  s.on('error', (e) => resolve(e.code || 'error'));
});
(async () => {
  const out = [];
  for (let i = 0; i < Number(count); i++) {
    const lp = Number(base) + i;
    await get(h1, lp);
    await new Promise((r) => setTimeout(r, 200));
    out.push(await get(h2, lp));
  }
  console.log(JSON.stringify(out));
})();
`;
let reuseBase = 41000;
const externalTargets: Target[] = NODE_IPS.flatMap((ip, i) => [
  { label: `np-cluster node${i + 1} ${ip}:30080`, proto: 'tcp' as const, host: ip, port: 30080, count: 16 },
  { label: `np-local node${i + 1} ${ip}:30081`, proto: 'tcp' as const, host: ip, port: 30081, count: i === 1 ? 6 : 2 },
]);

/** What kind of failure an error string is. */
export function outcomeOf(error: string | null): string {
  if (!error) return 'ok';
  if (/ECONNREFUSED/.test(error)) return 'refused';
  if (/ETIMEDOUT|timed out|no answer|no reply/i.test(error)) return 'timeout';
  if (/EHOSTUNREACH|ENETUNREACH/.test(error)) return 'unreachable';
  if (/ECONNRESET/.test(error)) return 'reset';
  return 'error';
}

const uniq = (xs: Iterable<string>) => [...new Set(xs)].sort();

function observeHttp(rs: HttpResult[], distinctOnly: boolean): Observation {
  const backends = uniq(rs.filter((r) => r.ok && r.backend).map((r) => r.backend!));
  return {
    outcomes: uniq(rs.map((r) => (r.ok ? 'ok' : outcomeOf(r.error ?? `HTTP ${r.status}`)))),
    backends: distinctOnly ? [`${backends.length} distinct`] : backends,
    seen: uniq(rs.filter((r) => r.ok && r.seenFrom).map((r) => r.seenFrom!.replace(/:\d+$/, ''))),
  };
}

function observeUdp(rs: UdpResult[]): Observation {
  const hellos = rs.filter((r) => r.ok).map((r) => JSON.parse(r.body) as { pod: string; remoteAddress: string });
  return {
    outcomes: uniq(rs.map((r) => (r.ok ? 'ok' : outcomeOf(r.error)))),
    backends: uniq(hellos.map((h) => h.pod)),
    seen: uniq(hellos.map((h) => h.remoteAddress)),
    replyFrom: uniq(rs.filter((r) => r.ok && r.from).map((r) => `${r.from!.address}:${r.from!.port}`)),
  };
}

async function observe(probe: Probe, t: Target): Promise<Observation> {
  if (t.proto === 'reuse') {
    // Fresh source ports every time, so no earlier run's TIME_WAIT is met.
    const base = reuseBase;
    reuseBase += t.count;
    const { stdout } = await nsExec(probe.ns, process.execPath, ['-e', PORT_REUSE, t.host, t.host2!, String(t.port), String(t.count), String(base)], { env: childEnv(), timeoutMs: 120_000 });
    const outcomes = JSON.parse(stdout) as string[];
    return { outcomes: uniq(outcomes.map((o) => (o === 'ok' ? 'ok' : o === 'slow' ? 'slow (SYN retransmitted)' : outcomeOf(o)))), backends: [], seen: [] };
  }
  if (t.proto === 'udp') {
    const rs: UdpResult[] = [];
    for (let i = 0; i < t.count; i++) rs.push(await probe.udp(t.host, t.port, { timeoutMs: 1000 }));
    return observeUdp(rs);
  }
  return observeHttp(await probe.http(t.host, t.port, { count: t.count, timeoutMs: 1000 }), t.distinctOnly ?? false);
}

const same = (a: Observation, b: Observation) => JSON.stringify(a) === JSON.stringify(b);

/** The world both proxies see: topology, servers, clients, API objects, relays. */
export interface DiffWorld {
  mc: MultiNodeCluster;
  cp: ControlPlane;
  nodes: ProxyNode[];
  clients: Array<{ name: string; probe: Probe; targets: Target[] }>;
}

export async function buildDiffWorld(tb: Testbed, cp?: ControlPlane): Promise<DiffWorld> {
  cp ??= await startControlPlane(tb);
  const mc = await MultiNodeCluster.create(tb, { nodes: 2 });
  const [n1, n2] = [mc.node(1), mc.node(2)];
  const servers: Array<[typeof n1, EndpointSpec, number[]]> = [
    [n1, A1, [8080, 9090]],
    [n2, B1, [8080, 9090]],
    [n2, B2, [8080]],
  ];
  for (const [n, e, ports] of servers) {
    const pod = await n.cluster.addPod(e.podName, e.ip);
    // The name tells which pod and which of its ports answered (targetPort mapping).
    for (const port of ports) await startPodServer(tb, pod.ns, port === 8080 ? e.podName : `${e.podName}:${port}`, port);
  }
  const c1 = await n1.cluster.addPod('c1', `${n1.podPrefix}.100`);
  const c2 = await n2.cluster.addPod('c2', `${n2.podPrefix}.100`);
  const [p1, p2, pe] = await Promise.all([Probe.start(tb, c1.ns), Probe.start(tb, c2.ns), Probe.start(tb, mc.clientNs)]);

  const must = async (method: string, p: string, body: unknown) => {
    const r = await cp.request(method, p, body);
    if (r.status >= 300) throw new Error(`${method} ${p}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  };
  for (const n of mc.nodes) await must('POST', '/api/v1/nodes', nodeObject(n.name, n.ip));
  for (const s of SERVICES) {
    const [svc, slice] = serviceObjects(s);
    if (s.sessionAffinity) (svc.spec as Record<string, unknown>).sessionAffinity = s.sessionAffinity;
    await must('POST', `/api/v1/namespaces/${s.namespace}/services`, svc);
    if (s.endpoints.length > 0) await must('POST', `/apis/discovery.k8s.io/v1/namespaces/${s.namespace}/endpointslices`, slice);
  }
  const nodes: ProxyNode[] = [];
  for (const n of mc.nodes) nodes.push({ cluster: n.cluster, relay: await relayInto(tb, n.cluster.nodeNs, cp), uplink: UPLINK });
  return {
    mc,
    cp,
    nodes,
    clients: [
      { name: 'c1 (pod, node1)', probe: p1, targets: podTargets },
      { name: 'c2 (pod, node2)', probe: p2, targets: podTargets },
      { name: 'external', probe: pe, targets: externalTargets },
    ],
  };
}

/** Starts `kind` on every node, drives every client's targets, stops it again (removing its rules/programs). */
export async function observeMode(tb: Testbed, w: DiffWorld, kind: ProxyKind, progress: (s: string) => void = () => {}): Promise<{ obs: Record<string, Observation>; leftChains: number }> {
  progress(`differential: starting ${kind} on ${w.nodes.length} nodes`);
  const proxies = [];
  for (const n of w.nodes) proxies.push(await startProxy(kind, tb, n, { expectServices: EXPECTED_KUBE_SERVICES, timeoutMs: 120_000 }));
  const obs: Record<string, Observation> = {};
  let leftChains = 0;
  try {
    for (const c of w.clients) {
      for (const t of c.targets) obs[`${c.name} -> ${t.label}`] = await observe(c.probe, t);
    }
  } finally {
    for (const p of proxies) {
      const r = await p.stop();
      if (r.leftChains) leftChains += r.leftChains.nat.length + r.leftChains.filter.length + r.leftChains.mangle.length;
    }
  }
  return { obs, leftChains };
}

export async function runDifferential(tb: Testbed, opts: { cp?: ControlPlane; progress?: (s: string) => void } = {}): Promise<DifferentialReport> {
  const t0 = Date.now();
  const progress = opts.progress ?? (() => {});
  progress('differential: building 2 nodes, 3 backend pods, 3 clients, 6 Services');
  const w = await buildDiffWorld(tb, opts.cp);
  const ipt = await observeMode(tb, w, 'iptables', progress);
  const kbp = await observeMode(tb, w, 'kbp', progress);
  const cases = Object.keys(ipt.obs);
  const mismatches = cases.filter((c) => !same(ipt.obs[c]!, kbp.obs[c]!)).map((c) => ({ case: c, iptables: ipt.obs[c]!, kbp: kbp.obs[c]! }));
  return {
    cases,
    observations: { iptables: ipt.obs, kbp: kbp.obs },
    mismatches,
    kubeProxyLeftChains: { total: ipt.leftChains },
    durationMs: Date.now() - t0,
  };
}

const fmtObs = (o: Observation) =>
  `${o.outcomes.join('+')}${o.backends.length ? ` backends=${o.backends.join(',')}` : ''}${o.seen.length ? ` seen=${o.seen.join(',')}` : ''}${o.replyFrom?.length ? ` replyFrom=${o.replyFrom.join(',')}` : ''}`;

/** A readable diff: one block per mismatching case. */
export function formatDifferential(r: DifferentialReport): string {
  const lines = [`differential check: ${r.cases.length} cases, ${r.mismatches.length} mismatches (${(r.durationMs / 1000).toFixed(0)} s)`];
  for (const c of r.cases) {
    const m = r.mismatches.find((x) => x.case === c);
    if (!m) lines.push(`  same      ${c}: ${fmtObs(r.observations.iptables[c]!)}`);
    else lines.push(`  MISMATCH  ${c}\n      iptables: ${fmtObs(m.iptables)}\n      kbp:      ${fmtObs(m.kbp)}`);
  }
  return lines.join('\n');
}
