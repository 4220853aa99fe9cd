// The agent's REST API (fastify). Plugins register in a fixed order:
//
//   1. external: the read-only guard (GET/HEAD only, body limit), the
//      per-client rate limit, bearer-token auth (TokenReview +
//      SubjectAccessReview) when the listener is not loopback;
//   2. app: the error handler and the not-found handler (every error body from
//      the catalog in errors.ts), the OpenAPI collector;
//   3. routes: health, metrics, services, dumps, and /openapi.json.
//
// Every route reads the kernel maps through the codecs of src/maps; no route
// writes a map.

import Fastify, { type FastifyInstance } from 'fastify';
import type { MapReader } from '../maps/writer.js';
import type { ProgrammedFrontend, SyncListener, SyncerStats } from '../proxy/syncer.js';
import type { Logger } from '../log.js';
import { ApiError, errors, type ApiErrorBody } from './errors.js';
import { bearerToken, type AuthChecker } from './auth.js';
import type { DesiredFrontendLike } from './frontends.js';
import { createMetrics, type Metrics } from './metrics.js';
import { OpenApiCollector } from './openapi.js';
import { mapSetReader, type MapSet } from './paging.js';
import { healthRoutes } from './routes/health.js';
import { metricsRoutes } from './routes/metrics.js';
import { serviceRoutes } from './routes/services.js';
import { dumpRoutes } from './routes/dumps.js';

export interface ApiDeps {
  nodeName: string;
  /**
   * Every datapath map the API may dump, by name (the agent's open BpfMaps;
   * fakes in tests). Without it only /healthz, /readyz, /metrics (sync
   * counters) and, through `reader`, the services views work.
   */
  maps?: MapSet;
  /** Reads services/backends/revnat when `maps` is absent (the syncer's writer). */
  reader?: MapReader;
  /** Service name of a frontend id, from the syncer. */
  frontend: (id: number) => ProgrammedFrontend | undefined;
  /** ready: maps programmed and devices attached; lastUpdated: last successful sync. */
  health: () => { ready: boolean; lastUpdated: Date | undefined };
  /** The syncer's counters (metrics). */
  syncStats?: () => SyncerStats;
  /** Subscribe to every sync's result (the syncer's onSync): histograms observe every sync. */
  onSync?: (fn: SyncListener) => () => void;
  /** The desired frontends last handed to the syncer (drift comparison); undefined before the first. */
  desired?: () => Iterable<DesiredFrontendLike> | undefined;
  /** /healthz turns 503 when the last successful sync is older than this (default 120 s: twice kube-proxy's default sync period). */
  healthStaleMs?: number;
  now?: () => Date;
  /** CLOCK_MONOTONIC in ns, the clock of the conntrack timestamps (default process.hrtime.bigint). */
  monotonicNs?: () => bigint;
  log?: Logger;
}

export interface ApiOptions {
  /** Token auth for every route but the probes' /healthz and /readyz; required when the listener is not loopback (see server.ts). */
  auth?: AuthChecker;
  /** Serve HTTPS with this certificate and key (PEM). */
  https?: { cert: Buffer; key: Buffer };
  /** Requests per second per client address, with a burst (default 50/s, burst 100). */
  rateLimit?: { perSecond: number; burst: number };
  /** Largest request body accepted (default 1 KiB: the API takes no bodies). */
  bodyLimit?: number;
  version?: string;
}

/** What the route plugins share. */
export interface ApiContext {
  deps: ApiDeps;
  /** The services view's reader (ApiError 503 when there is none). */
  reader(): MapReader;
  /** Run a map read; failures become KBP_MAPS_UNAVAILABLE (the cause is logged, not returned). */
  readMaps<T>(fn: () => Promise<T>): Promise<T>;
  now(): Date;
  monotonicNs(): bigint;
  healthStaleMs: number;
  metrics: Metrics;
}

export const API_VERSION = '0.1.0';

function sendError(reply: { code(n: number): { send(b: unknown): unknown } }, body: ApiErrorBody, message?: string) {
  return reply.code(body.statusCode).send(message ? { ...body, message } : body);
}

/** Token bucket per client address; the table is bounded (oldest clients forgotten first). */
export function rateLimiter(perSecond: number, burst: number, now: () => number = Date.now, maxClients = 10_000) {
  const buckets = new Map<string, { tokens: number; at: number }>();
  let newest: string | undefined;
  return (client: string): boolean => {
    const t = now();
    let b = buckets.get(client);
    if (b) {
      b.tokens = Math.min(burst, b.tokens + ((t - b.at) / 1000) * perSecond);
      b.at = t;
      // Re-insert, most recent last; not when it is last already: every
      // delete leaves a hole the Map's table fills up with, so a client
      // paging through a dump would have its table rebuilt over and over.
      if (client !== newest) {
        buckets.delete(client);
        buckets.set(client, b);
      }
    } else {
      b = { tokens: burst, at: t };
      buckets.set(client, b);
    }
    newest = client;
    if (buckets.size > maxClients) buckets.delete(buckets.keys().next().value!);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  };
}

export async function buildApi(deps: ApiDeps, opts: ApiOptions = {}): Promise<FastifyInstance> {
  const app = (opts.https
    ? Fastify({ logger: false, https: { cert: opts.https.cert, key: opts.https.key }, bodyLimit: opts.bodyLimit ?? 1024 })
    : Fastify({ logger: false, bodyLimit: opts.bodyLimit ?? 1024 })) as unknown as FastifyInstance;
  const log = deps.log;

  // ---- 1. external: read-only guard, rate limit, auth
  app.addHook('onRequest', async (req, reply) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendError(reply.header('allow', 'GET, HEAD'), errors.methodNotAllowed);
  });
  const rl = opts.rateLimit ?? { perSecond: 50, burst: 100 };
  const allow = rateLimiter(rl.perSecond, rl.burst);
  app.addHook('onRequest', async (req, reply) => {
    if (!allow(req.ip)) return sendError(reply.header('retry-after', String(Math.ceil(1 / rl.perSecond))), errors.rateLimited);
  });
  const auth = opts.auth;
  if (auth) {
    app.addHook('onRequest', async (req, reply) => {
      const path = req.url.split('?', 1)[0];
      // The kubelet's liveness/readiness probes carry no token (deploy/).
      if (path === '/healthz' || path === '/readyz') return;
      const token = bearerToken(req.headers.authorization);
      if (!token) return sendError(reply.header('www-authenticate', 'Bearer realm="kbp"'), errors.unauthorized);
      let d;
      try {
        d = await auth.check(token);
      } catch (err) {
        log?.error('token review failed', { err });
        return sendError(reply, errors.authUnavailable);
      }
      if (d.status === 401) return sendError(reply.header('www-authenticate', 'Bearer realm="kbp", error="invalid_token"'), errors.unauthorized);
      if (d.status === 403) {
        log?.info('api request denied', { user: d.user, method: req.method, url: path });
        return sendError(reply, errors.forbidden);
      }
    });
  }

  // ---- 2. app: errors from the catalog, request log, OpenAPI collector
  app.setErrorHandler((err, req, reply) => {
    if (err instanceof ApiError) return sendError(reply, err.body);
    const e = err as { validation?: unknown; statusCode?: number; code?: string; message: string };
    if (e.validation) return sendError(reply, errors.badRequest, e.message);
    if (e.statusCode === 413) return sendError(reply, errors.payloadTooLarge);
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) return sendError(reply, errors.badRequest);
    log?.error('api request failed', { method: req.method, url: req.url, err });
    return sendError(reply, errors.internal);
  });
  app.setNotFoundHandler((_req, reply) => sendError(reply, errors.notFound));
  if (log) {
    app.addHook('onResponse', async (req, reply) => {
      log.debug('api request', { method: req.method, url: req.url, status: reply.statusCode, ms: reply.elapsedTime.toFixed(1) });
    });
  }
  const openapi = new OpenApiCollector(opts.version ?? API_VERSION, { auth: !!auth });
  openapi.attach(app);

  const ctx: ApiContext = {
    deps,
    reader() {
      if (deps.maps) return mapSetReader(deps.maps);
      if (deps.reader) return deps.reader;
      throw new ApiError(errors.mapsUnavailable);
    },
    async readMaps(fn) {
      try {
        return await fn();
      } catch (err) {
        if (err instanceof ApiError) throw err;
        log?.error('reading the maps failed', { err });
        throw new ApiError(errors.mapsUnavailable);
      }
    },
    now: () => deps.now?.() ?? new Date(),
    monotonicNs: () => deps.monotonicNs?.() ?? process.hrtime.bigint(),
    healthStaleMs: deps.healthStaleMs ?? 120_000,
    metrics: createMetrics({ syncStats: deps.syncStats, onSync: deps.onSync, maps: deps.maps, log }),
  };
  app.addHook('onClose', async () => ctx.metrics.close());

  // ---- 3. routes
  await app.register(healthRoutes, { ctx });
  await app.register(metricsRoutes, { ctx });
  await app.register(serviceRoutes, { ctx });
  await app.register(dumpRoutes, { ctx });
  app.get('/openapi.json', { schema: { hide: true } }, async () => openapi.doc);
  return app;
}

/** "HOST:PORT" (IPv6 as "[::1]:PORT") -> listen options. */
export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw new Error(`--api-listen: expected HOST:PORT, got ${JSON.stringify(s)}`);
  return { host: (m[1] ?? m[2])!, port };
}
