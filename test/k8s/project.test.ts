// Projections (src/k8s/project.ts): what endpoints repeat is shared and
// frozen, arrays have their exact length, slices keep only the service-name
// label, and values that are not the API's booleans are kept as they came.
//
// Address conventions: pods 10.244.<node>.<pod>.

import t from 'tap';
import { projectEndpointSlice } from '../../src/k8s/project.js';

const slice = (name: string, ips: string[], extra: Record<string, unknown> = {}) => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name, namespace: 'web', resourceVersion: '7', labels: { 'kubernetes.io/service-name': 'a', 'endpointslice.kubernetes.io/managed-by': 'x', app: 'web' } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: ips.map((ip, i) => ({ addresses: [ip], conditions: { ready: true, serving: true, terminating: false }, nodeName: `node-${i % 2}`, targetRef: { kind: 'Pod', name: `p${i}` }, ...extra })),
});

t.test('shared conditions, node names and port lists; only the service-name label', async (t) => {
  const a = projectEndpointSlice(slice('a-1', ['10.244.1.1', '10.244.1.2', '10.244.1.3']))!;
  const b = projectEndpointSlice(JSON.parse(JSON.stringify(slice('a-2', ['10.244.2.1']))))!;
  t.same(a.metadata, { name: 'a-1', namespace: 'web', labels: { 'kubernetes.io/service-name': 'a' } });
  t.same(a.endpoints[0], { addresses: ['10.244.1.1'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'node-0' }, 'targetRef dropped');
  t.equal(a.endpoints[0]!.conditions, b.endpoints[0]!.conditions, 'one conditions object for both slices');
  t.ok(Object.isFrozen(a.endpoints[0]!.conditions));
  t.equal(a.ports, b.ports, 'one port list');
  t.ok(Object.isFrozen(a.ports) && Object.isFrozen(a.ports![0]));
  t.not(a.endpoints[0]!.addresses, a.endpoints[1]!.addresses);
  t.equal(JSON.stringify(a), JSON.stringify(projectEndpointSlice(slice('a-1', ['10.244.1.1', '10.244.1.2', '10.244.1.3']))), 'same text: the fingerprint stays');
  t.equal(JSON.stringify(b.endpoints[0]!.conditions), '{"ready":true,"serving":true,"terminating":false}');

  const odd = projectEndpointSlice(slice('a-3', ['10.244.3.1', 7 as unknown as string], { conditions: { ready: 'yes' } }))!;
  t.same(odd.endpoints[0]!.conditions, { ready: 'yes' }, 'not a boolean: kept as it came, for desired.ts to judge');
  t.same(odd.endpoints[1]!.addresses, [], 'a non-string address is dropped');
  const c = projectEndpointSlice(slice('a-4', ['10.244.4.1'], { conditions: { ready: false } }))!;
  t.same(c.endpoints[0]!.conditions, { ready: false });
  t.not(c.endpoints[0]!.conditions, a.endpoints[0]!.conditions, 'other conditions, another shared object');
});
