// The API server connection the informers use: a kubeconfig file, or the
// in-cluster ServiceAccount.
//
// client-node's KubeConfig (dist/config.js) imports every generated API
// client and model (gen/index.js): ~60 MB of RSS in the agent for code it
// never calls. The informers need two things of a config: the current
// cluster's server, and request options (TLS material, Authorization) —
// what client-node's Watch calls getCurrentCluster() and
// applyToFetchOptions() for. So the common configurations are read here:
//   cluster  server, certificate-authority[-data], insecure-skip-tls-verify,
//            tls-server-name
//   user     client-certificate[-data] + client-key[-data], token, tokenFile,
//            username/password
//   in-cluster: server from KUBERNETES_SERVICE_HOST/PORT, ca.crt, and the
//            token file re-read at most every 60 s (rotated tokens), as
//            client-node's FileAuth does
// Anything else (exec or auth-provider plugins, proxy-url, fields this
// reader does not know) loads client-node's KubeConfig itself, so every
// kubeconfig client-node takes still works — at its memory cost.

import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { Headers, type RequestInit } from 'node-fetch';
import { parse } from 'yaml';
import { inClusterConfig, readTokenFile } from './incluster.js';

/** What the informers (and client-node's Watch) use of a config. */
export interface ApiConfig {
  getCurrentCluster(): { name: string; server: string } | null;
  applyToHTTPSOptions(opts: https.RequestOptions): Promise<void>;
  applyToFetchOptions(opts: https.RequestOptions): Promise<RequestInit>;
}

const TOKEN_FILE_TTL_MS = 60_000;

interface Tls {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  servername?: string;
  rejectUnauthorized?: boolean;
}

/** A kubeconfig this reader handles, resolved to what a request needs. */
export class SimpleKubeConfig implements ApiConfig {
  private token: { value: string; at: number } | undefined;

  constructor(
    private readonly cluster: { name: string; server: string },
    private readonly tls: Tls,
    private readonly auth: { token?: string; tokenFile?: string; username?: string; password?: string },
  ) {}

  getCurrentCluster(): { name: string; server: string } {
    return this.cluster;
  }

  private bearer(): string | undefined {
    if (this.auth.token) return this.auth.token;
    if (!this.auth.tokenFile) return undefined;
    const now = Date.now();
    if (!this.token || now - this.token.at > TOKEN_FILE_TTL_MS) this.token = { value: readTokenFile(this.auth.tokenFile), at: now };
    return this.token.value;
  }

  async applyToHTTPSOptions(opts: https.RequestOptions): Promise<void> {
    const headers = (opts.headers ??= {}) as Record<string, string | string[] | number>;
    const token = this.bearer();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (this.auth.username !== undefined) opts.auth = `${this.auth.username}:${this.auth.password ?? ''}`;
    if (this.cluster.server.startsWith('http:')) {
      // Plain HTTP only when verification is off, as client-node allows it.
      if (this.tls.rejectUnauthorized !== false) throw new Error('HTTP protocol is not allowed when skipTLSVerify is not set or false');
      opts.agent = new http.Agent({ timeout: opts.timeout });
      return;
    }
    Object.assign(opts, this.tls);
    opts.agent = new https.Agent({ ...this.tls, timeout: opts.timeout });
  }

  async applyToFetchOptions(opts: https.RequestOptions): Promise<RequestInit> {
    await this.applyToHTTPSOptions(opts);
    const headers = new Headers();
    for (const [k, v] of Object.entries(opts.headers ?? {})) {
      if (Array.isArray(v)) for (const x of v) headers.append(k, x);
      else if (typeof v === 'string' || typeof v === 'number') headers.set(k, String(v));
    }
    if (opts.auth) headers.set('Authorization', `Basic ${Buffer.from(opts.auth).toString('base64')}`);
    return { agent: opts.agent as http.Agent, headers, method: opts.method, timeout: opts.timeout };
  }
}

type Obj = Record<string, unknown>;
const CLUSTER_FIELDS = new Set(['server', 'certificate-authority', 'certificate-authority-data', 'insecure-skip-tls-verify', 'tls-server-name', 'extensions']);
const USER_FIELDS = new Set(['client-certificate', 'client-certificate-data', 'client-key', 'client-key-data', 'token', 'tokenFile', 'username', 'password', 'extensions']);

const named = (list: unknown, name: string, what: string, file: string): Obj => {
  const hit = Array.isArray(list) ? (list as Obj[]).find((x) => x?.name === name) : undefined;
  if (!hit) throw new Error(`kubeconfig ${file}: no ${what} named ${JSON.stringify(name)}`);
  return (hit[what] ?? {}) as Obj;
};

/**
 * The kubeconfig at `file` if this reader handles all of its current context,
 * else null (the caller loads client-node's KubeConfig). Throws on a file that
 * cannot be read or names a missing context, cluster or user.
 */
export function readSimpleKubeConfig(file: string): SimpleKubeConfig | null {
  const doc = (parse(fs.readFileSync(file, 'utf8')) ?? {}) as Obj;
  const current = doc['current-context'];
  if (typeof current !== 'string' || !current) throw new Error(`kubeconfig ${file}: no current-context`);
  const ctx = named(doc.contexts, current, 'context', file);
  const clusterName = String(ctx.cluster ?? '');
  const userName = String(ctx.user ?? '');
  const cluster = named(doc.clusters, clusterName, 'cluster', file);
  const user = userName ? named(doc.users, userName, 'user', file) : {};
  if (Object.keys(cluster).some((k) => !CLUSTER_FIELDS.has(k)) || Object.keys(user).some((k) => !USER_FIELDS.has(k))) return null;
  if (typeof cluster.server !== 'string' || !cluster.server) throw new Error(`kubeconfig ${file}: cluster ${clusterName} has no server`);
  const dir = path.dirname(file);
  const material = (fileKey: string, dataKey: string, from: Obj): Buffer | undefined => {
    if (typeof from[fileKey] === 'string') return fs.readFileSync(path.resolve(dir, from[fileKey] as string));
    if (typeof from[dataKey] === 'string') return Buffer.from(from[dataKey] as string, 'base64');
    return undefined;
  };
  const tls: Tls = {};
  const ca = material('certificate-authority', 'certificate-authority-data', cluster);
  const cert = material('client-certificate', 'client-certificate-data', user);
  const key = material('client-key', 'client-key-data', user);
  if (ca) tls.ca = ca;
  if (cert) tls.cert = cert;
  if (key) tls.key = key;
  if (typeof cluster['tls-server-name'] === 'string') tls.servername = cluster['tls-server-name'];
  if (cluster['insecure-skip-tls-verify'] === true) tls.rejectUnauthorized = false;
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const tokenFile = str(user.tokenFile);
  return new SimpleKubeConfig({ name: clusterName, server: cluster.server }, tls, {
    token: str(user.token),
    tokenFile: tokenFile ? path.resolve(dir, tokenFile) : undefined,
    username: str(user.username),
    password: str(user.password),
  });
}

/** The in-cluster config (ServiceAccount token and CA). */
export function inClusterApiConfig(env: NodeJS.ProcessEnv = process.env): SimpleKubeConfig {
  const c = inClusterConfig(env);
  return new SimpleKubeConfig({ name: 'in-cluster', server: c.server }, { ca: fs.readFileSync(c.caFile) }, { tokenFile: c.tokenFile });
}
