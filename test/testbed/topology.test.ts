// The netns testbed on its own, without kbp: pods are routed through the node,
// a ClusterIP is unreachable (nothing owns it), and teardown leaves nothing
// behind. Needs root.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { cleanupStale, ip, listNamespaces, Testbed } from '../../src/testbed/netns.js';
import { Probe, startPodServer } from '../../src/testbed/programs.js';
import { Cluster, hostVethName } from '../../src/testbed/topology.js';

if (process.getuid?.() !== 0) {
  t.plan(0, 'needs root (network namespaces, bpffs)');
} else {
  t.test('routed pods, no ClusterIP without kbp, clean teardown', async (t) => {
    const tb = Testbed.create();
    t.teardown(() => tb.teardown());
    t.match(tb.prefix, /^kbp-[0-9a-f]{6}-$/);

    const cluster = await Cluster.create(tb);
    const a = await cluster.addPod('web-a', '10.244.1.11');
    const b = await cluster.addPod('web-b', '10.244.1.12');
    const client = await cluster.addPod('client', '10.244.1.100');
    t.equal(a.hostVeth, 'vethweb-a');
    t.same((await listNamespaces()).filter((n) => n.startsWith(tb.prefix)).sort(), [
      cluster.nodeNs,
      a.ns,
      b.ns,
      client.ns,
    ].sort());
    t.ok(readFileSync('/proc/self/mounts', 'utf8').includes(` ${cluster.bpffs} bpf `), 'bpffs mounted');

    await startPodServer(tb, a.ns, a.name, 8080);
    await startPodServer(tb, b.ns, b.name, 8080);
    const probe = await Probe.start(tb, client.ns);

    const [viaA] = await probe.http(a.ip, 8080);
    t.match(viaA, { ok: true, backend: 'web-a', seenFrom: /^10\.244\.1\.100:\d+$/ }, 'pod to pod through the node');
    const [viaB] = await probe.http(b.ip, 8080, { count: 1 });
    t.match(viaB, { ok: true, backend: 'web-b' });
    const udp = await probe.udp(b.ip, 8080);
    t.match(udp, { ok: true, from: { address: b.ip, port: 8080 } }, 'UDP reply from the pod itself');
    t.match(JSON.parse(udp.body), { pod: 'web-b', remoteAddress: client.ip });

    const [vip] = await probe.http('10.96.0.50', 80, { timeoutMs: 1000 });
    t.equal(vip?.ok, false, 'a ClusterIP is unreachable without kbp');
    t.ok(vip!.end - vip!.start < 900, `and fails fast (node has no route): ${vip!.error}`);

    await cluster.removePod('web-b');
    t.notOk((await listNamespaces()).includes(b.ns), 'removePod deletes the namespace');
    const links = await ip('-n', cluster.nodeNs, '-o', 'link', 'show');
    t.notMatch(links.stdout, hostVethName('web-b'), 'and its host veth');

    await tb.teardown();
    await tb.teardown(); // idempotent
    t.same((await listNamespaces()).filter((n) => n.startsWith(tb.prefix)), [], 'no namespace left');
    t.notOk(readFileSync('/proc/self/mounts', 'utf8').includes(cluster.bpffs), 'bpffs unmounted');
    t.notOk(existsSync(cluster.bpffs), 'bpffs dir removed');
  });

  t.test('cleanupStale removes a dead run and leaves live ones', async (t) => {
    const live = Testbed.create();
    t.teardown(() => live.teardown());
    const liveNs = await live.addNamespace('x');

    // A run whose process is gone: a child creates a namespace and exits
    // without tearing down (as if SIGKILLed).
    const { spawnSync } = await import('node:child_process');
    const script = `
      import { Testbed } from ${JSON.stringify(new URL('../../src/testbed/netns.ts', import.meta.url).href)};
      const tb = Testbed.create();
      await tb.addNamespace('orphan');
      await tb.mountBpffs();
      console.log(tb.prefix);
      process.kill(process.pid, 'SIGKILL');
    `;
    const r = spawnSync(process.execPath, [...process.execArgv.filter((a) => /typescript/.test(a)), '--input-type=module', '-e', script], {
      encoding: 'utf8',
    });
    const deadPrefix = r.stdout.trim();
    t.match(deadPrefix, /^kbp-[0-9a-f]{6}-$/, `crashed run created its namespace (${r.stderr.trim()})`);
    t.ok((await listNamespaces()).includes(`${deadPrefix}orphan`));

    const cleaned = await cleanupStale();
    t.ok(cleaned.namespaces.includes(`${deadPrefix}orphan`), 'dead run namespace removed');
    t.equal(cleaned.mounts.length >= 1, true, 'dead run bpffs unmounted');
    t.ok((await listNamespaces()).includes(liveNs), 'live run untouched');
    t.notOk((await listNamespaces()).includes(`${deadPrefix}orphan`));
  });
}
