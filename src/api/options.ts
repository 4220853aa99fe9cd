// The agent's API flags, parsed here so src/agent only merges them into its
// own parseArgs table and hands the result to startApi():
//
//   --api-listen HOST:PORT        (exists in the agent) where to listen; "off" for none
//   --api-tls-cert FILE           serve HTTPS with this PEM certificate (chain) ...
//   --api-tls-key FILE            ... and key; both or neither
//   --api-auth MODE               auto (default): no auth on a loopback listener, bearer
//                                 tokens on any other; token: bearer tokens everywhere.
//                                 There is no "none" for a non-loopback listener.
//   --api-auth-kubeconfig FILE    API server for TokenReview/SubjectAccessReview
//                                 (default: the agent's --kubeconfig, else in-cluster)
//   --api-rate-limit N            requests per second per client address (default 50, burst 2N)

import { isIP } from 'node:net';
import { parseListen } from './app.js';

export const API_FLAG_OPTIONS = {
  'api-tls-cert': { type: 'string' },
  'api-tls-key': { type: 'string' },
  'api-auth': { type: 'string' },
  'api-auth-kubeconfig': { type: 'string' },
  'api-rate-limit': { type: 'string' },
} as const;

export const apiUsage = `  --api-tls-cert FILE     serve the API over HTTPS with this PEM certificate
  --api-tls-key FILE      ... and this PEM key (both or neither)
  --api-auth MODE         auto: no auth on a loopback --api-listen, bearer tokens
                          (TokenReview + SubjectAccessReview: verb get on
                          agents.kbp.io, name = node name) on any other address;
                          token: bearer tokens on loopback too (default: auto)
  --api-auth-kubeconfig FILE
                          API server for token reviews (default: --kubeconfig,
                          else in-cluster)
  --api-rate-limit N      requests per second per client address (default: 50)
`;

export interface ApiServerConfig {
  listen: { host: string; port: number };
  /** Bearer tokens required on every route but /healthz. */
  auth: boolean;
  /** Kubeconfig for the reviews; undefined: the agent's own, else in-cluster. */
  authKubeconfig?: string;
  tls?: { certFile: string; keyFile: string };
  rateLimit: { perSecond: number; burst: number };
}

/** Loopback addresses and "localhost": the only listeners served without auth. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  const v = isIP(host);
  if (v === 4) return host.startsWith('127.');
  if (v === 6) return host === '::1' || /^::ffff:127\./i.test(host);
  return false;
}

export type ApiFlagValues = { [K in keyof typeof API_FLAG_OPTIONS]?: string };

/** The API part of the agent's flags; `listen` is --api-listen as given ("off" -> null). */
export function parseApiOptions(listen: string, v: ApiFlagValues, kubeconfig?: string): ApiServerConfig | null {
  if (listen === 'off') return null;
  const addr = parseListen(listen);
  const mode = v['api-auth'] ?? 'auto';
  if (mode !== 'auto' && mode !== 'token') throw new Error(`--api-auth: expected auto or token, got ${JSON.stringify(mode)}`);
  if (!!v['api-tls-cert'] !== !!v['api-tls-key']) throw new Error('--api-tls-cert and --api-tls-key go together');
  const rate = v['api-rate-limit'] === undefined ? 50 : Number(v['api-rate-limit']);
  if (!(rate > 0 && Number.isFinite(rate))) throw new Error(`--api-rate-limit: expected a positive number, got ${JSON.stringify(v['api-rate-limit'])}`);
  const cfg: ApiServerConfig = {
    listen: addr,
    auth: mode === 'token' || !isLoopback(addr.host),
    rateLimit: { perSecond: rate, burst: Math.max(1, Math.ceil(rate * 2)) },
  };
  const kc = v['api-auth-kubeconfig'] ?? kubeconfig;
  if (kc) cfg.authKubeconfig = kc;
  if (v['api-tls-cert'] && v['api-tls-key']) cfg.tls = { certFile: v['api-tls-cert'], keyFile: v['api-tls-key'] };
  return cfg;
}
