// The in-cluster config of a pod (the DaemonSet's ServiceAccount), the way
// client-go's rest.InClusterConfig finds it:
//
//   KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT   the API server
//   <dir>/token      the ServiceAccount token (a projected, rotated token)
//   <dir>/ca.crt     the cluster CA
//   <dir>/namespace  the pod's namespace
//
// with <dir> = /var/run/secrets/kubernetes.io/serviceaccount, or
// $KBP_SERVICEACCOUNT_DIR (tests lay the same files out in a temp folder).
//
// Token rotation: the kubelet rewrites the projected token well before it
// expires (at 80% of its lifetime) and the old one stays valid until then, so
// a reader only has to read the file again now and then. The informers'
// client (client-node's FileAuth) re-reads it every 60 s, as client-go does;
// the API's review client reads it on every review (reviews are cached, so
// that is at most a few reads a minute).

import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export const SERVICEACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
export const SERVICEACCOUNT_DIR_ENV = 'KBP_SERVICEACCOUNT_DIR';

export interface InClusterConfig {
  /** https://HOST:PORT (IPv6 hosts in brackets). */
  server: string;
  caFile: string;
  tokenFile: string;
  /** The pod's namespace, when the file is there. */
  namespace?: string;
}

/** The ServiceAccount folder: $KBP_SERVICEACCOUNT_DIR, else the standard mount. */
export function serviceAccountDir(env: NodeJS.ProcessEnv = process.env): string {
  return env[SERVICEACCOUNT_DIR_ENV] || SERVICEACCOUNT_DIR;
}

/** Reads the in-cluster config; throws with what is missing. */
export function inClusterConfig(env: NodeJS.ProcessEnv = process.env): InClusterConfig {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) throw new Error('in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set (or give a kubeconfig)');
  const dir = serviceAccountDir(env);
  const tokenFile = path.join(dir, 'token');
  const caFile = path.join(dir, 'ca.crt');
  for (const f of [tokenFile, caFile]) if (!existsSync(f)) throw new Error(`in-cluster config: ${f} not found (ServiceAccount token not mounted?)`);
  const nsFile = path.join(dir, 'namespace');
  const namespace = existsSync(nsFile) ? readFileSync(nsFile, 'utf8').trim() : undefined;
  return { server: `https://${net.isIPv6(host) ? `[${host}]` : host}:${port}`, caFile, tokenFile, namespace };
}

/** The token in `file`, read now (so a rotated token is picked up). */
export function readTokenFile(file: string): string {
  return readFileSync(file, 'utf8').trim();
}
