// GET /healthz, shaped like kube-proxy's: 200 once the agent has programmed
// the maps and attached its devices, with the time of the last successful
// sync; 503 before that.

import type { FastifyPluginAsync } from 'fastify';
import { errorSchema } from '../errors.js';
import type { ApiDeps } from '../app.js';

const healthSchema = {
  type: 'object',
  required: ['lastUpdated', 'currentTime', 'nodeName'],
  properties: {
    lastUpdated: { type: ['string', 'null'], description: 'time of the last successful sync (RFC 3339)' },
    currentTime: { type: 'string' },
    nodeName: { type: 'string' },
  },
} as const;

export const healthRoutes: FastifyPluginAsync<{ deps: ApiDeps }> = async (app, { deps }) => {
  app.get('/healthz', { schema: { response: { 200: healthSchema, 503: healthSchema, 500: errorSchema } } }, async (_req, reply) => {
    const h = deps.health();
    const now = deps.now?.() ?? new Date();
    reply.code(h.ready && h.lastUpdated ? 200 : 503);
    return { lastUpdated: h.lastUpdated?.toISOString() ?? null, currentTime: now.toISOString(), nodeName: deps.nodeName };
  });
};
