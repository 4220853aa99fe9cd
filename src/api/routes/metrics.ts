// GET /metrics: Prometheus text exposition (see ../metrics.ts for the series).

import type { FastifyPluginAsync } from 'fastify';
import { Type } from '@sinclair/typebox';
import { ErrorBody } from '../errors.js';
import type { ApiContext } from '../app.js';

export const metricsRoutes: FastifyPluginAsync<{ ctx: ApiContext }> = async (app, { ctx }) => {
  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics: syncs, map-full errors, map entries, datapath counters by reason',
        tags: ['metrics'],
        produces: ['text/plain'],
        response: { 200: Type.String({ description: 'Prometheus text format 0.0.4' }), 500: ErrorBody },
      },
    },
    async (_req, reply) => {
      await ctx.metrics.refresh();
      const text = await ctx.metrics.registry.metrics();
      reply.type(ctx.metrics.registry.contentType);
      return text;
    },
  );
};
