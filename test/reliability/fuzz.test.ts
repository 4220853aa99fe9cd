// Scenario 5 of issue 8: malformed packets. Seeded random packets through
// BPF_PROG_TEST_RUN of both datapath programs (kbp_from_pod, kbp_from_node),
// each judged by an independent model (src/reliability/model.ts): untouched,
// dropped, or translated to which tuple with checksums carried over; half of
// the node-facing packets go through the uplink pipeline with XDP
// (kbp_xdp_node, then kbp_from_node on its output), which must end where
// kbp_from_node alone would and keep to the model's XDP rule on the way; the
// datapath's per-reason counters (xdp_forward included) must equal the
// model's. See src/reliability/fuzz.ts for the packet mix.
//
// Size: 100,000 packets in make test, 1,000,000 in make soak (KBP_SOAK=1);
// KBP_FUZZ_PACKETS and KBP_FUZZ_SEED override. The seed is printed always and
// with every failure: KBP_FUZZ_SEED=<seed> reruns the same packets.
// Needs root (BPF) and a built tree (make build).

import t from 'tap';
import { runFuzz } from '../../src/reliability/fuzz.js';
import { envInt, scaled } from '../../src/reliability/scale.js';

const skip = process.getuid?.() !== 0 ? 'needs root (BPF)' : false;

t.test('fuzz: malformed and valid packets through both programs and the XDP pipeline, judged by the model', { skip }, async (t) => {
  const packets = envInt('KBP_FUZZ_PACKETS', scaled(100_000, 1_000_000));
  const seed = envInt('KBP_FUZZ_SEED', Math.floor(Math.random() * 2 ** 32));
  t.comment(`seed ${seed}, ${packets} packets (rerun: KBP_FUZZ_SEED=${seed} KBP_FUZZ_PACKETS=${packets})`);
  const r = await runFuzz({ packets, seed });
  t.comment(`${r.packets} packets in ${r.seconds.toFixed(1)} s: ${Math.round(r.packetsPerSecond)} packets/s (test run + model); verdicts ${JSON.stringify(r.byVerdict)}`);
  t.comment(`categories ${JSON.stringify(r.byCategory)}; frames the test run refuses (regenerated): ${r.refused}`);
  t.comment(`through XDP then tc: ${r.xdp.packets} packets; XDP translated ${r.xdp.translated}, dropped ${r.xdp.dropped}, passed ${r.xdp.passed} (of those, ${r.xdp.pseudoHeaderOnly} forward flows with a pseudo-header-only checksum)`);
  t.same(r.runErrors, [], `no test run failed (seed ${seed})`);
  for (const f of r.failures) t.fail(`seed ${seed}, packet ${f.index} (${f.category}, ${f.program} program): ${f.message}\n  in  ${f.packetHex}\n  out ${f.outputHex}`);
  t.equal(r.packets, packets, 'every packet was run and judged');
  for (const v of ['untouched', 'drop', 'translate']) t.ok((r.byVerdict[v] ?? 0) > packets / 50, `the mix exercises ${v} (${r.byVerdict[v] ?? 0})`);
  // Each XDP outcome must occur (a share that never translates or never passes proves nothing).
  for (const k of ['translated', 'dropped', 'passed', 'pseudoHeaderOnly'] as const) t.ok(r.xdp[k] > 0, `XDP ${k}: ${r.xdp[k]} of ${r.xdp.packets}`);
  t.equal(r.counters.xdp_forward?.datapath, r.xdp.translated, 'xdp_forward counts exactly the packets XDP translated');
  const mismatched = Object.entries(r.counters).filter(([, c]) => c.model !== c.datapath);
  t.same(mismatched, [], `datapath counters equal the model's per reason (seed ${seed}): ${JSON.stringify(r.counters)}`);
});
