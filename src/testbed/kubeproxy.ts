// The real kube-proxy (v1.35, iptables mode, built by scripts/k8s-bins.sh from
// the same modules as the test API server) running inside a node namespace of
// a Testbed: the peer kbp is compared against (src/bench/compare*).
//
// kube-proxy reaches the API through relayInto() (its kubeconfig points at the
// relay's loopback port inside the node namespace) and is configured with a
// KubeProxyConfiguration file rather than flags, so that it leaves every
// global knob alone:
//   - conntrack.maxPerCore 0 / min 0: nf_conntrack_max and the hash size are
//     global (init namespace only); kube-proxy does not touch them.
//   - conntrack tcp timeouts 0s: the per-namespace sysctls stay as they are.
//   - iptables.localhostNodePorts false: no route_localnet in the namespace.
//   - healthz and metrics on the namespace's loopback.
//   - clusterCIDR 10.244.0.0/16 (every node's pod range), so traffic from
//     outside the pods to a ClusterIP is masqueraded as upstream does it.
// Everything it programs lives in the node namespace's netfilter tables. On
// SIGTERM kube-proxy leaves its rules behind (as it does on a real node);
// stop() reports which KUBE-* chains are left and cleanup() removes them with
// `kube-proxy --cleanup` run in the same namespace, then checks none is left.

import type { ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { ensureK8sBins, type K8sBins } from './apiserver.js';
import { nsExec, stopChild, type Testbed } from './netns.js';

/** Every node's pod range in the testbed (topology.ts, multinode.ts). */
export const CLUSTER_CIDR = '10.244.0.0/16';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface KubeProxyOptions {
  /** The Node's name (hostnameOverride); the Node object must exist for NodePort/eTP Local. */
  nodeName: string;
  /** A kubeconfig valid inside `ns` (relayInto(...).kubeconfigPath). */
  kubeconfigPath: string;
  /** Log file; default kube-proxy.log in a temp dir of the run. */
  logFile?: string;
  healthzPort?: number;
  metricsPort?: number;
  /** iptables.minSyncPeriod; kube-proxy's default is 1s. */
  minSyncPeriod?: string;
  /** iptables.syncPeriod (periodic full resync); default 30s as upstream. */
  syncPeriod?: string;
  /** klog verbosity (-v); default 2, which logs every sync with its duration. */
  verbosity?: number;
  bins?: K8sBins;
}

/** KUBE-* chains found in one table of a namespace. */
export interface KubeChains {
  nat: string[];
  filter: string[];
  mangle: string[];
}

/** Chains named KUBE-* in iptables-save output, per table. */
export function kubeChainsIn(save: string): KubeChains {
  const out: KubeChains = { nat: [], filter: [], mangle: [] };
  let table: keyof KubeChains | null = null;
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) {
      const t = line.slice(1).trim();
      table = t === 'nat' || t === 'filter' || t === 'mangle' ? t : null;
    } else if (table && line.startsWith(':KUBE-')) {
      out[table].push(line.slice(1).split(' ')[0]!);
    }
  }
  return out;
}

/** iptables-save output without KUBE-* chains and without the rules that jump to them. */
export function withoutKubeChains(save: string): string {
  return save
    .split('\n')
    .filter((l) => !l.startsWith(':KUBE-') && !l.startsWith('-A KUBE-') && !/ -j KUBE-/.test(l))
    .join('\n');
}

export const chainCount = (c: KubeChains) => c.nat.length + c.filter.length + c.mangle.length;

/** `iptables-save` (or ip6tables-save) inside `ns` (all tables, or one). */
export async function iptablesSave(ns: string, table?: string, family: 'ip' | 'ip6' = 'ip'): Promise<string> {
  const { stdout } = await nsExec(ns, `${family}tables-save`, table ? ['-t', table] : [], { timeoutMs: 120_000 });
  return stdout;
}

/**
 * The Services KUBE-SERVICES sends somewhere (its rules carry the comment
 * "ns/name:port cluster IP"), in the order iptables matches them.
 */
export function kubeServicesOrder(natSave: string): string[] {
  const out: string[] = [];
  for (const line of natSave.split('\n')) {
    if (!line.startsWith('-A KUBE-SERVICES ')) continue;
    const m = /--comment "?([^" ]+) cluster IP"?/.exec(line);
    if (m && / -j KUBE-SVC-/.test(line)) out.push(m[1]!);
  }
  return out;
}

export class KubeProxy {
  private constructor(
    readonly ns: string,
    readonly child: ChildProcess,
    readonly logFile: string,
    readonly configFile: string,
    readonly healthzUrl: string,
    readonly metricsUrl: string,
    /** Epoch ms when the process was started. */
    readonly startedAt: number,
    private readonly bins: K8sBins,
  ) {}

  /** Writes the configuration and starts kube-proxy in `ns`; resolves once it runs (not yet synced). */
  static async start(tb: Testbed, ns: string, opts: KubeProxyOptions): Promise<KubeProxy> {
    const bins = opts.bins ?? (await ensureK8sBins());
    const dir = await tb.tempDir('kube-proxy');
    const logFile = opts.logFile ?? path.join(dir, 'kube-proxy.log');
    const healthz = `127.0.0.1:${opts.healthzPort ?? 10256}`;
    const metrics = `127.0.0.1:${opts.metricsPort ?? 10249}`;
    const config = {
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
      kind: 'KubeProxyConfiguration',
      clientConnection: { kubeconfig: opts.kubeconfigPath, qps: 50, burst: 100 },
      hostnameOverride: opts.nodeName,
      mode: 'iptables',
      clusterCIDR: CLUSTER_CIDR,
      healthzBindAddress: healthz,
      metricsBindAddress: metrics,
      conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s' },
      iptables: {
        localhostNodePorts: false,
        minSyncPeriod: opts.minSyncPeriod ?? '1s',
        syncPeriod: opts.syncPeriod ?? '30s',
      },
      // No OOM score change: the testbed's processes are ordinary ones.
      oomScoreAdj: 0,
    };
    const configFile = path.join(dir, 'config.yaml');
    await writeFile(configFile, stringify(config));
    const startedAt = Date.now();
    const child = tb.spawn(ns, [bins.kubeProxy, `--config=${configFile}`, `--v=${opts.verbosity ?? 2}`], { logFile, stopTimeoutMs: 10_000 });
    return new KubeProxy(ns, child, logFile, configFile, `http://${healthz}/healthz`, `http://${metrics}/metrics`, startedAt, bins);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** GET from inside the namespace (its loopback is not the root namespace's). */
  private async get(url: string): Promise<{ status: number; body: string }> {
    const { stdout } = await nsExec(this.ns, 'curl', ['-s', '-m', '5', '-w', '\n%{http_code}', url], { timeoutMs: 10_000 });
    const i = stdout.lastIndexOf('\n');
    return { status: Number(stdout.slice(i + 1)), body: stdout.slice(0, i) };
  }

  async metrics(): Promise<string> {
    const r = await this.get(this.metricsUrl);
    if (r.status !== 200) throw new Error(`kube-proxy metrics: HTTP ${r.status}`);
    return r.body;
  }

  /** A metric's value: the unlabelled series, or the IPv4 one (NaN when absent). */
  async metric(name: string): Promise<number> {
    const lines = (await this.metrics()).split('\n');
    const line = lines.find((l) => l.startsWith(`${name} `)) ?? lines.find((l) => l.startsWith(`${name}{`) && l.includes('ip_family="IPv4"'));
    return Number(line?.split(' ').pop() ?? NaN);
  }

  /**
   * Waits for kube-proxy's first successful sync (it syncs only once the
   * Service and EndpointSlice informers have listed everything) and for
   * /healthz 200, then checks that KUBE-SERVICES sends each of `services`
   * ("namespace/name:port") somewhere. Resolves with the time from start to
   * the end of that first sync, in ms, taken from its own
   * kubeproxy_sync_proxy_rules_last_timestamp_seconds.
   */
  async waitSynced(opts: { services?: readonly string[]; timeoutMs?: number } = {}): Promise<number> {
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
    let last = '';
    for (;;) {
      if (!this.running) throw new Error(`kube-proxy exited (${this.child.exitCode ?? this.child.signalCode}) before it synced\n${await this.logTail()}`);
      if (Date.now() > deadline) throw new Error(`kube-proxy not synced within ${opts.timeoutMs ?? 60_000} ms (last: ${last})\n${await this.logTail()}`);
      try {
        const ts = await this.metric('kubeproxy_sync_proxy_rules_last_timestamp_seconds');
        const h = await this.get(this.healthzUrl);
        if (ts > 0 && h.status === 200) {
          const missing = await this.missingServices(opts.services ?? []);
          if (missing.length === 0) return ts * 1000 - this.startedAt;
          last = `KUBE-SERVICES lacks ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ` and ${missing.length - 5} more` : ''}`;
        } else {
          last = `last sync timestamp ${ts}, healthz ${h.status}`;
        }
      } catch (err) {
        last = (err as Error).message;
      }
      await sleep(250);
    }
  }

  /** Which of `services` ("ns/name:port") KUBE-SERVICES does not send to a KUBE-SVC chain. */
  async missingServices(services: readonly string[]): Promise<string[]> {
    if (services.length === 0) return [];
    const present = new Set(kubeServicesOrder(await iptablesSave(this.ns, 'nat')));
    return services.filter((s) => !present.has(s));
  }

  /** Resident set size, MB (VmRSS). */
  async rssMb(): Promise<number> {
    const text = await readFile(`/proc/${this.pid}/status`, 'utf8');
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(text)?.[1]) / 1024;
  }

  /** SIGTERM (SIGKILL after 10 s); resolves with the KUBE-* chains it left in the namespace. */
  async stop(): Promise<KubeChains> {
    await stopChild(this.child, 10_000);
    return kubeChainsIn(await iptablesSave(this.ns));
  }

  /**
   * Removes kube-proxy's rules from the namespace with `kube-proxy --cleanup`
   * (run there), as an operator switching a node to another proxy would. That
   * leaves filter KUBE-FIREWALL (kubelet may own a chain of that name), so
   * whatever KUBE-* is left goes too: iptables-save without those chains and
   * the rules jumping to them, restored into the namespace. Same for
   * ip6tables. Resolves with what --cleanup alone had left in iptables. Call after stop().
   */
  async cleanup(): Promise<KubeChains> {
    if (this.running) throw new Error('kube-proxy cleanup: stop it first');
    // --cleanup exits non-zero when some mode had nothing to clean (no nft
    // binary, no ipvs); what counts is the check below.
    await nsExec(this.ns, this.bins.kubeProxy, ['--cleanup', '--v=0'], { timeoutMs: 120_000 }).catch(() => undefined);
    let leftByCleanup: KubeChains | undefined;
    // kube-proxy runs dual-stack here: it programs ip6tables as well.
    for (const family of ['ip', 'ip6'] as const) {
      const save = await iptablesSave(this.ns, undefined, family);
      const left = kubeChainsIn(save);
      leftByCleanup ??= left;
      if (chainCount(left) === 0) continue;
      await nsExec(this.ns, `${family}tables-restore`, [], { input: withoutKubeChains(save), timeoutMs: 120_000 });
      const still = kubeChainsIn(await iptablesSave(this.ns, undefined, family));
      if (chainCount(still) > 0) throw new Error(`KUBE-* chains left in ${this.ns} (${family}tables) after cleanup: ${JSON.stringify(still)}`);
    }
    return leftByCleanup!;
  }

  async logTail(lines = 30): Promise<string> {
    try {
      const text = await readFile(this.logFile, 'utf8');
      return `--- kube-proxy log (${this.logFile}, last ${lines} lines) ---\n${text.trimEnd().split('\n').slice(-lines).join('\n')}`;
    } catch {
      return '--- kube-proxy log: none ---';
    }
  }
}
