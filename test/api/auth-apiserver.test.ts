// Bearer-token auth against the REAL kube-apiserver (the testbed's control
// plane: etcd + kube-apiserver on 127.0.0.1 with RBAC): ServiceAccount tokens
// from the TokenRequest API, the ClusterRole deploy/ is to grant (verb get on
// agents.kbp.io), TokenReview and SubjectAccessReview made by the API with the
// admin kubeconfig standing in for the agent's identity.
//
// No token -> 401, a ServiceAccount without the binding -> 403, with it -> 200.
// Skips only when the Kubernetes binaries cannot be built (no Go).

import t from 'tap';
import http from 'node:http';
import { parseApiOptions } from '../../src/api/options.js';
import { startApi } from '../../src/api/server.js';
import { ensureK8sBins, K8sBinsUnavailable, startControlPlane, type ControlPlane } from '../../src/testbed/apiserver.js';
import { Testbed } from '../../src/testbed/netns.js';
import { fakeMaps, NODE } from './fakes.js';

let unavailable = '';
try {
  await ensureK8sBins();
} catch (err) {
  if (!(err instanceof K8sBinsUnavailable)) throw err;
  unavailable = err.message;
}

function get(url: string, token?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString() }));
      })
      .on('error', reject);
  });
}

async function must(cp: ControlPlane, method: string, path: string, body: unknown): Promise<Record<string, unknown>> {
  const r = await cp.request(method, path, body);
  if (r.status >= 300) throw new Error(`${method} ${path}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  return r.json as Record<string, unknown>;
}

if (unavailable) t.plan(0, `Kubernetes binaries unavailable: ${unavailable}`);
else {
  t.test('401 / 403 / 200 with ServiceAccount tokens checked by the real API server', async (t) => {
    const tb = Testbed.create();
    t.teardown(() => tb.teardown());
    const cp = await startControlPlane(tb);

    // The RBAC deploy/ grants to readers of the agent API.
    await must(cp, 'POST', '/apis/rbac.authorization.k8s.io/v1/clusterroles', {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: 'kbp-agent-api-reader' },
      rules: [{ apiGroups: ['kbp.io'], resources: ['agents'], verbs: ['get'] }],
    });
    for (const name of ['reader', 'nobody']) {
      await must(cp, 'POST', '/api/v1/namespaces/default/serviceaccounts', { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name } });
    }
    await must(cp, 'POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'kbp-agent-api-reader' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'kbp-agent-api-reader' },
      subjects: [{ kind: 'ServiceAccount', name: 'reader', namespace: 'default' }],
    });
    const token = async (sa: string) =>
      ((await must(cp, 'POST', `/api/v1/namespaces/default/serviceaccounts/${sa}/token`, { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds: 600 } })).status as { token: string }).token;
    const [reader, nobody] = [await token('reader'), await token('nobody')];

    const api = await startApi(
      { nodeName: NODE, maps: fakeMaps().set, frontend: () => undefined, health: () => ({ ready: true, lastUpdated: new Date() }) },
      parseApiOptions('127.0.0.1:0', { 'api-auth': 'token', 'api-auth-kubeconfig': cp.kubeconfigPath })!,
    );
    t.teardown(() => api.close());

    t.equal((await get(`${api.url}/healthz`)).status, 200, '/healthz without a token');
    let r = await get(`${api.url}/v1/services`);
    t.equal(r.status, 401, 'no token');
    r = await get(`${api.url}/v1/services`, `${reader}x`);
    t.equal(r.status, 401, 'a tampered token');
    r = await get(`${api.url}/v1/services`, nobody);
    t.equal(r.status, 403, 'ServiceAccount without the RBAC');
    t.equal(JSON.parse(r.body).code, 'KBP_FORBIDDEN');
    r = await get(`${api.url}/v1/services`, reader);
    t.equal(r.status, 200, 'ServiceAccount with the RBAC');
    t.equal((await get(`${api.url}/v1/conntrack`, reader)).status, 200);
  });
}
