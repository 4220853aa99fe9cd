// Projections: the fields of a Service, EndpointSlice or Node that the proxy
// reads (for status: only load balancer ingress IPs and node addresses), copied into a fresh object in a fixed order. Objects arrive from the
// API (list pages and watch events as plain JSON) or from manifests; projecting them all the same way gives one
// shape, drops what the proxy never reads (managedFields, most of status, …) and makes
// the JSON text of a projection a fingerprint: an update that changes only
// resourceVersion, managedFields or an unrelated annotation has the same
// fingerprint as before and is dropped by the change trackers.
//
// Memory: at 10k Services x 10 endpoints the slices' projections are most of
// what the agent keeps, so what many endpoints repeat — node names, zones,
// the conditions (ready/serving/terminating) and a slice's port list — is
// one frozen object or string shared by all of them (a bounded table of such
// values), arrays are allocated at their exact length, and a slice keeps only
// the label the proxy reads (kubernetes.io/service-name: the EndpointSlice
// controller copies every label of the Service onto its slices).
//
// Projections do not validate: src/proxy/desired.ts judges a Service's spec
// and skips it with a reason. They only refuse what has no usable identity
// (no metadata.name), returning undefined.

import type { Endpoint, EndpointConditions, EndpointPort, EndpointSlice, LoadBalancerIngress, Node, ObjectMeta, Service, ServicePort, ServiceSpec } from './types.js';
import { SERVICE_NAME_LABEL } from './types.js';

type Raw = Record<string, unknown>;
const obj = (x: unknown): Raw | undefined => (typeof x === 'object' && x !== null && !Array.isArray(x) ? (x as Raw) : undefined);
const arr = (x: unknown): unknown[] | undefined => (Array.isArray(x) ? x : undefined);
const str = (x: unknown): string | undefined => (typeof x === 'string' ? x : undefined);
/** Copy only defined fields, in the order given (stable fingerprints). */
function pick<T>(entries: Array<[string, unknown]>): T {
  const out: Raw = {};
  for (const [k, v] of entries) if (v !== undefined && v !== null) out[k] = v;
  return out as T;
}
function strMap(x: unknown): Record<string, string> | undefined {
  const o = obj(x);
  if (!o) return undefined;
  const keys = Object.keys(o).sort();
  const out: Record<string, string> = {};
  for (const k of keys) if (typeof o[k] === 'string') out[k] = o[k] as string;
  return out;
}

/** Distinct values a shared table holds at most; past that, new values are kept unshared (correct, only bigger). */
const MAX_SHARED = 4096;

/** One frozen copy per distinct value, keyed by a string that identifies it. */
class Shared<T> {
  private readonly values = new Map<string, T>();
  get(key: string, make: () => T): T {
    let v = this.values.get(key);
    if (v === undefined) {
      v = make();
      if (this.values.size < MAX_SHARED) this.values.set(key, v);
    }
    return v;
  }
}

const sharedStrings = new Shared<string>();
const sharedConditions = new Shared<EndpointConditions>();
const sharedPorts = new Shared<EndpointPort[]>();
const shareString = (x: unknown): unknown => (typeof x === 'string' ? sharedStrings.get(x, () => x) : x);
const isFlag = (x: unknown) => x === undefined || x === null || typeof x === 'boolean';

// Annotations the proxy reads (topology mode, for logs and future use).
const KEPT_ANNOTATIONS = ['service.kubernetes.io/topology-mode', 'service.kubernetes.io/topology-aware-hints'];

/** withLabels: every label, or only the ones named. */
function meta(raw: Raw, withLabels: boolean | readonly string[], annotations: readonly string[] = []): ObjectMeta | undefined {
  const m = obj(raw.metadata);
  const name = str(m?.name);
  if (!m || !name) return undefined;
  let ann: Record<string, string> | undefined;
  const a = obj(m.annotations);
  for (const k of annotations) if (a && typeof a[k] === 'string') (ann ??= {})[k] = a[k] as string;
  return pick<ObjectMeta>([
    ['name', name],
    ['namespace', str(m.namespace)],
    ['labels', withLabels === true ? strMap(m.labels) : withLabels ? someLabels(m.labels, withLabels) : undefined],
    ['annotations', ann],
  ]);
}

export function projectService(x: unknown): Service | undefined {
  const raw = obj(x);
  const metadata = raw && meta(raw, false, KEPT_ANNOTATIONS);
  if (!raw || !metadata) return undefined;
  const s = obj(raw.spec) ?? {};
  const ports = arr(s.ports)?.map((p) => {
    const o = obj(p) ?? {};
    return pick<ServicePort>([
      ['name', o.name],
      ['protocol', o.protocol],
      ['port', o.port],
      ['targetPort', o.targetPort],
      ['nodePort', o.nodePort],
    ]);
  });
  const aff = obj(obj(s.sessionAffinityConfig)?.clientIP);
  const spec = pick<ServiceSpec>([
    ['type', s.type],
    ['clusterIP', s.clusterIP],
    ['clusterIPs', arr(s.clusterIPs)],
    ['ipFamilies', arr(s.ipFamilies)],
    ['ports', ports],
    ['sessionAffinity', s.sessionAffinity],
    ['sessionAffinityConfig', aff ? { clientIP: pick([['timeoutSeconds', aff.timeoutSeconds]]) } : undefined],
    ['externalIPs', arr(s.externalIPs)],
    ['externalName', s.externalName],
    ['externalTrafficPolicy', s.externalTrafficPolicy],
    ['internalTrafficPolicy', s.internalTrafficPolicy],
    ['trafficDistribution', s.trafficDistribution],
    ['healthCheckNodePort', s.healthCheckNodePort],
    ['loadBalancerSourceRanges', arr(s.loadBalancerSourceRanges)],
  ]);
  // Only the load balancer's ingress addresses: conditions and the rest of status change without consequence.
  const ingress = arr(obj(obj(raw.status)?.loadBalancer)?.ingress)?.map((i) => {
    const o = obj(i) ?? {};
    return pick<LoadBalancerIngress>([
      ['ip', str(o.ip)],
      ['hostname', str(o.hostname)],
      ['ipMode', str(o.ipMode)],
    ]);
  });
  const svc: Service = { apiVersion: 'v1', kind: 'Service', metadata, spec };
  if (ingress?.length) svc.status = { loadBalancer: { ingress } };
  return svc;
}

/** The named labels that are strings, or undefined when there is none. */
function someLabels(x: unknown, names: readonly string[]): Record<string, string> | undefined {
  const o = obj(x);
  let out: Record<string, string> | undefined;
  for (const k of names) if (typeof o?.[k] === 'string') (out ??= {})[k] = o[k] as string;
  return out;
}

function conditionsOf(c: Raw): EndpointConditions {
  const make = () => Object.freeze(pick<EndpointConditions>([['ready', c.ready], ['serving', c.serving], ['terminating', c.terminating]]));
  // Booleans (the API's only values) are shared; anything else is kept as it came, for desired.ts to judge.
  if (!isFlag(c.ready) || !isFlag(c.serving) || !isFlag(c.terminating)) return make();
  return sharedConditions.get(`${c.ready}|${c.serving}|${c.terminating}`, make);
}

function projectEndpoint(x: unknown): Endpoint {
  const e = obj(x) ?? {};
  const c = obj(e.conditions);
  const h = obj(e.hints);
  const names = (v: unknown) => arr(v)?.map((z) => ({ name: String(obj(z)?.name ?? '') }));
  const addresses = arr(e.addresses) ?? [];
  // targetRef (the pod) is not read: the address is what gets programmed.
  return pick<Endpoint>([
    // slice(), not filter(): an array of exactly its length (filter's grows in steps).
    ['addresses', addresses.every((a) => typeof a === 'string') ? addresses.slice() : addresses.filter((a): a is string => typeof a === 'string')],
    ['conditions', c ? conditionsOf(c) : undefined],
    ['nodeName', shareString(e.nodeName)],
    ['zone', shareString(e.zone)],
    ['hints', h ? pick([['forZones', names(h.forZones)], ['forNodes', names(h.forNodes)]]) : undefined],
  ]);
}

export function projectEndpointSlice(x: unknown): EndpointSlice | undefined {
  const raw = obj(x);
  const metadata = raw && meta(raw, [SERVICE_NAME_LABEL]);
  if (!raw || !metadata) return undefined;
  const projected = arr(raw.ports)?.map((p) => {
    const o = obj(p) ?? {};
    return Object.freeze(
      pick<EndpointPort>([
        ['name', o.name],
        ['protocol', o.protocol],
        ['port', o.port],
      ]),
    );
  });
  // Most slices of a cluster list the same ports: one frozen list for all of them.
  const ports = projected && sharedPorts.get(JSON.stringify(projected), () => Object.freeze(projected) as EndpointPort[]);
  return pick<EndpointSlice>([
    ['apiVersion', 'discovery.k8s.io/v1'],
    ['kind', 'EndpointSlice'],
    ['metadata', metadata],
    ['addressType', str(raw.addressType) ?? ''],
    ['endpoints', (arr(raw.endpoints) ?? []).map(projectEndpoint)],
    ['ports', ports],
  ]);
}

export function projectNode(x: unknown): Node | undefined {
  const raw = obj(x);
  const metadata = raw && meta(raw, true);
  if (!raw || !metadata) return undefined;
  // Addresses only: a Node's status also carries heartbeats and conditions that change all the time.
  const addresses = arr(obj(raw.status)?.addresses)
    ?.map((a) => obj(a) ?? {})
    .filter((a) => typeof a.type === 'string' && typeof a.address === 'string')
    .map((a) => ({ type: a.type as string, address: a.address as string }));
  const node: Node = { apiVersion: 'v1', kind: 'Node', metadata };
  if (addresses?.length) node.status = { addresses };
  return node;
}
