// `make demo`: the seed example (examples/my-nginx) on a one-node cluster made
// of network namespaces. Starts `kbp agent --manifests`, sends requests from a
// client pod to the ClusterIP and shows which replica answered each, prints
// the programmed frontends and the pinned maps, shows that traffic survives
// the agent's exit, then runs `kbp detach` and tears everything down.
//
// Exit 0 on success; non-zero with a message on failure. Teardown always runs.

import path from 'node:path';
import { projectRoot } from '../paths.js';
import { Agent, kbpDetach } from './agent.js';
import { readServiceSpec } from './manifests.js';
import { dumpPinnedMap, kbpPins } from './mapdump.js';
import { cleanupStale, Testbed } from './netns.js';
import { serviceScenario, tally } from './scenario.js';
import type { HttpResult } from './probe-protocol.js';

const exampleDir = path.join(projectRoot, 'examples', 'my-nginx');
const REQUESTS = 10;

function step(text: string): void {
  process.stdout.write(`\n== ${text}\n`);
}

function say(text: string): void {
  process.stdout.write(`   ${text}\n`);
}

function describe(r: HttpResult): string {
  return r.ok ? `${r.backend} (it saw the client as ${r.seenFrom})` : `FAILED: ${r.error ?? `HTTP ${r.status}`}`;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo needs root (network namespaces, bpffs, tc): run it as root');
  await cleanupStale();
  const spec = await readServiceSpec(exampleDir);
  const port = spec.ports.find((p) => p.protocol === 'TCP');
  if (!port) throw new Error(`${exampleDir}: Service ${spec.name} has no TCP port`);
  const vip = `${spec.clusterIP}:${port.port}`;

  const tb = Testbed.create();
  let agent: Agent | undefined;
  try {
    step(`Creating a one-node cluster in network namespaces (run ${tb.runId})`);
    const sc = await serviceScenario(tb, spec, { manifestsFrom: exampleDir });
    say(`node namespace ${sc.cluster.nodeNs}, bpffs ${sc.cluster.bpffs}`);
    for (const b of sc.backends) say(`pod ${b.name.padEnd(12)} ${b.ip.padEnd(13)} host veth ${b.hostVeth}  (serves :${port.targetPort})`);
    say(`pod ${sc.client.name.padEnd(12)} ${sc.client.ip.padEnd(13)} host veth ${sc.client.hostVeth}`);
    say(`Service ${spec.namespace}/${spec.name}: ClusterIP ${vip} -> targetPort ${port.targetPort}`);

    step(`Without kbp, ${vip} is not reachable from the client pod`);
    const before = await sc.clientProbe.http(spec.clusterIP, port.port, { timeoutMs: 1000 });
    say(`request -> ${describe(before[0]!)}`);

    step(`Starting kbp agent --manifests <copy of examples/my-nginx> in the node namespace`);
    agent = await Agent.start(tb, sc.cluster, sc.nodeProbe, { manifestsDir: sc.manifestsDir });
    await agent.waitHealthy();
    say('agent healthy');

    step(`${REQUESTS} requests from pod ${sc.client.name} to ${vip}, each on a new TCP connection`);
    const results = await sc.clientProbe.http(spec.clusterIP, port.port, { count: REQUESTS });
    results.forEach((r, i) => say(`#${String(i + 1).padStart(2)} -> ${describe(r)}`));
    const counts = tally(results);
    say(`answered by: ${[...counts].map(([k, v]) => `${k} x${v}`).join(', ')}`);
    const failed = results.filter((r) => !r.ok).length;
    if (failed) throw new Error(`${failed} of ${REQUESTS} requests to ${vip} failed`);
    // Backends are chosen at random per connection; with 2 replicas, 10
    // requests miss one about 1 time in 500, so look a little further first.
    for (let sent = REQUESTS; sc.backends.some((b) => !counts.has(b.name)) && sent < 5 * REQUESTS; sent += REQUESTS) {
      const more = await sc.clientProbe.http(spec.clusterIP, port.port, { count: REQUESTS });
      for (const [k, v] of tally(more)) counts.set(k, (counts.get(k) ?? 0) + v);
      say(`${REQUESTS} more: answered by ${[...tally(more)].map(([k, v]) => `${k} x${v}`).join(', ')}`);
    }
    const unseen = sc.backends.filter((b) => !counts.has(b.name)).map((b) => b.name);
    if (unseen.length) throw new Error(`no request reached ${unseen.join(', ')}`);

    step('Programmed frontends (GET /v1/services on the agent API)');
    process.stdout.write(`${JSON.stringify(await agent.services(), null, 2)}\n`);

    step(`Pinned maps in ${sc.cluster.bpffs} (bpftool -j map dump, decoded)`);
    for (const pin of await kbpPins(sc.cluster.bpffs)) {
      let lines: string[];
      try {
        lines = await dumpPinnedMap(path.join(sc.cluster.bpffs, pin));
      } catch (err) {
        lines = [`(not dumped: ${(err as Error).message.split('\n')[0]})`];
      }
      process.stdout.write(`\n   ${pin} (${lines.length} lines)\n`);
      for (const l of lines.slice(0, 40)) say(`  ${l}`);
      if (lines.length > 40) say(`  … ${lines.length - 40} more`);
    }

    step('Stopping the agent (SIGTERM): programs stay attached and maps pinned');
    await agent.kill('SIGTERM');
    const after = await sc.clientProbe.http(spec.clusterIP, port.port, { count: 3 });
    after.forEach((r) => say(`request -> ${describe(r)}`));
    if (after.some((r) => !r.ok)) throw new Error('traffic stopped when the agent exited');

    step('kbp detach --bpffs … removes every hook and pin');
    const detach = await kbpDetach(sc.cluster);
    if (detach.stdout.trim()) say(detach.stdout.trim().split('\n').join('\n   '));
    const gone = await sc.clientProbe.http(spec.clusterIP, port.port, { timeoutMs: 1000 });
    say(`request -> ${describe(gone[0]!)}`);
    const left = await kbpPins(sc.cluster.bpffs);
    if (left.length) throw new Error(`kbp detach left pins: ${left.join(', ')}`);
  } catch (err) {
    if (agent && !String((err as Error).message).includes('--- agent log')) process.stderr.write(`${await agent.logTail()}\n`);
    throw err;
  } finally {
    step('Tearing down');
    await tb.teardown();
    say('namespaces, bpffs and processes removed');
  }
}

main().then(
  () => {
    process.stdout.write('\ndemo: OK\n');
  },
  (err: unknown) => {
    process.stderr.write(`\ndemo: FAILED: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
