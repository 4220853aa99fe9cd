// Running `kbp agent` (and other kbp commands) inside a node namespace.
//
// The agent's API listens on the node namespace's loopback, which the root
// namespace cannot reach; a probe living in the node namespace makes the
// requests instead (see programs.ts).

import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { agentEnv, agentNodeArgs } from '../agent/nodeflags.js';
import { projectRoot } from '../paths.js';
import { nsExec, stopChild, waitExit, type RunResult, type Testbed } from './netns.js';
import { childEnv, type Probe } from './programs.js';
import { POD_DEVICE_GLOB, type Cluster } from './topology.js';

/** The CLI entry point (bin/kbp.js, which loads dist/). */
/** Every harness starts the agent with the node flags and environment `kbp agent` gives itself (src/agent/nodeflags.ts). */
export { agentEnv, agentNodeArgs };

export function kbpBin(): string {
  return path.join(projectRoot, 'bin', 'kbp.js');
}

function assertBuilt(): void {
  const missing = [kbpBin(), path.join(projectRoot, 'dist', 'cli.js')].filter((f) => !existsSync(f));
  if (missing.length) throw new Error(`kbp is not built (missing ${missing.join(', ')}): run make build`);
}

/** Runs `kbp ARGS...` to completion inside the cluster's node namespace. */
export function kbpInNode(cluster: Cluster, args: readonly string[], timeoutMs = 30_000): Promise<RunResult> {
  assertBuilt();
  return nsExec(cluster.nodeNs, process.execPath, [kbpBin(), ...args], { env: childEnv(), timeoutMs });
}

/** `kbp detach --bpffs <the node's bpffs>`: removes every hook (tc, host-services links) and pin. */
export function kbpDetach(cluster: Cluster): Promise<RunResult> {
  return kbpInNode(cluster, ['detach', '--bpffs', cluster.bpffs]);
}

export interface AgentOptions {
  manifestsDir: string;
  /** Agent log (stdout and stderr); default: agent.log in a temp dir of the run. */
  logFile?: string;
  /** --api-listen, on the node namespace's loopback. */
  apiListen?: string;
  podDevices?: string;
  extraArgs?: string[];
  /** Another kbp's bin/kbp.js (an earlier version built by scripts/kbp-version.sh); default: this checkout's. */
  kbpBin?: string;
  /**
   * --host-services-cgroup: a cgroup of the test's own (src/testbed/cgroup.ts).
   * Default "off" for this checkout's agent, so a test agent never attaches
   * to the machine's cgroup root; an earlier kbpBin gets no flag (it has none).
   */
  hostServicesCgroup?: string;
}

export class Agent {
  private constructor(
    readonly cluster: Cluster,
    readonly child: ChildProcess,
    readonly logFile: string,
    /** http://HOST:PORT, reachable from inside the node namespace only. */
    readonly apiUrl: string,
    private readonly nodeProbe: Probe,
  ) {}

  /** Starts the agent in the node namespace; resolves once it is running (not yet healthy). */
  static async start(tb: Testbed, cluster: Cluster, nodeProbe: Probe, opts: AgentOptions): Promise<Agent> {
    if (!opts.kbpBin) assertBuilt();
    if (nodeProbe.ns !== cluster.nodeNs) throw new Error('agent: the probe must live in the node namespace');
    const logFile = opts.logFile ?? path.join(await tb.tempDir('agent'), 'agent.log');
    const apiListen = opts.apiListen ?? '127.0.0.1:10256';
    const argv = agentNodeArgs(opts.kbpBin ?? kbpBin(), [
      '--manifests',
      opts.manifestsDir,
      '--node-name',
      cluster.nodeName,
      '--pod-devices',
      opts.podDevices ?? POD_DEVICE_GLOB,
      '--bpffs',
      cluster.bpffs,
      '--api-listen',
      apiListen,
      ...(opts.hostServicesCgroup !== undefined || !opts.kbpBin ? ['--host-services-cgroup', opts.hostServicesCgroup ?? 'off'] : []),
      ...(opts.extraArgs ?? []),
    ]);
    const child = tb.spawn(cluster.nodeNs, argv, { logFile, env: agentEnv(childEnv()), stopTimeoutMs: 5000 });
    return new Agent(cluster, child, logFile, `http://${apiListen}`, nodeProbe);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Polls GET /healthz until 200; throws (with the log's tail) if the agent exits or time runs out. */
  async waitHealthy(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      if (!this.running) {
        throw new Error(`agent exited (${this.child.exitCode ?? this.child.signalCode}) before it was healthy\n${await this.logTail()}`);
      }
      const r = await this.nodeProbe.get(`${this.apiUrl}/healthz`, 1000);
      if (r.ok && r.status === 200) return;
      last = r.error ?? `HTTP ${r.status} ${r.body.slice(0, 200)}`;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`agent not healthy within ${timeoutMs} ms (last: ${last})\n${await this.logTail()}`);
  }

  /** GET <path> on the agent's API, parsed as JSON. */
  /** Packets of one datapath counter (`/v1/stats`, summed over CPUs), 0 if it never moved. */
  async stat(name: string): Promise<number> {
    const res = (await this.getJson('/v1/stats')) as { items: Array<{ name: string; packets: number }> };
    return res.items.find((s) => s.name === name)?.packets ?? 0;
  }

  async getJson(apiPath: string): Promise<unknown> {
    const r = await this.nodeProbe.get(`${this.apiUrl}${apiPath}`, 5000);
    if (!r.ok || r.status !== 200) throw new Error(`GET ${apiPath}: ${r.error ?? `HTTP ${r.status} ${r.body.slice(0, 500)}`}`);
    return JSON.parse(r.body) as unknown;
  }

  /** The programmed frontends (GET /v1/services). */
  services(): Promise<unknown> {
    return this.getJson('/v1/services');
  }

  /** Sends a signal and waits for the agent to exit. */
  async kill(signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) this.child.kill(signal);
    return waitExit(this.child);
  }

  /** SIGTERM, then SIGKILL after a grace period. */
  stop(): Promise<void> {
    return stopChild(this.child, 5000);
  }

  async logTail(lines = 40): Promise<string> {
    try {
      const text = await readFile(this.logFile, 'utf8');
      return `--- agent log (${this.logFile}, last ${lines} lines) ---\n${text.split('\n').slice(-lines - 1).join('\n')}`;
    } catch {
      return '--- agent log: none ---';
    }
  }
}
