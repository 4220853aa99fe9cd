// Scenario 6 of issue 8, the part the API server cannot deliver: objects it
// rejects (invalid IPs, ports out of range, duplicate ports, a slice of
// 10,000 endpoints, unknown fields, broken YAML) fed through the agent's
// manifests source. Each bad Service or port is logged and skipped; the good
// Service in the same folder keeps answering; the agent keeps running. (What
// the API accepts is covered against the real API server in
// apiserver.test.ts.)
//
// Address conventions: ClusterIP 10.96.0.10 (good), 10.96.2.x (bad ones);
// pods 10.244.1.x. Needs root and a built tree.

import t from 'tap';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { Testbed } from '../../src/testbed/netns.js';
import { Agent } from '../../src/testbed/agent.js';
import { serviceScenario } from '../../src/testbed/scenario.js';
import { backendsOf, failures, until } from '../../src/reliability/apinode.js';

const skip = process.getuid?.() !== 0 ? 'needs root (network namespaces, bpffs, tc)' : false;

const service = (name: string, clusterIP: string, ports: unknown[], extra: Record<string, unknown> = {}) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default' },
  spec: { clusterIP, ports, ...extra },
});
const slice = (name: string, svc: string, addresses: string[], port: unknown = 8080) => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': svc } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port, protocol: 'TCP' }],
  endpoints: addresses.map((a) => ({ addresses: [a], conditions: { ready: true } })),
});
const http = (port: unknown, name = 'http') => ({ name, port, targetPort: 8080, protocol: 'TCP' });

t.test('bad objects from the manifests source: logged and skipped, the good Service unaffected', { skip }, async (t) => {
  const tb = Testbed.create();
  t.teardown(() => tb.teardown());
  const good = { name: 'web', namespace: 'default', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' as const }], endpoints: [{ ip: '10.244.1.11', podName: 'web-a' }, { ip: '10.244.1.12', podName: 'web-b' }] };
  const sc = await serviceScenario(tb, good, { nodeName: 'node-1' });

  const huge = Array.from({ length: 10_000 }, (_, i) => `10.250.${i >> 8}.${i & 255}`);
  const docs: Array<[string, unknown]> = [
    ['bad-ip', service('bad-ip', '10.96.2.300', [http(80)])],
    ['bad-port', service('bad-port', '10.96.2.2', [http(70000)])],
    ['bad-target', service('bad-target', '10.96.2.3', [{ name: 'http', port: 80, targetPort: 0, protocol: 'TCP' }])],
    ['dup-port', service('dup-port', '10.96.2.4', [http(80), http(80)])],
    ['unknown-fields', service('unknown-fields', '10.96.2.5', [{ ...http(80), frobnicate: 1 }], { kbpUnknown: { x: 1 }, type: 'ClusterIP' })],
    ['huge', service('huge', '10.96.2.6', [http(80)])],
    ['bad-slice-ip', service('bad-slice-ip', '10.96.2.7', [http(80)])],
    ['bad-slice-port', service('bad-slice-port', '10.96.2.8', [http(80)])],
  ];
  const slices = [
    slice('unknown-fields-1', 'unknown-fields', ['10.244.1.11']),
    slice('bad-slice-ip-1', 'bad-slice-ip', ['10.244.1.999', 'not-an-ip', '10.244.1.12']),
    slice('bad-slice-port-1', 'bad-slice-port', ['10.244.1.11'], 70000),
  ];
  const text = [...docs.map(([, d]) => d), ...slices].map((d) => stringify(d)).join('---\n');
  await writeFile(path.join(sc.manifestsDir, 'bad.yaml'), `${text}---\nthis: is: not: yaml: [\n---\n- a list, not an object\n`);
  // JSON: the 10,000 endpoints parse in a fraction of the time YAML takes.
  await writeFile(path.join(sc.manifestsDir, 'huge.json'), JSON.stringify(slice('huge-1', 'huge', huge)));

  const agent = await Agent.start(tb, sc.cluster, sc.nodeProbe, { manifestsDir: sc.manifestsDir, extraArgs: ['--log-level', 'debug'] });
  t.teardown(() => agent.stop());
  await agent.waitHealthy();
  const frontends = async () => {
    const items = (await agent.services()) as Array<{ vip: string; port: number; backends: unknown[] }>;
    return new Map(items.filter((x) => x.port === 80).map((x) => [x.vip, x.backends.length]));
  };
  await until('huge programmed', async () => ((await frontends()).get('10.96.2.6') === 10_000 ? true : String((await frontends()).get('10.96.2.6'))), 30_000, 1000);
  const fe = await frontends();
  const log = await agent.logTail(5000);
  t.comment(log.split('\n').filter((l) => / level=(warn|debug)/.test(l) && /Service|EndpointSlice|manifest/.test(l)).map((l) => l.replace(/^time=\S+ /, '')).slice(0, 20).join('\n'));

  t.notOk(fe.has('10.96.2.300'), 'invalid clusterIP: not programmed');
  t.match(log, /object="Service default\/bad-ip"/, 'invalid clusterIP: logged');
  t.notOk(fe.has('10.96.2.2'), 'port 70000: not programmed');
  t.match(log, /port 70000 is out of range.*object="Service default\/bad-port"|object="Service default\/bad-port".*70000/, 'port 70000: logged');
  t.notOk(fe.has('10.96.2.3'), 'targetPort 0: not programmed');
  t.match(log, /object="Service default\/bad-target"/, 'targetPort 0: logged');
  t.notOk(fe.has('10.96.2.4'), 'duplicate ports: not programmed');
  t.match(log, /object="Service default\/dup-port"/, 'duplicate ports: logged');
  t.equal(fe.get('10.96.2.5'), 1, 'unknown fields: ignored, the Service is programmed');
  t.equal(fe.get('10.96.2.6'), 10_000, 'a slice of 10,000 endpoints: 10,000 slots');
  t.equal(fe.get('10.96.2.7'), 1, 'invalid endpoint addresses skipped, the valid one kept');
  t.match(log, /endpoint address \\"10.244.1.999\\" is not IPv4: skipped/, 'invalid endpoint address: logged');
  t.equal(fe.get('10.96.2.8'), 0, 'slice port 70000: no endpoints');
  t.match(log, /object="EndpointSlice default\/bad-slice-port-1"/, 'slice port 70000: logged');
  t.match(log, /malformed manifest document skipped/, 'broken YAML documents: logged');
  const rs = await sc.clientProbe.http(good.clusterIP, 80, { count: 30 });
  t.same(failures(rs).map((r) => r.error), [], 'the good Service answers');
  t.same(backendsOf(rs), ['web-a', 'web-b']);
  t.ok(agent.running, 'the agent is still running');
});
