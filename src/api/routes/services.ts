// GET /v1/services: the programmed frontends with the backends of their
// slots, read from the kernel maps (not from the agent's memory).

import type { FastifyPluginAsync } from 'fastify';
import { ApiError, errorSchema, errors } from '../errors.js';
import { readFrontends } from '../frontends.js';
import type { ApiDeps } from '../app.js';

const nullable = (type: string) => ({ type: [type, 'null'] });

const frontendSchema = {
  type: 'object',
  required: ['id', 'vip', 'port', 'protocol', 'scope', 'namespace', 'name', 'portName', 'flags', 'affinityTimeout', 'backends'],
  properties: {
    id: { type: 'integer', description: 'frontend (service) id, key of revnat' },
    vip: { type: 'string' },
    port: { type: 'integer' },
    protocol: { type: 'string' },
    scope: { type: 'integer' },
    namespace: nullable('string'),
    name: nullable('string'),
    portName: nullable('string'),
    flags: { type: 'array', items: { type: 'string' } },
    affinityTimeout: { type: 'integer' },
    backends: {
      type: 'array',
      items: {
        type: 'object',
        required: ['slot', 'id', 'ip', 'port', 'protocol', 'state'],
        properties: {
          slot: { type: 'integer' },
          id: { type: 'integer' },
          ip: nullable('string'),
          port: nullable('integer'),
          protocol: nullable('string'),
          state: nullable('string'),
        },
      },
    },
  },
} as const;

export const serviceRoutes: FastifyPluginAsync<{ deps: ApiDeps }> = async (app, { deps }) => {
  app.get('/v1/services', { schema: { response: { 200: { type: 'array', items: frontendSchema }, 503: errorSchema, 500: errorSchema } } }, async (req) => {
    try {
      return await readFrontends(deps.reader, deps.frontend);
    } catch (err) {
      req.log.error({ err }, 'reading the maps failed');
      throw new ApiError(errors.mapsUnavailable);
    }
  });
};
