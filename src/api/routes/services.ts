// GET /v1/services, /v1/services/{id}, /v1/backends: the programmed
// frontends with the backends of their slots, read from the kernel maps (not
// from the agent's memory), each with its drift from the desired state;
// GET /v1/drift: the comparison alone, with desired frontends the kernel lacks.

import type { FastifyPluginAsync } from 'fastify';
import type { Static } from '@sinclair/typebox';
import { ApiError, ErrorBody, errors } from '../errors.js';
import { compareDesired, readBackends, readFrontends } from '../frontends.js';
import { BackendList, Drift, Frontend, ServiceList, ServiceParams } from '../schemas.js';
import type { ApiContext } from '../app.js';

export const serviceRoutes: FastifyPluginAsync<{ ctx: ApiContext }> = async (app, { ctx }) => {
  const { deps } = ctx;
  const servicesView = async () => compareDesired(await ctx.readMaps(() => readFrontends(ctx.reader(), deps.frontend)), deps.desired?.());

  app.get(
    '/v1/services',
    {
      schema: {
        summary: 'frontends as the kernel holds them, with their slot backends and drift from the desired state',
        tags: ['services'],
        response: { 200: ServiceList, 503: ErrorBody, 500: ErrorBody },
      },
    },
    async () => (await servicesView()).items,
  );

  app.get(
    '/v1/drift',
    {
      schema: {
        summary: 'desired vs realized: frontends the kernel holds differently, and desired frontends it lacks',
        tags: ['services'],
        response: { 200: Drift, 503: ErrorBody, 500: ErrorBody },
      },
    },
    async () => {
      const v = await servicesView();
      return { desiredKnown: v.desiredKnown, inSync: v.inSync, drifting: v.items.filter((i) => i.drift.length > 0), missing: v.missing };
    },
  );

  app.get<{ Params: Static<typeof ServiceParams> }>(
    '/v1/services/:id',
    {
      schema: {
        summary: 'one frontend by id',
        tags: ['services'],
        params: ServiceParams,
        response: { 200: Frontend, 400: ErrorBody, 404: ErrorBody, 503: ErrorBody, 500: ErrorBody },
      },
    },
    async (req) => {
      const view = await servicesView();
      const item = view.items.find((f) => f.id === req.params.id);
      if (!item) throw new ApiError(errors.serviceNotFound);
      return item;
    },
  );

  app.get(
    '/v1/backends',
    {
      schema: {
        summary: 'every backend entry, with the frontends whose slots name it',
        tags: ['services'],
        response: { 200: BackendList, 503: ErrorBody, 500: ErrorBody },
      },
    },
    async () => ({ items: await ctx.readMaps(() => readBackends(ctx.reader())) }),
  );
};
