// Starting the API the way the agent runs it: TLS files read, the token
// reviewer connected when the listener needs auth, then listen.

import { readFile } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import { buildApi, type ApiDeps } from './app.js';
import { AuthChecker, KubeReviewer, inClusterConnection, kubeconfigConnection, type Reviewer } from './auth.js';
import type { ApiServerConfig } from './options.js';

export interface RunningApi {
  app: FastifyInstance;
  /** http(s)://HOST:PORT as bound (port resolved when 0 was asked). */
  url: string;
  close(): Promise<void>;
}

export async function startApi(deps: ApiDeps, cfg: ApiServerConfig, over: { reviewer?: Reviewer } = {}): Promise<RunningApi> {
  let auth: AuthChecker | undefined;
  if (cfg.auth) {
    const reviewer = over.reviewer ?? new KubeReviewer(cfg.authKubeconfig ? kubeconfigConnection(cfg.authKubeconfig) : inClusterConnection());
    auth = new AuthChecker({ reviewer, nodeName: deps.nodeName });
  }
  const https = cfg.tls ? { cert: await readFile(cfg.tls.certFile), key: await readFile(cfg.tls.keyFile) } : undefined;
  const app = await buildApi(deps, { auth, https, rateLimit: cfg.rateLimit });
  await app.listen({ host: cfg.listen.host, port: cfg.listen.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : cfg.listen.port;
  const host = cfg.listen.host.includes(':') ? `[${cfg.listen.host}]` : cfg.listen.host;
  return { app, url: `${https ? 'https' : 'http'}://${host}:${port}`, close: () => app.close() };
}
