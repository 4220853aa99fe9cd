// One node namespace with backend pods, a client pod and the agent watching a
// real kube-apiserver (src/testbed/apiserver.ts, relayed into the node), for
// the reliability scenarios that need an API server: restart under load, API
// server faults, endpoint churn, bad objects. Everything hangs off one
// Testbed and goes away at its teardown.
//
// What it adds to the testbed: objects written the way a controller would
// (Service, EndpointSlice with ready/terminating endpoints), an agent process
// that can be SIGKILLed and started again on the same pins, request loops from
// the client pod, the agent's view of the maps through its API, and direct
// access to etcd (its v3 HTTP gateway) for changes made while kube-apiserver
// is down and for compaction.

import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { relayInto, startControlPlane, type ControlPlane, type Relay } from '../testbed/apiserver.js';
import { waitExit, type Testbed } from '../testbed/netns.js';
import { Cluster, POD_DEVICE_GLOB, type Pod } from '../testbed/topology.js';
import { Probe, childEnv, startPodServer } from '../testbed/programs.js';
import { agentEnv, agentNodeArgs, kbpBin } from '../testbed/agent.js';
import type { HttpResult } from '../testbed/probe-protocol.js';

export const NS = 'default';
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface EndpointSpec {
  pod: Pod;
  terminating?: boolean;
}

export function sliceObject(service: string, name: string, endpoints: readonly EndpointSpec[], nodeName: string, port = 8080): Record<string, unknown> {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: NS, labels: { 'kubernetes.io/service-name': service, 'endpointslice.kubernetes.io/managed-by': 'kbp-reliability' } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port, protocol: 'TCP' }],
    endpoints: endpoints.map((e) => ({
      addresses: [e.pod.ip],
      conditions: e.terminating ? { ready: false, serving: true, terminating: true } : { ready: true, serving: true, terminating: false },
      nodeName,
      targetRef: { kind: 'Pod', namespace: NS, name: e.pod.name },
    })),
  };
}

export function serviceObject(name: string, clusterIP: string, targetPort = 8080): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: NS },
    spec: { clusterIP, ports: [{ name: 'http', port: 80, targetPort, protocol: 'TCP' }] },
  };
}

/** Polls `check` (a reason while not yet true) until it holds. */
export async function until(what: string, check: () => Promise<true | string>, timeoutMs = 15_000, everyMs = 50): Promise<number> {
  const start = Date.now();
  let last = '';
  while (Date.now() - start < timeoutMs) {
    const r = await check();
    if (r === true) return Date.now() - start;
    last = r;
    await sleep(everyMs);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms (last: ${last})`);
}

export const failures = (rs: readonly HttpResult[]) => rs.filter((r) => !r.ok);
export const backendsOf = (rs: readonly HttpResult[]) => [...new Set(rs.map((r) => r.backend))].sort();

/** A request loop from a probe: batches of GETs on new connections until stopped. */
export class LoadLoop {
  readonly results: HttpResult[] = [];
  private stopped = false;
  private error: Error | undefined;
  private readonly done: Promise<void>;

  /** `pauseMs` between batches leaves CPU to the rest of the node (the agent restarting, on a 2-core machine). */
  constructor(probe: Probe, host: string, port = 80, opts: { batch?: number; timeoutMs?: number; pauseMs?: number } = {}) {
    this.done = (async () => {
      while (!this.stopped) {
        this.results.push(...(await probe.http(host, port, { count: opts.batch ?? 20, timeoutMs: opts.timeoutMs ?? 3000 })));
        if (opts.pauseMs) await sleep(opts.pauseMs);
      }
    })().catch((err: Error) => {
      this.error = err; // the probe died (teardown of a failed test): stop() reports it
    });
  }

  get count(): number {
    return this.results.length;
  }

  /** Resolves once `n` requests have completed (or the loop ended). */
  async reach(n: number, timeoutMs = 120_000): Promise<void> {
    await until(`${n} requests`, async () => (this.count >= n ? true : this.error ? `loop ended: ${this.error.message}` : `${this.count}`), timeoutMs, 100);
  }

  async stop(): Promise<HttpResult[]> {
    this.stopped = true;
    await this.done;
    if (this.error) throw this.error;
    return this.results;
  }
}

export interface AgentProcess {
  child: ChildProcess;
  logFile: string;
  log(): Promise<string>;
  /** Resolves with the log once the agent logged msg=ready. */
  ready(timeoutMs?: number): Promise<string>;
}

export interface ApiNodeOptions {
  nodeName?: string;
  /** Backend pods (name -> IP), each serving HTTP on 8080. */
  backends: Record<string, string>;
  clientIp?: string;
  /** Extra kube-apiserver flags. */
  apiServerArgs?: string[];
}

export class ApiNode {
  private constructor(
    readonly tb: Testbed,
    readonly cp: ControlPlane,
    readonly cluster: Cluster,
    readonly relay: Relay,
    readonly pods: Record<string, Pod>,
    readonly client: Pod,
    readonly clientProbe: Probe,
    readonly nodeProbe: Probe,
    private readonly logDir: string,
  ) {}

  static async create(tb: Testbed, opts: ApiNodeOptions): Promise<ApiNode> {
    const nodeName = opts.nodeName ?? 'node-1';
    const cp = await startControlPlane(tb, { apiServerArgs: opts.apiServerArgs });
    const cluster = await Cluster.create(tb, { nodeName });
    const pods: Record<string, Pod> = {};
    for (const [name, ip] of Object.entries(opts.backends)) {
      pods[name] = await cluster.addPod(name, ip);
      await startPodServer(tb, pods[name]!.ns, name, 8080);
    }
    const client = await cluster.addPod('client', opts.clientIp ?? '10.244.1.100');
    const [clientProbe, nodeProbe] = await Promise.all([Probe.start(tb, client.ns), Probe.start(tb, cluster.nodeNs)]);
    const relay = await relayInto(tb, cluster.nodeNs, cp);
    const node = new ApiNode(tb, cp, cluster, relay, pods, client, clientProbe, nodeProbe, await tb.tempDir('agent-logs'));
    await node.must('POST', '/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: nodeName } });
    return node;
  }

  pod(name: string): Pod {
    const p = this.pods[name];
    if (!p) throw new Error(`no pod ${name}`);
    return p;
  }

  /** An API request that must succeed (2xx). */
  async must(method: string, apiPath: string, body?: unknown): Promise<unknown> {
    const r = await this.cp.request(method, apiPath, body);
    if (r.status < 200 || r.status >= 300) throw new Error(`${method} ${apiPath}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
    return r.json;
  }

  createService(name: string, clusterIP: string): Promise<unknown> {
    return this.must('POST', `/api/v1/namespaces/${NS}/services`, serviceObject(name, clusterIP));
  }

  /** Creates or replaces an EndpointSlice (unconditional PUT after the first POST). */
  async putSlice(service: string, name: string, endpoints: readonly EndpointSpec[]): Promise<void> {
    const body = sliceObject(service, name, endpoints, this.cluster.nodeName);
    const r = await this.cp.request('PUT', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices/${name}`, body);
    if (r.status === 404) await this.must('POST', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, body);
    else if (r.status < 200 || r.status >= 300) throw new Error(`PUT slice ${name}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  }

  /** Starts `kbp agent --kubeconfig` in the node namespace on the cluster's pins. */
  startAgent(label: string, extraArgs: string[] = []): AgentProcess {
    const logFile = path.join(this.logDir, `${label}.log`);
    const child = this.tb.spawn(
      this.cluster.nodeNs,
      agentNodeArgs(kbpBin(), ['--host-services-cgroup', 'off', '--kubeconfig', this.relay.kubeconfigPath, '--node-name', this.cluster.nodeName, '--pod-devices', POD_DEVICE_GLOB,
        '--bpffs', this.cluster.bpffs, '--api-listen', '127.0.0.1:10256', '--log-level', 'debug', ...extraArgs]),
      { logFile, env: agentEnv(childEnv()), stopTimeoutMs: 5000 },
    );
    const log = () => readFile(logFile, 'utf8').catch(() => '');
    const ready = async (timeoutMs = 30_000) => {
      const end = Date.now() + timeoutMs;
      while (Date.now() < end) {
        const text = await log();
        if (text.includes('msg=ready')) return text;
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`agent ${label} exited ${child.exitCode ?? child.signalCode}\n${text.split('\n').slice(-30).join('\n')}`);
        await sleep(50);
      }
      throw new Error(`agent ${label} not ready within ${timeoutMs} ms\n${(await log()).split('\n').slice(-30).join('\n')}`);
    };
    return { child, logFile, log, ready };
  }

  static async kill(a: AgentProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (a.child.exitCode === null && a.child.signalCode === null) {
      a.child.kill(signal);
      await waitExit(a.child);
    }
  }

  /** GET on the agent's API (from the node namespace). */
  async agentApi(p: string): Promise<string> {
    const r = await this.nodeProbe.get(`http://127.0.0.1:10256${p}`, 5000);
    if (!r.ok || r.status !== 200) throw new Error(`GET ${p}: ${r.status} ${r.error ?? r.body.slice(0, 200)}`);
    return r.body;
  }

  /** kbp_map_writes_total summed over maps. */
  async mapWrites(): Promise<number> {
    const lines = (await this.agentApi('/metrics')).split('\n').filter((l) => l.startsWith('kbp_map_writes_total{'));
    if (lines.length === 0) throw new Error('no kbp_map_writes_total in /metrics');
    return lines.reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
  }

  /** One metric's value (first sample whose line starts with `prefix`), NaN when absent. */
  async metric(prefix: string): Promise<number> {
    const line = (await this.agentApi('/metrics')).split('\n').find((l) => l.startsWith(prefix));
    return line ? Number(line.split(' ').at(-1)) : NaN;
  }

  /** The backend map as the agent reads it from the kernel: "ip:port state", sorted. */
  async backendMap(): Promise<string[]> {
    const items = (JSON.parse(await this.agentApi('/v1/backends')) as { items: Array<{ ip: string; port: number; state: string }> }).items;
    return items.map((x) => `${x.ip}:${x.port} ${x.state}`).sort();
  }

  /** vip -> slot addresses (sorted) of port 80, for every programmed frontend. */
  async frontends(): Promise<Map<string, string[]>> {
    const items = JSON.parse(await this.agentApi('/v1/services')) as Array<{ vip: string; port: number; backends: Array<{ ip: string | null }> }>;
    return new Map(items.filter((x) => x.port === 80).map((x) => [x.vip, x.backends.map((b) => String(b.ip)).sort()]));
  }

  // ---- etcd, under the API server ----

  /** etcd's client URL, from kube-apiserver's command line. */
  async etcdUrl(): Promise<string> {
    const argv = (await readFile(`/proc/${this.cp.pids.apiServer}/cmdline`, 'utf8')).split('\0');
    const flag = argv.find((a) => a.startsWith('--etcd-servers='));
    if (!flag) throw new Error('kube-apiserver has no --etcd-servers flag');
    return flag.slice('--etcd-servers='.length).split(',')[0]!;
  }

  private async etcd(url: string, op: string, body: unknown): Promise<Record<string, unknown>> {
    const r = await fetch(`${url}/v3/${op}`, { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(5000) });
    const j = (await r.json()) as Record<string, unknown>;
    if (!r.ok) throw new Error(`etcd ${op}: HTTP ${r.status} ${JSON.stringify(j).slice(0, 300)}`);
    return j;
  }

  /** etcd's current revision. */
  async etcdRevision(url: string): Promise<number> {
    const j = await this.etcd(url, 'kv/range', { key: b64('/registry/'), limit: 1 });
    return Number((j.header as { revision: string }).revision);
  }

  /** Compacts etcd at its current revision: watches resuming from an older one get 410 Gone. */
  async etcdCompact(url: string): Promise<number> {
    const rev = await this.etcdRevision(url);
    await this.etcd(url, 'kv/compaction', { revision: String(rev), physical: true });
    return rev;
  }

  /**
   * Writes an object straight into etcd as JSON (kube-apiserver decodes JSON
   * as well as protobuf from storage), as another API server of the cluster
   * would while ours is down.
   */
  async etcdPut(url: string, key: string, obj: Record<string, unknown>): Promise<void> {
    const meta = (obj.metadata ?? {}) as Record<string, unknown>;
    const stored = { ...obj, metadata: { uid: crypto.randomUUID(), creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'), ...meta, resourceVersion: undefined } };
    await this.etcd(url, 'kv/put', { key: b64(key), value: b64(JSON.stringify(stored)) });
  }

  async etcdDelete(url: string, key: string): Promise<void> {
    await this.etcd(url, 'kv/deleterange', { key: b64(key) });
  }
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

/** etcd keys kube-apiserver stores these objects under (default --etcd-prefix=/registry). */
export const etcdKey = {
  service: (name: string) => `/registry/services/specs/${NS}/${name}`,
  slice: (name: string) => `/registry/endpointslices/${NS}/${name}`,
};
