// Bearer-token auth over real HTTP, against a FAKE TokenReview /
// SubjectAccessReview endpoint on 127.0.0.1 (plain HTTP, answering like the
// API server does), for what the real one cannot easily show: the review
// cache, and a 503 when the API server is unreachable. The same 401/403/200
// against the real kube-apiserver is test/api/auth-apiserver.test.ts. Also:
// option parsing, kubeconfig reading, TLS with a throwaway certificate.

import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { AuthChecker, bearerToken, kubeconfigConnection, type Reviewer } from '../../src/api/auth.js';
import { isLoopback, parseApiOptions } from '../../src/api/options.js';
import { startApi, type RunningApi } from '../../src/api/server.js';
import { fakeMaps, NODE } from './fakes.js';

interface Review {
  kind: string;
  spec: Record<string, unknown>;
}

/** A fake API server: "good" is alice (granted), "norbac" is bob (not granted), anything else is unauthenticated. */
async function fakeKube(t: Test) {
  const reviews: Review[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString()) as Review;
      reviews.push(body);
      if (req.headers.authorization !== 'Bearer agent-sa-token') {
        res.writeHead(401).end('{}');
        return;
      }
      let status: unknown;
      if (req.url === '/apis/authentication.k8s.io/v1/tokenreviews') {
        const user = { good: { username: 'alice', uid: 'u1', groups: ['ops'] }, norbac: { username: 'bob', groups: [] } }[body.spec.token as string];
        status = user ? { authenticated: true, user } : { authenticated: false, error: 'invalid bearer token' };
      } else if (req.url === '/apis/authorization.k8s.io/v1/subjectaccessreviews') {
        status = { allowed: body.spec.user === 'alice' };
      } else {
        res.writeHead(404).end('{}');
        return;
      }
      res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ ...body, status }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, reviews, server };
}

function request(url: string, headers: Record<string, string> = {}, ca?: Buffer): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.get(url, { headers, ca }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString(), headers: res.headers }));
    });
    req.on('error', reject);
  });
}

async function tmp(t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kbp-api-auth-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const deps = () => ({ nodeName: NODE, maps: fakeMaps().set, frontend: () => undefined, health: () => ({ ready: true, lastUpdated: new Date() }) });

t.test('401 without or with a bad token, 403 without the RBAC, 200 with it; /healthz open; answers cached', async (t) => {
  const kube = await fakeKube(t);
  const dir = await tmp(t);
  const kubeconfig = path.join(dir, 'kubeconfig');
  await writeFile(
    kubeconfig,
    `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "${kube.url}"}}]
users: [{name: agent, user: {token: agent-sa-token}}]
contexts: [{name: ctx, context: {cluster: c, user: agent}}]
current-context: ctx
`,
  );
  // --api-auth token: bearer tokens even on this loopback listener (a non-loopback
  // listener gets the same via auto, see the options test).
  const cfg = parseApiOptions('127.0.0.1:0', { 'api-auth': 'token', 'api-auth-kubeconfig': kubeconfig });
  t.ok(cfg?.auth);
  const api: RunningApi = await startApi(deps(), cfg!);
  t.teardown(() => api.close());

  let r = await request(`${api.url}/healthz`);
  t.equal(r.status, 200, '/healthz needs no token');
  r = await request(`${api.url}/v1/services`);
  t.equal(r.status, 401);
  t.same(JSON.parse(r.body), { statusCode: 401, code: 'KBP_UNAUTHORIZED', message: 'a valid bearer token is required' });
  t.match(r.headers['www-authenticate'], /^Bearer/);
  r = await request(`${api.url}/v1/services`, { authorization: 'Basic YTpi' });
  t.equal(r.status, 401, 'not a bearer token');
  r = await request(`${api.url}/v1/services`, { authorization: 'Bearer forged' });
  t.equal(r.status, 401, 'TokenReview says unauthenticated');
  r = await request(`${api.url}/v1/services`, { authorization: 'Bearer norbac' });
  t.equal(r.status, 403);
  t.equal(JSON.parse(r.body).code, 'KBP_FORBIDDEN');
  for (const url of ['/v1/services', '/v1/conntrack', '/metrics', '/openapi.json', '/v1/maps']) {
    r = await request(`${api.url}${url}`, { authorization: 'Bearer good' });
    t.equal(r.status, 200, `${url} with a granted token`);
  }

  const sar = kube.reviews.find((x) => x.kind === 'SubjectAccessReview' && x.spec.user === 'alice');
  t.same(sar?.spec, { user: 'alice', uid: 'u1', groups: ['ops'], resourceAttributes: { group: 'kbp.io', resource: 'agents', verb: 'get', name: NODE } });
  const tokenReviews = kube.reviews.filter((x) => x.kind === 'TokenReview' && x.spec.token === 'good').length;
  t.equal(tokenReviews, 1, 'five requests with one token: one TokenReview (cached)');

  // API server unreachable: a token not in the cache cannot be checked -> 503, not 401/403.
  kube.server.closeAllConnections();
  await new Promise<void>((res) => kube.server.close(() => res()));
  r = await request(`${api.url}/v1/services`, { authorization: 'Bearer new-token' });
  t.equal(r.status, 503);
  t.same(JSON.parse(r.body), { statusCode: 503, code: 'KBP_AUTH_UNAVAILABLE', message: 'the token cannot be checked now (API server unreachable)' });
  t.notMatch(r.body, /ECONNREFUSED|127\.0\.0\.1/);
});

t.test('AuthChecker: ttl, concurrent requests share one review, bounded cache', async (t) => {
  let now = 0;
  let calls = 0;
  const reviewer: Reviewer = {
    authenticate: async (tok) => {
      calls++;
      return tok === 'x' ? null : { username: tok };
    },
    authorize: async (u) => u.username !== 'denied',
  };
  const c = new AuthChecker({ reviewer, nodeName: 'n', ttlMs: 1000, maxEntries: 2, now: () => now });
  t.same(await Promise.all([c.check('a'), c.check('a'), c.check('a')]), [
    { status: 200, user: 'a' },
    { status: 200, user: 'a' },
    { status: 200, user: 'a' },
  ]);
  t.equal(calls, 1);
  t.same(await c.check('x'), { status: 401 });
  t.same(await c.check('denied'), { status: 403, user: 'denied' });
  now = 500;
  await c.check('denied');
  t.equal(calls, 3, 'within the ttl');
  now = 1500;
  await c.check('denied');
  t.equal(calls, 4, 'after the ttl');
  await c.check('a'); // evicted: the cache holds 2
  t.equal(calls, 5);
  t.equal(bearerToken('Bearer abc'), 'abc');
  t.equal(bearerToken('bearer  abc '), 'abc');
  t.equal(bearerToken('Basic abc'), undefined);
  t.equal(bearerToken(undefined), undefined);
});

t.test('options: auth on every non-loopback listener, TLS pair, rate limit', async (t) => {
  t.same(parseApiOptions('127.0.0.1:10256', {}), { listen: { host: '127.0.0.1', port: 10256 }, auth: false, rateLimit: { perSecond: 50, burst: 100 } });
  t.equal(parseApiOptions('off', {}), null);
  for (const l of ['0.0.0.0:10256', '10.0.0.1:10256', '[::]:10256', 'node-1.example:10256']) t.equal(parseApiOptions(l, {})?.auth, true, l);
  for (const l of ['127.0.0.1:1', '127.1.2.3:1', '[::1]:1', 'localhost:1']) t.equal(parseApiOptions(l, {})?.auth, false, l);
  t.equal(parseApiOptions('127.0.0.1:1', { 'api-auth': 'token' })?.auth, true);
  t.throws(() => parseApiOptions('0.0.0.0:1', { 'api-auth': 'none' }), /auto or token/);
  t.throws(() => parseApiOptions('127.0.0.1:1', { 'api-tls-cert': 'c.pem' }), /go together/);
  t.throws(() => parseApiOptions('127.0.0.1:1', { 'api-rate-limit': '0' }), /positive/);
  t.same(parseApiOptions('10.0.0.1:443', { 'api-tls-cert': 'c.pem', 'api-tls-key': 'k.pem' }, '/etc/kbp/kubeconfig'), {
    listen: { host: '10.0.0.1', port: 443 },
    auth: true,
    rateLimit: { perSecond: 50, burst: 100 },
    authKubeconfig: '/etc/kbp/kubeconfig',
    tls: { certFile: 'c.pem', keyFile: 'k.pem' },
  });
  t.ok(isLoopback('::ffff:127.0.0.1'));
  t.notOk(isLoopback('::ffff:10.0.0.1'));
});

t.test('kubeconfig: files relative to the kubeconfig, base64 data, tokenFile', async (t) => {
  const dir = await tmp(t);
  await writeFile(path.join(dir, 'ca.crt'), 'CA');
  await writeFile(path.join(dir, 'tok'), 'file-token\n');
  await writeFile(
    path.join(dir, 'kc'),
    `apiVersion: v1
clusters: [{name: c, cluster: {server: "https://10.0.0.1:6443", certificate-authority: ca.crt}}]
users: [{name: u, user: {client-certificate-data: ${Buffer.from('CERT').toString('base64')}, client-key-data: ${Buffer.from('KEY').toString('base64')}, tokenFile: tok}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`,
  );
  const c = kubeconfigConnection(path.join(dir, 'kc'));
  t.equal(c.server, 'https://10.0.0.1:6443');
  t.equal(c.ca?.toString(), 'CA');
  t.equal(c.cert?.toString(), 'CERT');
  t.equal(c.key?.toString(), 'KEY');
  t.equal(c.token, 'file-token');
});

t.test('TLS: --api-tls-cert/--api-tls-key serve HTTPS', async (t) => {
  const dir = await tmp(t);
  const cert = path.join(dir, 'tls.crt');
  const key = path.join(dir, 'tls.key');
  await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=kbp-test', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert]);
  const api = await startApi(deps(), parseApiOptions('127.0.0.1:0', { 'api-tls-cert': cert, 'api-tls-key': key })!);
  t.teardown(() => api.close());
  t.match(api.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const { readFile } = await import('node:fs/promises');
  const r = await request(`${api.url}/readyz`, {}, await readFile(cert));
  t.equal(r.status, 200);
  await t.rejects(request(`${api.url}/readyz`), 'an unknown CA is refused by the client');
});
