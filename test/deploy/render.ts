// Helpers for the deploy/ tests: render a kustomization with the real
// kustomize (scripts/kustomize.sh builds it from the Go module proxy into
// ~/.cache/kbp), apply objects with server-side apply (optionally dry-run)
// the way `kubectl apply --server-side [--dry-run=server]` does, and turn a
// DaemonSet's container into the argv and environment the kubelet would run
// (env from ConfigMaps and the downward API, $(VAR) expansion).

import { writeFile } from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { projectRoot } from '../../src/paths.js';
import { ensureK8sBins, K8sBinsUnavailable, type ControlPlane } from '../../src/testbed/apiserver.js';
import { run, CommandError } from '../../src/testbed/netns.js';

export type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string }; [k: string]: unknown };

export class KustomizeUnavailable extends Error {}

/**
 * Why a test against the real API server cannot run here (not root: `why`;
 * no Go to build the Kubernetes binaries, or kustomize when asked), or false.
 */
export async function k8sSkipReason(why: string, opts: { kustomize?: boolean } = {}): Promise<string | false> {
  if (process.getuid?.() !== 0) return `needs root (${why})`;
  try {
    await ensureK8sBins();
    if (opts.kustomize) await kustomizeBin();
    return false;
  } catch (err) {
    if (err instanceof K8sBinsUnavailable || err instanceof KustomizeUnavailable) return `Kubernetes binaries or kustomize unavailable: ${err.message}`;
    throw err;
  }
}

/** The kustomize binary (built once); throws KustomizeUnavailable without Go. */
export async function kustomizeBin(): Promise<string> {
  try {
    return (await run('bash', [path.join(projectRoot, 'scripts', 'kustomize.sh')], { timeoutMs: 900_000 })).stdout.trim();
  } catch (err) {
    if (err instanceof CommandError && err.exitCode === 3) throw new KustomizeUnavailable(err.stderr.trim());
    throw err;
  }
}

/** `kustomize build DIR` (relative to deploy/), as objects. */
export async function render(bin: string, dir: string): Promise<K8sObject[]> {
  const { stdout } = await run(bin, ['build', path.join(projectRoot, 'deploy', dir)]);
  return parseAllDocuments(stdout)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => !!o);
}

/**
 * deploy/base with several of deploy/components at once, the way a user
 * combines knobs: a kustomization written into `dir` (paths relative to it).
 */
export async function renderComposed(bin: string, dir: string, components: string[]): Promise<K8sObject[]> {
  const rel = (p: string) => path.relative(dir, path.join(projectRoot, 'deploy', p));
  const k = ['apiVersion: kustomize.config.k8s.io/v1beta1', 'kind: Kustomization', 'resources:', `  - ${rel('base')}`, 'components:', ...components.map((c) => `  - ${rel(`components/${c}`)}`), ''];
  await writeFile(path.join(dir, 'kustomization.yaml'), k.join('\n'));
  const { stdout } = await run(bin, ['build', dir]);
  return parseAllDocuments(stdout)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => !!o);
}

const RESOURCES: Record<string, { plural: string; namespaced: boolean }> = {
  Namespace: { plural: 'namespaces', namespaced: false },
  ServiceAccount: { plural: 'serviceaccounts', namespaced: true },
  ConfigMap: { plural: 'configmaps', namespaced: true },
  Secret: { plural: 'secrets', namespaced: true },
  ClusterRole: { plural: 'clusterroles', namespaced: false },
  ClusterRoleBinding: { plural: 'clusterrolebindings', namespaced: false },
  DaemonSet: { plural: 'daemonsets', namespaced: true },
  Job: { plural: 'jobs', namespaced: true },
};

/** The REST path of an object. */
export function objectPath(o: K8sObject): string {
  const r = RESOURCES[o.kind];
  if (!r) throw new Error(`no REST mapping for kind ${o.kind}`);
  const base = o.apiVersion.includes('/') ? `/apis/${o.apiVersion}` : `/api/${o.apiVersion}`;
  const ns = r.namespaced ? `/namespaces/${o.metadata.namespace ?? 'default'}` : '';
  return `${base}${ns}/${r.plural}/${o.metadata.name}`;
}

/**
 * Server-side apply of one object (PATCH application/apply-patch+yaml, field
 * validation Strict, so an unknown or misspelt field is an error); dryRun
 * makes the server run every admission and validation step without storing.
 */
export function serverSideApply(cp: ControlPlane, o: K8sObject, opts: { dryRun: boolean }): Promise<{ status: number; body: string }> {
  const q = new URLSearchParams({ fieldManager: 'kbp-deploy-test', fieldValidation: 'Strict', force: 'true' });
  if (opts.dryRun) q.set('dryRun', 'All');
  const body = JSON.stringify(o);
  return new Promise((resolve, reject) => {
    const req = https.request(
      new URL(`${objectPath(o)}?${q}`, cp.url),
      {
        method: 'PATCH',
        ca: cp.credentials.caPem,
        cert: cp.credentials.certPem,
        key: cp.credentials.keyPem,
        headers: { 'content-type': 'application/apply-patch+yaml', accept: 'application/json' },
        timeout: 10_000,
      },
      (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}
interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: EnvVar[];
  envFrom?: Array<{ configMapRef?: { name: string } }>;
  securityContext?: { privileged?: boolean; capabilities?: { add?: string[]; drop?: string[] } };
}

/** Expands $(VAR) as the kubelet does: defined names are replaced, $$ escapes, anything else stays. */
export function expand(s: string, env: Map<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name: string | undefined) => (m === '$$' ? '$' : env.has(name!) ? env.get(name!)! : m));
}

/**
 * One container of a DaemonSet as the kubelet would start it: the environment
 * (ConfigMaps of the same rendering first, then env in order, each value
 * expanded against what came before; fieldRefs from `fields`) and the args
 * expanded against it.
 */
export function containerRun(objects: K8sObject[], container: string, fields: Record<string, string>): { args: string[]; env: Map<string, string>; container: Container } {
  const ds = objects.find((o) => o.kind === 'DaemonSet')!;
  const spec = (ds as unknown as { spec: { template: { spec: { containers: Container[] } } } }).spec.template.spec;
  const c = spec.containers.find((x) => x.name === container);
  if (!c) throw new Error(`no container ${container}`);
  const env = new Map<string, string>();
  for (const from of c.envFrom ?? []) {
    const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === from.configMapRef?.name) as { data?: Record<string, string> } | undefined;
    if (!cm) throw new Error(`ConfigMap ${from.configMapRef?.name} not in the rendering`);
    for (const [k, v] of Object.entries(cm.data ?? {})) env.set(k, v);
  }
  for (const e of c.env ?? []) {
    if (e.valueFrom?.fieldRef) {
      const v = fields[e.valueFrom.fieldRef.fieldPath];
      if (v === undefined) throw new Error(`no value for fieldRef ${e.valueFrom.fieldRef.fieldPath}`);
      env.set(e.name, v);
    } else env.set(e.name, expand(e.value ?? '', env));
  }
  return { args: (c.args ?? []).map((a) => expand(a, env)), env, container: c };
}
