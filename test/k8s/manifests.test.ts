// Manifest folder loading and watching.
//
// Address conventions: ClusterIPs 10.96.0.x, pods 10.244.<node>.<pod>.

import t from 'tap';
import fs from 'node:fs/promises';
import path from 'node:path';
import { loadManifests, parseManifests } from '../../src/k8s/manifests.js';
import { ManifestWatcher } from '../../src/k8s/watch.js';
import { memoryLogger, silentLogger } from '../../src/log.js';
import type { LoadResult } from '../../src/k8s/manifests.js';

const svcYaml = (name: string, ip: string) => `apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: web}
spec:
  clusterIP: ${ip}
  ports: [{port: 80, targetPort: 8080}]
`;
const sliceYaml = (name: string, svc: string, ips: string[]) => `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${name}
  namespace: web
  labels: {kubernetes.io/service-name: ${svc}}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
${ips.map((ip) => `  - addresses: [${ip}]`).join('\n')}
`;

const summary = (r: Pick<LoadResult, 'services' | 'endpointSlices' | 'problems'>) => ({
  services: r.services.map((s) => `${s.metadata.namespace}/${s.metadata.name}`),
  slices: r.endpointSlices.map((s) => `${s.metadata.namespace}/${s.metadata.name}`),
  problems: r.problems.map((p) => `${p.file}#${p.index}: ${p.reason}`),
});

t.test('a folder: several documents per file, Lists, JSON, other kinds ignored, problems reported', async (t) => {
  const dir = t.testdir({
    'a.yaml': svcYaml('alpha', '10.96.0.10') + '---\n' + sliceYaml('alpha-1', 'alpha', ['10.244.1.2']) + '---\n',
    'b.yml': `apiVersion: v1
kind: List
items:
  - ${JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'beta', namespace: 'web' }, spec: { clusterIP: '10.96.0.11' } })}
  - {apiVersion: apps/v1, kind: Deployment, metadata: {name: beta}}
  - {apiVersion: v1, kind: Service, metadata: {namespace: web}}
`,
    'c.json': JSON.stringify({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'beta-x', namespace: 'web', labels: { 'kubernetes.io/service-name': 'beta' } }, addressType: 'IPv4', endpoints: [] }),
    // Not one JSON document: read as YAML (a stream of JSON documents).
    'f.json': `${JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'delta', namespace: 'web' }, spec: { clusterIP: '10.96.0.16' } })}\n---\n${JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'epsilon', namespace: 'web' }, spec: { clusterIP: '10.96.0.17' } })}\n`,
    'd.yaml': 'kind: Service\napiVersion: v1\nmetadata: {name: [unclosed\n---\n' + svcYaml('gamma', '10.96.0.12') + '---\n' + svcYaml('alpha', '10.96.0.99'),
    'e.yaml': 'apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: old}\n---\n- 1\n---\nplain\n',
    'notes.txt': svcYaml('ignored', '10.96.0.13'),
    '.hidden.yaml': svcYaml('hidden', '10.96.0.14'),
    sub: { 'x.yaml': svcYaml('nested', '10.96.0.15') },
  });
  const r = await loadManifests(dir);
  t.same(r.files, ['a.yaml', 'b.yml', 'c.json', 'd.yaml', 'e.yaml', 'f.json']);
  t.same(summary(r), {
    services: ['web/alpha', 'web/beta', 'web/gamma', 'web/delta', 'web/epsilon'],
    slices: ['web/alpha-1', 'web/beta-x'],
    problems: [
      'b.yml#0: items[2]: Service: metadata.name missing',
      'd.yaml#0: YAML: Flow sequence in block collection must be sufficiently indented and end with a ] at line 4, column 1:',
      'd.yaml#2: duplicate Service web/alpha, first defined in a.yaml#0; ignored',
      'e.yaml#0: unsupported apiVersion "discovery.k8s.io/v1beta1" for EndpointSlice',
      'e.yaml#1: not an object',
      'e.yaml#2: not an object',
    ],
  });
  t.equal(r.services[0]!.spec.clusterIP, '10.96.0.10');
  t.same(r.endpointSlices[0]!.endpoints, [{ addresses: ['10.244.1.2'] }]);
});

t.test('shape problems name the object and the field', async (t) => {
  const r = parseManifests([
    {
      file: 'x.yaml',
      text: [
        'apiVersion: v1\nkind: Service\nmetadata: {name: s1}\nspec: {ports: 80}',
        'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e1}\nendpoints: []',
        'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e2}\naddressType: IPv4\nendpoints: [{addresses: 10.244.1.1}]',
        'apiVersion: v1\nkind: Service\nmetadata: {name: s2, labels: {a: 1}}',
        'apiVersion: v1\nkind: Service\nmetadata: {name: s3}',
      ].join('\n---\n'),
    },
  ]);
  t.same(summary(r), {
    services: ['undefined/s3'],
    slices: [],
    problems: [
      'x.yaml#0: Service s1: spec.ports is not a list of objects',
      'x.yaml#1: EndpointSlice e1: addressType missing',
      'x.yaml#2: EndpointSlice e2: endpoints[0].addresses is not a list of strings',
      'x.yaml#3: Service: metadata.labels must map strings to strings',
    ],
  });
  t.same(r.services[0]!.spec, {}, 'a Service without spec gets an empty one');
});

t.test('an unreadable folder rejects', async (t) => {
  await t.rejects(loadManifests(path.join(t.testdirName, 'nope')), { code: 'ENOENT' });
});

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test('watcher: emits on change within the debounce, once per burst, not for unchanged content', async (t) => {
  const dir = t.testdir({ 'a.yaml': svcYaml('alpha', '10.96.0.10') });
  const sets: LoadResult[] = [];
  const w = new ManifestWatcher({ dir, debounceMs: 50, rescanMs: 60_000, log: silentLogger(), onChange: (s) => sets.push(s) });
  t.teardown(() => w.close());
  await w.start();
  t.equal(sets.length, 1, 'initial set emitted by start()');

  const t0 = Date.now();
  await fs.writeFile(path.join(dir, 'b.yaml'), sliceYaml('alpha-1', 'alpha', ['10.244.1.2']));
  await fs.appendFile(path.join(dir, 'b.yaml'), '  - addresses: [10.244.1.3]\n');
  await until(() => sets.length === 2);
  t.ok(Date.now() - t0 < 1000, 'within 1 s');
  await new Promise((r) => setTimeout(r, 200));
  t.equal(sets.length, 2, 'one emission for the burst');
  t.same(sets[1]!.endpointSlices[0]!.endpoints.map((e) => e.addresses[0]), ['10.244.1.2', '10.244.1.3']);

  // Same bytes rewritten: nothing to emit.
  await fs.writeFile(path.join(dir, 'a.yaml'), svcYaml('alpha', '10.96.0.10'));
  await new Promise((r) => setTimeout(r, 200));
  t.equal(sets.length, 2, 'unchanged content is not emitted');

  // Atomic replace by rename, the way editors and kubectl-like tools write.
  await fs.writeFile(path.join(dir, '.tmp'), svcYaml('alpha', '10.96.0.20'));
  await fs.rename(path.join(dir, '.tmp'), path.join(dir, 'a.yaml'));
  await until(() => sets.length === 3);
  t.equal(sets[2]!.services[0]!.spec.clusterIP, '10.96.0.20');

  await fs.rm(path.join(dir, 'b.yaml'));
  await until(() => sets.length === 4);
  t.same(sets[3]!.endpointSlices, []);
});

t.test('watcher: the periodic rescan catches what fs.watch missed, and problems are logged', async (t) => {
  const dir = t.testdir({ 'a.yaml': svcYaml('alpha', '10.96.0.10') });
  const sets: LoadResult[] = [];
  const { log, lines } = memoryLogger();
  const w = new ManifestWatcher({ dir, debounceMs: 10_000, rescanMs: 100, log, onChange: (s) => sets.push(s) });
  t.teardown(() => w.close());
  await w.start();
  // The debounce is longer than the test: only the rescan can see this.
  await fs.writeFile(path.join(dir, 'bad.yaml'), 'apiVersion: v1\nkind: Service\nmetadata: {}\n');
  await until(() => sets.length === 2);
  t.equal(sets[1]!.problems.length, 1);
  t.match(lines.join('\n'), /level=warn msg="malformed manifest document skipped" file=bad.yaml doc=0 reason="Service: metadata.name missing"/);
});
