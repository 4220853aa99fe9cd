// The two proxies under comparison, started the same way on every node
// namespace of a testbed cluster against the same API server (each node has
// its own relay of the API): the real kube-proxy in iptables mode
// (src/testbed/kubeproxy.ts) and `kbp agent --kubeconfig`. Only one of them is
// ever active on a node: stopProxies() stops kube-proxy and removes its rules
// (kube-proxy --cleanup, then whatever that leaves), or stops kbp and detaches
// its programs and pins (kbp detach), before the other one starts.
//
// "Full sync" is the same span for both: from spawning the process to the end
// of its first sync holding every object (kube-proxy: its
// kubeproxy_sync_proxy_rules_last_timestamp_seconds; kbp: the first "maps
// synced" after "objects listed" in its log).

import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { agentEnv, agentNodeArgs, kbpBin, kbpDetach, kbpInNode } from '../../testbed/agent.js';
import type { Relay } from '../../testbed/apiserver.js';
import { chainCount, KubeProxy, type KubeChains } from '../../testbed/kubeproxy.js';
import { stopChild, type Testbed } from '../../testbed/netns.js';
import { childEnv } from '../../testbed/programs.js';
import { POD_DEVICE_GLOB, type Cluster } from '../../testbed/topology.js';

export type ProxyKind = 'iptables' | 'kbp';

/** One node a proxy runs on: its namespace, its API relay and (for NodePort) its uplink. */
export interface ProxyNode {
  cluster: Cluster;
  relay: Relay;
  /** kbp's --node-devices (the fabric uplink); none on a node without one. */
  uplink?: string;
}

export interface RunningProxy {
  kind: ProxyKind;
  node: ProxyNode;
  pid: number;
  /** Spawn to the end of the first full sync, ms. */
  fullSyncMs: number;
  rssMb(): Promise<number>;
  /** Seconds of CPU (user+system) the proxy process has used. */
  cpuSeconds(): Promise<number>;
  /** Stops it and removes everything it programmed; what it left on stop (kube-proxy's chains) is returned. */
  stop(): Promise<{ leftChains?: KubeChains; leftByCleanup?: KubeChains }>;
  logTail(lines?: number): Promise<string>;
  /** kbp: the datapath's packet counters by outcome and drop reason (kbp stats); kube-proxy: none. */
  counters(): Promise<Record<string, number>>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function procRssMb(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(text)?.[1]) / 1024;
}

/** utime+stime of a process, seconds (fields 14 and 15 of /proc/PID/stat, in clock ticks of 100 Hz). */
export async function procCpuSeconds(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function tail(file: string, lines = 30): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return `--- ${file} (last ${lines} lines) ---\n${text.trimEnd().split('\n').slice(-lines).join('\n')}`;
}

export interface StartOptions {
  /** "ns/name:port" entries KUBE-SERVICES must hold before kube-proxy counts as synced. */
  expectServices?: readonly string[];
  timeoutMs?: number;
}

export async function startKubeProxy(tb: Testbed, node: ProxyNode, opts: StartOptions = {}): Promise<RunningProxy> {
  const kp = await KubeProxy.start(tb, node.cluster.nodeNs, { nodeName: node.cluster.nodeName, kubeconfigPath: node.relay.kubeconfigPath });
  const fullSyncMs = await kp.waitSynced({ services: opts.expectServices, timeoutMs: opts.timeoutMs ?? 600_000 });
  return {
    kind: 'iptables',
    node,
    pid: kp.pid,
    fullSyncMs,
    rssMb: () => kp.rssMb(),
    cpuSeconds: () => procCpuSeconds(kp.pid),
    async stop() {
      const leftChains = await kp.stop();
      const leftByCleanup = await kp.cleanup();
      return { leftChains, leftByCleanup: chainCount(leftByCleanup) ? leftByCleanup : undefined };
    },
    logTail: (lines) => kp.logTail(lines),
    counters: async () => ({}),
  };
}

const logTime = (line: string | undefined) => (line ? Date.parse(/^time=(\S+)/.exec(line)?.[1] ?? '') : NaN);

export async function startKbp(tb: Testbed, node: ProxyNode, opts: StartOptions = {}): Promise<RunningProxy> {
  const c = node.cluster;
  const logFile = path.join(await tb.tempDir('kbp-agent'), `${c.nodeName}.log`);
  const startedAt = Date.now();
  const child: ChildProcess = tb.spawn(
    c.nodeNs,
    agentNodeArgs(kbpBin(), [
      // the pods are the clients; the node's own sockets are not measured
      '--host-services-cgroup',
      'off',
      '--kubeconfig',
      node.relay.kubeconfigPath,
      '--node-name',
      c.nodeName,
      '--pod-devices',
      POD_DEVICE_GLOB,
      ...(node.uplink ? ['--node-devices', node.uplink] : []),
      '--bpffs',
      c.bpffs,
      '--api-listen',
      '127.0.0.1:10256',
      '--log-level',
      'info',
    ]),
    { logFile, env: agentEnv(childEnv()), stopTimeoutMs: 10_000 },
  );
  const deadline = Date.now() + (opts.timeoutMs ?? 600_000);
  let text = '';
  for (;;) {
    text = await readFile(logFile, 'utf8').catch(() => '');
    if (text.includes('msg=ready')) break;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`kbp agent on ${c.nodeName} exited before ready\n${await tail(logFile)}`);
    if (Date.now() > deadline) throw new Error(`kbp agent on ${c.nodeName} not ready in time\n${await tail(logFile)}`);
    await sleep(50);
  }
  const lines = text.split('\n');
  const listed = lines.findIndex((l) => l.includes('msg="objects listed"'));
  const synced = lines.find((l, i) => i > listed && l.includes('msg="maps synced"'));
  const pid = child.pid!;
  return {
    kind: 'kbp',
    node,
    pid,
    fullSyncMs: logTime(synced) - startedAt,
    rssMb: () => procRssMb(pid),
    cpuSeconds: () => procCpuSeconds(pid),
    async stop() {
      await stopChild(child, 10_000);
      await kbpDetach(c);
      return {};
    },
    logTail: (n) => tail(logFile, n),
    async counters() {
      const { stdout } = await kbpInNode(c, ['stats', '-o', 'json', '--api', 'http://127.0.0.1:10256']);
      const body = JSON.parse(stdout) as { items: Array<{ name: string; packets: number }> };
      return Object.fromEntries(body.items.map((i) => [i.name, i.packets]));
    },
  };
}

export function startProxy(kind: ProxyKind, tb: Testbed, node: ProxyNode, opts: StartOptions = {}): Promise<RunningProxy> {
  return kind === 'iptables' ? startKubeProxy(tb, node, opts) : startKbp(tb, node, opts);
}
