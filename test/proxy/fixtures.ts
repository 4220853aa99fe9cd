// Builders for Services and EndpointSlices used by the proxy tests.
//
// Address conventions (every proxy/agent/api test): ClusterIPs in
// 10.96.0.0/12 (10.96.0.x), pods 10.244.<node>.<pod> with node 1 = this node
// ("node-1"), node 2 = "node-2"; IPv6 examples in fd00::/8.

import type { Endpoint, EndpointPort, EndpointSlice, Service, ServicePort, ServiceSpec } from '../../src/k8s/types.js';
import type { DesiredState } from '../../src/proxy/desired.js';
import { backendStateName, svcFlagNames } from '../../src/maps/format.js';
import * as abi from '../../src/maps/abi.js';

export const NODE = 'node-1';

export function svc(name: string, clusterIP: string, ports: ServicePort[], spec: Partial<ServiceSpec> = {}, namespace = 'web'): Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace }, spec: { clusterIP, ports, ...spec } };
}

/** Endpoints given as "10.244.1.2" (ready) or objects. */
export function slice(
  name: string,
  service: string,
  ports: EndpointPort[],
  endpoints: Array<string | Endpoint>,
  extra: Partial<EndpointSlice> = {},
  namespace = 'web',
): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace, labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports,
    endpoints: endpoints.map((e) => (typeof e === 'string' ? { addresses: [e], nodeName: e.startsWith('10.244.1.') ? 'node-1' : 'node-2' } : e)),
    ...extra,
  };
}

/** The desired state as text lines: a golden-friendly dump. */
export function formatDesired(d: DesiredState, withProblems = true): string[] {
  const lines = [...d.frontends.values()].map(
    (f) =>
      `frontend ${f.key}${f.scope === abi.KBP_SCOPE_INTERNAL ? " (internal)" : ""} ${f.service.namespace}/${f.service.name}:${f.service.portName || '-'} flags=${svcFlagNames(f.flags)} affinity=${f.affinityTimeout}` +
      ` active=[${f.active.join(' ')}]` +
      (f.kept.length ? ` kept=[${f.kept.join(' ')}]` : '') +
      (f.sourceRanges ? ` ranges=[${f.sourceRanges.join(' ')}]` : ''),
  );
  lines.push(...[...d.backends.values()].map((b) => `backend ${b.key} ${backendStateName(b.state)}`).sort());
  lines.push(...[...d.vips].map((v) => `vip ${v}`));
  if (withProblems) lines.push(...d.problems.map((p) => `${p.level} ${p.object}: ${p.reason}`));
  return lines;
}
