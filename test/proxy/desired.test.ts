// computeDesired: Services + EndpointSlices -> frontends, backends, VIPs.
//
// Address conventions: ClusterIPs 10.96.0.x, pods 10.244.<node>.<pod>
// (node 1 = "node-1" = this node), IPv6 in fd00::/8. Goldens list frontends in
// Service order, then backends sorted, then VIPs, then problems.

import t from 'tap';
import { computeDesired, nodeContext } from '../../src/proxy/desired.js';
import { NODE, formatDesired, slice, svc } from './fixtures.js';

t.test('seed example: one port, two ready replicas, numeric targetPort', async (t) => {
  const d = computeDesired(
    [svc('my-nginx', '10.96.0.10', [{ port: 80, targetPort: 8080 }])],
    [slice('my-nginx-abc', 'my-nginx', [{ port: 8080, protocol: 'TCP' }], ['10.244.2.7', '10.244.1.5'])],
    NODE,
  );
  t.same(formatDesired(d), [
    'frontend 10.96.0.10:80/TCP web/my-nginx:- flags=cluster-ip affinity=0 active=[10.244.1.5:8080/TCP 10.244.2.7:8080/TCP]',
    'backend 10.244.1.5:8080/TCP active',
    'backend 10.244.2.7:8080/TCP active',
    'vip 10.96.0.10',
  ]);
});

t.test('several ports, named targetPorts resolved per slice, slices merged and de-duplicated', async (t) => {
  const d = computeDesired(
    [
      svc('api', '10.96.0.20', [
        { name: 'http', port: 80, targetPort: 'web' },
        { name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 },
        { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 5353 },
      ]),
    ],
    [
      // Two pod templates during a rollout: "web" resolves to 8080 in one, 9090 in the other.
      slice('api-a', 'api', [{ name: 'http', port: 8080 }, { name: 'dns', port: 5353, protocol: 'UDP' }, { name: 'dns-tcp', port: 5353 }], ['10.244.1.2', '10.244.2.3']),
      slice('api-b', 'api', [{ name: 'http', port: 9090 }, { name: 'dns', port: 5353, protocol: 'UDP' }], [
        '10.244.2.4',
        // Listed in both slices (a pod moving between slices): one backend, ready wins.
        { addresses: ['10.244.2.3'], conditions: { ready: false } },
      ]),
      // Same service name in another namespace: not ours.
      slice('api-x', 'api', [{ name: 'http', port: 8080 }], ['10.244.9.9'], {}, 'other'),
    ],
    NODE,
  );
  t.same(formatDesired(d), [
    'frontend 10.96.0.20:80/TCP web/api:http flags=cluster-ip affinity=0 active=[10.244.1.2:8080/TCP 10.244.2.3:8080/TCP 10.244.2.4:9090/TCP] kept=[10.244.2.3:9090/TCP]',
    'frontend 10.96.0.20:53/UDP web/api:dns flags=cluster-ip affinity=0 active=[10.244.1.2:5353/UDP 10.244.2.3:5353/UDP 10.244.2.4:5353/UDP]',
    'frontend 10.96.0.20:53/TCP web/api:dns-tcp flags=cluster-ip affinity=0 active=[10.244.1.2:5353/TCP 10.244.2.3:5353/TCP]',
    'backend 10.244.1.2:5353/TCP active',
    'backend 10.244.1.2:5353/UDP active',
    'backend 10.244.1.2:8080/TCP active',
    'backend 10.244.2.3:5353/TCP active',
    'backend 10.244.2.3:5353/UDP active',
    'backend 10.244.2.3:8080/TCP active',
    'backend 10.244.2.3:9090/TCP terminating',
    'backend 10.244.2.4:5353/UDP active',
    'backend 10.244.2.4:9090/TCP active',
    'vip 10.96.0.20',
  ]);
});

t.test('readiness: unset is ready; not-ready and terminating get no slot but keep established TCP flows (not UDP ones)', async (t) => {
  const d = computeDesired(
    [svc('s', '10.96.0.30', [{ port: 80, targetPort: 8080 }])],
    [
      slice('s-1', 's', [{ port: 8080 }], [
        { addresses: ['10.244.1.1'] },
        { addresses: ['10.244.1.2'], conditions: { ready: true } },
        { addresses: ['10.244.1.3'], conditions: { ready: false } },
        { addresses: ['10.244.1.4'], conditions: { ready: false, serving: true, terminating: true } },
        { addresses: [] },
      ]),
    ],
    NODE,
  );
  t.same(formatDesired(d), [
    'frontend 10.96.0.30:80/TCP web/s:- flags=cluster-ip affinity=0 active=[10.244.1.1:8080/TCP 10.244.1.2:8080/TCP] kept=[10.244.1.3:8080/TCP 10.244.1.4:8080/TCP]',
    'backend 10.244.1.1:8080/TCP active',
    'backend 10.244.1.2:8080/TCP active',
    'backend 10.244.1.3:8080/TCP terminating',
    'backend 10.244.1.4:8080/TCP terminating',
    'vip 10.96.0.30',
  ]);
  // UDP: a not-ready endpoint's backend goes (its flows are flushed, as kube-proxy flushes them).
  const u = computeDesired(
    [svc('u', '10.96.0.31', [{ port: 53, protocol: 'UDP', targetPort: 5353 }])],
    [slice('u-1', 'u', [{ port: 5353, protocol: 'UDP' }], [{ addresses: ['10.244.1.1'] }, { addresses: ['10.244.1.3'], conditions: { ready: false } }])],
    NODE,
  );
  t.same(formatDesired(u), ['frontend 10.96.0.31:53/UDP web/u:- flags=cluster-ip affinity=0 active=[10.244.1.1:5353/UDP]', 'backend 10.244.1.1:5353/UDP active', 'vip 10.96.0.31']);
});

t.test('a backend shared by two Services gets one entry; a Service without endpoints still has a frontend', async (t) => {
  const d = computeDesired(
    [
      svc('a', '10.96.0.40', [{ port: 80, targetPort: 8080 }]),
      svc('b', '10.96.0.41', [{ port: 8000, targetPort: 8080 }]),
      svc('empty', '10.96.0.42', [{ port: 80 }]),
    ],
    [slice('a-1', 'a', [{ port: 8080 }], ['10.244.1.1']), slice('b-1', 'b', [{ port: 8080 }], ['10.244.1.1', '10.244.1.2'])],
    NODE,
  );
  t.same(formatDesired(d), [
    'frontend 10.96.0.40:80/TCP web/a:- flags=cluster-ip affinity=0 active=[10.244.1.1:8080/TCP]',
    'frontend 10.96.0.41:8000/TCP web/b:- flags=cluster-ip affinity=0 active=[10.244.1.1:8080/TCP 10.244.1.2:8080/TCP]',
    'frontend 10.96.0.42:80/TCP web/empty:- flags=cluster-ip,reject affinity=0 active=[]',
    'backend 10.244.1.1:8080/TCP active',
    'backend 10.244.1.2:8080/TCP active',
    'vip 10.96.0.40',
    'vip 10.96.0.41',
    'vip 10.96.0.42',
  ]);
});

t.test('skipped Services and addresses, each with a reason; the rest keep working', async (t) => {
  const ok = svc('ok', '10.96.0.50', [{ port: 80, targetPort: 8080 }]);
  const d = computeDesired(
    [
      ok,
      svc('ext', '', [], { type: 'ExternalName', externalName: 'example.org' }),
      svc('headless', 'None', [{ port: 80 }]),
      svc('pending', '', [{ port: 80 }]),
      svc('bad-ip', '10.96.0.300', [{ port: 80 }]),
      svc('bad-port', '10.96.0.51', [{ port: 70000 }]),
      svc('bad-target', '10.96.0.52', [{ port: 80, targetPort: 0 }]),
      svc('dup-port', '10.96.0.53', [{ name: 'a', port: 80 }, { name: 'b', port: 80 }]),
      svc('dup-name', '10.96.0.54', [{ name: 'a', port: 80 }, { name: 'a', port: 81 }]),
      svc('unnamed', '10.96.0.55', [{ port: 80 }, { port: 81 }]),
      svc('bad-type', '10.96.0.56', [{ port: 80 }], { type: 'Weird' as 'ClusterIP' }),
      svc('mismatch', '10.96.0.57', [{ port: 80 }], { clusterIPs: ['10.96.0.58'] }),
      svc('no-ports', '10.96.0.59', []),
      svc('v6only', 'fd00::10', [{ port: 80 }], { clusterIPs: ['fd00::10'] }),
      svc('dual', '10.96.0.60', [{ name: 'h', port: 80 }, { name: 's', port: 90, protocol: 'SCTP' }], { clusterIPs: ['10.96.0.60', 'fd00::60'] }),
      svc('thief', '10.96.0.50', [{ name: 'web', port: 80 }, { name: 'other', port: 81 }]),
      svc('bad-affinity', '10.96.0.61', [{ port: 80 }], { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 0 } } }),
    ],
    [
      slice('ok-1', 'ok', [{ port: 8080 }], ['10.244.1.1', 'fd00::1']),
      slice('ok-6', 'ok', [{ port: 8080 }], [], { addressType: 'IPv6' }),
      { ...slice('stray', 'x', [], []), metadata: { name: 'stray', namespace: 'web' } },
    ],
    NODE,
  );
  t.same(formatDesired(d), [
    'frontend 10.96.0.60:80/TCP web/dual:h flags=cluster-ip,reject affinity=0 active=[]',
    'frontend 10.96.0.50:80/TCP web/ok:- flags=cluster-ip affinity=0 active=[10.244.1.1:8080/TCP]',
    'frontend 10.96.0.50:81/TCP web/thief:other flags=cluster-ip,reject affinity=0 active=[]',
    'backend 10.244.1.1:8080/TCP active',
    'vip 10.96.0.50',
    'vip 10.96.0.60',
    'debug EndpointSlice web/stray: no kubernetes.io/service-name label: not used',
    'warn Service web/bad-affinity: invalid spec, Service skipped: sessionAffinityConfig.clientIP.timeoutSeconds 0 is out of range 1-86400',
    'warn Service web/bad-ip: invalid spec, Service skipped: clusterIP "10.96.0.300" is not an IP address',
    'warn Service web/bad-port: invalid spec, Service skipped: ports[0]: port 70000 is out of range 1-65535',
    'warn Service web/bad-target: invalid spec, Service skipped: ports[0]: targetPort 0 is neither a port number 1-65535 nor a port name',
    'warn Service web/bad-type: invalid spec, Service skipped: unknown type "Weird"',
    'debug Service web/dual: IPv6 clusterIP fd00::60 skipped (IPv4 only)',
    'info Service web/dual: port 90/SCTP skipped (TCP and UDP only)',
    'warn Service web/dup-name: invalid spec, Service skipped: duplicate port name "a"',
    'warn Service web/dup-port: invalid spec, Service skipped: duplicate port 80/TCP',
    'debug Service web/ext: type ExternalName: not proxied',
    'debug Service web/headless: headless (clusterIP None): not proxied',
    'warn Service web/mismatch: invalid spec, Service skipped: clusterIP 10.96.0.57 differs from clusterIPs[0] 10.96.0.58',
    'warn Service web/no-ports: invalid spec, Service skipped: no ports',
    'debug EndpointSlice web/ok-6: addressType IPv6 skipped (IPv4 only)',
    'debug EndpointSlice web/ok-1: endpoint address "fd00::1" is not IPv4: skipped',
    'warn Service web/pending: no clusterIP set: nothing to proxy',
    'warn Service web/thief: frontend 10.96.0.50:80/TCP already belongs to Service web/ok: port skipped',
    'warn Service web/unnamed: invalid spec, Service skipped: several ports without a name',
    'debug Service web/v6only: IPv6 clusterIP fd00::10 skipped (IPv4 only)',
  ]);
});

t.test('ClientIP affinity, several clusterIPs, internalTrafficPolicy Local (remote endpoints kept without a slot)', async (t) => {
  const d = computeDesired(
    [
      svc('sticky', '10.96.0.70', [{ port: 80, targetPort: 8080 }], { sessionAffinity: 'ClientIP' }),
      svc('sticky-short', '10.96.0.71', [{ port: 80, targetPort: 8080 }], { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } }),
      svc('local', '10.96.0.72', [{ port: 80, targetPort: 8080 }], { internalTrafficPolicy: 'Local', clusterIPs: ['10.96.0.72', '10.96.0.73'] }),
    ],
    [
      slice('sticky-1', 'sticky', [{ port: 8080 }], ['10.244.2.1']),
      slice('local-1', 'local', [{ port: 8080 }], ['10.244.1.1', '10.244.2.1', { addresses: ['10.244.1.9'] }]),
    ],
    NODE,
  );
  t.same(formatDesired(d), [
    'frontend 10.96.0.72:80/TCP web/local:- flags=cluster-ip affinity=0 active=[10.244.1.1:8080/TCP] kept=[10.244.1.9:8080/TCP 10.244.2.1:8080/TCP]',
    'frontend 10.96.0.73:80/TCP web/local:- flags=cluster-ip affinity=0 active=[10.244.1.1:8080/TCP] kept=[10.244.1.9:8080/TCP 10.244.2.1:8080/TCP]',
    'frontend 10.96.0.70:80/TCP web/sticky:- flags=cluster-ip,affinity affinity=10800 active=[10.244.2.1:8080/TCP]',
    'frontend 10.96.0.71:80/TCP web/sticky-short:- flags=cluster-ip,affinity,reject affinity=60 active=[]',
    'backend 10.244.1.1:8080/TCP active',
    'backend 10.244.1.9:8080/TCP active',
    'backend 10.244.2.1:8080/TCP active',
    'vip 10.96.0.70',
    'vip 10.96.0.71',
    'vip 10.96.0.72',
    'vip 10.96.0.73',
  ]);
});

t.test('slice ports: matched by name and protocol; a slice port without a valid number is skipped (as kube-proxy does), saying which', async (t) => {
  const d = computeDesired(
    [svc('m', '10.96.0.80', [{ name: 'http', port: 80, targetPort: 8080 }, { name: 'admin', port: 81, targetPort: 'admin' }, { name: 'udp', port: 82, protocol: 'UDP' }])],
    [
      slice('m-1', 'm', [{ name: 'http' }, { name: 'admin' }, { name: 'udp', port: 8282, protocol: 'TCP' }], ['10.244.1.1']),
      slice('m-2', 'm', [{ name: 'other', port: 9999 }], ['10.244.1.2']),
      slice('m-3', 'm', [{ name: 'http', port: 70000 }], ['10.244.1.3']),
    ],
    NODE,
  );
  t.same(formatDesired(d), [
    'frontend 10.96.0.80:80/TCP web/m:http flags=cluster-ip,reject affinity=0 active=[]',
    'frontend 10.96.0.80:81/TCP web/m:admin flags=cluster-ip,reject affinity=0 active=[]',
    'frontend 10.96.0.80:82/UDP web/m:udp flags=cluster-ip,reject affinity=0 active=[]',
    'vip 10.96.0.80',
    'debug EndpointSlice web/m-1: port "http" has no number: skipped',
    'debug EndpointSlice web/m-3: port "http" has an invalid number 70000 (1-65535): skipped',
    'debug EndpointSlice web/m-1: port "admin" has no number: skipped',
  ]);
});

const term = (ip: string, nodeName = 'node-2', serving = true) => ({ addresses: [ip], nodeName, conditions: { ready: false, serving, terminating: true } });
const ready = (ip: string, nodeName = 'node-2', zones?: string[]) => ({ addresses: [ip], nodeName, conditions: { ready: true, serving: true, terminating: false }, ...(zones ? { hints: { forZones: zones.map((name) => ({ name })) } } : {}) });

t.test('fallback to terminating: serving+terminating endpoints get slots only when no endpoint is ready', async (t) => {
  const d = computeDesired(
    [svc('rolling', '10.96.1.1', [{ port: 80, targetPort: 8080 }]), svc('draining', '10.96.1.2', [{ port: 80, targetPort: 8080 }])],
    [
      // A rollout: one new ready pod, two old ones terminating (one still serving).
      slice('rolling-1', 'rolling', [{ port: 8080 }], [ready('10.244.2.3'), term('10.244.2.1'), term('10.244.2.2', 'node-2', false)]),
      // Scale to zero: every pod terminating; the serving ones carry new flows, the rest only established ones.
      slice('draining-1', 'draining', [{ port: 8080 }], [term('10.244.2.5'), term('10.244.2.6', 'node-2', false), { addresses: ['10.244.2.7'], conditions: { ready: false } }]),
    ],
    NODE,
  );
  t.same(formatDesired(d), [
    'frontend 10.96.1.2:80/TCP web/draining:- flags=cluster-ip affinity=0 active=[10.244.2.5:8080/TCP] kept=[10.244.2.6:8080/TCP 10.244.2.7:8080/TCP]',
    'frontend 10.96.1.1:80/TCP web/rolling:- flags=cluster-ip affinity=0 active=[10.244.2.3:8080/TCP] kept=[10.244.2.1:8080/TCP 10.244.2.2:8080/TCP]',
    'backend 10.244.2.1:8080/TCP terminating',
    'backend 10.244.2.2:8080/TCP terminating',
    'backend 10.244.2.3:8080/TCP active',
    'backend 10.244.2.5:8080/TCP terminating',
    'backend 10.244.2.6:8080/TCP terminating',
    'backend 10.244.2.7:8080/TCP terminating',
    'vip 10.96.1.1',
    'vip 10.96.1.2',
  ]);
});

t.test('internalTrafficPolicy Local: local ready, else local serving+terminating, else no slot at all', async (t) => {
  const local = (name: string, ip: string) => svc(name, ip, [{ port: 80, targetPort: 8080 }], { internalTrafficPolicy: 'Local' });
  const d = computeDesired(
    [local('a', '10.96.2.1'), local('b', '10.96.2.2'), local('c', '10.96.2.3')],
    [
      slice('a-1', 'a', [{ port: 8080 }], [ready('10.244.1.1', 'node-1'), term('10.244.1.2', 'node-1'), ready('10.244.2.1')]),
      slice('b-1', 'b', [{ port: 8080 }], [term('10.244.1.3', 'node-1'), ready('10.244.2.2')]),
      slice('c-1', 'c', [{ port: 8080 }], [ready('10.244.2.3'), { addresses: ['10.244.2.4'] }]),
    ],
    NODE,
  );
  t.same(formatDesired(d), [
    'frontend 10.96.2.1:80/TCP web/a:- flags=cluster-ip affinity=0 active=[10.244.1.1:8080/TCP] kept=[10.244.1.2:8080/TCP 10.244.2.1:8080/TCP]',
    'frontend 10.96.2.2:80/TCP web/b:- flags=cluster-ip affinity=0 active=[10.244.1.3:8080/TCP] kept=[10.244.2.2:8080/TCP]',
    'frontend 10.96.2.3:80/TCP web/c:- flags=cluster-ip,reject affinity=0 active=[] kept=[10.244.2.3:8080/TCP 10.244.2.4:8080/TCP]',
    'backend 10.244.1.1:8080/TCP active',
    'backend 10.244.1.2:8080/TCP terminating',
    'backend 10.244.1.3:8080/TCP terminating',
    'backend 10.244.2.1:8080/TCP active',
    'backend 10.244.2.2:8080/TCP active',
    'backend 10.244.2.3:8080/TCP active',
    'backend 10.244.2.4:8080/TCP active',
    'vip 10.96.2.1',
    'vip 10.96.2.2',
    'vip 10.96.2.3',
  ]);
});

t.test('topology hints: this zone only when every ready endpoint has hints and one names the zone', async (t) => {
  const s = (name: string, ip: string) => svc(name, ip, [{ port: 80, targetPort: 8080 }], { trafficDistribution: 'PreferClose' });
  const services = [s('hinted', '10.96.3.1'), s('one-unhinted', '10.96.3.2'), s('other-zones', '10.96.3.3'), s('fallback', '10.96.3.4')];
  const slices = [
    slice('hinted-1', 'hinted', [{ port: 8080 }], [ready('10.244.1.1', 'node-1', ['zone-a']), ready('10.244.2.1', 'node-2', ['zone-b']), ready('10.244.3.1', 'node-3', ['zone-a', 'zone-c'])]),
    slice('one-unhinted-1', 'one-unhinted', [{ port: 8080 }], [ready('10.244.1.2', 'node-1', ['zone-a']), ready('10.244.2.2')]),
    slice('other-zones-1', 'other-zones', [{ port: 8080 }], [ready('10.244.2.3', 'node-2', ['zone-b'])]),
    // Terminating endpoints without hints do not disable hints; the fallback ignores topology.
    slice('fallback-1', 'fallback', [{ port: 8080 }], [ready('10.244.2.4', 'node-2', ['zone-b']), ready('10.244.1.4', 'node-1', ['zone-a']), term('10.244.2.5')]),
  ];
  const inZoneA = computeDesired(services, slices, { name: NODE, zone: 'zone-a' });
  t.same(formatDesired(inZoneA), [
    'frontend 10.96.3.4:80/TCP web/fallback:- flags=cluster-ip affinity=0 active=[10.244.1.4:8080/TCP] kept=[10.244.2.4:8080/TCP 10.244.2.5:8080/TCP]',
    'frontend 10.96.3.1:80/TCP web/hinted:- flags=cluster-ip affinity=0 active=[10.244.1.1:8080/TCP 10.244.3.1:8080/TCP] kept=[10.244.2.1:8080/TCP]',
    'frontend 10.96.3.2:80/TCP web/one-unhinted:- flags=cluster-ip affinity=0 active=[10.244.1.2:8080/TCP 10.244.2.2:8080/TCP]',
    'frontend 10.96.3.3:80/TCP web/other-zones:- flags=cluster-ip affinity=0 active=[10.244.2.3:8080/TCP]',
    'backend 10.244.1.1:8080/TCP active',
    'backend 10.244.1.2:8080/TCP active',
    'backend 10.244.1.4:8080/TCP active',
    'backend 10.244.2.1:8080/TCP active',
    'backend 10.244.2.2:8080/TCP active',
    'backend 10.244.2.3:8080/TCP active',
    'backend 10.244.2.4:8080/TCP active',
    'backend 10.244.2.5:8080/TCP terminating',
    'backend 10.244.3.1:8080/TCP active',
    'vip 10.96.3.1',
    'vip 10.96.3.2',
    'vip 10.96.3.3',
    'vip 10.96.3.4',
  ]);
  // A node without a zone label uses every endpoint.
  const noZone = computeDesired(services.slice(0, 1), slices.slice(0, 1), { name: NODE });
  t.same(formatDesired(noZone).slice(0, 1), [
    'frontend 10.96.3.1:80/TCP web/hinted:- flags=cluster-ip affinity=0 active=[10.244.1.1:8080/TCP 10.244.2.1:8080/TCP 10.244.3.1:8080/TCP]',
  ]);
  t.same(nodeContext(NODE, { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE, labels: { 'topology.kubernetes.io/zone': 'zone-a' } } }), { name: NODE, zone: 'zone-a' });
});

t.test('UDP and SCTP; selectorless Service with hand-made slices; the default kubernetes Service', async (t) => {
  const d = computeDesired(
    [
      svc('dns', '10.96.0.10', [{ name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 }, { name: 'sctp', port: 9, protocol: 'SCTP' }], {}, 'kube-system'),
      // No selector: the slices are written by hand (an external database), names of our choosing.
      svc('external-db', '10.96.4.1', [{ name: 'pg', port: 5432 }]),
      svc('kubernetes', '10.96.0.1', [{ name: 'https', port: 443, targetPort: 6443 }], {}, 'default'),
    ],
    [
      slice('dns-1', 'dns', [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'sctp', port: 9, protocol: 'SCTP' }], ['10.244.1.53'], {}, 'kube-system'),
      slice('external-db-manual', 'external-db', [{ name: 'pg', port: 5432 }], [{ addresses: ['192.168.10.5'] }, { addresses: ['192.168.10.6'] }]),
      slice('kubernetes', 'kubernetes', [{ name: 'https', port: 6443 }], [{ addresses: ['192.168.0.1'] }], {}, 'default'),
    ],
    NODE,
  );
  t.same(formatDesired(d), [
    'frontend 10.96.0.1:443/TCP default/kubernetes:https flags=cluster-ip affinity=0 active=[192.168.0.1:6443/TCP]',
    'frontend 10.96.0.10:53/UDP kube-system/dns:dns flags=cluster-ip affinity=0 active=[10.244.1.53:53/UDP]',
    'frontend 10.96.4.1:5432/TCP web/external-db:pg flags=cluster-ip affinity=0 active=[192.168.10.5:5432/TCP 192.168.10.6:5432/TCP]',
    'backend 10.244.1.53:53/UDP active',
    'backend 192.168.0.1:6443/TCP active',
    'backend 192.168.10.5:5432/TCP active',
    'backend 192.168.10.6:5432/TCP active',
    'vip 10.96.0.1',
    'vip 10.96.0.10',
    'vip 10.96.4.1',
    'info Service kube-system/dns: port 9/SCTP skipped (TCP and UDP only)',
  ]);
});

t.test('an address in two slices is one endpoint: ready wins, then the local copy', async (t) => {
  const d = computeDesired(
    [svc('dup', '10.96.5.1', [{ port: 80, targetPort: 8080 }], { internalTrafficPolicy: 'Local' })],
    [
      slice('dup-a', 'dup', [{ port: 8080 }], [{ addresses: ['10.244.1.1'], nodeName: 'node-2' }, { addresses: ['10.244.1.2'], conditions: { ready: false }, nodeName: 'node-1' }]),
      slice('dup-b', 'dup', [{ port: 8080 }], [{ addresses: ['10.244.1.1'], nodeName: 'node-1' }, { addresses: ['10.244.1.2'], nodeName: 'node-1' }]),
    ],
    NODE,
  );
  t.same(formatDesired(d), [
    'frontend 10.96.5.1:80/TCP web/dup:- flags=cluster-ip affinity=0 active=[10.244.1.1:8080/TCP 10.244.1.2:8080/TCP]',
    'backend 10.244.1.1:8080/TCP active',
    'backend 10.244.1.2:8080/TCP active',
    'vip 10.96.5.1',
  ]);
});
