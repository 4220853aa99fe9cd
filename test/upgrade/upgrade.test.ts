// Upgrade across a map layout change, under traffic (issue 7).
//
// Version A is the REAL previous release of the datapath: commit 9f7111a, the
// last one with ABI v1 (kbp_ct4_v1 without NAT fields, 32-byte values;
// kbp_backend_v1 without flags; kbp_stats_v1 with 11 slots), built from git
// history by scripts/kbp-version.sh into ~/.cache/kbp/versions/<commit> (its
// own Makefile: bpf objects, addon, dist; ~2-4 min once, then reused; `make
// test` warms it first). Version B is this checkout (ABI v2). Nothing is
// simulated: A's own programs create the v1 flows, B's migration
// (src/agent/migrate.ts) converts them.
//
// On one node namespace (src/testbed/topology.ts): A serves the seed
// ClusterIP; 4 long-lived keep-alive connections send a request every 50 ms
// and a request loop opens a new connection per request. A is stopped with
// SIGTERM (as a DaemonSet rolling update does) and B starts on the same bpffs.
// Asserted: no request of the loop fails; every long-lived connection keeps
// working on the same TCP connection and the same backend, and its conntrack
// entry in the v2 map is the one A's datapath created (created before A was
// stopped); B's migration log names its counts; B's first sync writes only
// the backends' new locality flag; the v1 pins of changed layouts are gone.
//
// Needs root, a build (make build) and the git history (a shallow clone fails
// with the fetch to run).

import t from 'tap';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { projectRoot } from '../../src/paths.js';
import * as abi from '../../src/maps/abi.js';
import { backendValueV1, ctValueV1 } from '../../src/maps/legacy.js';
import { Agent } from '../../src/testbed/agent.js';
import { Chatter, type ChatterSummary } from '../../src/testbed/chatter.js';
import { readServiceSpec } from '../../src/testbed/manifests.js';
import { kbpPins, pinnedEntries } from '../../src/testbed/mapdump.js';
import { cleanupStale, Testbed } from '../../src/testbed/netns.js';
import type { HttpResult } from '../../src/testbed/probe-protocol.js';
import { serviceScenario, type ServiceScenario } from '../../src/testbed/scenario.js';

const VERSION_A = '9f7111a464b663286863af6787cd6c287bde20da'; // last ABI v1 commit
const LONG_LIVED = 4;
const INTERVAL_MS = 50;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.timeOrigin + performance.now();

/** key=value fields of the agent's log lines with this msg. */
async function logLines(file: string, msg: string): Promise<Array<Record<string, string>>> {
  const text = await readFile(file, 'utf8');
  const out: Array<Record<string, string>> = [];
  for (const line of text.split('\n')) {
    const fields: Record<string, string> = {};
    for (const m of line.matchAll(/(\w+)=("(?:[^"\\]|\\.)*"|\S+)/g)) fields[m[1]!] = m[2]!.startsWith('"') ? (JSON.parse(m[2]!) as string) : m[2]!;
    if (fields.msg === msg) out.push(fields);
  }
  return out;
}

if (process.getuid?.() !== 0) {
  t.plan(0, 'needs root (network namespaces, bpffs, tc)');
} else {
  await cleanupStale();
  const built = await promisify(execFile)('bash', [path.join(projectRoot, 'scripts', 'kbp-version.sh'), VERSION_A], { maxBuffer: 1 << 24 }).catch((err: Error & { stderr?: string }) => {
    throw new Error(`cannot build version A (${VERSION_A}): ${err.stderr ?? err.message}`);
  });
  const versionA = built.stdout.trim();
  const example = await readServiceSpec(path.join(projectRoot, 'examples', 'my-nginx'));
  // Endpoints on this node: v2's backends carry a locality flag v1 did not have.
  const spec = { ...example, endpoints: example.endpoints.map((e) => ({ ...e, nodeName: 'node' })) };
  const http = spec.ports.find((p) => p.protocol === 'TCP')!;
  const vip = spec.clusterIP;

  const tb = Testbed.create();
  let sc!: ServiceScenario;
  let agentA!: Agent;
  let agentB: Agent | undefined;
  t.teardown(async () => {
    if (!t.passing()) {
      if (agentA) process.stderr.write(`${await agentA.logTail(40)}\n`);
      if (agentB) process.stderr.write(`${await agentB.logTail(80)}\n`);
    }
    await tb.teardown();
  });

  t.before(async () => {
    sc = await serviceScenario(tb, spec);
    agentA = await Agent.start(tb, sc.cluster, sc.nodeProbe, { manifestsDir: sc.manifestsDir, kbpBin: path.join(versionA, 'bin', 'kbp.js') });
    await agentA.waitHealthy(30_000);
  });

  const pin = (name: string) => path.join(sc.cluster.bpffs, name);

  t.test('version A (ABI v1) serves the ClusterIP from v1 maps', async (t) => {
    const pins = await kbpPins(sc.cluster.bpffs);
    t.comment(`pins of A: ${pins.join(' ')}`);
    for (const p of ['kbp_ct4_v1', 'kbp_backend_v1', 'kbp_stats_v1', 'kbp_svc_v1']) t.ok(pins.includes(p), `${p} pinned`);
    const results = await sc.clientProbe.http(vip, http.port, { count: 10 });
    t.same(results.filter((r) => !r.ok), [], '10 requests through A');
  });

  t.test('A replaced by B under traffic: no failed request, long-lived connections keep their backend', async (t) => {
    const chatter = await Chatter.start(tb, sc.client.ns, vip, http.port, { connections: LONG_LIVED, intervalMs: INTERVAL_MS });
    // The request loop: new connection per request, until told to stop.
    const loop: HttpResult[] = [];
    let looping = true;
    const loopDone = (async () => {
      while (looping) loop.push(...(await sc.clientProbe.http(vip, http.port, { count: 5, timeoutMs: 5000 })));
    })();
    await sleep(1000);

    // What A's datapath recorded for the long-lived connections (v1 layout).
    const v1Backends = new Map((await pinnedEntries(pin('kbp_backend_v1'))).map((e) => [abi.backendKey.decode(e.key).id, backendValueV1.decode(e.value)]));
    const v1Forward = (await pinnedEntries(pin('kbp_ct4_v1')))
      .map((e) => ({ k: abi.ctKey.decode(e.key), v: ctValueV1.decode(e.value) }))
      .filter((e) => e.k.dir === abi.KBP_CT_FORWARD && e.k.daddr === vip);
    const beforeStop = process.hrtime.bigint(); // CLOCK_MONOTONIC, the clock of created_ns
    const killedAt = now();
    const exitA = await agentA.kill('SIGTERM');
    t.equal(exitA.code, 0, 'A exits cleanly on SIGTERM, leaving hooks and pins');
    const exitedAt = now();
    const loopAtKill = loop.length;

    agentB = await Agent.start(tb, sc.cluster, sc.nodeProbe, { manifestsDir: sc.manifestsDir });
    await agentB.waitHealthy(30_000);
    const readyAt = now();
    t.comment(`A took ${Math.round(exitedAt - killedAt)} ms to exit; B was healthy ${Math.round(readyAt - exitedAt)} ms after its start`);
    // What B's syncer wrote since it started (the first sync, and nothing later: nothing changes).
    const metrics = await sc.nodeProbe.get(`${agentB.apiUrl}/metrics`, 5000);
    const writes = Object.fromEntries([...metrics.body.matchAll(/^kbp_map_writes_total\{map="([^"]+)"\} (\d+)$/gm)].map((m) => [m[1]!, Number(m[2])]));
    await sleep(1500);
    looping = false;
    await loopDone;
    const summaries: ChatterSummary[] = await chatter.stop();

    // The loop.
    const failed = loop.filter((r) => !r.ok);
    const slowest = loop.reduce((m, r) => Math.max(m, r.end - r.start), 0);
    const during = loop.filter((r) => r.end >= killedAt && r.start <= readyAt);
    t.comment(`request loop: ${loop.length} requests (${loopAtKill} before A stopped, ${during.length} overlapping the ${Math.round(readyAt - killedAt)} ms from A's stop to B ready), ${failed.length} failed, slowest ${slowest.toFixed(0)} ms`);
    t.same(failed.map((r) => r.error ?? `HTTP ${r.status}`), [], 'no request of the loop failed');
    t.ok(loop.length - loopAtKill >= 20, 'the loop kept running across the switch');

    // The long-lived connections.
    for (const [i, s] of summaries.entries()) {
      t.comment(`connection ${i}: ${s.answered}/${s.requests} answered by ${s.pods.join(',')} from client port ${s.clientPorts.join(',')}, slowest ${s.maxLatencyMs} ms`);
      t.same(s.errors, [], `connection ${i}: no error`);
      t.equal(s.pods.length, 1, `connection ${i}: one backend throughout`);
      t.equal(s.clientPorts.length, 1, `connection ${i}: one TCP connection throughout`);
      t.ok(s.answered >= s.requests - 1 && s.answered > 40, `connection ${i}: kept answering (${s.answered})`);
    }

    // Their conntrack entries moved: same backend, created by A.
    const v2Backends = new Map((await pinnedEntries(pin(abi.KBP_MAP_BACKENDS))).map((e) => [abi.backendKey.decode(e.key).id, abi.backendValue.decode(e.value)]));
    const v2Ct = new Map((await pinnedEntries(pin(abi.KBP_MAP_CT))).map((e) => [e.key.toString('hex'), abi.ctValue.decode(e.value)]));
    for (const [i, s] of summaries.entries()) {
      const port = s.clientPorts[0]!;
      const old = v1Forward.find((e) => e.k.sport === port);
      if (!t.ok(old, `connection ${i}: A's v1 conntrack had its flow`)) continue;
      const moved = v2Ct.get(abi.ctKey.encode(old!.k).toString('hex'));
      if (!t.ok(moved, `connection ${i}: the v2 conntrack has it`)) continue;
      t.equal(moved!.backend_id, old!.v.backend_id, `connection ${i}: same backend id (${old!.v.backend_id})`);
      t.equal(v2Backends.get(moved!.backend_id)?.ip, v1Backends.get(old!.v.backend_id)?.ip, `connection ${i}: the id still names ${v1Backends.get(old!.v.backend_id)?.ip}`);
      t.ok(moved!.created_ns < beforeStop, `connection ${i}: the entry is A's (created before A stopped), not made anew`);
      const reply = v2Ct.get(
        abi.ctKey.encode({ saddr: v1Backends.get(old!.v.backend_id)!.ip, daddr: old!.k.saddr, sport: v1Backends.get(old!.v.backend_id)!.port, dport: port, proto: abi.IPPROTO_TCP, dir: abi.KBP_CT_REPLY }).toString('hex'),
      );
      t.same(reply && { addr: reply.nat_addr, port: reply.nat_port }, { addr: vip, port: http.port }, `connection ${i}: its v2 reply entry names the frontend ${vip}:${http.port}`);
    }

    // B's migration, as its log reports it.
    const log = agentB.logFile;
    const copied = await logLines(log, 'entries copied');
    t.comment(`migration: ${copied.map((c) => `${c.phase} ${c.map}: scanned ${c.scanned} inserted ${c.inserted} updated ${c.updated} skipped ${c.skipped}`).join('; ')}`);
    const initialCt = copied.find((c) => c.phase === 'initial' && c.map === 'kbp_ct4_v1');
    t.ok(initialCt && Number(initialCt.inserted) >= 2 * LONG_LIVED, `initial copy inserted >= ${2 * LONG_LIVED} conntrack entries (${initialCt?.inserted})`);
    const initialBe = copied.find((c) => c.phase === 'initial' && c.map === 'kbp_backend_v1');
    t.equal(initialBe?.inserted, String(spec.endpoints.length), `initial copy inserted the ${spec.endpoints.length} backends`);
    const steps = await logLines(log, 'migration step done');
    t.comment(`steps: ${steps.map((s) => `${s.step} ${s.ms} ms`).join(', ')}`);
    t.same(
      steps.map((s) => s.step),
      ['initial copy', 'copy before quiesce', 'quiesce old datapath', 'copy before switch', 'check switch', 'copy after switch', 'unpin old maps'],
      'every step ran, in order',
    );
    const quiesced = (await logLines(log, 'old datapath quiesced: its forward path drops until the switch'))[0];
    const switched = (await logLines(log, 'every device switched to the new programs'))[0];
    if (quiesced && switched) t.comment(`old forward path quiesced for ${Date.parse(switched.time!) - Date.parse(quiesced.time!)} ms (quiesce -> every device switched)`);
    t.comment(`B's map writes after its first sync: ${JSON.stringify(writes)}`);
    t.same(
      Object.entries(writes).filter(([, n]) => n > 0),
      [[abi.KBP_MAP_BACKENDS, spec.endpoints.length]],
      'the first sync rewrote only the backends (their new locality flag); ids restored, services and revnat untouched',
    );
    const be = [...v2Backends.values()];
    t.ok(be.length === spec.endpoints.length && be.every((b) => b.flags === abi.KBP_BACKEND_F_LOCAL), 'v2 backends carry the locality flag');

    // Pins afterwards.
    const pins = await kbpPins(sc.cluster.bpffs);
    t.comment(`pins of B: ${pins.join(' ')}`);
    for (const old of ['kbp_ct4_v1', 'kbp_backend_v1', 'kbp_stats_v1']) t.notOk(pins.includes(old), `${old} unpinned`);
    for (const cur of [abi.KBP_MAP_CT, abi.KBP_MAP_BACKENDS, abi.KBP_MAP_STATS, abi.KBP_MAP_SERVICES]) t.ok(pins.includes(cur), `${cur} pinned`);
  });

  t.test('B keeps serving after the migration', async (t) => {
    const results = await sc.clientProbe.http(vip, http.port, { count: 20 });
    t.same(results.filter((r) => !r.ok), [], '20 more requests');
    t.equal(new Set(results.map((r) => r.backend)).size, spec.endpoints.length, 'both backends answer');
  });
}
