// Bearer-token authentication and authorization of API requests, delegated to
// the Kubernetes API server the way kubelet and kube-rbac-proxy do it:
//
//   1. TokenReview (authentication.k8s.io/v1) says who the token belongs to;
//   2. SubjectAccessReview (authorization.k8s.io/v1) asks whether that user may
//        verb "get" on resource "agents" of API group "kbp.io", name = node name
//      (a virtual resource: nothing stores it, RBAC grants it). A ClusterRole
//      with that rule and no resourceNames allows every node's agent; with
//      resourceNames it allows chosen nodes.
//
// Answers are cached for a short while (by a digest of the token, never the
// token itself), so a CLI walking a conntrack dump page by page costs two
// reviews, not two per page. The agent's own identity needs
// "create" on tokenreviews and subjectaccessreviews (the built-in ClusterRole
// system:auth-delegator).

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import YAML from 'yaml';
import { inClusterConfig, readTokenFile } from '../k8s/incluster.js';

export const AUTHZ_GROUP = 'kbp.io';
export const AUTHZ_RESOURCE = 'agents';
export const AUTHZ_VERB = 'get';

export interface ReviewedUser {
  username: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
}

/** The two questions the API asks the API server. Errors mean "cannot tell now" (503), never "no". */
export interface Reviewer {
  /** The token's user, or null when the API server does not authenticate it. */
  authenticate(token: string): Promise<ReviewedUser | null>;
  /** Whether `user` may get kbp.io/agents named `node`. */
  authorize(user: ReviewedUser, node: string): Promise<boolean>;
}

export type AuthDecision = { status: 200; user: string } | { status: 401 } | { status: 403; user: string };

export interface AuthCheckerOptions {
  reviewer: Reviewer;
  nodeName: string;
  /** How long an answer is reused (default 10 s; denials too, so a flood of bad tokens costs one review each per TTL). */
  ttlMs?: number;
  /** Most cached tokens (default 1000; the oldest go first). */
  maxEntries?: number;
  now?: () => number;
}

/** TokenReview + SubjectAccessReview with a short cache. */
export class AuthChecker {
  private readonly cache = new Map<string, { at: number; decision: AuthDecision }>();
  private readonly inflight = new Map<string, Promise<AuthDecision>>();
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  reviews = 0;

  constructor(private readonly opts: AuthCheckerOptions) {
    this.ttlMs = opts.ttlMs ?? 10_000;
    this.maxEntries = opts.maxEntries ?? 1000;
    this.now = opts.now ?? Date.now;
  }

  async check(token: string): Promise<AuthDecision> {
    const digest = createHash('sha256').update(token).digest('base64');
    const hit = this.cache.get(digest);
    if (hit && this.now() - hit.at < this.ttlMs) return hit.decision;
    const pending = this.inflight.get(digest);
    if (pending) return pending;
    const p = this.review(token).finally(() => this.inflight.delete(digest));
    this.inflight.set(digest, p);
    const decision = await p;
    this.cache.delete(digest);
    this.cache.set(digest, { at: this.now(), decision });
    while (this.cache.size > this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    return decision;
  }

  private async review(token: string): Promise<AuthDecision> {
    this.reviews++;
    const user = await this.opts.reviewer.authenticate(token);
    if (!user) return { status: 401 };
    const allowed = await this.opts.reviewer.authorize(user, this.opts.nodeName);
    return allowed ? { status: 200, user: user.username } : { status: 403, user: user.username };
  }
}

/** The bearer token of an Authorization header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  const m = header ? /^Bearer +(\S+)\s*$/i.exec(header) : null;
  return m?.[1];
}

// ---------------------------------------------------------------- the API server client

/** How the agent reaches the API server for reviews. */
export interface KubeConnection {
  server: string; // https://HOST:PORT (http:// for a local fake)
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  token?: string;
  /** A file holding the token, read on every request (a rotated ServiceAccount token); `token` wins. */
  tokenFile?: string;
  insecureSkipTlsVerify?: boolean;
}

/** In-cluster connection (the DaemonSet's ServiceAccount; src/k8s/incluster.ts). */
export function inClusterConnection(env: NodeJS.ProcessEnv = process.env): KubeConnection {
  const c = inClusterConfig(env);
  return { server: c.server, ca: readFileSync(c.caFile), tokenFile: c.tokenFile };
}

/** The current context of a kubeconfig file: server, CA, and client certificate or token. */
export function kubeconfigConnection(file: string): KubeConnection {
  const cfg = YAML.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const dir = path.dirname(file);
  const named = (list: unknown, name: unknown, what: string): Record<string, unknown> => {
    const item = Array.isArray(list) ? (list as Array<{ name?: unknown }>).find((x) => x?.name === name) : undefined;
    if (!item) throw new Error(`${file}: no ${what} ${JSON.stringify(name)}`);
    return ((item as Record<string, unknown>)[what] ?? {}) as Record<string, unknown>;
  };
  const ctx = named(cfg.contexts, cfg['current-context'], 'context');
  const cluster = named(cfg.clusters, ctx.cluster, 'cluster');
  const user = ctx.user === undefined ? {} : named(cfg.users, ctx.user, 'user');
  const bytes = (data: unknown, file: unknown): Buffer | undefined => {
    if (typeof data === 'string') return Buffer.from(data, 'base64');
    if (typeof file === 'string') return readFileSync(path.resolve(dir, file));
    return undefined;
  };
  if (typeof cluster.server !== 'string') throw new Error(`${file}: cluster has no server`);
  const tokenFile = typeof user.tokenFile === 'string' ? readFileSync(path.resolve(dir, user.tokenFile), 'utf8').trim() : undefined;
  return {
    server: cluster.server,
    ca: bytes(cluster['certificate-authority-data'], cluster['certificate-authority']),
    cert: bytes(user['client-certificate-data'], user['client-certificate']),
    key: bytes(user['client-key-data'], user['client-key']),
    token: typeof user.token === 'string' ? user.token : tokenFile,
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true,
  };
}

/** POST a JSON object to the API server; resolves with the parsed answer, rejects on anything but 201/200. */
function post(conn: KubeConnection, apiPath: string, body: unknown, timeoutMs: number): Promise<Record<string, unknown>> {
  const url = new URL(apiPath, conn.server);
  const data = Buffer.from(JSON.stringify(body));
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json', 'content-length': String(data.length) };
  const token = conn.token ?? (conn.tokenFile ? readTokenFile(conn.tokenFile) : undefined);
  if (token) headers.authorization = `Bearer ${token}`;
  const opts: https.RequestOptions = { method: 'POST', headers, timeout: timeoutMs };
  if (url.protocol === 'https:') Object.assign(opts, { ca: conn.ca, cert: conn.cert, key: conn.key, rejectUnauthorized: !conn.insecureSkipTlsVerify });
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? https : http).request(url, opts, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200 && res.statusCode !== 201) return reject(new Error(`POST ${url.pathname}: HTTP ${res.statusCode} ${text.slice(0, 200)}`));
        try {
          resolve(JSON.parse(text) as Record<string, unknown>);
        } catch {
          reject(new Error(`POST ${url.pathname}: not JSON`));
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`POST ${url.pathname}: timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(data);
  });
}

/** Reviews against a real (or fake) API server. */
export class KubeReviewer implements Reviewer {
  constructor(
    private readonly conn: KubeConnection,
    private readonly opts: { audiences?: string[]; timeoutMs?: number } = {},
  ) {}

  async authenticate(token: string): Promise<ReviewedUser | null> {
    const spec: Record<string, unknown> = { token };
    if (this.opts.audiences) spec.audiences = this.opts.audiences;
    const r = await post(this.conn, '/apis/authentication.k8s.io/v1/tokenreviews', { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec }, this.opts.timeoutMs ?? 5000);
    const status = (r.status ?? {}) as { authenticated?: boolean; user?: ReviewedUser };
    return status.authenticated && status.user?.username ? status.user : null;
  }

  async authorize(user: ReviewedUser, node: string): Promise<boolean> {
    const r = await post(
      this.conn,
      '/apis/authorization.k8s.io/v1/subjectaccessreviews',
      {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SubjectAccessReview',
        spec: {
          user: user.username,
          uid: user.uid,
          groups: user.groups,
          extra: user.extra,
          resourceAttributes: { group: AUTHZ_GROUP, resource: AUTHZ_RESOURCE, verb: AUTHZ_VERB, name: node },
        },
      },
      this.opts.timeoutMs ?? 5000,
    );
    return (r.status as { allowed?: boolean } | undefined)?.allowed === true;
  }
}
