// Scenario 7 of issue 8: stopping the agent never leaves a tc hook attached
// to emptied maps, and the node keeps forwarding with its last state.
//
// For SIGTERM and for SIGKILL (each under a request loop): after the agent is
// gone, every pod device still has kbp's program at tc ingress; that program
// reads exactly the pinned maps (bpftool: its map ids are the pins' ids);
// the pinned service, backend and revnat maps hold what they held before the
// stop (decoded dumps compared); no request failed; a change to the
// manifests while no agent runs changes nothing (last state), and the next
// agent converges on it. `kbp detach` then removes hooks before pins.
//
// Address conventions: ClusterIP 10.96.0.10, pods 10.244.1.x. Needs root and
// a built tree.

import t from 'tap';
import path from 'node:path';
import { Testbed, run } from '../../src/testbed/netns.js';
import { Agent, kbpDetach } from '../../src/testbed/agent.js';
import { serviceScenario } from '../../src/testbed/scenario.js';
import { writeService } from '../../src/testbed/manifests.js';
import { dumpPinnedMap } from '../../src/testbed/mapdump.js';
import { LoadLoop, backendsOf, failures, sleep, until } from '../../src/reliability/apinode.js';
import { native } from '../../src/native/binding.js';
import * as abi from '../../src/maps/abi.js';

const skip = process.getuid?.() !== 0 ? 'needs root (network namespaces, bpffs, tc)' : false;

t.test('agent stop: hooks stay on the pinned, filled maps; forwarding goes on', { skip }, async (t) => {
  const tb = Testbed.create();
  t.teardown(() => tb.teardown());
  const spec = { name: 'web', namespace: 'default', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' as const }], endpoints: [{ ip: '10.244.1.11', podName: 'web-a' }, { ip: '10.244.1.12', podName: 'web-b' }] };
  const sc = await serviceScenario(tb, spec, { nodeName: 'node-1' });
  const netns = `/var/run/netns/${sc.cluster.nodeNs}`;
  const devices = [...sc.backends, sc.client].map((p) => p.hostVeth);
  const pinned = [abi.KBP_MAP_SERVICES, abi.KBP_MAP_BACKENDS, abi.KBP_MAP_REVNAT].map((m) => path.join(sc.cluster.bpffs, m));
  const dumps = async () => Promise.all(pinned.map((p) => dumpPinnedMap(p)));
  const pinIds = async () => {
    const ids = new Set<number>();
    for (const f of [...pinned, path.join(sc.cluster.bpffs, abi.KBP_MAP_CT)]) ids.add((JSON.parse((await run('bpftool', ['-j', 'map', 'show', 'pinned', f])).stdout) as { id: number }).id);
    return ids;
  };
  /** Per device: the program at kbp's tc hook and whether every pinned map is among the maps it uses. */
  const hooks = async () => {
    const ids = await pinIds();
    const out: string[] = [];
    for (const dev of devices) {
      const id = await native().tcQuery({ ifname: dev, netns });
      if (id === null) {
        out.push(`${dev}: none`);
        continue;
      }
      const info = JSON.parse((await run('bpftool', ['-j', 'prog', 'show', 'id', String(id)])).stdout) as { name: string; map_ids?: number[] };
      const uses = [...ids].every((m) => info.map_ids?.includes(m));
      out.push(`${dev}: ${info.name}${uses ? '' : ' NOT ON THE PINNED MAPS'}`);
    }
    return out;
  };
  const want = devices.map((d) => `${d}: kbp_from_pod`);

  let agent = await Agent.start(tb, sc.cluster, sc.nodeProbe, { manifestsDir: sc.manifestsDir });
  t.teardown(() => agent.stop());
  await agent.waitHealthy();
  await until('every device attached', async () => (JSON.stringify(await hooks()) === JSON.stringify(want) ? true : (await hooks()).join('; ')));

  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    await t.test(`${signal}: hooks, maps and traffic after the agent is gone`, async (t) => {
      const before = await dumps();
      t.ok(before[0]!.length > 0, `services map holds ${before[0]!.length} entries`);
      const loop = new LoadLoop(sc.clientProbe, spec.clusterIP, 80, { batch: 10, pauseMs: 10 });
      await loop.reach(50);
      const exit = await agent.kill(signal);
      t.same(exit, signal === 'SIGTERM' ? { code: 0, signal: null } : { code: null, signal }, `agent ended by ${signal}`);
      const at = loop.count;
      await loop.reach(at + 150);
      t.same(await hooks(), want, 'kbp_from_pod still on every pod device, reading the pinned maps');
      t.same(await dumps(), before, 'the pinned service, backend and revnat maps hold what they held');

      // The cluster changes while no agent runs: the node keeps its last state.
      await writeService(sc.manifestsDir, { ...spec, endpoints: [spec.endpoints[0]!] });
      await sleep(500);
      await loop.reach(loop.count + 100);
      const rs = await loop.stop();
      t.same(failures(rs).map((r) => r.error), [], `no request failed (${rs.length}, ${rs.length - at} after the agent was gone)`);
      t.same(backendsOf(rs.slice(at)), ['web-a', 'web-b'], 'with no agent, both backends of the last state keep answering');

      agent = await Agent.start(tb, sc.cluster, sc.nodeProbe, { manifestsDir: sc.manifestsDir });
      await agent.waitHealthy();
      await until('converged on one backend', async () => {
        const rs2 = await sc.clientProbe.http(spec.clusterIP, 80, { count: 10 });
        return failures(rs2).length === 0 && JSON.stringify(backendsOf(rs2)) === JSON.stringify(['web-a']) ? true : JSON.stringify(backendsOf(rs2));
      });
      t.pass('the next agent converges on the change made meanwhile');
      await writeService(sc.manifestsDir, spec);
      await until('both backends again', async () => {
        const rs2 = await sc.clientProbe.http(spec.clusterIP, 80, { count: 20 });
        return JSON.stringify(backendsOf(rs2)) === JSON.stringify(['web-a', 'web-b']) ? true : JSON.stringify(backendsOf(rs2));
      });
    });
  }

  await t.test('kbp detach removes the hooks before the pins', async (t) => {
    await agent.stop();
    const r = await kbpDetach(sc.cluster);
    const lines = r.stdout.split('\n');
    const lastDetach = lines.map((l) => l.startsWith('detached')).lastIndexOf(true);
    const firstUnpin = lines.findIndex((l) => l.startsWith('unpinned'));
    t.ok(lastDetach >= 0 && firstUnpin > lastDetach, 'every hook detached before the first pin is removed');
    const left = await Promise.all(devices.map((dev) => native().tcQuery({ ifname: dev, netns })));
    t.same(left, devices.map(() => null), 'no hook left');
  });
});
