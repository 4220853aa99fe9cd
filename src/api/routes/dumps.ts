// Paged dumps of the big maps and the map catalog:
//   GET /v1/conntrack   conntrack entries, filtered by service, backend, client
//   GET /v1/affinity    sessionAffinity entries, same filters
//   GET /v1/maps        every datapath map: type, sizes, max and current entries
//   GET /v1/maps/{name} decoded entries of one map
//   GET /v1/stats       the datapath counters summed over CPUs
// Each page walks the kernel's batch cursor from where the last one stopped
// (../paging.ts); the agent holds one batch per request, whatever the map size.

import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { Static } from '@sinclair/typebox';
import * as abi from '../../maps/abi.js';
import { ApiError, ErrorBody, errors } from '../errors.js';
import { affinityWriter, cpusOf, ctWriter, mapEntryWriter, mapTypeName, readStats, type EntryWriter } from '../decode.js';
import { JsonText } from '../json-text.js';
import { START, countEntries, decodeContinue, encodeContinue, scan, type PagedMap, type Position } from '../paging.js';
import { AffinityPage, AffinityQuery, ConntrackPage, ConntrackQuery, MapEntry, MapList, MapPage, MapParams, MapQuery, StatList } from '../schemas.js';
import type { ApiContext } from '../app.js';

const DEFAULT_LIMIT = 500;
/** Entries one page may look at before it returns (short, with a continue token): bounds a filtered request's latency. */
export const SCAN_BUDGET = 65_536;

const pageErrors = { 400: ErrorBody, 404: ErrorBody, 503: ErrorBody, 500: ErrorBody };

export const dumpRoutes: FastifyPluginAsync<{ ctx: ApiContext }> = async (app, { ctx }) => {
  const map = (name: string): PagedMap => {
    const m = ctx.deps.maps?.get(name);
    if (!m) throw new ApiError(ctx.deps.maps ? errors.mapNotFound : errors.mapsUnavailable);
    return m;
  };

  const startAt = (token: string | undefined, name: string, filter: string): Position => {
    if (token === undefined) return START;
    const pos = decodeContinue(token, name, filter);
    if (!pos) throw new ApiError(errors.badContinue);
    return pos;
  };

  /**
   * One page as JSON text, written entry by entry while the batch is walked
   * (`write` puts each kept entry into the text: ../decode.ts) in a buffer
   * reused from page to page (../json-text.ts), so a page never exists as an
   * array of objects or as one string. The text is the page schema's
   * (`head` are the fields before `items`), as fastify would serialize the
   * same page object. A failure before the page is complete still answers
   * from the error catalog: nothing is sent until the walk is done.
   */
  async function page(
    reply: FastifyReply,
    name: string,
    q: { limit?: number; continue?: string },
    filter: string,
    write: EntryWriter,
    head = '',
  ): Promise<FastifyReply> {
    const m = map(name);
    const from = startAt(q.continue, name, filter);
    const out = new JsonText();
    try {
      out.text(`{${head}"items":[`);
      const r = await ctx.readMaps(() => scan(m, from, { limit: q.limit ?? DEFAULT_LIMIT, budget: SCAN_BUDGET }, (k, ka, v, va) => write(out, k, ka, v, va)));
      const next = r.next ? JSON.stringify(encodeContinue(name, r.next, filter)) : 'null';
      out.text(`],"continue":${next},"scanned":${r.scanned}}`);
    } catch (err) {
      out.discard();
      throw err;
    }
    return out.send(reply);
  }

  app.get<{ Querystring: Static<typeof ConntrackQuery> }>(
    '/v1/conntrack',
    {
      schema: {
        summary: 'conntrack entries, paged (limit + continue), filtered by service id, backend id or client address',
        tags: ['datapath'],
        querystring: ConntrackQuery,
        response: { 200: ConntrackPage, ...pageErrors },
      },
    },
    async (req, reply) => {
      const { service, backend, client } = req.query;
      const filter = JSON.stringify([service ?? null, backend ?? null, client ?? null]);
      const now = ctx.monotonicNs();
      return page(reply, abi.KBP_MAP_CT, req.query, filter, ctWriter({ service, backend, client }, now));
    },
  );

  app.get<{ Querystring: Static<typeof AffinityQuery> }>(
    '/v1/affinity',
    {
      schema: {
        summary: 'sessionAffinity (ClientIP) entries, paged, filtered by service id, backend id or client address',
        tags: ['datapath'],
        querystring: AffinityQuery,
        response: { 200: AffinityPage, ...pageErrors },
      },
    },
    async (req, reply) => {
      const { service, backend, client } = req.query;
      const filter = JSON.stringify([service ?? null, backend ?? null, client ?? null]);
      const now = ctx.monotonicNs();
      return page(reply, abi.KBP_MAP_AFFINITY, req.query, filter, affinityWriter({ service, backend, client }, now));
    },
  );

  app.get(
    '/v1/maps',
    { schema: { summary: 'the datapath maps: type, key/value size, max and current entries', tags: ['datapath'], response: { 200: MapList, 503: ErrorBody, 500: ErrorBody } } },
    async () => {
      const maps = ctx.deps.maps;
      if (!maps) throw new ApiError(errors.mapsUnavailable);
      const items = [];
      for (const [name, m] of [...maps].sort(([a], [b]) => a.localeCompare(b))) {
        const i = m.info;
        const array = i.type === 2 || i.type === 6;
        const entries = array ? i.maxEntries : await ctx.readMaps(() => countEntries(m));
        items.push({ name, type: mapTypeName(i.type), keySize: i.keySize, valueSize: i.valueSize, maxEntries: i.maxEntries, entries });
      }
      return { items };
    },
  );

  app.get<{ Params: Static<typeof MapParams>; Querystring: Static<typeof MapQuery> }>(
    '/v1/maps/:name',
    {
      schema: {
        summary: 'decoded entries of one map, paged (limit + continue)',
        tags: ['datapath'],
        params: MapParams,
        querystring: MapQuery,
        response: { 200: MapPage, ...pageErrors },
      },
    },
    async (req, reply) => {
      const name = req.params.name;
      const toJson = reply.compileSerializationSchema(MapEntry) as (entry: unknown) => string;
      return page(reply, name, req.query, '', mapEntryWriter(map(name), name, toJson), `"name":${JSON.stringify(name)},`);
    },
  );

  app.get(
    '/v1/stats',
    { schema: { summary: 'datapath counters (outcomes and drop reasons), summed over CPUs', tags: ['datapath'], response: { 200: StatList, 503: ErrorBody, 500: ErrorBody } } },
    async () => {
      const m = ctx.deps.maps?.get(abi.KBP_MAP_STATS);
      if (!m) throw new ApiError(errors.mapsUnavailable);
      return { cpus: cpusOf(m), items: await ctx.readMaps(() => readStats(m)) };
    },
  );
};
