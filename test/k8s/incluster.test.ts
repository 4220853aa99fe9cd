// In-cluster config (src/k8s/incluster.ts): the standard ServiceAccount paths,
// the KBP_SERVICEACCOUNT_DIR override, and that both clients pick up a rotated
// token — the API's review client on its next request, the informers' config
// (src/k8s/kubeconfig.ts) on its next re-read.

import t, { type Test } from 'tap';
import http from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SERVICEACCOUNT_DIR, inClusterConfig, serviceAccountDir } from '../../src/k8s/incluster.js';
import { inClusterApiConfig } from '../../src/k8s/kubeconfig.js';
import { KubeReviewer, inClusterConnection } from '../../src/api/auth.js';

async function saDir(t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kbp-sa-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'token'), 'token-1');
  await writeFile(path.join(dir, 'ca.crt'), 'CA');
  await writeFile(path.join(dir, 'namespace'), 'kube-system');
  return dir;
}

t.test('paths: standard folder, override, server address', async (t) => {
  t.equal(serviceAccountDir({}), '/var/run/secrets/kubernetes.io/serviceaccount');
  t.equal(SERVICEACCOUNT_DIR, '/var/run/secrets/kubernetes.io/serviceaccount');
  t.equal(serviceAccountDir({ KBP_SERVICEACCOUNT_DIR: '/x' }), '/x');
  const dir = await saDir(t);
  const env = { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443', KBP_SERVICEACCOUNT_DIR: dir };
  t.same(inClusterConfig(env), { server: 'https://10.96.0.1:443', caFile: path.join(dir, 'ca.crt'), tokenFile: path.join(dir, 'token'), namespace: 'kube-system' });
  t.equal(inClusterConfig({ ...env, KUBERNETES_SERVICE_HOST: 'fd00::1' }).server, 'https://[fd00::1]:443', 'IPv6 in brackets');
  t.throws(() => inClusterConfig({ KBP_SERVICEACCOUNT_DIR: dir }), /KUBERNETES_SERVICE_HOST/, 'not in a pod');
  t.throws(() => inClusterConfig({ ...env, KBP_SERVICEACCOUNT_DIR: path.join(dir, 'missing') }), /token not found|not found/, 'no token mounted');
  const kc = inClusterApiConfig(env);
  t.equal(kc.getCurrentCluster().server, 'https://10.96.0.1:443');
  const opts: { ca?: Buffer } = {};
  await kc.applyToHTTPSOptions(opts);
  t.equal(opts.ca?.toString(), 'CA', 'the ServiceAccount CA');
});

t.test('a rotated token is used by the review client and by the informers\' KubeConfig', async (t) => {
  const dir = await saDir(t);
  const env = { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443', KBP_SERVICEACCOUNT_DIR: dir };

  // The review client: a fake TokenReview endpoint records the bearer token of each request.
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    seen.push(String(req.headers.authorization));
    req.resume().on('end', () => res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ status: { authenticated: true, user: { username: 'u' } } })));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => server.close());
  const conn = inClusterConnection(env);
  t.equal(conn.ca?.toString(), 'CA');
  const reviewer = new KubeReviewer({ ...conn, server: `http://127.0.0.1:${(server.address() as { port: number }).port}` });
  await reviewer.authenticate('x');
  await writeFile(path.join(dir, 'token'), 'token-2');
  await reviewer.authenticate('y');
  t.same(seen, ['Bearer token-1', 'Bearer token-2'], 'the next review carries the new token');

  // The informers' config re-reads the token file when its copy is older than 60 s.
  await writeFile(path.join(dir, 'token'), 'token-1');
  const kc = inClusterApiConfig(env);
  const headers = async () => {
    const opts: { headers: Record<string, string> } = { headers: {} };
    await kc.applyToHTTPSOptions(opts);
    return opts.headers.Authorization ?? opts.headers.authorization;
  };
  t.equal(await headers(), 'Bearer token-1');
  await writeFile(path.join(dir, 'token'), 'token-2');
  t.equal(await headers(), 'Bearer token-1', 'cached within 60 s');
  const realNow = Date.now;
  Date.now = () => realNow() + 61_000;
  t.teardown(() => (Date.now = realNow));
  t.equal(await headers(), 'Bearer token-2', 'picked up after 60 s');
});
