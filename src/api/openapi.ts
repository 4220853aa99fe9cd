// The OpenAPI 3.1 document, generated from the route schemas as the routes
// register (an onRoute hook), so it cannot drift from what fastify validates
// and serializes. 3.1 because its schema dialect is JSON Schema itself: the
// TypeBox schemas go in unchanged (nullable fields are `anyOf [T, null]`).

import type { FastifyInstance, RouteOptions } from 'fastify';
import { AUTHZ_GROUP, AUTHZ_RESOURCE, AUTHZ_VERB } from './auth.js';

declare module 'fastify' {
  interface FastifySchema {
    /** OpenAPI operation fields carried on the route schema. */
    summary?: string;
    tags?: string[];
    produces?: string[];
    /** Leave the route out of the document. */
    hide?: boolean;
  }
}

export interface OpenApiDoc {
  openapi: string;
  info: { title: string; version: string; description: string };
  paths: Record<string, Record<string, unknown>>;
  components: Record<string, unknown>;
}

/** JSON Schema without TypeBox's symbol keys (and a deep copy). */
const plain = (s: unknown): Record<string, unknown> => JSON.parse(JSON.stringify(s)) as Record<string, unknown>;

function parameters(where: 'path' | 'query', schema: unknown): unknown[] {
  if (!schema) return [];
  const s = plain(schema) as { properties?: Record<string, Record<string, unknown>>; required?: string[] };
  return Object.entries(s.properties ?? {}).map(([name, p]) => {
    const { description, ...rest } = p;
    return { name, in: where, required: where === 'path' || (s.required ?? []).includes(name), ...(description ? { description } : {}), schema: rest };
  });
}

const statusText: Record<string, string> = {
  '200': 'OK',
  '400': 'invalid parameters or continue token',
  '401': 'no or invalid bearer token',
  '403': 'the token\'s user lacks the permission',
  '404': 'not found',
  '429': 'rate limited',
  '500': 'internal error (details are logged, never returned)',
  '503': 'unavailable (maps unreadable, not yet synced, or the API server unreachable for a token review)',
};

export class OpenApiCollector {
  readonly doc: OpenApiDoc;

  constructor(version: string, opts: { auth: boolean }) {
    this.doc = {
      openapi: '3.1.0',
      info: {
        title: 'kbp agent API',
        version,
        description:
          'Read-only view of the kube-bpf-proxy datapath on one node: health, metrics, and the BPF maps decoded into Service terms. ' +
          'On a loopback listener no authentication is used; on any other address every route but /healthz and /readyz requires ' +
          `"Authorization: Bearer TOKEN", checked with TokenReview, and the token's user needs verb "${AUTHZ_VERB}" on resource ` +
          `"${AUTHZ_RESOURCE}" of API group "${AUTHZ_GROUP}" (resource name: the node name), checked with SubjectAccessReview.`,
      },
      paths: {},
      components: {
        securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'a Kubernetes token (e.g. kubectl create token)' } },
      },
    };
    if (opts.auth) (this.doc as unknown as Record<string, unknown>).security = [{ bearer: [] }];
  }

  /** Record a route (called from onRoute). HEAD routes fastify adds by itself are skipped. */
  add(route: RouteOptions): void {
    const methods = (Array.isArray(route.method) ? route.method : [route.method]).filter((m) => m !== 'HEAD');
    const schema = (route.schema ?? {}) as Record<string, unknown>;
    if (schema.hide || methods.length === 0) return;
    const p = route.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
    const produces = (schema.produces as string[] | undefined)?.[0] ?? 'application/json';
    const responses: Record<string, unknown> = {};
    for (const [code, s] of Object.entries((schema.response ?? {}) as Record<string, unknown>)) {
      const type = code === '200' ? produces : 'application/json';
      responses[code] = { description: statusText[code] ?? code, content: { [type]: { schema: plain(s) } } };
    }
    const op: Record<string, unknown> = {
      operationId: `${methods[0]!.toLowerCase()}${p.replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
      summary: schema.summary,
      tags: schema.tags,
      parameters: [...parameters('path', schema.params), ...parameters('query', schema.querystring)],
      responses,
    };
    if (route.url === '/healthz' || route.url === '/readyz') op.security = [];
    const item = (this.doc.paths[p] ??= {});
    for (const m of methods) item[m.toLowerCase()] = op;
  }

  /** Collect every route registered on `app` from now on. */
  attach(app: FastifyInstance): void {
    app.addHook('onRoute', (route) => this.add(route));
  }
}
