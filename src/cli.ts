// `kbp <command>`: the one entry point (bin/kbp.js loads this file from dist/).

import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DEFAULT_BPFFS, agentUsage, parseAgentArgs } from './agent/options.js';
import { API_COMMANDS } from './cli/api.js';

const usage = `Usage: kbp <command> [options]

Commands:
  agent --kubeconfig PATH [...] run the node agent (or --manifests DIR without a
                                cluster; kbp agent --help for flags)
  detach [--bpffs DIR]          remove kbp's tc hooks in this network namespace and
                                its host-services cgroup links pinned under DIR,
                                then its pinned maps there (default ${DEFAULT_BPFFS})
  cleanup-iptables [--dry-run]  remove kube-proxy's iptables chains and the rules
                                jumping into them (kubelet's and others' stay)
  bench [compare] [--quick]     side by side with the real kube-proxy (iptables
                                mode) and direct-to-pod, plus the differential
                                behaviour check; kbp bench compare --help
  bench packet [--json]         per-packet cost of the datapath (BPF prog test run)
                                against a no-op tc program, at 1, 1k and 100k services
  bench controlplane [--json]   control-plane cost (trackers, desired state, syncer
                                diff, in-memory maps): full sync and one endpoint
                                change at 1k and 10k Services x 10 endpoints
  bench cluster [--json]        the real agent against a real kube-apiserver: full
                                sync, RSS and endpoint-change-to-map latency at 1k
                                and 10k Services x 10 endpoints (root, make k8s-bins)
  services | backends | conntrack | affinity | maps [NAME] | stats
                                tables over the agent's REST API (-o json, --api URL,
                                --token); kbp services --help for the options

Options:
  -h, --help                    show this help
`;

const detachUsage = `Usage: kbp detach [--bpffs DIR]

Detaches every kbp program from tc ingress in the current network namespace
and every host-services cgroup link pinned under DIR/links (whatever cgroup it
is on), then unpins every kbp_* object under DIR (default ${DEFAULT_BPFFS}).
Idempotent.
`;

const benchUsage = `Usage: kbp bench [compare] [options]   (kbp bench compare --help)
       kbp bench (packet | controlplane | cluster) [--json]
       kbp bench cluster [--json] [--scales 1000,10000] [--changes N] [--profile DIR] [--heap-snapshot DIR]

packet: per-packet prog-test-run time of a no-op tc program and of the service
path (new flow, established flow) with 1, 1k and 100k services, and their ratios.
controlplane: full sync and single-endpoint change cost of the control plane
(change trackers, per-Service desired state, syncer) with in-memory maps, at 1k
and 10k Services x 10 endpoints.
cluster: etcd and kube-apiserver on loopback, Services and EndpointSlices
created through the API, the agent started against them (root namespace,
private bpffs, no device): full sync from informer sync to maps programmed,
agent RSS, and API-write-to-map latency of single endpoint changes (p50/p99).
--profile DIR runs the agent with --cpu-prof and --heap-prof into DIR.
--heap-snapshot DIR writes a V8 heap snapshot of the agent into DIR once it is ready.
`;

class UsageError extends Error {}

async function cmdAgent(args: string[]): Promise<number> {
  if (args.includes('-h') || args.includes('--help')) {
    process.stdout.write(agentUsage);
    return 0;
  }
  let cfg;
  try {
    cfg = parseAgentArgs(args);
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n\n${agentUsage}`);
  }
  const { runAgent } = await import('./agent/agent.js');
  return runAgent(cfg);
}

async function cmdDetach(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args, strict: true, options: { bpffs: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n\n${detachUsage}`);
  }
  if (values.help) {
    process.stdout.write(detachUsage);
    return 0;
  }
  const { runDetach } = await import('./agent/detach.js');
  const r = await runDetach(values.bpffs ?? DEFAULT_BPFFS, (l) => process.stdout.write(l + '\n'));
  return r.problems.length ? 1 : 0;
}

async function cmdCleanupIptables(args: string[]): Promise<number> {
  const { cleanupIptables, cleanupIptablesUsage } = await import('./cli/cleanup-iptables.js');
  let values;
  try {
    ({ values } = parseArgs({ args, strict: true, options: { 'dry-run': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n\n${cleanupIptablesUsage}`);
  }
  if (values.help) {
    process.stdout.write(cleanupIptablesUsage);
    return 0;
  }
  const r = await cleanupIptables({ dryRun: values['dry-run'] ?? false, out: (l) => process.stdout.write(l + '\n') });
  return r.problems.length ? 1 : 0;
}

async function cmdBench(args: string[]): Promise<number> {
  if (args.length === 0 || args[0] === 'compare') {
    const { runCompareCli } = await import('./bench/compare/index.js');
    return runCompareCli(args.slice(args[0] === 'compare' ? 1 : 0));
  }
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: true,
      options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' }, scales: { type: 'string' }, changes: { type: 'string' }, profile: { type: 'string' }, 'heap-snapshot': { type: 'string' } },
    });
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n\n${benchUsage}`);
  }
  if (parsed.values.help) {
    process.stdout.write(benchUsage);
    return 0;
  }
  const which = parsed.positionals[0];
  if (parsed.positionals.length !== 1 || (which !== 'packet' && which !== 'controlplane' && which !== 'cluster')) throw new UsageError(benchUsage);
  const { scales, changes, profile } = parsed.values;
  const snapshot = parsed.values['heap-snapshot'];
  if (which !== 'cluster' && (scales !== undefined || changes !== undefined || profile !== undefined || snapshot !== undefined)) throw new UsageError(`--scales, --changes, --profile and --heap-snapshot are for bench cluster\n\n${benchUsage}`);
  if (which === 'cluster') {
    const nums = (s: string, what: string) =>
      s.split(',').map((x) => {
        const n = Number(x);
        if (!Number.isInteger(n) || n < 1) throw new UsageError(`${what}: expected positive integers, got ${JSON.stringify(s)}\n\n${benchUsage}`);
        return n;
      });
    const { runClusterBench } = await import('./bench/cluster.js');
    await runClusterBench({
      json: parsed.values.json ?? false,
      scales: scales === undefined ? undefined : nums(scales, '--scales'),
      changes: changes === undefined ? undefined : nums(changes, '--changes')[0],
      profileDir: profile,
      snapshotDir: snapshot,
    });
    return 0;
  }
  if (which === 'controlplane') {
    const { runControlPlaneBench } = await import('./bench/controlplane.js');
    await runControlPlaneBench({ json: parsed.values.json ?? false });
    return 0;
  }
  const { runPacketBench } = await import('./bench/packet.js');
  await runPacketBench({ json: parsed.values.json ?? false });
  return 0;
}

/** Runs a command; resolves with the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'agent':
        return await cmdAgent(rest);
      case 'detach':
        return await cmdDetach(rest);
      case 'cleanup-iptables':
        return await cmdCleanupIptables(rest);
      case 'bench':
        return await cmdBench(rest);
      case '-h':
      case '--help':
      case 'help':
        process.stdout.write(usage);
        return 0;
      default:
        if ((API_COMMANDS as readonly string[]).includes(cmd ?? '')) {
          const { runApiCommand } = await import('./cli/api.js');
          return await runApiCommand(cmd!, rest);
        }
        process.stderr.write(`${cmd === undefined ? 'no command given' : `unknown command: ${cmd}`}\n\n${usage}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`kbp ${cmd}: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`kbp ${cmd}: ${(err as Error).message}\n`);
    if (process.env.KBP_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
    return 1;
  }
}

function isEntryPoint(): boolean {
  if (!process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
