// The informers' kubeconfig reader (src/k8s/kubeconfig.ts): which files it
// reads itself, what a request gets from them, and that everything else goes
// to client-node's KubeConfig (loadKubeConfig). The real-API tests
// (test/integration/cluster.test.ts, test/reliability) use it with client
// certificates against kube-apiserver.
import t, { type Test } from 'tap';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { readSimpleKubeConfig } from '../../src/k8s/kubeconfig.js';
import { loadKubeConfig } from '../../src/k8s/informers.js';

async function kubeconfig(t: Test, cluster: object, user: object): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kbp-kc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'ca.crt'), 'CA-FILE');
  await writeFile(path.join(dir, 'token'), 'file-token\n');
  const file = path.join(dir, 'config');
  await writeFile(file, stringify({
    apiVersion: 'v1',
    kind: 'Config',
    'current-context': 'c',
    contexts: [{ name: 'other', context: { cluster: 'x', user: 'x' } }, { name: 'c', context: { cluster: 'k', user: 'u' } }],
    clusters: [{ name: 'k', cluster: { server: 'https://10.0.0.1:6443', ...cluster } }],
    users: [{ name: 'u', user }],
  }));
  return file;
}

const applied = async (file: string) => {
  const kc = readSimpleKubeConfig(file)!;
  const opts: https.RequestOptions = { headers: {} };
  await kc.applyToHTTPSOptions(opts);
  return { kc, opts, headers: opts.headers as Record<string, string> };
};

t.test('client certificates (data), CA file relative to the kubeconfig, server name', async (t) => {
  const file = await kubeconfig(t, { 'certificate-authority': 'ca.crt', 'tls-server-name': 'api.local' }, { 'client-certificate-data': Buffer.from('CERT').toString('base64'), 'client-key-data': Buffer.from('KEY').toString('base64') });
  const { kc, opts, headers } = await applied(file);
  t.same(kc.getCurrentCluster(), { name: 'k', server: 'https://10.0.0.1:6443' }, 'the current context\'s cluster');
  t.equal(String(opts.ca), 'CA-FILE');
  t.equal(String(opts.cert), 'CERT');
  t.equal(String(opts.key), 'KEY');
  t.equal(opts.servername, 'api.local');
  t.equal(opts.rejectUnauthorized, undefined, 'verification on');
  t.equal(headers.Authorization, undefined, 'no bearer token');
  t.ok(opts.agent, 'an https agent with that material');
  const init = await kc.applyToFetchOptions({});
  t.ok(init.agent, 'fetch options (client-node Watch) carry the agent');
});

t.test('token, token file, basic auth, skip verify', async (t) => {
  let r = await applied(await kubeconfig(t, { 'certificate-authority-data': Buffer.from('CA').toString('base64') }, { token: 'abc' }));
  t.equal(r.headers.Authorization, 'Bearer abc');
  t.equal(String(r.opts.ca), 'CA');
  r = await applied(await kubeconfig(t, { 'insecure-skip-tls-verify': true }, { tokenFile: 'token' }));
  t.equal(r.headers.Authorization, 'Bearer file-token', 'token file, relative to the kubeconfig');
  t.equal(r.opts.rejectUnauthorized, false);
  const basic = readSimpleKubeConfig(await kubeconfig(t, {}, { username: 'a', password: 'b' }))!;
  const init = await basic.applyToFetchOptions({});
  t.equal((init.headers as { get(k: string): string | null }).get('Authorization'), `Basic ${Buffer.from('a:b').toString('base64')}`);
});

t.test('exec plugins, auth providers and proxies go to client-node', async (t) => {
  const exec = await kubeconfig(t, {}, { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: 'true' } });
  t.equal(readSimpleKubeConfig(exec), null, 'exec: not read here');
  t.equal(readSimpleKubeConfig(await kubeconfig(t, { 'proxy-url': 'http://p:3128' }, { token: 'x' })), null, 'proxy-url: not read here');
  t.equal(readSimpleKubeConfig(await kubeconfig(t, {}, { 'auth-provider': { name: 'oidc' } })), null, 'auth-provider: not read here');
  const kc = await loadKubeConfig(exec);
  t.equal(kc.constructor.name, 'KubeConfig', "loadKubeConfig hands it to client-node's KubeConfig");
  t.equal(kc.getCurrentCluster()?.server, 'https://10.0.0.1:6443');
  const simple = await loadKubeConfig(await kubeconfig(t, {}, { token: 'x' }));
  t.equal(simple.constructor.name, 'SimpleKubeConfig');
});

t.test('broken files are refused with what is wrong', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kbp-kc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const f = path.join(dir, 'c');
  await writeFile(f, stringify({ 'current-context': 'nope', contexts: [] }));
  t.throws(() => readSimpleKubeConfig(f), /no context named "nope"/);
  await writeFile(f, stringify({ contexts: [] }));
  t.throws(() => readSimpleKubeConfig(f), /no current-context/);
  await writeFile(f, stringify({ 'current-context': 'c', contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }], clusters: [{ name: 'k', cluster: {} }], users: [{ name: 'u', user: {} }] }));
  t.throws(() => readSimpleKubeConfig(f), /has no server/);
});
