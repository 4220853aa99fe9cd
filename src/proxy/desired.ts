// Desired datapath state from Kubernetes objects: pure functions, no I/O.
//
// This follows what kube-proxy computes for ClusterIP Services
// (pkg/proxy/servicechangetracker.go, endpointslicecache.go): one frontend
// per ClusterIP x Service port (protocol included); backends from the
// EndpointSlices labelled kubernetes.io/service-name=<service> in the same
// namespace, matched to the Service port by port name (the slice carries the
// resolved target port number), merged across slices and de-duplicated by
// address. Endpoints are used only when ready (unset counts as ready);
// terminating ones are kept as TERMINATING backends so established flows can
// finish. IPv4 only for now. A Service with an invalid spec is skipped with a
// reason; the others are not affected.

import * as abi from '../maps/abi.js';
import type { EndpointSlice, Service, ServicePort } from '../k8s/types.js';
import { SERVICE_NAME_LABEL, namespaceOf, nsName } from '../k8s/types.js';

export const DEFAULT_AFFINITY_TIMEOUT = 10800; // seconds, the API default for ClientIP
const MAX_AFFINITY_TIMEOUT = 86400;
const MAX_SLOTS = 0xffff; // kbp_svc_value.count is a __u16

export interface ServiceRef {
  namespace: string;
  name: string;
  portName: string; // "" when unnamed
}

export interface DesiredBackend {
  key: string; // "10.244.1.5:8080/TCP": backends are shared by every frontend that uses them
  ip: string;
  port: number;
  proto: number;
  state: number; // KBP_BACKEND_*
}

export interface DesiredFrontend {
  key: string; // "10.96.0.10:80/TCP"
  vip: string;
  port: number;
  proto: number;
  scope: number; // KBP_SCOPE_*
  flags: number; // KBP_SVC_F_*
  affinityTimeout: number; // seconds, 0 = no affinity
  service: ServiceRef;
  /** Backend keys chosen for new flows (slots 1..n), sorted. */
  active: string[];
  /** Backend keys kept only for flows already established, sorted. */
  terminating: string[];
}

export interface DesiredProblem {
  level: 'debug' | 'info' | 'warn';
  object: string; // "Service ns/name" or "EndpointSlice ns/name"
  reason: string;
}

export interface DesiredState {
  frontends: DesiredFrontend[]; // sorted by service, then port order, then address
  backends: Map<string, DesiredBackend>;
  /** Every ClusterIP that has a frontend: the datapath drops unknown ports on these. */
  vips: string[];
  problems: DesiredProblem[];
}

export function frontendKey(vip: string, port: number, proto: number): string {
  return `${vip}:${port}/${abi.protoName(proto)}`;
}

export const backendKeyOf = frontendKey;

const ipv6Like = /^[0-9a-fA-F:.]*:[0-9a-fA-F:.]*$/;
const isPort = (x: unknown): x is number => Number.isInteger(x) && (x as number) >= 1 && (x as number) <= 65535;

interface CheckedPort {
  name: string;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  port: number;
  targetPort: number | string;
}

interface CheckedService {
  ref: { namespace: string; name: string };
  vips: string[];
  ports: CheckedPort[];
  affinityTimeout: number;
  nodeLocal: boolean;
}

class Invalid extends Error {}

/**
 * Validate the parts of a Service the proxy uses, as the API server would.
 * Returns null (with a problem recorded) when the Service is not proxied.
 */
function checkService(svc: Service, problems: DesiredProblem[]): CheckedService | null {
  const object = `Service ${nsName(svc)}`;
  const skip = (level: DesiredProblem['level'], reason: string): null => {
    problems.push({ level, object, reason });
    return null;
  };
  const spec = svc.spec ?? {};
  try {
    const type = spec.type ?? 'ClusterIP';
    if (type === 'ExternalName') return skip('debug', 'type ExternalName: not proxied');
    if (type !== 'ClusterIP' && type !== 'NodePort' && type !== 'LoadBalancer') throw new Invalid(`unknown type ${JSON.stringify(type)}`);
    if (spec.clusterIP === 'None' || spec.clusterIPs?.[0] === 'None') return skip('debug', 'headless (clusterIP None): not proxied');

    const ips = spec.clusterIPs?.length ? spec.clusterIPs : spec.clusterIP ? [spec.clusterIP] : [];
    if (ips.length === 0) return skip('warn', 'no clusterIP set: nothing to proxy');
    if (spec.clusterIP && spec.clusterIPs?.length && spec.clusterIPs[0] !== spec.clusterIP) {
      throw new Invalid(`clusterIP ${spec.clusterIP} differs from clusterIPs[0] ${spec.clusterIPs[0]}`);
    }
    const vips: string[] = [];
    for (const ip of ips) {
      if (abi.isIPv4(ip)) vips.push(ip);
      else if (ipv6Like.test(ip)) problems.push({ level: 'debug', object, reason: `IPv6 clusterIP ${ip} skipped (IPv4 only)` });
      else throw new Invalid(`clusterIP ${JSON.stringify(ip)} is not an IP address`);
    }
    if (new Set(vips).size !== vips.length) throw new Invalid(`duplicate clusterIPs ${vips.join(',')}`);
    if (vips.length === 0) return null;

    const rawPorts = spec.ports ?? [];
    if (rawPorts.length === 0) throw new Invalid('no ports');
    const ports: CheckedPort[] = [];
    const names = new Set<string>();
    const numbers = new Set<string>();
    rawPorts.forEach((p: ServicePort, i) => {
      const where = `ports[${i}]${p.name ? ` (${p.name})` : ''}`;
      if (p.name !== undefined && typeof p.name !== 'string') throw new Invalid(`${where}: name is not a string`);
      const name = p.name ?? '';
      const protocol = p.protocol ?? 'TCP';
      if (protocol !== 'TCP' && protocol !== 'UDP' && protocol !== 'SCTP') throw new Invalid(`${where}: unknown protocol ${JSON.stringify(protocol)}`);
      if (!isPort(p.port)) throw new Invalid(`${where}: port ${JSON.stringify(p.port)} is out of range 1-65535`);
      const tp = p.targetPort ?? p.port;
      if (typeof tp === 'number' ? !isPort(tp) : typeof tp !== 'string' || tp === '') {
        throw new Invalid(`${where}: targetPort ${JSON.stringify(p.targetPort)} is neither a port number 1-65535 nor a port name`);
      }
      if (names.has(name)) throw new Invalid(name ? `duplicate port name ${JSON.stringify(name)}` : 'several ports without a name');
      const num = `${p.port}/${protocol}`;
      if (numbers.has(num)) throw new Invalid(`duplicate port ${num}`);
      names.add(name);
      numbers.add(num);
      ports.push({ name, protocol, port: p.port, targetPort: tp });
    });

    let affinityTimeout = 0;
    const aff = spec.sessionAffinity ?? 'None';
    if (aff === 'ClientIP') {
      affinityTimeout = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT;
      if (!Number.isInteger(affinityTimeout) || affinityTimeout < 1 || affinityTimeout > MAX_AFFINITY_TIMEOUT) {
        throw new Invalid(`sessionAffinityConfig.clientIP.timeoutSeconds ${JSON.stringify(affinityTimeout)} is out of range 1-${MAX_AFFINITY_TIMEOUT}`);
      }
    } else if (aff !== 'None') {
      throw new Invalid(`unknown sessionAffinity ${JSON.stringify(aff)}`);
    }

    const itp = spec.internalTrafficPolicy ?? 'Cluster';
    if (itp !== 'Cluster' && itp !== 'Local') throw new Invalid(`unknown internalTrafficPolicy ${JSON.stringify(itp)}`);

    return { ref: { namespace: namespaceOf(svc), name: svc.metadata.name }, vips, ports, affinityTimeout, nodeLocal: itp === 'Local' };
  } catch (err) {
    if (err instanceof Invalid) return skip('warn', `invalid spec, Service skipped: ${err.message}`);
    throw err;
  }
}

interface EndpointChoice {
  ip: string;
  port: number;
  ready: boolean;
}

/**
 * The endpoints of one Service port across the Service's slices, keyed by
 * "ip:port". An address listed ready in one slice and not in another (a pod
 * moving between slices) counts as ready.
 */
function endpointsFor(
  slices: readonly EndpointSlice[],
  port: CheckedPort,
  nodeLocal: boolean,
  nodeName: string,
  problems: DesiredProblem[],
): Map<string, EndpointChoice> {
  const out = new Map<string, EndpointChoice>();
  for (const slice of slices) {
    const sp = (slice.ports ?? []).find((p) => (p.name ?? '') === port.name && (p.protocol ?? 'TCP') === port.protocol);
    if (!sp) continue;
    let target: number;
    if (isPort(sp.port)) target = sp.port;
    else if (typeof port.targetPort === 'number') target = port.targetPort;
    else {
      problems.push({ level: 'debug', object: `EndpointSlice ${nsName(slice)}`, reason: `port ${JSON.stringify(port.name)} has no number and targetPort ${port.targetPort} is a name: skipped` });
      continue;
    }
    for (const ep of slice.endpoints) {
      const ip = ep.addresses[0];
      if (ip === undefined) continue;
      if (!abi.isIPv4(ip)) {
        problems.push({ level: 'debug', object: `EndpointSlice ${nsName(slice)}`, reason: `endpoint address ${JSON.stringify(ip)} is not IPv4: skipped` });
        continue;
      }
      if (nodeLocal && ep.nodeName !== nodeName) continue;
      const ready = ep.conditions?.ready ?? true;
      const terminating = ep.conditions?.terminating ?? false;
      if (!ready && !terminating) continue;
      const k = `${ip}:${target}`;
      const prev = out.get(k);
      out.set(k, { ip, port: target, ready: ready || (prev?.ready ?? false) });
    }
  }
  return out;
}

const byAddress = (a: { ip: string; port: number }, b: { ip: string; port: number }): number =>
  abi.ipv4ToNumber(a.ip) - abi.ipv4ToNumber(b.ip) || a.port - b.port;

/** Services + EndpointSlices (+ this node's name) -> frontends and backends. */
export function computeDesired(services: readonly Service[], slices: readonly EndpointSlice[], nodeName: string): DesiredState {
  const problems: DesiredProblem[] = [];

  const slicesBySvc = new Map<string, EndpointSlice[]>();
  for (const s of slices) {
    const svc = s.metadata.labels?.[SERVICE_NAME_LABEL];
    if (!svc) {
      problems.push({ level: 'debug', object: `EndpointSlice ${nsName(s)}`, reason: `no ${SERVICE_NAME_LABEL} label: not used` });
      continue;
    }
    if (s.addressType !== 'IPv4') {
      problems.push({ level: 'debug', object: `EndpointSlice ${nsName(s)}`, reason: `addressType ${s.addressType} skipped (IPv4 only)` });
      continue;
    }
    const k = `${namespaceOf(s)}/${svc}`;
    const list = slicesBySvc.get(k) ?? [];
    list.push(s);
    slicesBySvc.set(k, list);
  }
  for (const list of slicesBySvc.values()) list.sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));

  const sorted = [...services].sort((a, b) => (nsName(a) < nsName(b) ? -1 : nsName(a) > nsName(b) ? 1 : 0));
  const frontends: DesiredFrontend[] = [];
  const owner = new Map<string, string>(); // frontend key -> Service ns/name
  const backends = new Map<string, DesiredBackend>();
  const vips = new Set<string>();

  for (const svc of sorted) {
    const c = checkService(svc, problems);
    if (!c) continue;
    const svcSlices = slicesBySvc.get(`${c.ref.namespace}/${c.ref.name}`) ?? [];
    for (const port of c.ports) {
      if (port.protocol === 'SCTP') {
        problems.push({ level: 'info', object: `Service ${nsName(svc)}`, reason: `port ${port.port}/SCTP skipped (TCP and UDP only)` });
        continue;
      }
      const proto = port.protocol === 'TCP' ? abi.IPPROTO_TCP : abi.IPPROTO_UDP;
      const eps = [...endpointsFor(svcSlices, port, c.nodeLocal, nodeName, problems).values()].sort(byAddress);
      let ready = eps.filter((e) => e.ready);
      if (ready.length > MAX_SLOTS) {
        problems.push({ level: 'warn', object: `Service ${nsName(svc)}`, reason: `port ${port.port}: ${ready.length} ready endpoints, only the first ${MAX_SLOTS} are used` });
        ready = ready.slice(0, MAX_SLOTS);
      }
      const keep = eps.filter((e) => !e.ready);
      const keyOf = (e: EndpointChoice): string => {
        const key = backendKeyOf(e.ip, e.port, proto);
        const prev = backends.get(key);
        const state = e.ready ? abi.KBP_BACKEND_ACTIVE : abi.KBP_BACKEND_TERMINATING;
        // Shared by several frontends: active for any of them means active.
        if (!prev || (prev.state !== abi.KBP_BACKEND_ACTIVE && state === abi.KBP_BACKEND_ACTIVE)) backends.set(key, { key, ip: e.ip, port: e.port, proto, state });
        return key;
      };
      for (const vip of c.vips) {
        const key = frontendKey(vip, port.port, proto);
        const taken = owner.get(key);
        if (taken) {
          problems.push({ level: 'warn', object: `Service ${nsName(svc)}`, reason: `frontend ${key} already belongs to Service ${taken}: port skipped` });
          continue;
        }
        owner.set(key, nsName(svc));
        vips.add(vip);
        frontends.push({
          key,
          vip,
          port: port.port,
          proto,
          scope: abi.KBP_SCOPE_EXTERNAL,
          flags: abi.KBP_SVC_F_CLUSTER_IP | (c.affinityTimeout ? abi.KBP_SVC_F_AFFINITY : 0),
          affinityTimeout: c.affinityTimeout,
          service: { ...c.ref, portName: port.name },
          active: ready.map(keyOf),
          terminating: keep.map(keyOf),
        });
      }
    }
  }
  return {
    frontends,
    backends,
    vips: [...vips].sort((a, b) => abi.ipv4ToNumber(a) - abi.ipv4ToNumber(b)),
    problems,
  };
}
