// The real control plane the e2e tests and `make cluster-up` use: etcd and
// kube-apiserver built from the published modules, started with throwaway
// certificates. Checks that it reports the release tools/k8s pins, that the
// objects kbp consumes (Nodes, Services, EndpointSlices) can be created, that
// ClusterIPs come from the /12 service range, that unauthenticated requests
// are refused, and that relayInto() carries the API into a network namespace
// that cannot reach the root namespace's loopback otherwise.
//
// Skips only when the binaries cannot be built (no Go); the relay part needs
// root (network namespaces).

import t from 'tap';
import https from 'node:https';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse } from 'yaml';
import { projectRoot } from '../../src/paths.js';
import { ensureK8sBins, K8sBinsUnavailable, relayInto, startControlPlane, type K8sBins } from '../../src/testbed/apiserver.js';
import { ip, nsExec, Testbed } from '../../src/testbed/netns.js';
import { childEnv } from '../../src/testbed/programs.js';

const goMod = await readFile(path.join(projectRoot, 'tools', 'k8s', 'go.mod'), 'utf8');
const pinned = /^\s*k8s\.io\/kubernetes (v1\.\d+\.\d+)/m.exec(goMod)?.[1];

let bins: K8sBins | null = null;
let unavailable = '';
try {
  bins = await ensureK8sBins();
} catch (err) {
  if (!(err instanceof K8sBinsUnavailable)) throw err;
  unavailable = err.message;
}

/** 10.96.0.0/12 is 10.96.0.0 – 10.111.255.255. */
function inServiceRange(addr: string): boolean {
  const o = addr.split('.').map(Number);
  return o.length === 4 && o[0] === 10 && o[1]! >= 96 && o[1]! <= 111;
}

interface Kubeconfig {
  clusters: { cluster: { server: string; 'certificate-authority-data': string } }[];
  users: { user: { 'client-certificate-data': string; 'client-key-data': string } }[];
}

async function readKubeconfig(file: string) {
  const kc = parse(await readFile(file, 'utf8')) as Kubeconfig;
  const d = (s: string) => Buffer.from(s, 'base64').toString('utf8');
  return {
    server: kc.clusters[0]!.cluster.server,
    caPem: d(kc.clusters[0]!.cluster['certificate-authority-data']),
    certPem: d(kc.users[0]!.user['client-certificate-data']),
    keyPem: d(kc.users[0]!.user['client-key-data']),
  };
}

// A GET made from inside a namespace, with the credentials in the environment.
const NS_GET = `
const https = require('node:https');
const req = https.get(process.argv[1], { ca: process.env.KBP_CA, cert: process.env.KBP_CERT, key: process.env.KBP_KEY, timeout: 5000 }, (res) => {
  let b = '';
  res.on('data', (c) => (b += c));
  res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, body: b })));
});
req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
req.on('error', (e) => console.log(JSON.stringify({ error: e.code || String(e) })));
`;

t.test('real kube-apiserver and etcd', { skip: unavailable || false }, async (t) => {
  const tb = Testbed.create();
  t.teardown(() => tb.teardown());
  const started = Date.now();
  const cp = await startControlPlane(tb, { bins: bins! });
  t.comment(`control plane ${cp.version} ready in ${Date.now() - started} ms at ${cp.url}`);

  t.test('reports the pinned release', async (t) => {
    t.ok(pinned, 'tools/k8s/go.mod pins k8s.io/kubernetes');
    t.equal(cp.version, pinned, 'ControlPlane.version');
    const v = await cp.request('GET', '/version');
    t.equal(v.status, 200);
    t.match(v.json, { gitVersion: pinned, major: pinned!.split('.')[0]!.slice(1), minor: pinned!.split('.')[1], gitTreeState: 'clean' });
    const kc = await readKubeconfig(cp.kubeconfigPath);
    t.equal(kc.server, cp.url, 'kubeconfig points at the API');
    t.equal(kc.caPem, cp.caPem, 'kubeconfig trusts the serving CA');
  });

  t.test('refuses a client without a certificate', async (t) => {
    const status = await new Promise<number>((resolve, reject) => {
      https.get(new URL('/api/v1/nodes', cp.url), { ca: cp.caPem }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).on('error', reject);
    });
    t.ok(status === 401 || status === 403, `anonymous list of nodes refused (HTTP ${status})`);
  });

  t.test('Nodes, Services and EndpointSlices through the API', async (t) => {
    const def = await cp.request('GET', '/api/v1/namespaces/default/services/kubernetes');
    t.equal(def.status, 200, 'the apiserver made the kubernetes Service');
    t.match(def.json, { spec: { clusterIP: '10.96.0.1' } }, 'first address of the service range');

    const node = await cp.request('POST', '/api/v1/nodes', {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'node-1', labels: { 'kubernetes.io/hostname': 'node-1' } },
    });
    t.equal(node.status, 201, 'create Node', { body: node.body });

    const ns = await cp.request('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
    t.equal(ns.status, 201, 'create Namespace', { body: ns.body });

    const svc = await cp.request('POST', '/api/v1/namespaces/shop/services', {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web' },
      spec: { ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
    });
    t.equal(svc.status, 201, 'create Service', { body: svc.body });
    const clusterIP = (svc.json as { spec?: { clusterIP?: string } }).spec?.clusterIP ?? '';
    t.ok(inServiceRange(clusterIP), `allocated ClusterIP ${clusterIP} is in 10.96.0.0/12`);

    // An address far from the start of the range is accepted only if the
    // range really is a /12 (a /16 or /24 would reject it).
    const far = await cp.request('POST', '/api/v1/namespaces/shop/services', {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'far' },
      spec: { clusterIP: '10.111.200.7', ports: [{ port: 53, targetPort: 5353, protocol: 'UDP' }] },
    });
    t.equal(far.status, 201, 'Service with ClusterIP 10.111.200.7', { body: far.body });

    const slice = await cp.request('POST', '/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices', {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        name: 'web-1',
        labels: { 'kubernetes.io/service-name': 'web', 'endpointslice.kubernetes.io/managed-by': 'kbp-test' },
      },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: [
        { addresses: ['10.244.1.11'], conditions: { ready: true }, nodeName: 'node-1' },
        { addresses: ['10.244.1.12'], conditions: { ready: false, terminating: true }, nodeName: 'node-1' },
      ],
    });
    t.equal(slice.status, 201, 'create EndpointSlice', { body: slice.body });

    const list = await cp.request('GET', '/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb');
    t.equal(list.status, 200);
    t.match(list.json, {
      items: [{ metadata: { name: 'web-1' }, endpoints: [{ addresses: ['10.244.1.11'], nodeName: 'node-1' }, { conditions: { terminating: true } }] }],
    }, 'the slice reads back by its Service label');
    t.equal((list.json as { items: unknown[] }).items.length, 1, 'and only it: no controller adds slices');
  });

  t.test('relayInto carries the API into a network namespace', { skip: process.getuid?.() !== 0 ? 'needs root (network namespaces)' : false }, async (t) => {
    const rootAddrs = (await ip('-o', 'addr', 'show')).stdout;
    const ns = await tb.addNamespace('api');
    const relay = await relayInto(tb, ns, cp);
    t.equal((await ip('-o', 'addr', 'show')).stdout, rootAddrs, 'the root namespace has no new address');

    const kc = await readKubeconfig(relay.kubeconfigPath);
    t.equal(kc.server, relay.url, "the relay's kubeconfig points at the relay");
    const env = { ...childEnv(), KBP_CA: kc.caPem, KBP_CERT: kc.certPem, KBP_KEY: kc.keyPem };
    const get = async (url: string) =>
      JSON.parse((await nsExec(ns, process.execPath, ['-e', NS_GET, url], { env })).stdout) as { status?: number; body?: string; error?: string };

    const direct = await get(`${cp.url}/version`);
    t.match(direct, { error: 'ECONNREFUSED' }, "inside the namespace the root loopback's apiserver is unreachable");

    const viaRelay = await get(`${relay.url}/version`);
    t.equal(viaRelay.status, 200, 'GET /version through the relay', { result: viaRelay });
    t.match(JSON.parse(viaRelay.body ?? '{}'), { gitVersion: cp.version }, 'TLS verified against 127.0.0.1, real version');

    const nodeViaRelay = await get(`${relay.url}/api/v1/nodes/node-1`);
    t.equal(nodeViaRelay.status, 200, 'authenticated with the admin certificate through the relay');
  });

  t.test('restartApiServer keeps the data', async (t) => {
    await cp.restartApiServer();
    const node = await cp.request('GET', '/api/v1/nodes/node-1');
    t.equal(node.status, 200, 'Node still there after the restart');
  });
});
