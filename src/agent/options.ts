// `kbp agent` flags. Names and defaults follow kube-proxy where it has an
// equivalent (--hostname-override -> --node-name, --healthz-bind-address ->
// --api-listen on its port 10256, --iptables-min-sync-period and
// --iptables-sync-period -> --min-sync-period and --sync-period).

import os from 'node:os';
import { parseArgs } from 'node:util';
import { isLogLevel, type LogLevel } from '../log.js';
import { parseGlobs } from './devices.js';
import { isIPv4 } from '../maps/abi.js';
import { API_FLAG_OPTIONS, apiUsage, parseApiOptions, type ApiServerConfig } from '../api/options.js';
import { MAP_SIZE_KEYS, parseMapSizes } from './mapsizes.js';
import { DEFAULT_HOST_SERVICES_CGROUP, type HostServicesConfig } from './hostservices.js';

export const DEFAULT_POD_DEVICES = 'veth*,lxc*,cali*';
export const DEFAULT_BPFFS = '/sys/fs/bpf/kbp';
export const DEFAULT_API_LISTEN = '127.0.0.1:10256';

/** Where the objects come from: a manifest folder, a kubeconfig file, or the pod's in-cluster config. */
export const NODEPORT_ACCELERATIONS = ['none', 'xdp', 'xdp-tx'] as const;
export type NodePortAcceleration = (typeof NODEPORT_ACCELERATIONS)[number];

export type AgentSource = { kind: 'manifests'; dir: string } | { kind: 'kubeconfig'; path: string } | { kind: 'in-cluster' };

export interface AgentConfig {
  source: AgentSource;
  nodeName: string;
  podDevices: string;
  podDevicePatterns: RegExp[];
  /** Uplinks (NodePort, LoadBalancer, externalIPs); "" = none. */
  nodeDevices: string;
  nodeDevicePatterns: RegExp[];
  /** --nodeport-acceleration: also run the XDP program on the uplinks (native mode where the driver allows). */
  nodePortAcceleration: NodePortAcceleration;
  /** --node-ip: this node's IPv4 addresses, primary first; empty = from the Node object. */
  nodeIps: string[];
  bpffs: string;
  api: ApiServerConfig | null; // null: no API (--api-listen off)
  logLevel: LogLevel;
  minSyncMs: number;
  syncPeriodMs: number;
  ctGcIntervalMs: number; // 0: no conntrack garbage collection
  retryMs: number;
  /** --map-sizes: map name -> max entries, only the maps given (the rest keep abi.h's defaults). */
  mapSizes: Record<string, number>;
  /** --host-services-cgroup: socket-level ClusterIPs for the node's own namespace; null = off. */
  hostServices: HostServicesConfig | null;
}

export const agentUsage = `Usage: kbp agent (--kubeconfig PATH | --manifests DIR) [options]

Programs the BPF service maps from Kubernetes objects and attaches the
datapath to pod-facing devices. Programs stay attached and maps stay pinned
when the agent exits; \`kbp detach\` removes them.

  --kubeconfig PATH       watch Services, EndpointSlices and this node's Node on
                          the cluster of this kubeconfig; without it and without
                          --manifests, the in-cluster config is used when
                          KUBERNETES_SERVICE_HOST is set (a DaemonSet pod)
  --manifests DIR         no cluster: Service and EndpointSlice (and Node)
                          manifests in a folder (*.yaml, *.yml, *.json; several
                          documents per file), watched for changes
  --node-name NAME        this node's name (default: the host name)
  --pod-devices GLOBS     comma-separated name patterns of pod-facing host
                          devices (default: ${DEFAULT_POD_DEVICES}: veth pairs of
                          bridge CNIs, Cilium, Calico)
  --node-devices GLOBS    comma-separated name patterns of the node's uplinks:
                          NodePort, LoadBalancer and externalIP traffic enters
                          there (default: none, ClusterIP only)
  --nodeport-acceleration MODE
                          none, xdp or xdp-tx: with xdp, new and established
                          flows to frontends reached through an uplink are
                          translated by an XDP program there (native mode)
                          before the kernel builds an skb, and the stack
                          forwards them; tc stays attached behind it for
                          everything else. xdp-tx also sends a translated packet
                          whose route leaves through the same uplink (a backend
                          on another node) straight back out with XDP_TX: for
                          drivers that support it (native XDP NICs do; a veth
                          only when its peer runs NAPI, e.g. GRO on). A device
                          whose driver cannot run XDP is logged and stays on tc
                          alone (default: none; needs --node-devices)
  --node-ip IP[,IP]       this node's IPv4 addresses for NodePort frontends, the
                          first also the masquerade source (default: the Node's
                          InternalIP, then ExternalIP addresses)
  --bpffs DIR             folder on a BPF filesystem for the pinned maps
                          (default: ${DEFAULT_BPFFS}); created if its parent is a
                          bpffs, never mounted by the agent
  --api-listen HOST:PORT  REST API (health, metrics, decoded map dumps); "off" for
                          none (default: ${DEFAULT_API_LISTEN}, kube-proxy's health port)
${apiUsage}  --min-sync-period DUR   least time between two syncs (default: 100ms)
  --sync-period DUR       full resync at least this often (default: 60s)
  --conntrack-gc-interval DUR
                          delete conntrack/SNAT entries of ended flows this often;
                          0 leaves them to LRU eviction (default: 30s)
  --map-sizes KEY=N[,KEY=N]
                          capacity of datapath maps, KEY one of
                          ${Object.keys(MAP_SIZE_KEYS).join(', ')}
                          (default: ${Object.entries(MAP_SIZE_KEYS).map(([k, [, n]]) => `${k}=${n}`).join(',')});
                          pinned maps keep their size: a different one is an
                          error until \`kbp detach\` removes the pins
  --host-services-cgroup PATH
                          cgroup v2 directory whose processes' sockets in this
                          (the node's) network namespace reach ClusterIPs:
                          connect/sendmsg go to a backend, getpeername and UDP
                          replies show the ClusterIP (host network, as
                          kube-proxy's OUTPUT chain). Pods' sockets are left to
                          tc. "off" for none (default: ${DEFAULT_HOST_SERVICES_CGROUP}, the
                          cgroup v2 root; when that is no cgroup v2 mount the
                          agent warns and runs without)
  --log-level LEVEL       debug, info, warn or error (default: info)
`;

/** "100ms", "2s", "1m", or a bare number of milliseconds. */
export function parseDuration(s: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s.trim());
  if (!m) throw new Error(`${flag}: expected a duration like 100ms, 2s or 1m, got ${JSON.stringify(s)}`);
  const n = Number(m[1]);
  return Math.round(m[2] === 's' ? n * 1000 : m[2] === 'm' ? n * 60_000 : n);
}

export function parseAgentArgs(args: string[], env: NodeJS.ProcessEnv = process.env): AgentConfig {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      manifests: { type: 'string' },
      kubeconfig: { type: 'string' },
      'node-name': { type: 'string' },
      'pod-devices': { type: 'string' },
      'node-devices': { type: 'string' },
      'nodeport-acceleration': { type: 'string' },
      'node-ip': { type: 'string' },
      bpffs: { type: 'string' },
      'api-listen': { type: 'string' },
      'min-sync-period': { type: 'string' },
      'sync-period': { type: 'string' },
      'conntrack-gc-interval': { type: 'string' },
      'log-level': { type: 'string' },
      'map-sizes': { type: 'string' },
      'host-services-cgroup': { type: 'string' },
      ...API_FLAG_OPTIONS,
    },
  });
  let source: AgentSource;
  if (values.manifests && values.kubeconfig) throw new Error('--manifests and --kubeconfig exclude each other');
  if (values.manifests) source = { kind: 'manifests', dir: values.manifests };
  else if (values.kubeconfig) source = { kind: 'kubeconfig', path: values.kubeconfig };
  else if (env.KUBERNETES_SERVICE_HOST) source = { kind: 'in-cluster' };
  else throw new Error('give --kubeconfig PATH or --manifests DIR (or run in a pod, where KUBERNETES_SERVICE_HOST selects the in-cluster config)');
  const logLevel = values['log-level'] ?? 'info';
  if (!isLogLevel(logLevel)) throw new Error(`--log-level: expected debug, info, warn or error, got ${JSON.stringify(logLevel)}`);
  const podDevices = values['pod-devices'] ?? DEFAULT_POD_DEVICES;
  const nodeDevices = values['node-devices'] ?? '';
  const acceleration = values['nodeport-acceleration'] ?? 'none';
  if (!(NODEPORT_ACCELERATIONS as readonly string[]).includes(acceleration)) {
    throw new Error(`--nodeport-acceleration: expected one of ${NODEPORT_ACCELERATIONS.join(', ')}, got ${JSON.stringify(acceleration)}`);
  }
  if (acceleration !== 'none' && !nodeDevices) throw new Error('--nodeport-acceleration: needs --node-devices (the uplinks to accelerate)');
  const nodeIps = (values['node-ip'] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const a of nodeIps) if (!isIPv4(a)) throw new Error(`--node-ip: ${JSON.stringify(a)} is not an IPv4 address`);
  const listen = values['api-listen'] ?? DEFAULT_API_LISTEN;
  const minSyncMs = parseDuration(values['min-sync-period'] ?? '100ms', '--min-sync-period');
  const syncPeriodMs = parseDuration(values['sync-period'] ?? '60s', '--sync-period');
  if (syncPeriodMs < minSyncMs || syncPeriodMs <= 0) throw new Error('--sync-period must be positive and at least --min-sync-period');
  return {
    source,
    nodeName: values['node-name'] || os.hostname(),
    podDevices,
    podDevicePatterns: parseGlobs(podDevices),
    nodeDevices,
    nodeDevicePatterns: nodeDevices ? parseGlobs(nodeDevices, '--node-devices') : [],
    nodePortAcceleration: acceleration as NodePortAcceleration,
    nodeIps,
    bpffs: values.bpffs ?? DEFAULT_BPFFS,
    api: parseApiOptions(listen, values, values.kubeconfig),
    logLevel,
    minSyncMs,
    syncPeriodMs,
    ctGcIntervalMs: parseDuration(values['conntrack-gc-interval'] ?? '30s', '--conntrack-gc-interval'),
    retryMs: Math.max(minSyncMs, 1000),
    mapSizes: parseMapSizes(values['map-sizes'] ?? ''),
    hostServices: parseHostServices(values['host-services-cgroup']),
  };
}

/** --host-services-cgroup PATH | off; absent = the default. */
function parseHostServices(flag: string | undefined): HostServicesConfig | null {
  if (flag === undefined) return { cgroup: DEFAULT_HOST_SERVICES_CGROUP, explicit: false };
  if (flag === 'off') return null;
  if (!flag.startsWith('/')) throw new Error(`--host-services-cgroup: expected an absolute path or "off", got ${JSON.stringify(flag)}`);
  return { cgroup: flag, explicit: true };
}
