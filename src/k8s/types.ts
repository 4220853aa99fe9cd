// The parts of Service (v1) and EndpointSlice (discovery.k8s.io/v1) that a
// service proxy reads, with the API's field names. Everything optional that
// the API may omit is optional here too; defaults are applied where they are
// used (src/proxy/desired.ts), as the API server would have applied them.

export interface ObjectMeta {
  name: string;
  namespace?: string; // default "default"
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  uid?: string;
  resourceVersion?: string;
}

export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export interface ServicePort {
  name?: string;
  protocol?: Protocol; // default TCP
  port: number;
  targetPort?: number | string; // default: port
  nodePort?: number;
  appProtocol?: string;
}

export interface SessionAffinityConfig {
  clientIP?: { timeoutSeconds?: number };
}

export interface ServiceSpec {
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName'; // default ClusterIP
  clusterIP?: string; // "None" = headless
  clusterIPs?: string[];
  ipFamilies?: Array<'IPv4' | 'IPv6'>;
  ports?: ServicePort[];
  selector?: Record<string, string>;
  sessionAffinity?: 'None' | 'ClientIP';
  sessionAffinityConfig?: SessionAffinityConfig;
  externalIPs?: string[];
  externalName?: string;
  externalTrafficPolicy?: 'Cluster' | 'Local';
  internalTrafficPolicy?: 'Cluster' | 'Local';
  /** PreferClose, PreferSameZone, PreferSameNode: informs the EndpointSlice controller's hints. */
  trafficDistribution?: string;
  /** LoadBalancer with externalTrafficPolicy Local: where the node answers how many local endpoints it has. */
  healthCheckNodePort?: number;
  loadBalancerSourceRanges?: string[];
}

export interface LoadBalancerIngress {
  ip?: string;
  hostname?: string;
  /** VIP (default): traffic arrives with the ingress IP as destination; Proxy: the load balancer rewrote it. */
  ipMode?: 'VIP' | 'Proxy';
}

export interface ServiceStatus {
  loadBalancer?: { ingress?: LoadBalancerIngress[] };
}

export interface Service {
  apiVersion: 'v1';
  kind: 'Service';
  metadata: ObjectMeta;
  spec: ServiceSpec;
  status?: ServiceStatus;
}

export interface EndpointConditions {
  ready?: boolean; // unset = ready
  serving?: boolean;
  terminating?: boolean;
}

export interface EndpointHints {
  forZones?: Array<{ name: string }>;
  forNodes?: Array<{ name: string }>;
}

export interface Endpoint {
  addresses: string[];
  conditions?: EndpointConditions;
  nodeName?: string;
  zone?: string;
  hints?: EndpointHints;
  hostname?: string;
  targetRef?: { kind?: string; namespace?: string; name?: string; uid?: string };
}

export interface EndpointPort {
  name?: string; // matches the Service port's name ("" when unnamed)
  protocol?: Protocol; // default TCP
  port?: number; // the resolved target port; unset = not known
  appProtocol?: string;
}

export interface EndpointSlice {
  apiVersion: 'discovery.k8s.io/v1';
  kind: 'EndpointSlice';
  metadata: ObjectMeta;
  addressType: 'IPv4' | 'IPv6' | 'FQDN';
  endpoints: Endpoint[];
  ports?: EndpointPort[];
}

export interface NodeAddress {
  type: string; // InternalIP, ExternalIP, Hostname, …
  address: string;
}

/** The parts of a Node (v1) the proxy reads: its name, labels (zone) and addresses (NodePort frontends). */
export interface Node {
  apiVersion: 'v1';
  kind: 'Node';
  metadata: ObjectMeta;
  status?: { addresses?: NodeAddress[] };
}

/** Label that ties an EndpointSlice to its Service (same namespace). */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** The node label kube-proxy reads for topology hints. */
export const ZONE_LABEL = 'topology.kubernetes.io/zone';

/** The objects the proxy works from. */
export interface ObjectSet {
  services: Service[];
  endpointSlices: EndpointSlice[];
  /** Nodes (manifests may hold this node's Node for its zone label). */
  nodes?: Node[];
}

export function namespaceOf(o: { metadata: ObjectMeta }): string {
  return o.metadata.namespace || 'default';
}

/** "namespace/name", the usual way Kubernetes names an object in logs. */
export function nsName(o: { metadata: ObjectMeta }): string {
  return [namespaceOf(o), o.metadata.name].join('/'); // one flat string (see frontendKey in src/proxy/desired.ts)
}
