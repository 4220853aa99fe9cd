// The manifests the testbed writes are standard Kubernetes objects, and the
// seed example reads back into the addresses the demo and tests rely on.
import t from 'tap';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { projectRoot } from '../../src/paths.js';
import { readServiceSpec, serviceObjects, writeService, type ServiceSpec } from '../../src/testbed/manifests.js';

const spec: ServiceSpec = {
  name: 'web',
  namespace: 'shop',
  clusterIP: '10.96.0.60',
  ports: [
    { name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' },
    { name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' },
  ],
  endpoints: [
    { ip: '10.244.1.21', podName: 'web-a' },
    { ip: '10.244.1.22', podName: 'web-b', ready: false },
  ],
};

t.test('Service and EndpointSlice objects', async (t) => {
  const [svc, slice] = serviceObjects(spec);
  t.match(svc, {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'shop' },
    spec: { clusterIP: '10.96.0.60', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }, { name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' }] },
  });
  t.match(slice, {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }, { name: 'dns', port: 5353, protocol: 'UDP' }],
    endpoints: [
      { addresses: ['10.244.1.21'], conditions: { ready: true }, targetRef: { kind: 'Pod', name: 'web-a' } },
      { addresses: ['10.244.1.22'], conditions: { ready: false }, targetRef: { kind: 'Pod', name: 'web-b' } },
    ],
  });
});

t.test('writeService writes one two-document file atomically and reads back', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kbp-manifests-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = await writeService(dir, spec);
  t.same(await readdir(dir), [path.basename(file)], 'no temp file left behind');
  const docs = parseAllDocuments(await readFile(file, 'utf8')).map((d) => d.toJS() as { kind: string });
  t.same(docs.map((d) => d.kind), ['Service', 'EndpointSlice']);
  t.same(await readServiceSpec(dir), {
    ...spec,
    endpoints: [{ ...spec.endpoints[0], ready: true }, spec.endpoints[1]],
  }, 'ready defaults to true');

  await writeService(dir, { ...spec, endpoints: spec.endpoints.slice(0, 1) });
  t.same((await readServiceSpec(dir)).endpoints, [{ ip: '10.244.1.21', podName: 'web-a', ready: true }], 'replaced in place');
});

t.test('the seed example: my-nginx, 2 replicas, 80 -> 8080', async (t) => {
  const s = await readServiceSpec(path.join(projectRoot, 'examples', 'my-nginx'));
  t.equal(s.name, 'my-nginx');
  t.equal(s.namespace, 'default');
  t.match(s.clusterIP, /^10\.(9[6-9]|10[0-9]|11[01])\./, 'ClusterIP in 10.96.0.0/12');
  t.same(s.ports, [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }]);
  t.equal(s.endpoints.length, 2);
  for (const e of s.endpoints) {
    t.match(e.ip, /^10\.244\.1\.\d+$/, 'pod IP in 10.244.1.0/24');
    t.equal(e.ready, true);
  }
});
