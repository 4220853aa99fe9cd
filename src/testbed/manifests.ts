// Service and EndpointSlice manifests for `kbp agent --manifests DIR`, written
// the way a controller would publish them (discovery.k8s.io/v1, the
// kubernetes.io/service-name label, one slice per Service), and read back from
// examples/ so the demo and the tests share the seed example's addresses.
//
// Files are replaced atomically (write a temp file beside, rename over), so the
// agent's file watch never reads half a document.

import { randomBytes } from 'node:crypto';
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';

export type Protocol = 'TCP' | 'UDP';

export interface ServicePortSpec {
  name: string;
  /** The Service (frontend) port. */
  port: number;
  /** The port the pods listen on. */
  targetPort: number;
  protocol: Protocol;
  /** type NodePort / LoadBalancer: the port on every node address. */
  nodePort?: number;
}

export interface EndpointSpec {
  ip: string;
  /** The pod behind this address (targetRef); also the testbed pod's name. */
  podName: string;
  /** conditions.ready; true when omitted. */
  ready?: boolean;
  nodeName?: string;
}

export interface ServiceSpec {
  name: string;
  namespace: string;
  clusterIP: string;
  ports: ServicePortSpec[];
  endpoints: EndpointSpec[];
  /** Default ClusterIP. */
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  externalTrafficPolicy?: 'Cluster' | 'Local';
  healthCheckNodePort?: number;
  externalIPs?: string[];
  /** status.loadBalancer.ingress IPs, as a cloud controller would publish them. */
  loadBalancerIPs?: string[];
  loadBalancerSourceRanges?: string[];
}

/** The Service and its EndpointSlice as plain Kubernetes objects. */
export function serviceObjects(spec: ServiceSpec): [Record<string, unknown>, Record<string, unknown>] {
  const service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: spec.name, namespace: spec.namespace, labels: { app: spec.name } },
    spec: {
      type: spec.type ?? 'ClusterIP',
      clusterIP: spec.clusterIP,
      clusterIPs: [spec.clusterIP],
      ipFamilies: ['IPv4'],
      selector: { app: spec.name },
      ports: spec.ports.map((p) => ({ name: p.name, port: p.port, targetPort: p.targetPort, protocol: p.protocol, ...(p.nodePort ? { nodePort: p.nodePort } : {}) })),
      ...(spec.externalTrafficPolicy ? { externalTrafficPolicy: spec.externalTrafficPolicy } : {}),
      ...(spec.healthCheckNodePort ? { healthCheckNodePort: spec.healthCheckNodePort } : {}),
      ...(spec.externalIPs?.length ? { externalIPs: spec.externalIPs } : {}),
      ...(spec.loadBalancerSourceRanges?.length ? { loadBalancerSourceRanges: spec.loadBalancerSourceRanges } : {}),
    },
    ...(spec.loadBalancerIPs?.length ? { status: { loadBalancer: { ingress: spec.loadBalancerIPs.map((ip) => ({ ip, ipMode: 'VIP' })) } } } : {}),
  };
  // A slice names its ports like the Service does, with the pods' port numbers.
  const slice = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `${spec.name}-kbp01`,
      namespace: spec.namespace,
      labels: {
        'kubernetes.io/service-name': spec.name,
        'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
      },
    },
    addressType: 'IPv4',
    ports: spec.ports.map((p) => ({ name: p.name, port: p.targetPort, protocol: p.protocol })),
    endpoints: spec.endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: e.ready ?? true },
      ...(e.nodeName ? { nodeName: e.nodeName } : {}),
      targetRef: { kind: 'Pod', namespace: spec.namespace, name: e.podName },
    })),
  };
  return [service, slice];
}

/** A Node with its InternalIP, as the kubelet registers it. */
export function nodeObject(name: string, internalIP: string): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/hostname': name } },
    status: { addresses: [{ type: 'InternalIP', address: internalIP }, { type: 'Hostname', address: name }] },
  };
}

/** Writes (or replaces) node-<name>.yaml; returns its path. */
export async function writeNode(dir: string, name: string, internalIP: string): Promise<string> {
  const file = path.join(dir, `node-${name}.yaml`);
  await writeFileAtomic(file, stringify(nodeObject(name, internalIP)));
  return file;
}

export function serviceYaml(spec: ServiceSpec): string {
  return serviceObjects(spec)
    .map((o) => stringify(o))
    .join('---\n');
}

/** Replaces `file` with `content` atomically. */
export async function writeFileAtomic(file: string, content: string): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(4).toString('hex')}.tmp`);
  await writeFile(tmp, content);
  try {
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export function manifestFile(dir: string, spec: Pick<ServiceSpec, 'name' | 'namespace'>): string {
  return path.join(dir, `${spec.namespace}-${spec.name}.yaml`);
}

/** Writes (or replaces) the Service and its EndpointSlice as one file; returns its path. */
export async function writeService(dir: string, spec: ServiceSpec): Promise<string> {
  const file = manifestFile(dir, spec);
  await writeFileAtomic(file, serviceYaml(spec));
  return file;
}

export async function removeService(dir: string, spec: Pick<ServiceSpec, 'name' | 'namespace'>): Promise<void> {
  await rm(manifestFile(dir, spec), { force: true });
}

interface K8sObject {
  kind?: string;
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string> };
  spec?: {
    clusterIP?: string;
    ports?: { name?: string; port: number; targetPort?: number | string; protocol?: Protocol }[];
  };
  ports?: { name?: string; port: number; protocol?: Protocol }[];
  endpoints?: { addresses: string[]; conditions?: { ready?: boolean }; nodeName?: string; targetRef?: { name?: string } }[];
}

/** Every YAML document in the *.yaml / *.yml files of `dir`. */
export async function readObjects(dir: string): Promise<K8sObject[]> {
  const files = (await readdir(dir)).filter((f) => /\.ya?ml$/.test(f)).sort();
  const objects: K8sObject[] = [];
  for (const f of files) {
    for (const doc of parseAllDocuments(await readFile(path.join(dir, f), 'utf8'))) {
      if (doc.errors.length) throw new Error(`${f}: ${doc.errors[0]!.message}`);
      const o = doc.toJS() as K8sObject | null;
      if (o) objects.push(o);
    }
  }
  return objects;
}

/**
 * Reads one Service and its EndpointSlice(s) from a manifests folder (such as
 * examples/my-nginx) back into a ServiceSpec. Only what the testbed needs:
 * numeric targetPorts, IPv4, pods named by targetRef.
 */
export async function readServiceSpec(dir: string, name?: string): Promise<ServiceSpec> {
  const objects = await readObjects(dir);
  const services = objects.filter((o) => o.kind === 'Service' && (!name || o.metadata?.name === name));
  if (services.length !== 1) throw new Error(`${dir}: expected one Service${name ? ` named ${name}` : ''}, found ${services.length}`);
  const svc = services[0]!;
  const svcName = svc.metadata?.name ?? '';
  const namespace = svc.metadata?.namespace ?? 'default';
  const clusterIP = svc.spec?.clusterIP;
  if (!clusterIP) throw new Error(`${dir}: Service ${svcName} has no clusterIP`);
  const ports: ServicePortSpec[] = (svc.spec?.ports ?? []).map((p) => {
    const targetPort = p.targetPort ?? p.port;
    if (typeof targetPort !== 'number') throw new Error(`${dir}: Service ${svcName}: named targetPort ${targetPort} not supported here`);
    return { name: p.name ?? '', port: p.port, targetPort, protocol: p.protocol ?? 'TCP' };
  });
  const endpoints: EndpointSpec[] = [];
  for (const slice of objects) {
    if (slice.kind !== 'EndpointSlice') continue;
    if (slice.metadata?.labels?.['kubernetes.io/service-name'] !== svcName) continue;
    if ((slice.metadata?.namespace ?? 'default') !== namespace) continue;
    for (const e of slice.endpoints ?? []) {
      for (const addr of e.addresses) {
        endpoints.push({
          ip: addr,
          podName: e.targetRef?.name ?? `pod-${addr.split('.').join('-')}`,
          ready: e.conditions?.ready ?? true,
          ...(e.nodeName ? { nodeName: e.nodeName } : {}),
        });
      }
    }
  }
  return { name: svcName, namespace, clusterIP, ports, endpoints };
}
