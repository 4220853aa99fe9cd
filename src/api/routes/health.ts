// GET /healthz, shaped like kube-proxy's (lastUpdated/currentTime, 200 or
// 503): healthy once the agent has programmed the maps and attached its
// devices, and as long as the last successful sync is recent (the runner
// re-syncs at least every --sync-period, so an old lastUpdated means the sync
// loop is stuck or failing). GET /readyz: the first sync and attach happened.

import type { FastifyPluginAsync } from 'fastify';
import { ErrorBody } from '../errors.js';
import { Health, Ready } from '../schemas.js';
import type { ApiContext } from '../app.js';

export const healthRoutes: FastifyPluginAsync<{ ctx: ApiContext }> = async (app, { ctx }) => {
  const { deps } = ctx;
  app.get(
    '/healthz',
    {
      schema: {
        summary: 'kube-proxy-compatible health: 503 before the first sync and when the last successful sync is older than the stale limit',
        tags: ['health'],
        response: { 200: Health, 503: Health, 500: ErrorBody },
      },
    },
    async (_req, reply) => {
      const h = deps.health();
      const now = ctx.now();
      const fresh = !!h.lastUpdated && now.getTime() - h.lastUpdated.getTime() <= ctx.healthStaleMs;
      const healthy = h.ready && fresh;
      reply.code(healthy ? 200 : 503);
      return { lastUpdated: h.lastUpdated?.toISOString() ?? null, currentTime: now.toISOString(), nodeName: deps.nodeName, nodeEligible: true };
    },
  );

  app.get(
    '/readyz',
    { schema: { summary: 'readiness: maps programmed and pod devices attached', tags: ['health'], response: { 200: Ready, 503: Ready, 500: ErrorBody } } },
    async (_req, reply) => {
      const h = deps.health();
      reply.code(h.ready ? 200 : 503);
      return { ready: h.ready, lastUpdated: h.lastUpdated?.toISOString() ?? null, currentTime: ctx.now().toISOString() };
    },
  );
};
