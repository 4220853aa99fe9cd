// The agent's REST API (fastify). Plugins register in a fixed order: error
// handling first, then routes. Minimal for now: health and programmed
// frontends; metrics, map dumps and authentication come later.

import Fastify, { type FastifyInstance } from 'fastify';
import type { MapReader } from '../maps/writer.js';
import type { ProgrammedFrontend } from '../proxy/syncer.js';
import type { Logger } from '../log.js';
import { ApiError, errors } from './errors.js';
import { healthRoutes } from './routes/health.js';
import { serviceRoutes } from './routes/services.js';

export interface ApiDeps {
  nodeName: string;
  /** Reads the datapath maps (the agent's BpfMapWriter; a FakeMapWriter in tests). */
  reader: MapReader;
  /** Service name of a frontend id, from the syncer. */
  frontend: (id: number) => ProgrammedFrontend | undefined;
  /** ready: maps programmed and devices attached; lastUpdated: last successful sync. */
  health: () => { ready: boolean; lastUpdated: Date | undefined };
  now?: () => Date;
  log?: Logger;
}

export async function buildApi(deps: ApiDeps): Promise<FastifyInstance> {
  const app = Fastify({ logger: false });

  app.setErrorHandler((err, req, reply) => {
    if (err instanceof ApiError) return reply.code(err.body.statusCode).send(err.body);
    const e = err as { validation?: unknown; statusCode?: number; message: string };
    if (e.validation) return reply.code(400).send({ ...errors.badRequest, message: e.message });
    deps.log?.error('api request failed', { method: req.method, url: req.url, err });
    return reply.code(500).send(errors.internal);
  });
  app.setNotFoundHandler((_req, reply) => reply.code(404).send(errors.notFound));
  if (deps.log) {
    const log = deps.log;
    app.addHook('onResponse', async (req, reply) => {
      log.debug('api request', { method: req.method, url: req.url, status: reply.statusCode, ms: reply.elapsedTime.toFixed(1) });
    });
  }

  await app.register(healthRoutes, { deps });
  await app.register(serviceRoutes, { deps });
  return app;
}

/** "HOST:PORT" (IPv6 as "[::1]:PORT") -> listen options. */
export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw new Error(`--api-listen: expected HOST:PORT, got ${JSON.stringify(s)}`);
  return { host: (m[1] ?? m[2])!, port };
}
