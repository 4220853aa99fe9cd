// Route schemas (TypeBox, i.e. JSON Schema): fastify validates params and
// query with them and serializes responses through them, and the OpenAPI
// document (/openapi.json) is generated from the same objects.

import { Type, type TSchema } from '@sinclair/typebox';

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

export const IPv4 = Type.String({ pattern: '^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$', description: 'IPv4 address' });

// ---------------------------------------------------------------- health

export const Health = Type.Object(
  {
    lastUpdated: Nullable(Type.String({ description: 'time of the last successful sync (RFC 3339)' })),
    currentTime: Type.String(),
    nodeName: Type.String(),
    nodeEligible: Type.Boolean({ description: 'kube-proxy compatibility: this node serves traffic' }),
  },
  { title: 'Health' },
);

export const Ready = Type.Object(
  {
    ready: Type.Boolean({ description: 'maps programmed and pod devices attached' }),
    lastUpdated: Nullable(Type.String()),
    currentTime: Type.String(),
  },
  { title: 'Ready' },
);

// ---------------------------------------------------------------- services and backends

export const SlotBackend = Type.Object(
  {
    slot: Type.Integer({ minimum: 1 }),
    id: Type.Integer({ description: 'backend id; 0 when the slot entry itself is missing' }),
    ip: Nullable(Type.String()),
    port: Nullable(Type.Integer()),
    protocol: Nullable(Type.String()),
    state: Nullable(Type.String({ description: 'active or terminating; null: no backend entry (drift or a sync in flight)' })),
  },
  { title: 'SlotBackend' },
);

export const Frontend = Type.Object(
  {
    id: Type.Integer({ description: 'frontend (service) id, key of revnat and kept in conntrack' }),
    vip: Type.String(),
    port: Type.Integer(),
    protocol: Type.String(),
    scope: Type.Integer({ description: '0 external, 1 internal' }),
    namespace: Nullable(Type.String({ description: 'null: an id this agent has not synced (e.g. left by an earlier run)' })),
    name: Nullable(Type.String()),
    portName: Nullable(Type.String()),
    flags: Type.Array(Type.String(), { description: 'cluster-ip, node-port, external-ip, load-balancer, affinity' }),
    affinityTimeout: Type.Integer({ description: 'sessionAffinity ClientIP timeout in seconds, 0 = none' }),
    backends: Type.Array(SlotBackend, { description: 'slots 1..count: what new flows can pick' }),
    drift: Type.Array(Type.String(), { description: 'how the kernel differs from the desired state; empty when it matches' }),
  },
  { title: 'Frontend' },
);

export const MissingFrontend = Type.Object(
  {
    vip: Type.String(),
    port: Type.Integer(),
    protocol: Type.String(),
    scope: Type.Integer(),
    namespace: Type.String(),
    name: Type.String(),
    portName: Type.String(),
  },
  { title: 'MissingFrontend' },
);

export const ServiceList = Type.Array(Frontend, { title: 'ServiceList' });

export const Drift = Type.Object(
  {
    desiredKnown: Type.Boolean({ description: 'false before the agent computed a desired state: nothing is compared' }),
    inSync: Nullable(Type.Boolean({ description: 'no frontend drifts and none is missing; null when the desired state is unknown' })),
    drifting: Type.Array(Frontend, { description: 'frontends the kernel holds differently from the desired state (or not desired at all)' }),
    missing: Type.Array(MissingFrontend, { description: 'desired frontends the kernel does not hold' }),
  },
  { title: 'Drift' },
);

export const ServiceParams = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 0xffffffff, description: 'frontend id' }) });

export const BackendEntry = Type.Object(
  {
    id: Type.Integer(),
    ip: Type.String(),
    port: Type.Integer(),
    protocol: Type.String(),
    state: Type.String(),
    frontends: Type.Array(Type.Integer(), { description: 'frontend ids whose slots name it; empty: kept for established flows only' }),
  },
  { title: 'Backend' },
);

export const BackendList = Type.Object({ items: Type.Array(BackendEntry) }, { title: 'BackendList' });

// ---------------------------------------------------------------- paged dumps

export const PageQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 5000, default: 500, description: 'most items in this page' })),
  continue: Type.Optional(Type.String({ maxLength: 512, description: 'token from the previous page' })),
};

const PageFields = {
  continue: Nullable(Type.String({ description: 'pass as ?continue= for the next page; null at the end. A page may hold fewer than limit items (filters) and still continue.' })),
  scanned: Type.Integer({ description: 'map entries looked at for this page' }),
};

export const ConntrackQuery = Type.Object({
  ...PageQuery,
  service: Type.Optional(Type.Integer({ minimum: 1, maximum: 0xffffffff, description: 'frontend id' })),
  backend: Type.Optional(Type.Integer({ minimum: 1, maximum: 0xffffffff, description: 'backend id' })),
  client: Type.Optional(IPv4),
});

export const ConntrackEntry = Type.Object(
  {
    direction: Type.Union([Type.Literal('forward'), Type.Literal('reply')]),
    protocol: Type.String(),
    src: Type.String({ description: 'ADDR:PORT as the packet carries it' }),
    dst: Type.String(),
    client: Type.String(),
    serviceId: Type.Integer(),
    backendId: Type.Integer(),
    flags: Type.Array(Type.String()),
    tcpFlags: Type.Array(Type.String()),
    ageSeconds: Type.Number(),
    idleSeconds: Type.Number(),
  },
  { title: 'ConntrackEntry' },
);

export const ConntrackPage = Type.Object({ items: Type.Array(ConntrackEntry), ...PageFields }, { title: 'ConntrackPage' });

export const AffinityQuery = Type.Object({
  ...PageQuery,
  service: Type.Optional(Type.Integer({ minimum: 1, maximum: 0xffffffff })),
  backend: Type.Optional(Type.Integer({ minimum: 1, maximum: 0xffffffff })),
  client: Type.Optional(IPv4),
});

export const AffinityEntry = Type.Object(
  {
    client: Type.String(),
    serviceId: Type.Integer(),
    backendId: Type.Integer(),
    slot: Type.Integer(),
    idleSeconds: Type.Number(),
  },
  { title: 'AffinityEntry' },
);

export const AffinityPage = Type.Object({ items: Type.Array(AffinityEntry), ...PageFields }, { title: 'AffinityPage' });

// ---------------------------------------------------------------- maps and stats

export const MapInfo = Type.Object(
  {
    name: Type.String(),
    type: Type.String({ description: 'hash, lru_hash, percpu_array, ...' }),
    keySize: Type.Integer(),
    valueSize: Type.Integer({ description: 'per CPU for per-CPU maps' }),
    maxEntries: Type.Integer(),
    entries: Type.Integer({ description: 'current entries (counted batch by batch; array maps: max entries)' }),
  },
  { title: 'MapInfo' },
);

export const MapList = Type.Object({ items: Type.Array(MapInfo) }, { title: 'MapList' });

export const MapParams = Type.Object({ name: Type.String({ pattern: '^[A-Za-z0-9_]{1,15}$' }) });

export const MapQuery = Type.Object(PageQuery);

const Decoded = Type.Record(Type.String(), Type.Unknown(), { description: 'fields by their C name (bpf/include/kbp/abi.h); u64 as decimal strings' });

export const MapEntry = Type.Object({ key: Decoded, value: Decoded });

export const MapPage = Type.Object(
  {
    name: Type.String(),
    items: Type.Array(MapEntry),
    ...PageFields,
  },
  { title: 'MapPage' },
);

export const Stat = Type.Object(
  { index: Type.Integer(), name: Type.String(), packets: Type.Integer(), bytes: Type.Integer() },
  { title: 'Stat' },
);

export const StatList = Type.Object({ cpus: Type.Integer(), items: Type.Array(Stat) }, { title: 'StatList' });
