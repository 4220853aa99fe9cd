// Desired datapath state from Kubernetes objects: pure functions, no I/O.
//
// This follows what kube-proxy computes for ClusterIP Services
// (pkg/proxy/servicechangetracker.go, endpointslicecache.go, topology.go):
// one frontend per ClusterIP x Service port (protocol included); backends
// from the EndpointSlices labelled kubernetes.io/service-name=<service> in the
// same namespace, matched to the Service port by port name and protocol (the
// slice carries the resolved target port number), merged across slices and
// de-duplicated by address. Which endpoints get a slot (new flows) is
// kube-proxy's CategorizeEndpoints for cluster-internal traffic:
//   - internalTrafficPolicy Cluster: ready endpoints, narrowed to this node's
//     zone when topology hints apply; none ready -> the serving+terminating
//     ones ("fallback to terminating", topology ignored);
//   - internalTrafficPolicy Local: this node's ready endpoints, else this
//     node's serving+terminating ones, else none (traffic dropped).
// Endpoints that are alive (ready or terminating) but got no slot are kept as
// backends without a slot, so flows already established to them go on: a
// terminating pod finishes its connections. IPv4 only for now.
//
// Traffic from outside the cluster (kube-proxy's "external" destinations) has
// frontends of its own, each with its own backend slots: the nodePort on every
// IPv4 address of this node (type NodePort and LoadBalancer), every
// status.loadBalancer.ingress IP (type LoadBalancer, ipMode VIP) and every
// spec.externalIPs address, on the Service port. externalTrafficPolicy Cluster
// gives them the same endpoints as the ClusterIP with internalTrafficPolicy
// Cluster; Local gives them only this node's (ready, else serving+terminating),
// and none at all on a node without any: the datapath drops those packets, as
// kube-proxy does, and the Service's healthCheckNodePort tells a load balancer
// to avoid the node (healthChecks). Only ClusterIPs get VIP markers: a node
// address or a load balancer IP carries other traffic on other ports.
//
// computeService() is the per-Service unit (the agent caches its result and
// recomputes only Services whose Service or slices changed); the assembler
// merges per-Service results into the maps' view: a frontend claimed by two
// Services goes to the first by namespace/name, a backend shared by several
// frontends is active when any of them has it ready. A Service with an invalid
// spec is skipped with a reason; the others are not affected.

import * as abi from '../maps/abi.js';
import type { Endpoint, EndpointSlice, Node, Service, ServicePort } from '../k8s/types.js';
import { SERVICE_NAME_LABEL, ZONE_LABEL, namespaceOf, nsName } from '../k8s/types.js';

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
  flags: number; // KBP_BACKEND_F_*: LOCAL when the endpoint runs on this node
}

export interface DesiredFrontend {
  /** "10.96.0.10:80/TCP#0": the frontend as the maps identify it (key and scope). */
  id: string;
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
  /** Backend keys without a slot, kept so established flows go on (terminating, or filtered out), sorted. */
  kept: string[];
  /** The backends of `active` and `kept`, with their state. */
  backends: DesiredBackend[];
  /** Load balancer frontends with loadBalancerSourceRanges (flag KBP_SVC_F_SOURCE_RANGES): the IPv4 ranges, "a.b.c.d/n", host bits cleared, sorted. */
  sourceRanges?: string[];
}

export interface DesiredProblem {
  level: 'debug' | 'info' | 'warn';
  object: string; // "Service ns/name" or "EndpointSlice ns/name"
  reason: string;
}

/** A healthCheckNodePort this node serves (externalTrafficPolicy Local), as kube-proxy's health server does. */
export interface DesiredHealthCheck {
  port: number;
  namespace: string;
  name: string;
  /** Ready endpoints on this node, summed over the Service's ports (kube-proxy's LocalReadyEndpoints). */
  localEndpoints: number;
}

/** What the maps should hold. Read-only views; the assembler owns them. */
export interface DesiredState {
  /** By frontend id; in Service order when computed in one go. */
  frontends: ReadonlyMap<string, DesiredFrontend>;
  backends: ReadonlyMap<string, DesiredBackend>;
  /** Every ClusterIP that has a frontend (not node, load balancer or external IPs): the datapath drops unknown ports on these. */
  vips: ReadonlySet<string>;
  problems: DesiredProblem[];
}

/** What changed since the previous state handed to the syncer (ids and keys). */
export interface DesiredChanges {
  frontends: Set<string>;
  backends: Set<string>;
  vips: Set<string>;
  /** Some Service's healthCheckNodePort or its local endpoint count changed (maybe). */
  healthChecks: boolean;
}

/** The node the agent runs on, as the proxy rules need it. */
export interface NodeContext {
  name: string;
  /** topology.kubernetes.io/zone of the Node, when known. */
  zone?: string;
  /** This node's IPv4 addresses (NodePort frontends), primary first; none: no NodePort frontends. */
  addresses?: string[];
}

/**
 * This node's IPv4 addresses: the given ones (--node-ip) if any, else the
 * Node's InternalIP then ExternalIP addresses, in the Node's order.
 */
export function nodeAddresses(node: Node | undefined, override: readonly string[] = []): string[] {
  if (override.length) return [...new Set(override)];
  const all = node?.status?.addresses ?? [];
  const out: string[] = [];
  for (const type of ['InternalIP', 'ExternalIP']) {
    for (const a of all) if (a.type === type && abi.isIPv4(a.address) && !out.includes(a.address)) out.push(a.address);
  }
  return out;
}

export function nodeContext(name: string, node?: Node, nodeIps: readonly string[] = []): NodeContext {
  const ctx: NodeContext = { name };
  const zone = node?.metadata.labels?.[ZONE_LABEL];
  if (zone) ctx.zone = zone;
  const addresses = nodeAddresses(node, nodeIps);
  if (addresses.length) ctx.addresses = addresses;
  return ctx;
}

// Keys are built with join(), not template literals: V8 represents a
// concatenation of 13 characters or more as a tree of cons strings, and a key
// kept in a map keeps that tree (flattening leaves the outer node behind), about
// 30 bytes per piece. join() allocates one flat string. At 100k backends,
// each keyed in several maps, that was 18 MB.
export function frontendKey(vip: string, port: number, proto: number): string {
  return [vip, ':', port, '/', abi.protoName(proto)].join('');
}

export const backendKeyOf = frontendKey;

export function frontendIdOf(key: string, scope: number): string {
  return [key, scope].join('#');
}

const ipv6Like = /^[0-9a-fA-F:.]*:[0-9a-fA-F:.]*$/;
const isPort = (x: unknown): x is number => Number.isInteger(x) && (x as number) >= 1 && (x as number) <= 65535;

interface CheckedPort {
  name: string;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  port: number;
  targetPort: number | string;
  nodePort: number | undefined; // type NodePort / LoadBalancer only
}

interface CheckedService {
  ref: { namespace: string; name: string };
  vips: string[];
  ports: CheckedPort[];
  affinityTimeout: number;
  nodeLocal: boolean;
  /** status.loadBalancer.ingress IPv4 addresses (type LoadBalancer). */
  lbIPs: string[];
  externalIPs: string[];
  /** loadBalancerSourceRanges, IPv4 ones normalized; empty: every client. */
  sourceRanges: string[];
  /** externalTrafficPolicy Local, on a Service reachable from outside. */
  externalLocal: boolean;
  healthCheckNodePort: number | undefined;
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
      let nodePort: number | undefined;
      if (type !== 'ClusterIP' && p.nodePort !== undefined) {
        if (!isPort(p.nodePort)) throw new Invalid(`${where}: nodePort ${JSON.stringify(p.nodePort)} is out of range 1-65535`);
        nodePort = p.nodePort;
      } else if (type === 'NodePort') {
        // The API server always allocates one; a manifest may lack it.
        problems.push({ level: 'warn', object, reason: `${where}: type NodePort without a nodePort: no NodePort frontend` });
      }
      names.add(name);
      numbers.add(num);
      ports.push({ name, protocol, port: p.port, targetPort: tp, nodePort });
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
    const etp = spec.externalTrafficPolicy ?? 'Cluster';
    if (etp !== 'Cluster' && etp !== 'Local') throw new Invalid(`unknown externalTrafficPolicy ${JSON.stringify(etp)}`);

    const externalIPs = addressList(spec.externalIPs, 'externalIPs', object, problems);
    const lbIPs: string[] = [];
    const sourceRanges: string[] = [];
    if (type === 'LoadBalancer') {
      for (const ing of svc.status?.loadBalancer?.ingress ?? []) {
        if (!ing.ip) continue; // hostname-only ingress: nothing to program
        if (ing.ipMode === 'Proxy') {
          problems.push({ level: 'debug', object, reason: `load balancer ingress ${ing.ip} has ipMode Proxy: traffic arrives for the node, not for it` });
          continue;
        }
        lbIPs.push(...addressList([ing.ip], 'status.loadBalancer.ingress', object, problems));
      }
      sourceRanges.push(...sourceRangeList(spec.loadBalancerSourceRanges, object, problems));
    }
    const external = type === 'NodePort' || type === 'LoadBalancer' || externalIPs.length > 0;
    const externalLocal = external && etp === 'Local';
    const hc = spec.healthCheckNodePort;
    if (hc !== undefined && !isPort(hc)) throw new Invalid(`healthCheckNodePort ${JSON.stringify(hc)} is out of range 1-65535`);

    return {
      ref: { namespace: namespaceOf(svc), name: svc.metadata.name },
      vips,
      ports,
      affinityTimeout,
      nodeLocal: itp === 'Local',
      lbIPs: [...new Set(lbIPs)],
      sourceRanges,
      externalIPs,
      externalLocal,
      healthCheckNodePort: externalLocal && type !== 'ClusterIP' ? hc : undefined,
    };
  } catch (err) {
    if (err instanceof Invalid) return skip('warn', `invalid spec, Service skipped: ${err.message}`);
    throw err;
  }
}


/** The IPv4 addresses of a list; IPv6 ones skipped with a debug note, anything else invalid. */
function addressList(list: readonly string[] | undefined, field: string, object: string, problems: DesiredProblem[]): string[] {
  const out: string[] = [];
  for (const ip of list ?? []) {
    if (abi.isIPv4(ip)) {
      if (!out.includes(ip)) out.push(ip);
    } else if (typeof ip === 'string' && ipv6Like.test(ip)) problems.push({ level: 'debug', object, reason: `IPv6 ${field} ${ip} skipped (IPv4 only)` });
    else throw new Invalid(`${field}: ${JSON.stringify(ip)} is not an IP address`);
  }
  return out;
}

/**
 * loadBalancerSourceRanges as the datapath takes them: IPv4 CIDRs with host
 * bits cleared, sorted, de-duplicated. Like kube-proxy, an entry that does
 * not parse is skipped with a warning and IPv6 ones are left to the other
 * family; if no IPv4 range is left, the load balancer IPs take every client.
 */
function sourceRangeList(list: readonly string[] | undefined, object: string, problems: DesiredProblem[]): string[] {
  const out = new Set<string>();
  for (const cidr of list ?? []) {
    if (typeof cidr === 'string' && ipv6Like.test(cidr.split('/')[0]!)) {
      problems.push({ level: 'debug', object, reason: `IPv6 loadBalancerSourceRange ${cidr} skipped (IPv4 only)` });
      continue;
    }
    try {
      const k = abi.srcRangeKeyOf(0, String(cidr));
      out.add(`${k.addr}/${k.prefixlen - 32}`);
    } catch {
      problems.push({ level: 'warn', object, reason: `loadBalancerSourceRange ${JSON.stringify(cidr)} is not a CIDR: skipped` });
    }
  }
  return [...out].sort((a, b) => abi.ipv4ToNumber(a.split('/')[0]!) - abi.ipv4ToNumber(b.split('/')[0]!) || a.localeCompare(b));
}

/** One endpoint of one Service port, merged across slices. */
interface EndpointInfo {
  ip: string;
  port: number;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  local: boolean;
  zones: readonly string[] | undefined; // hints.forZones; undefined = no hints
}

// kube-proxy's reading of the conditions: ready unset = ready, serving unset =
// ready's value, terminating unset = false.
function conditionsOf(ep: Endpoint): { ready: boolean; serving: boolean; terminating: boolean } {
  const c = ep.conditions ?? {};
  const ready = c.ready ?? true;
  return { ready, serving: c.serving ?? ready, terminating: c.terminating ?? false };
}

/**
 * The endpoints of one Service port across the Service's slices, keyed by
 * "ip:port". A slice port without a number is skipped, as kube-proxy does. An
 * address listed in two slices (a pod moving between slices) is one endpoint:
 * a ready entry wins over a not-ready one, then a local one over a remote one.
 */
function endpointsFor(slices: readonly EndpointSlice[], port: CheckedPort, node: NodeContext, problems: DesiredProblem[]): Map<string, EndpointInfo> {
  const out = new Map<string, EndpointInfo>();
  for (const slice of slices) {
    const sp = (slice.ports ?? []).find((p) => (p.name ?? '') === port.name && (p.protocol ?? 'TCP') === port.protocol);
    if (!sp) continue;
    if (!isPort(sp.port)) {
      const why = sp.port === undefined || sp.port === null ? 'has no number' : `has an invalid number ${JSON.stringify(sp.port)} (1-65535)`;
      problems.push({ level: 'debug', object: `EndpointSlice ${nsName(slice)}`, reason: `port ${JSON.stringify(port.name)} ${why}: skipped` });
      continue;
    }
    const target = sp.port;
    for (const ep of slice.endpoints) {
      const ip = ep.addresses[0];
      if (ip === undefined) continue;
      if (!abi.isIPv4(ip)) {
        problems.push({ level: 'debug', object: `EndpointSlice ${nsName(slice)}`, reason: `endpoint address ${JSON.stringify(ip)} is not IPv4: skipped` });
        continue;
      }
      const cond = conditionsOf(ep);
      const zones = ep.hints?.forZones?.length ? ep.hints.forZones.map((z) => z.name) : undefined;
      const info: EndpointInfo = { ip, port: target, ...cond, local: ep.nodeName === node.name, zones };
      const k = `${ip}:${target}`;
      const prev = out.get(k);
      if (!prev || (!prev.ready && info.ready) || (prev.ready === info.ready && !prev.local && info.local)) out.set(k, info);
    }
  }
  return out;
}

/**
 * Topology hints apply when every ready endpoint carries zone hints and at
 * least one of them names this node's zone (kube-proxy's topologyModeFromHints:
 * the EndpointSlice controller sets hints only for Services that ask for them,
 * via trafficDistribution or the topology-mode annotation).
 */
function useZoneHints(eps: readonly EndpointInfo[], node: NodeContext): boolean {
  if (!node.zone) return false;
  let forZone = false;
  for (const e of eps) {
    if (!e.ready) continue;
    if (!e.zones) return false;
    if (e.zones.includes(node.zone)) forZone = true;
  }
  return forZone;
}

/** Which endpoints get slots (new flows); see the file comment. */
function slotEndpoints(eps: readonly EndpointInfo[], nodeLocal: boolean, node: NodeContext): EndpointInfo[] {
  if (nodeLocal) {
    const ready = eps.filter((e) => e.local && e.ready);
    return ready.length ? ready : eps.filter((e) => e.local && e.serving && e.terminating);
  }
  const zone = useZoneHints(eps, node) ? node.zone! : undefined;
  const ready = eps.filter((e) => e.ready && (zone === undefined || e.zones!.includes(zone)));
  return ready.length ? ready : eps.filter((e) => e.serving && e.terminating);
}

const byAddress = (a: { ip: string; port: number }, b: { ip: string; port: number }): number =>
  abi.ipv4ToNumber(a.ip) - abi.ipv4ToNumber(b.ip) || a.port - b.port;

/** The frontends one Service asks for, before frontends claimed by two Services are settled. */
export interface ServiceDesired {
  service: string; // "namespace/name"
  frontends: DesiredFrontend[];
  problems: DesiredProblem[];
  healthCheck?: DesiredHealthCheck;
}

/**
 * One Service with its slices (those labelled with its name, any address
 * type) -> its frontends and their backends.
 */
export function computeService(svc: Service, slices: readonly EndpointSlice[], node: NodeContext): ServiceDesired {
  const problems: DesiredProblem[] = [];
  const out: ServiceDesired = { service: nsName(svc), frontends: [], problems };
  const c = checkService(svc, problems);
  if (!c) return out;
  const usable: EndpointSlice[] = [];
  for (const s of slices) {
    if (s.addressType === 'IPv4') usable.push(s);
    else problems.push({ level: 'debug', object: `EndpointSlice ${nsName(s)}`, reason: `addressType ${s.addressType} skipped (IPv4 only)` });
  }
  usable.sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
  const object = `Service ${out.service}`;

  const affinity = c.affinityTimeout ? abi.KBP_SVC_F_AFFINITY : 0;
  let localReady = 0;
  for (const port of c.ports) {
    if (port.protocol === 'SCTP') {
      problems.push({ level: 'info', object, reason: `port ${port.port}/SCTP skipped (TCP and UDP only)` });
      continue;
    }
    const proto = port.protocol === 'TCP' ? abi.IPPROTO_TCP : abi.IPPROTO_UDP;
    const eps = [...endpointsFor(usable, port, node, problems).values()].sort(byAddress);
    localReady += eps.filter((e) => e.local && e.ready).length;
    const backend = (e: EndpointInfo): DesiredBackend => ({
      key: backendKeyOf(e.ip, e.port, proto),
      ip: e.ip,
      port: e.port,
      proto,
      state: e.ready ? abi.KBP_BACKEND_ACTIVE : abi.KBP_BACKEND_TERMINATING,
      flags: e.local ? abi.KBP_BACKEND_F_LOCAL : 0,
    });
    /** Slots (new flows) and kept backends (established flows only) for one traffic policy. */
    const choose = (nodeLocal: boolean) => {
      let slots = slotEndpoints(eps, nodeLocal, node);
      if (slots.length > MAX_SLOTS) {
        problems.push({ level: 'warn', object, reason: `port ${port.port}: ${slots.length} endpoints for new flows, only the first ${MAX_SLOTS} are used` });
        slots = slots.slice(0, MAX_SLOTS);
      }
      const inSlot = new Set(slots);
      const slotBackends = slots.map(backend);
      // Established flows keep their backend while its endpoint is listed:
      // kube-proxy's conntrack entries go on DNATing TCP to a pod that turned
      // not-ready (a failed readiness probe), so its entry stays too. UDP
      // flows to a not-ready endpoint are flushed, as kube-proxy does, by
      // deleting the backend (only terminating ones stay).
      const keptBackends = eps.filter((e) => !inSlot.has(e) && (e.ready || e.terminating || proto === abi.IPPROTO_TCP)).map(backend);
      return { active: slotBackends.map((b) => b.key), kept: keptBackends.map((b) => b.key), backends: [...slotBackends, ...keptBackends] };
    };
    const frontend = (vip: string, fport: number, flags: number, chosen: ReturnType<typeof choose>, scope: number = abi.KBP_SCOPE_EXTERNAL): DesiredFrontend => {
      const key = frontendKey(vip, fport, proto);
      return {
        id: frontendIdOf(key, scope),
        key,
        vip,
        port: fport,
        proto,
        scope,
        flags: flags | affinity,
        affinityTimeout: c.affinityTimeout,
        service: { ...c.ref, portName: port.name },
        ...chosen,
      };
    };
    const internal = choose(c.nodeLocal);
    const hasExternal = (port.nodePort !== undefined && node.addresses?.length) || c.lbIPs.length || c.externalIPs.length;
    // externalTrafficPolicy Cluster uses what internalTrafficPolicy Cluster would.
    const ext = !hasExternal ? undefined : c.externalLocal ? choose(true) : c.nodeLocal ? choose(false) : internal;
    // kube-proxy REJECTs when no endpoint is reachable under any policy the
    // port uses ("has no endpoints"), and drops when only a Local policy
    // filtered them out: the datapath answers the former with ICMP port unreachable.
    const reject = !internal.active.length && !ext?.active.length ? abi.KBP_SVC_F_REJECT : 0;
    for (const vip of c.vips) out.frontends.push(frontend(vip, port.port, abi.KBP_SVC_F_CLUSTER_IP | reject, internal));
    if (!ext) continue;
    // externalTrafficPolicy Cluster: kube-proxy masquerades every external
    // client (KUBE-EXT-* → KUBE-MARK-MASQ), local backend or not.
    // externalTrafficPolicy Local: pods on this node are short-circuited to
    // the cluster-wide endpoints (kube-proxy's "pod traffic for external
    // destinations"), which the frontend's internal-scope entry holds.
    const extFlags = reject | (c.externalLocal ? abi.KBP_SVC_F_INTERNAL_SCOPE : abi.KBP_SVC_F_MASQUERADE);
    const forPods = c.externalLocal ? (c.nodeLocal ? choose(false) : internal) : undefined;
    const external = (vip: string, fport: number, kind: number) => {
      const fes = [frontend(vip, fport, kind | extFlags, ext)];
      if (forPods) fes.push(frontend(vip, fport, kind | reject, forPods, abi.KBP_SCOPE_INTERNAL));
      for (const f of fes) {
        if (kind === abi.KBP_SVC_F_LOAD_BALANCER && c.sourceRanges.length) {
          f.flags |= abi.KBP_SVC_F_SOURCE_RANGES;
          f.sourceRanges = c.sourceRanges;
        }
        out.frontends.push(f);
      }
    };
    if (port.nodePort !== undefined) {
      for (const ip of node.addresses ?? []) external(ip, port.nodePort, abi.KBP_SVC_F_NODE_PORT);
    }
    for (const ip of c.lbIPs) external(ip, port.port, abi.KBP_SVC_F_LOAD_BALANCER);
    for (const ip of c.externalIPs) external(ip, port.port, abi.KBP_SVC_F_EXTERNAL_IP);
  }
  if (c.healthCheckNodePort !== undefined) {
    out.healthCheck = { port: c.healthCheckNodePort, ...c.ref, localEndpoints: localReady };
  }
  return out;
}

/** The address a frontend gives a VIP marker: ClusterIPs only (see the file comment). */
function markerOf(f: DesiredFrontend | undefined): string | undefined {
  return f && f.flags & abi.KBP_SVC_F_CLUSTER_IP ? f.vip : undefined;
}

interface BackendRefs {
  refs: number;
  active: number; // refs that see the endpoint ready
  /** The merged backend (active when any frontend has it ready): what the maps get. */
  merged: DesiredBackend;
}

/**
 * The merged backends as a ReadonlyMap, read through the reference counts
 * (one map of 100k entries instead of two); iteration order is that of a
 * backend's first appearance either way.
 */
class MergedBackends implements ReadonlyMap<string, DesiredBackend> {
  constructor(private readonly refs: ReadonlyMap<string, BackendRefs>) {}
  get size(): number {
    return this.refs.size;
  }
  get(key: string): DesiredBackend | undefined {
    return this.refs.get(key)?.merged;
  }
  has(key: string): boolean {
    return this.refs.has(key);
  }
  keys(): MapIterator<string> {
    return this.refs.keys();
  }
  *values(): MapIterator<DesiredBackend> {
    for (const r of this.refs.values()) yield r.merged;
  }
  *entries(): MapIterator<[string, DesiredBackend]> {
    for (const [k, r] of this.refs) yield [k, r.merged];
  }
  [Symbol.iterator](): MapIterator<[string, DesiredBackend]> {
    return this.entries();
  }
  forEach(fn: (value: DesiredBackend, key: string, map: ReadonlyMap<string, DesiredBackend>) => void, thisArg?: unknown): void {
    for (const [k, r] of this.refs) fn.call(thisArg, r.merged, k, this);
  }
}

/**
 * Per-Service results -> the maps' view, kept up to date one Service at a
 * time: set() a Service's result (or undefined when it is gone) and only the
 * frontends, backends and VIPs it touches are revisited. Every change is
 * recorded in `changes` until takeChanges().
 */
export class DesiredAssembler {
  private readonly services = new Map<string, ServiceDesired>();
  /** Frontend id -> Services asking for it, sorted: the first one owns it. */
  private readonly claims = new Map<string, string[]>();
  private readonly frontendMap = new Map<string, DesiredFrontend>();
  private readonly backendRefs = new Map<string, BackendRefs>();
  private readonly backendMap = new MergedBackends(this.backendRefs);
  private readonly vipCount = new Map<string, number>();
  private readonly vipSet = new Set<string>();
  private readonly withHealthCheck = new Set<string>();
  private changes: DesiredChanges = { frontends: new Set(), backends: new Set(), vips: new Set(), healthChecks: false };

  /** The current view (live: it follows later set() calls). */
  get state(): DesiredState {
    return { frontends: this.frontendMap, backends: this.backendMap, vips: this.vipSet, problems: [] };
  }

  get serviceCount(): number {
    return this.services.size;
  }

  result(service: string): ServiceDesired | undefined {
    return this.services.get(service);
  }

  /** Changes since the last call. */
  takeChanges(): DesiredChanges {
    const c = this.changes;
    this.changes = { frontends: new Set(), backends: new Set(), vips: new Set(), healthChecks: false };
    return c;
  }

  /** Frontends the Service asks for but another Service owns. */
  lost(service: string): Array<{ frontend: DesiredFrontend; owner: string }> {
    const sd = this.services.get(service);
    if (!sd) return [];
    const out: Array<{ frontend: DesiredFrontend; owner: string }> = [];
    for (const f of sd.frontends) {
      const owner = this.claims.get(f.id)?.[0];
      if (owner !== undefined && owner !== service) out.push({ frontend: f, owner });
    }
    return out;
  }

  /** healthCheckNodePorts to serve, by port (the first Service by name wins a port two ask for). */
  healthChecks(): Map<number, DesiredHealthCheck> {
    const out = new Map<number, DesiredHealthCheck>();
    for (const k of [...this.withHealthCheck].sort()) {
      const hc = this.services.get(k)?.healthCheck;
      if (hc && !out.has(hc.port)) out.set(hc.port, hc);
    }
    return out;
  }

  set(service: string, next: ServiceDesired | undefined): void {
    const prev = this.services.get(service);
    if (prev === next) return;
    if (prev?.healthCheck || next?.healthCheck) this.changes.healthChecks = true;
    if (next?.healthCheck) this.withHealthCheck.add(service);
    else this.withHealthCheck.delete(service);
    const ids = new Set<string>();
    for (const f of prev?.frontends ?? []) ids.add(f.id);
    for (const f of next?.frontends ?? []) ids.add(f.id);
    const nextIds = new Set((next?.frontends ?? []).map((f) => f.id));
    if (next) this.services.set(service, next);
    else this.services.delete(service);
    for (const id of ids) {
      let list = this.claims.get(id);
      const has = list?.includes(service) ?? false;
      if (nextIds.has(id) && !has) {
        if (!list) this.claims.set(id, (list = []));
        list.push(service);
        list.sort();
      } else if (!nextIds.has(id) && has) {
        list!.splice(list!.indexOf(service), 1);
        if (list!.length === 0) this.claims.delete(id);
      }
      const owner = this.claims.get(id)?.[0];
      const after = owner === undefined ? undefined : this.services.get(owner)!.frontends.find((f) => f.id === id);
      this.replaceFrontend(id, after);
    }
  }

  private replaceFrontend(id: string, after: DesiredFrontend | undefined): void {
    const before = this.frontendMap.get(id);
    if (before === after) return;
    this.changes.frontends.add(id);
    if (after) this.frontendMap.set(id, after);
    else this.frontendMap.delete(id);
    if (after) for (const b of after.backends) this.ref(b, 1);
    if (before) for (const b of before.backends) this.ref(b, -1);
    const markerBefore = markerOf(before);
    const markerAfter = markerOf(after);
    if (markerBefore !== markerAfter) {
      if (markerAfter) this.vip(markerAfter, 1);
      if (markerBefore) this.vip(markerBefore, -1);
    }
  }

  private ref(b: DesiredBackend, d: 1 | -1): void {
    let r = this.backendRefs.get(b.key);
    const fresh = !r;
    if (!r) this.backendRefs.set(b.key, (r = { refs: 0, active: 0, merged: b }));
    r.refs += d;
    if (b.state === abi.KBP_BACKEND_ACTIVE) r.active += d;
    if (r.refs === 0) {
      this.backendRefs.delete(b.key);
      if (!fresh) this.changes.backends.add(b.key);
      return;
    }
    const state = r.active > 0 ? abi.KBP_BACKEND_ACTIVE : abi.KBP_BACKEND_TERMINATING;
    if (fresh || r.merged.state !== state) {
      // Desired backends are never mutated: share the frontend's object when its state is the merged one.
      r.merged = b.state === state ? b : { key: b.key, ip: b.ip, port: b.port, proto: b.proto, state, flags: b.flags };
      this.changes.backends.add(b.key);
    }
  }

  private vip(vip: string, d: 1 | -1): void {
    const n = (this.vipCount.get(vip) ?? 0) + d;
    if (n === 0) {
      this.vipCount.delete(vip);
      this.vipSet.delete(vip);
      this.changes.vips.add(vip);
    } else {
      if (!this.vipCount.has(vip)) {
        this.vipSet.add(vip);
        this.changes.vips.add(vip);
      }
      this.vipCount.set(vip, n);
    }
  }
}

/** The service a slice belongs to ("namespace/name"), or undefined without the label. */
export function sliceService(s: EndpointSlice): string | undefined {
  const svc = s.metadata.labels?.[SERVICE_NAME_LABEL];
  return svc ? [namespaceOf(s), svc].join('/') : undefined;
}

/** Services + EndpointSlices (+ this node) -> frontends and backends, in one go. */
export function computeDesired(services: readonly Service[], slices: readonly EndpointSlice[], node: string | NodeContext): DesiredState {
  const ctx = typeof node === 'string' ? { name: node } : node;
  const problems: DesiredProblem[] = [];
  const slicesBySvc = new Map<string, EndpointSlice[]>();
  for (const s of slices) {
    const k = sliceService(s);
    if (!k) {
      problems.push({ level: 'debug', object: `EndpointSlice ${nsName(s)}`, reason: `no ${SERVICE_NAME_LABEL} label: not used` });
      continue;
    }
    const list = slicesBySvc.get(k) ?? [];
    list.push(s);
    slicesBySvc.set(k, list);
  }
  const sorted = [...services].sort((a, b) => (nsName(a) < nsName(b) ? -1 : nsName(a) > nsName(b) ? 1 : 0));
  const asm = new DesiredAssembler();
  for (const svc of sorted) asm.set(nsName(svc), computeService(svc, slicesBySvc.get(nsName(svc)) ?? [], ctx));
  for (const svc of sorted) {
    const k = nsName(svc);
    problems.push(...asm.result(k)!.problems, ...conflictProblems(asm, k));
  }
  const st = asm.state;
  const vips = new Set([...st.vips].sort((a, b) => abi.ipv4ToNumber(a) - abi.ipv4ToNumber(b)));
  return { frontends: st.frontends, backends: st.backends, vips, problems };
}

/** "frontend … already belongs to Service …" for each frontend the Service lost. */
export function conflictProblems(asm: DesiredAssembler, service: string): DesiredProblem[] {
  return asm.lost(service).map(({ frontend, owner }) => ({
    level: 'warn' as const,
    object: `Service ${service}`,
    reason: `frontend ${frontend.key} already belongs to Service ${owner}: port skipped`,
  }));
}
