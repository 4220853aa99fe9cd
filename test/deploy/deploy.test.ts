// deploy/ against the real kube-apiserver (etcd + kube-apiserver of
// src/testbed/apiserver.ts), rendered by the real kustomize:
//
// 1. Every object of deploy/base, each overlay, deploy/uninstall and a
//    combination of components (the way users pick several knobs) passes a
//    server-side apply dry-run (all admission and validation, strict field
//    validation), and a misspelt field does not. Agent flags in the base all
//    exist; flags that do not exist yet appear only in their overlay.
// 2. The agent runs as the DaemonSet would run it, in a node namespace: the
//    args and environment of the rendered api-node-ip overlay (ConfigMap,
//    downward API, $(VAR) expansion; bpffs and TLS paths mapped to the test's
//    folders as the pod's mounts map them), exactly the container's
//    capabilities (setpriv bounding set), and the in-cluster config: a token
//    minted for the kbp-agent ServiceAccount with the TokenRequest API and the
//    CA in a folder shaped like /var/run/secrets/kubernetes.io/serviceaccount,
//    KUBERNETES_SERVICE_HOST/PORT pointing at the API relayed into the node.
//    It works: a ClusterIP answers from a pod; the API on the node IP answers
//    /readyz and /healthz without a token, 401 without one elsewhere, 200 for
//    a ServiceAccount bound to kbp-agent-api-reader, 403 for one that is not.
// 3. Every capability is needed: the agent with the set minus one of them
//    attaches nothing and exits (maps, program load or tc fail).
// 4. Every ClusterRole rule is needed: without tokenreviews/create or
//    subjectaccessreviews/create the running agent's API cannot check tokens
//    (503); without list or watch on services, endpointslices or nodes the
//    agent's informers (its InformerSource, run in this process with the same
//    in-cluster config and token, to spare six agent starts) fail with 403
//    for that kind and no other, and without list they never sync.
// 5. Uninstall: `kbp detach` with the uninstall DaemonSet's args and
//    capabilities leaves no tc hook and no pin.
//
// Address conventions: node "node-1" with node IP 172.18.0.11 (on the node
// namespace's loopback), ClusterIP 10.96.0.70, pods 10.244.1.x.
// Needs root, a built tree, the Kubernetes binaries and kustomize (both built
// with Go into ~/.cache/kbp; skipped with a reason without Go).

import t from 'tap';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { relayInto, startControlPlane, type ControlPlane } from '../../src/testbed/apiserver.js';
import { nodeObject, serviceObjects } from '../../src/testbed/manifests.js';
import { nsExec, run, Testbed } from '../../src/testbed/netns.js';
import { Probe, childEnv, startPodServer } from '../../src/testbed/programs.js';
import { Cluster } from '../../src/testbed/topology.js';
import { TestCgroup } from '../../src/testbed/cgroup.js';
import { kbpBin } from '../../src/testbed/agent.js';
import { agentUsage } from '../../src/agent/options.js';
import { InformerSource } from '../../src/k8s/informers.js';
import { memoryLogger } from '../../src/log.js';
import { containerRun, k8sSkipReason, kustomizeBin, render, renderComposed, serverSideApply, type K8sObject } from './render.js';

const NODE = 'node-1';
const NODE_IP = '172.18.0.11';
const VIP = '10.96.0.70';
const RELAY_PORT = 6443;
const RENDERINGS = ['base', 'overlays/node-devices', 'overlays/api-node-ip', 'overlays/xdp', 'overlays/map-sizes', 'overlays/privileged', 'overlays/replace-kube-proxy', 'uninstall'];
const COMPOSED = ['node-devices', 'replace-kube-proxy', 'api-node-ip', 'map-sizes', 'xdp'];
const MAP_SIZE_KEYS = new Set(['services', 'backends', 'revnat', 'conntrack', 'snat', 'affinity', 'sockrev']);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const skip = await k8sSkipReason('network namespaces, bpffs, tc', { kustomize: true });
const kustomize = skip ? '' : await kustomizeBin();

async function must(cp: ControlPlane, method: string, p: string, body?: unknown): Promise<Record<string, unknown>> {
  const r = await cp.request(method, p, body);
  if (r.status < 200 || r.status >= 300) throw new Error(`${method} ${p}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  return r.json as Record<string, unknown>;
}

async function mintToken(cp: ControlPlane, ns: string, sa: string): Promise<string> {
  const r = await must(cp, 'POST', `/api/v1/namespaces/${ns}/serviceaccounts/${sa}/token`, { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds: 3600 } });
  return (r.status as { token: string }).token;
}

/** GET over HTTPS from inside `ns` with curl: status and body. */
async function curl(ns: string, url: string, ca: string, token?: string): Promise<{ status: number; body: string }> {
  const args = ['-s', '-m', '5', '--cacert', ca, '-w', '\n%{http_code}', ...(token ? ['-H', `Authorization: Bearer ${token}`] : []), url];
  const { stdout } = await nsExec(ns, 'curl', args, { timeoutMs: 10_000 }).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '\n0' }));
  const i = stdout.lastIndexOf('\n');
  return { status: Number(stdout.slice(i + 1)), body: stdout.slice(0, i) };
}

/** Flag names (--x) in an argv. */
const flagsOf = (args: string[]) => args.filter((a) => a.startsWith('--')).map((a) => a.split('=')[0]!);
const knownAgentFlags = new Set([...agentUsage.matchAll(/^\s+(--[a-z-]+)/gm)].map((m) => m[1]!));

t.test('deploy/ manifests', { skip, timeout: 400_000 }, async (t) => {
  const tb = Testbed.create();
  t.teardown(() => tb.teardown());
  const [cp, rendered] = await Promise.all([startControlPlane(tb), Promise.all(RENDERINGS.map(async (d) => [d, await render(kustomize, d)] as const)).then((e) => new Map(e))]);
  // Knobs combined, as a user would: base plus several components.
  rendered.set('composed', await renderComposed(kustomize, await tb.tempDir('composed'), COMPOSED));

  await t.test('every object of every rendering passes a server-side dry-run', async (t) => {
    // Namespaced objects need their namespace to exist, even for a dry run.
    const ns = rendered.get('base')!.find((o) => o.kind === 'Namespace')!;
    t.equal((await serverSideApply(cp, ns, { dryRun: false })).status, 201, 'namespace kbp-system created');
    let n = 0;
    for (const [dir, objects] of rendered) {
      for (const o of objects) {
        const r = await serverSideApply(cp, o, { dryRun: true });
        if (r.status !== 200 && r.status !== 201) t.fail(`${dir}: ${o.kind}/${o.metadata.name}: HTTP ${r.status} ${r.body.slice(0, 400)}`);
        else n++;
      }
    }
    t.equal(n, [...rendered.values()].reduce((a, os) => a + os.length, 0), `all ${n} objects of ${rendered.size} renderings accepted`);
    const ds = structuredClone(rendered.get('base')!.find((o) => o.kind === 'DaemonSet')!) as K8sObject & { spec: { template: { spec: { containers: Array<Record<string, unknown>> } } } };
    ds.spec.template.spec.containers[0]!.securityContxt = {};
    const bad = await serverSideApply(cp, ds, { dryRun: true });
    t.ok(bad.status >= 400 && /securityContxt/.test(bad.body), `a misspelt field is refused (HTTP ${bad.status})`);
    t.comment(bad.body.slice(0, 300));
    t.notOk((await cp.request('GET', '/apis/apps/v1/namespaces/kbp-system/daemonsets/kbp-agent')).status === 200, 'the dry runs stored nothing');
  });

  await t.test('agent flags: the base uses only existing ones; pending ones live in their overlay', async (t) => {
    const fields = { 'spec.nodeName': NODE, 'status.hostIP': NODE_IP };
    const base = flagsOf(containerRun(rendered.get('base')!, 'agent', fields).args);
    t.same(base.filter((f) => !knownAgentFlags.has(f)), [], `base flags all exist: ${base.join(' ')}`);
    for (const dir of [...RENDERINGS.filter((d) => d.startsWith('overlays/')), 'composed']) {
      const { args } = containerRun(rendered.get(dir)!, 'agent', fields);
      t.same(flagsOf(args).filter((f) => !knownAgentFlags.has(f)), [], `${dir}: every flag is one kbp agent --help lists`);
    }
    // Every container runs the image set in the base (components copy it), and
    // those that run no command of their own run a kbp command.
    const image = containerRun(rendered.get('base')!, 'agent', fields).container.image;
    t.match(image, /^ghcr\.io\/kube-bpf-proxy\/kbp:/, `base image ${image}`);
    const help = (await run(process.execPath, [kbpBin(), '--help'])).stdout;
    for (const [dir, objects] of rendered) {
      for (const o of objects.filter((x) => x.kind === 'DaemonSet')) {
        const pod = (o as unknown as { spec: { template: { spec: { containers: Array<{ name: string; image: string; command?: string[]; args?: string[] }>; initContainers?: Array<{ name: string; image: string; command?: string[]; args?: string[] }> } } } }).spec.template.spec;
        for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
          t.equal(c.image, image, `${dir}: container ${c.name} runs the kbp image`);
          if (c.command) continue;
          t.match(help, new RegExp(`^  ${c.args![0]}\\b`, 'm'), `${dir}: container ${c.name} runs kbp ${c.args![0]}`);
        }
      }
    }
    const composed = rendered.get('composed')!.find((o) => o.kind === 'DaemonSet') as unknown as { spec: { template: { spec: { initContainers: Array<{ name: string }> } } } };
    t.same(composed.spec.template.spec.initContainers.map((c) => c.name), ['accept-local', 'cleanup-iptables'], `components combine: ${COMPOSED.join(' + ')}`);
    const sizes = containerRun(rendered.get('overlays/map-sizes')!, 'agent', fields).args.find((a) => a.startsWith('--map-sizes='))!;
    for (const kv of sizes.slice('--map-sizes='.length).split(',')) {
      const [k, v] = kv.split('=');
      t.ok(MAP_SIZE_KEYS.has(k!) && Number.isInteger(Number(v)) && Number(v) > 0, `--map-sizes ${kv}`);
    }
  });

  // ---- the agent as the DaemonSet runs it
  const base = rendered.get('base')!;
  for (const o of base) {
    const r = await serverSideApply(cp, o, { dryRun: false });
    if (r.status >= 300) throw new Error(`apply ${o.kind}/${o.metadata.name}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  }
  const clusterRole = base.find((o) => o.kind === 'ClusterRole' && o.metadata.name === 'kbp-agent') as K8sObject & { rules: Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }> };
  const put = (rules: typeof clusterRole.rules) => must(cp, 'PUT', '/apis/rbac.authorization.k8s.io/v1/clusterroles/kbp-agent', { ...clusterRole, rules });
  /** The agent's rules without one verb on one resource. */
  const without = (resource: string, verb: string) =>
    clusterRole.rules.map((r) => (r.resources.includes(resource) ? { ...r, verbs: r.verbs.filter((v) => v !== verb) } : r)).filter((r) => r.verbs.length > 0);
  const readerRole = base.find((o) => o.kind === 'ClusterRole' && o.metadata.name === 'kbp-agent-api-reader')!;
  t.ok(readerRole, 'the API reader ClusterRole is part of the base');
  await must(cp, 'POST', '/api/v1/nodes', nodeObject(NODE, NODE_IP));
  const [svc, slice] = serviceObjects({
    name: 'web',
    namespace: 'default',
    clusterIP: VIP,
    ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
    endpoints: [
      { ip: '10.244.1.11', podName: 'web-a', nodeName: NODE },
      { ip: '10.244.1.12', podName: 'web-b', nodeName: NODE },
    ],
  });
  await must(cp, 'POST', '/api/v1/namespaces/default/services', svc);
  await must(cp, 'POST', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices', slice);
  // People/Prometheus: one ServiceAccount bound to the reader role, one not.
  for (const name of ['reader', 'nobody']) await must(cp, 'POST', '/api/v1/namespaces/default/serviceaccounts', { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name } });
  await must(cp, 'POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name: 'kbp-test-reader' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: readerRole.metadata.name },
    subjects: [{ kind: 'ServiceAccount', name: 'reader', namespace: 'default' }],
  });

  const cluster = await Cluster.create(tb, { nodeName: NODE });
  for (const [name, ip] of [['web-a', '10.244.1.11'], ['web-b', '10.244.1.12']] as const) {
    const pod = await cluster.addPod(name, ip);
    await startPodServer(tb, pod.ns, name, 8080);
  }
  const client = await cluster.addPod('client', '10.244.1.100');
  const probe = await Probe.start(tb, client.ns);
  await nsExec(cluster.nodeNs, 'ip', ['addr', 'add', `${NODE_IP}/32`, 'dev', 'lo']);
  await relayInto(tb, cluster.nodeNs, cp, { port: RELAY_PORT });

  // The pod's files: the ServiceAccount folder and the API's TLS Secret.
  const saDir = path.join(await tb.tempDir('serviceaccount'), 'serviceaccount');
  await mkdir(saDir);
  await writeFile(path.join(saDir, 'token'), await mintToken(cp, 'kbp-system', 'kbp-agent'));
  await writeFile(path.join(saDir, 'ca.crt'), cp.caPem);
  await writeFile(path.join(saDir, 'namespace'), 'kbp-system');
  const tlsDir = await tb.tempDir('api-tls');
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=kbp-agent',
    '-addext', `subjectAltName=IP:${NODE_IP}`, '-keyout', path.join(tlsDir, 'tls.key'), '-out', path.join(tlsDir, 'tls.crt')]);
  const caFile = path.join(tlsDir, 'tls.crt');

  // The user's one required setting: the API server's own address (here the
  // relay inside the node namespace), in the ConfigMap.
  const overlay = structuredClone(rendered.get('overlays/api-node-ip')!);
  const cm = overlay.find((o) => o.kind === 'ConfigMap') as K8sObject & { data: Record<string, string> };
  t.equal(cm.data.KUBERNETES_SERVICE_HOST, 'api-server.invalid', 'the base ConfigMap asks for the API server address');
  Object.assign(cm.data, { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(RELAY_PORT) });
  const dsRun = containerRun(overlay, 'agent', { 'spec.nodeName': NODE, 'status.hostIP': NODE_IP });
  // What the pod's mounts map: /sys/fs/bpf is the host's bpffs (here the
  // test's private one), /etc/kbp/tls the Secret, /run/kbp/cgroup the host's
  // cgroup v2 root (here a cgroup of the test's own: never the machine's root).
  const cgroup = await TestCgroup.create(tb);
  const agentArgs = dsRun.args.map((a) => a.replace('=/sys/fs/bpf', `=${cluster.bpffs}`).replace('=/etc/kbp/tls', `=${tlsDir}`).replace('=/run/kbp/cgroup', `=${cgroup.path}`));
  t.ok(agentArgs.includes(`--host-services-cgroup=${cgroup.path}`), 'the DaemonSet turns host services on, on the mounted cgroup root');
  t.ok(agentArgs.includes(`--api-listen=${NODE_IP}:10256`) && agentArgs.includes(`--node-name=${NODE}`), `DaemonSet args: ${agentArgs.join(' ')}`);
  const caps = dsRun.container.securityContext?.capabilities?.add ?? [];
  t.same(dsRun.container.securityContext?.capabilities?.drop, ['ALL']);
  t.notOk(dsRun.container.securityContext?.privileged, 'not privileged');
  // The container's environment: what the kubelet injects (the `kubernetes`
  // Service's ClusterIP, which nothing serves in the node before kbp runs),
  // overridden by envFrom/env as the kubelet does; the ServiceAccount folder
  // moved to the test's.
  const podEnv = {
    ...childEnv(),
    KUBERNETES_SERVICE_HOST: '10.96.0.1',
    KUBERNETES_SERVICE_PORT: '443',
    ...Object.fromEntries(dsRun.env),
    KBP_SERVICEACCOUNT_DIR: saDir,
  };
  const logDir = await tb.tempDir('agent-logs');
  let runs = 0;
  /** Starts the agent with `args` under exactly `capSet` (names as in the manifest); resolves with its log reader. */
  const startAgent = (label: string, capSet: string[], args = agentArgs) => {
    const logFile = path.join(logDir, `${++runs}-${label}.log`);
    const bounding = ['-all', ...capSet.map((c) => `+${c.toLowerCase()}`)].join(',');
    const child = tb.spawn(cluster.nodeNs, ['setpriv', `--bounding-set=${bounding}`, '--inh-caps=-all', process.execPath, kbpBin(), ...args], { logFile, env: podEnv, stopTimeoutMs: 5000 });
    const log = () => readFile(logFile, 'utf8').catch(() => '');
    /** Waits until the log matches `re` or the agent exits; resolves with the log. */
    const waitLog = async (re: RegExp, timeoutMs = 60_000) => {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const text = await log();
        if (re.test(text) || child.exitCode !== null || Date.now() > end) return text;
        await sleep(50);
      }
    };
    const stop = async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      while (child.exitCode === null && child.signalCode === null) await sleep(20);
    };
    return { child, log, waitLog, stop };
  };

  await t.test('the agent runs with the DaemonSet\'s args, capabilities and in-cluster config, and works', async (t) => {
    const agent = startAgent('full', caps);
    const text = await agent.waitLog(/msg=ready/);
    t.match(text, /msg=ready/, `ready with capabilities ${caps.join(',')} only`);
    t.match(text, /msg="watching the API server".*server=https:\/\/127\.0\.0\.1:6443/, 'in-cluster config (KUBERNETES_SERVICE_HOST/PORT)');
    t.notMatch(text, /informer failed/, 'no informer failed: list and watch are allowed');
    const results = await probe.http(VIP, 80, { count: 20 });
    t.equal(results.filter((r) => r.ok).length, 20, 'ClusterIP: 20/20 requests answered');
    t.same([...new Set(results.map((r) => r.backend))].sort(), ['web-a', 'web-b'], 'both backends');
    // Host services with exactly these capabilities: a process of the node's
    // namespace inside the cgroup the agent was given reaches the ClusterIP.
    t.match(text, /msg="host services attached"/, 'host services attached');
    const hostProbe = await Probe.start(tb, cluster.nodeNs, { wrap: (argv) => cgroup.wrap(argv) });
    const fromNode = await hostProbe.http(VIP, 80, { count: 10 });
    t.equal(fromNode.filter((r) => r.ok).length, 10, 'from the node namespace: 10/10 requests answered');
    t.same([...new Set(fromNode.map((r) => r.peer))], [`${VIP}:80`], 'peer is the ClusterIP');

    const api = `https://${NODE_IP}:10256`;
    t.equal((await curl(client.ns, `${api}/readyz`, caFile)).status, 200, '/readyz without a token (the readiness probe)');
    t.equal((await curl(client.ns, `${api}/healthz`, caFile)).status, 200, '/healthz without a token (the liveness probe)');
    t.equal((await curl(client.ns, `${api}/v1/services`, caFile)).status, 401, 'no token: 401');
    const reader = await curl(client.ns, `${api}/v1/services`, caFile, await mintToken(cp, 'default', 'reader'));
    t.equal(reader.status, 200, 'a ServiceAccount bound to kbp-agent-api-reader: 200');
    t.match(reader.body, VIP, 'and sees the Service');
    t.equal((await curl(client.ns, `${api}/v1/services`, caFile, await mintToken(cp, 'default', 'nobody'))).status, 403, 'one without the binding: 403');

    // ---- every rule is needed: the review rules, with the agent running.
    const reviewRules = clusterRole.rules.filter((r) => r.apiGroups[0]!.startsWith('authentication') || r.apiGroups[0]!.startsWith('authorization'));
    t.equal(reviewRules.length, 2);
    for (const r of reviewRules) {
      for (const verb of r.verbs) {
        await put(without(r.resources[0]!, verb));
        // A fresh token each time: the API caches answers per token for 10 s.
        let status = 0;
        for (let i = 0; i < 20 && status !== 503; i++, await sleep(100)) status = (await curl(client.ns, `${api}/v1/services`, caFile, await mintToken(cp, 'default', 'reader'))).status;
        t.equal(status, 503, `without ${verb} ${r.resources[0]}: the API cannot check tokens (503)`);
        await put(clusterRole.rules);
        let back = 0;
        for (let i = 0; i < 20 && back !== 200; i++, await sleep(100)) back = (await curl(client.ns, `${api}/v1/services`, caFile, await mintToken(cp, 'default', 'reader'))).status;
        t.equal(back, 200, 'rule restored: 200 again');
      }
    }
    await agent.stop();
  });

  await t.test('every capability of the DaemonSet is needed', async (t) => {
    t.same([...caps].sort(), ['BPF', 'NET_ADMIN', 'PERFMON']);
    // The three at once: each fails on its own (maps, program load, tc).
    const agents = caps.map((cap) => ({ cap, a: startAgent(`no-${cap}`, caps.filter((c) => c !== cap)) }));
    for (const { cap, a } of agents) {
      const log = await a.waitLog(/msg=ready|cannot attach/);
      await a.stop();
      t.notMatch(log, /msg="attached tc ingress"/, `without ${cap}: nothing attached`);
      t.ok(a.child.exitCode !== 0 || /cannot attach tc ingress.*EPERM/.test(log), `without ${cap}: ${a.child.exitCode !== 0 && !/cannot attach/.test(log) ? `exits ${a.child.exitCode}` : 'tc attach fails with EPERM'}`);
    }
  });

  await t.test("every list/watch rule is needed: the agent's informers fail with 403 without it", async (t) => {
    // The agent's own InformerSource, in this process, with the same
    // in-cluster config and token (one agent process per rule would cost
    // seconds each); the full agent above showed the rules are enough.
    const saved = { ...process.env };
    Object.assign(process.env, { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(cp.port), KBP_SERVICEACCOUNT_DIR: saDir });
    t.teardown(() => {
      for (const k of ['KUBERNETES_SERVICE_HOST', 'KUBERNETES_SERVICE_PORT', 'KBP_SERVICEACCOUNT_DIR']) if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    });
    const kinds: Record<string, string> = { services: 'Service', endpointslices: 'EndpointSlice', nodes: 'Node' };
    const informers = async () => {
      const { log, lines } = memoryLogger('info');
      const src = new InformerSource({ kubeconfig: undefined, nodeName: NODE, log, backoff: { initialMs: 60_000, maxMs: 60_000 } });
      let synced = false;
      await src.start({ service() {}, endpointSlice() {}, node() {}, synced: () => (synced = true) });
      const end = Date.now() + 15_000;
      while (!synced && !lines.some((l) => l.includes('informer failed')) && Date.now() < end) await sleep(20);
      // A forbidden watch fails right after its list: give it a moment.
      await sleep(300);
      await src.close();
      return { synced, failed: lines.filter((l) => l.includes('informer failed')) };
    };
    const all = await informers();
    t.ok(all.synced && all.failed.length === 0, 'with every rule: all informers synced, none failed');
    for (const r of clusterRole.rules.filter((x) => kinds[x.resources[0]!])) {
      for (const verb of r.verbs) {
        const resource = r.resources[0]!;
        await put(without(resource, verb));
        const res = await informers();
        const re = new RegExp(`kind=${kinds[resource]} .*status=403`);
        t.ok(res.failed.some((l) => re.test(l)), `without ${verb} ${resource}: the ${kinds[resource]} informer fails with 403`);
        t.ok(res.failed.every((l) => re.test(l)), '... and only that one');
        if (verb === 'list') t.notOk(res.synced, '... and the source never syncs (the agent never gets ready)');
      }
    }
    await put(clusterRole.rules);
  });

  await t.test('uninstall: kbp detach with the uninstall DaemonSet\'s args and capabilities leaves nothing attached', async (t) => {
    t.match(await cluster.ingressFilters(cluster.pod('web-a').hostVeth), /kbp_from_pod/, 'the stopped agent left its hook attached (by design)');
    const detach = (rendered.get('uninstall')!.find((o) => o.kind === 'DaemonSet') as unknown as { spec: { template: { spec: { initContainers: Array<{ args: string[]; securityContext: { capabilities: { add: string[] } } }> } } } }).spec.template.spec.initContainers[0]!;
    const args = detach.args.map((x) => x.replace('=/sys/fs/bpf', `=${cluster.bpffs}`));
    const bounding = ['-all', ...detach.securityContext.capabilities.add.map((c) => `+${c.toLowerCase()}`)].join(',');
    const r = await nsExec(cluster.nodeNs, 'setpriv', [`--bounding-set=${bounding}`, '--inh-caps=-all', process.execPath, kbpBin(), ...args], { env: childEnv() });
    t.match(r.stdout, /detached kbp_from_pod/, `kbp ${args.join(' ')} with ${detach.securityContext.capabilities.add.join(',')}`);
    for (const p of cluster.listPods()) t.equal(await cluster.ingressFilters(p.hostVeth), '', `no tc filter left on ${p.hostVeth}`);
    const pinDir = path.join(cluster.bpffs, 'kbp');
    t.same(existsSync(pinDir) ? readdirSync(pinDir) : [], [], 'no pin left');
  });
});
