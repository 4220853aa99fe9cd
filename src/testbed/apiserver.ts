// A real Kubernetes control plane for tests and development: etcd and
// kube-apiserver, built from the published Go modules (scripts/k8s-bins.sh),
// started on the root namespace's loopback with throwaway certificates, the
// way controller-runtime's envtest does.
//
// There is no kube-controller-manager, scheduler or kubelet: whoever uses this
// creates Nodes and EndpointSlices themselves, as a controller would. The
// apiserver still runs its own bootstrap controllers, so the `default`
// namespace and the `kubernetes` Service (first address of the service range)
// exist; the `kubernetes` Service has no endpoints, because the endpoint
// reconciler is off (its only address would be loopback, which Endpoints
// validation rejects and which no namespace could reach anyway).
//
// Node agents live in network namespaces and cannot reach the root
// namespace's loopback; relayInto() carries the API into one over a unix
// socket, adding no address or route to the root namespace.

import { execFile, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { stringify } from 'yaml';
import { projectRoot } from '../paths.js';
import { run, stopChild, type Testbed } from './netns.js';
import { childEnv } from './programs.js';
import { SERVICE_CIDR } from './topology.js';

// ---- binaries ----

/** scripts/k8s-bins.sh exits with this when Go is missing, so nothing can be built. */
export const EXIT_NO_GO = 3;

export class K8sBinsUnavailable extends Error {
  constructor(readonly reason: string) {
    super(`Kubernetes binaries cannot be built: ${reason}`);
    this.name = 'K8sBinsUnavailable';
  }
}

export interface K8sBins {
  dir: string;
  kubeApiserver: string;
  kubeProxy: string;
  etcd: string;
}

function binsIn(dir: string): K8sBins {
  return {
    dir,
    kubeApiserver: path.join(dir, 'kube-apiserver'),
    kubeProxy: path.join(dir, 'kube-proxy'),
    etcd: path.join(dir, 'etcd'),
  };
}

/**
 * Builds (or reuses from the cache) kube-apiserver, kube-proxy and etcd.
 * KBP_K8S_BINS names a folder of ready binaries and skips the build. Throws
 * K8sBinsUnavailable when Go is missing; any other failure is a plain error.
 */
export async function ensureK8sBins(): Promise<K8sBins> {
  const preset = process.env.KBP_K8S_BINS;
  if (preset) return binsIn(preset);
  const script = path.join(projectRoot, 'scripts', 'k8s-bins.sh');
  return new Promise((resolve, reject) => {
    // A cold build takes many minutes; a cached one returns at once.
    execFile('bash', [script], { encoding: 'utf8', timeout: 60 * 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (!err) {
        resolve(binsIn(stdout.trim().split('\n').pop()!));
        return;
      }
      if (err.code === EXIT_NO_GO) reject(new K8sBinsUnavailable(stderr.trim() || 'go is not installed'));
      else reject(new Error(`scripts/k8s-bins.sh failed (exit ${err.code}):\n${stderr.trim().split('\n').slice(-30).join('\n')}`));
    });
  });
}

// ---- certificates ----

export interface Pki {
  dir: string;
  /** Serving CA (PEM): what clients trust. */
  caPem: string;
  caFile: string;
  servingCertFile: string;
  servingKeyFile: string;
  /** Signs client certificates; the apiserver's --client-ca-file. */
  clientCaFile: string;
  /** Admin client certificate (O=system:masters) and key, PEM. */
  adminCertPem: string;
  adminKeyPem: string;
  saKeyFile: string;
  saPubFile: string;
}

const openssl = (args: string[], cwd: string) => run('openssl', args, { timeoutMs: 30_000 }).catch((err: Error) => {
  throw new Error(`openssl in ${cwd}: ${err.message}`);
});

/**
 * Throwaway PKI in `dir`: serving CA and a serving certificate for
 * 127.0.0.1/localhost (and the in-cluster names), a client CA with an admin
 * certificate, and the service-account signing key pair. EC P-256 keys:
 * generating them takes milliseconds.
 */
export async function generatePki(dir: string, extraSans: readonly string[] = []): Promise<Pki> {
  const f = (name: string) => path.join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = async (name: string, cn: string) =>
    openssl(['req', '-x509', ...ec, '-keyout', f(`${name}.key`), '-out', f(`${name}.crt`), '-days', '3650',
      '-subj', `/CN=${cn}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  const leaf = async (name: string, subj: string, caName: string, ext: string) => {
    await openssl(['req', '-new', ...ec, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', subj], dir);
    await writeFile(f(`${name}.ext`), ext);
    await openssl(['x509', '-req', '-in', f(`${name}.csr`), '-CA', f(`${caName}.crt`), '-CAkey', f(`${caName}.key`),
      '-CAcreateserial', '-days', '3650', '-out', f(`${name}.crt`), '-extfile', f(`${name}.ext`)], dir);
  };
  const sans = [
    'IP:127.0.0.1',
    'DNS:localhost',
    // The `kubernetes` Service's ClusterIP and names, for agents that run
    // in-cluster later.
    `IP:${firstServiceIp(SERVICE_CIDR)}`,
    'DNS:kubernetes',
    'DNS:kubernetes.default',
    'DNS:kubernetes.default.svc',
    'DNS:kubernetes.default.svc.cluster.local',
    ...extraSans,
  ];
  await Promise.all([ca('serving-ca', 'kbp-serving-ca'), ca('client-ca', 'kbp-client-ca')]);
  await Promise.all([
    leaf('serving', '/CN=kube-apiserver', 'serving-ca',
      `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=${sans.join(',')}\n`),
    leaf('admin', '/O=system:masters/CN=kbp-admin', 'client-ca',
      'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n'),
    openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', f('sa.key')], dir).then(() =>
      openssl(['pkey', '-in', f('sa.key'), '-pubout', '-out', f('sa.pub')], dir)),
  ]);
  const [caPem, adminCertPem, adminKeyPem] = await Promise.all(
    ['serving-ca.crt', 'admin.crt', 'admin.key'].map((n) => readFile(f(n), 'utf8')),
  );
  return {
    dir,
    caPem: caPem!,
    caFile: f('serving-ca.crt'),
    servingCertFile: f('serving.crt'),
    servingKeyFile: f('serving.key'),
    clientCaFile: f('client-ca.crt'),
    adminCertPem: adminCertPem!,
    adminKeyPem: adminKeyPem!,
    saKeyFile: f('sa.key'),
    saPubFile: f('sa.pub'),
  };
}

/** 10.96.0.0/12 → 10.96.0.1: the address the apiserver gives the `kubernetes` Service. */
function firstServiceIp(cidr: string): string {
  const [addr] = cidr.split('/');
  const n = addr!.split('.').reduce((acc, o) => acc * 256 + Number(o), 0) + 1;
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

// ---- kubeconfig ----

export interface Credentials {
  caPem: string;
  certPem: string;
  keyPem: string;
}

/** A kubeconfig with everything embedded (no paths), context `kbp`. */
export function kubeconfigYaml(server: string, creds: Credentials): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'kbp', cluster: { server, 'certificate-authority-data': b64(creds.caPem) } }],
    users: [{ name: 'kbp-admin', user: { 'client-certificate-data': b64(creds.certPem), 'client-key-data': b64(creds.keyPem) } }],
    contexts: [{ name: 'kbp', context: { cluster: 'kbp', user: 'kbp-admin' } }],
    'current-context': 'kbp',
  });
}

// ---- talking to the API ----

export interface ApiResponse {
  status: number;
  body: string;
  /** The body parsed as JSON (undefined when it is not JSON). */
  json: unknown;
}

/** One HTTPS request with the admin client certificate. Never throws on HTTP status. */
export function apiRequest(
  url: string,
  creds: Credentials,
  method: string,
  apiPath: string,
  body?: unknown,
  timeoutMs = 10_000,
  /** A keep-alive agent (holding the same credentials) for many requests; default: a connection per request. */
  agent?: https.Agent,
): Promise<ApiResponse> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = https.request(
      new URL(apiPath, url),
      {
        method,
        ...(agent ? { agent } : { ca: creds.caPem, cert: creds.certPem, key: creds.keyPem }),
        timeout: timeoutMs,
        headers: { accept: 'application/json', ...(payload ? { 'content-type': 'application/json' } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, body: text, json });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${apiPath}: timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

// ---- processes ----

/** A free TCP port on 127.0.0.1 (bound, then released). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function logTail(file: string, lines = 30): Promise<string> {
  try {
    const text = await readFile(file, 'utf8');
    return `--- ${file} (last ${lines} lines) ---\n${text.trimEnd().split('\n').slice(-lines).join('\n')}`;
  } catch {
    return `--- ${file}: no log ---`;
  }
}

const exited = (c: ChildProcess) => c.exitCode !== null || c.signalCode !== null;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns true; fails early if `child` exits. */
async function waitUntil(what: string, child: ChildProcess, logFile: string, timeoutMs: number, probe: () => Promise<string | true>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (exited(child)) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it was ready\n${await logTail(logFile)}`);
    try {
      const r = await probe();
      if (r === true) return;
      last = r;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(200);
  }
  throw new Error(`${what} not ready within ${timeoutMs} ms (last: ${last})\n${await logTail(logFile)}`);
}

// ---- the control plane ----

export interface ControlPlaneOptions {
  /** Where the logs go (etcd.log, kube-apiserver.log); default: a temp dir of the run. */
  logDir?: string;
  /** Where the kubeconfig is written; default: `kubeconfig` next to the certificates. */
  kubeconfigPath?: string;
  /** Binaries to use; default: ensureK8sBins(). */
  bins?: K8sBins;
  /** Extra SANs for the serving certificate (`IP:…`, `DNS:…`). */
  extraSans?: string[];
  /** Extra kube-apiserver flags, appended last (so they win). */
  apiServerArgs?: string[];
  /** How long to wait for /readyz. */
  readyTimeoutMs?: number;
}

export interface ControlPlane {
  /** https://127.0.0.1:PORT, in the root namespace. */
  url: string;
  port: number;
  kubeconfigPath: string;
  /** The serving CA, PEM. */
  caPem: string;
  /** The admin client credentials (O=system:masters). */
  credentials: Credentials;
  /** gitVersion from /version, e.g. v1.35.4. */
  version: string;
  logs: { etcd: string; apiServer: string };
  /** Current pids (apiServer changes with restartApiServer). */
  readonly pids: { readonly etcd: number; readonly apiServer: number };
  /** A request with the admin credentials, e.g. request('POST', '/api/v1/nodes', node). */
  request(method: string, apiPath: string, body?: unknown): Promise<ApiResponse>;
  /** Stops kube-apiserver and starts it again on the same port and etcd (for reconnect tests). */
  restartApiServer(): Promise<void>;
  /** Stops kube-apiserver and etcd (idempotent; the testbed also does it at teardown). */
  stop(): Promise<void>;
}

/**
 * Starts etcd and kube-apiserver on 127.0.0.1 with fresh certificates and
 * data, and resolves once /readyz is ok and the default kubernetes Service
 * exists. Everything belongs to `tb` and goes away at its teardown.
 */
export async function startControlPlane(tb: Testbed, opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const bins = opts.bins ?? (await ensureK8sBins());
  for (const b of [bins.etcd, bins.kubeApiserver]) if (!existsSync(b)) throw new Error(`missing binary ${b}`);
  const pkiDir = await tb.tempDir('pki');
  const dataDir = await tb.tempDir('etcd');
  const logDir = opts.logDir ?? (await tb.tempDir('cp-logs'));
  const logs = { etcd: path.join(logDir, 'etcd.log'), apiServer: path.join(logDir, 'kube-apiserver.log') };
  const pki = await generatePki(pkiDir, opts.extraSans);
  const credentials: Credentials = { caPem: pki.caPem, certPem: pki.adminCertPem, keyPem: pki.adminKeyPem };
  const env = childEnv();

  // etcd: single member, client and peer on loopback. No fsync: the data is
  // thrown away, and fsync dominates write latency on a small VM.
  const [etcdPort, peerPort, apiPort] = await Promise.all([freePort(), freePort(), freePort()]);
  const etcdUrl = `http://127.0.0.1:${etcdPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const etcd = tb.spawn(null, [
    bins.etcd,
    '--name=kbp',
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${etcdUrl}`,
    `--advertise-client-urls=${etcdUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=kbp=${peerUrl}`,
    '--initial-cluster-state=new',
    '--unsafe-no-fsync',
    '--log-level=warn',
  ], { logFile: logs.etcd, env, stopTimeoutMs: 5000 });
  await waitUntil('etcd', etcd, logs.etcd, 30_000, async () => {
    const r = await fetch(`${etcdUrl}/health`, { signal: AbortSignal.timeout(1000) });
    const body = await r.text();
    return r.ok && /"health":\s*"true"/.test(body) ? true : `HTTP ${r.status} ${body}`;
  });

  const url = `https://127.0.0.1:${apiPort}`;
  const certDir = await tb.tempDir('apiserver-certs');
  const apiArgs = [
    bins.kubeApiserver,
    '--bind-address=127.0.0.1',
    '--advertise-address=127.0.0.1',
    `--secure-port=${apiPort}`,
    `--cert-dir=${certDir}`,
    `--tls-cert-file=${pki.servingCertFile}`,
    `--tls-private-key-file=${pki.servingKeyFile}`,
    `--client-ca-file=${pki.clientCaFile}`,
    `--etcd-servers=${etcdUrl}`,
    `--service-cluster-ip-range=${SERVICE_CIDR}`,
    '--service-node-port-range=30000-32767',
    '--authorization-mode=Node,RBAC',
    `--service-account-issuer=${url}`,
    `--service-account-key-file=${pki.saPubFile}`,
    `--service-account-signing-key-file=${pki.saKeyFile}`,
    // No controllers run: nothing would create the `default` ServiceAccount
    // that the admission plugin waits for before admitting a Pod.
    '--disable-admission-plugins=ServiceAccount',
    // The only address it could publish for the `kubernetes` Service is
    // loopback (see the header comment).
    '--endpoint-reconciler-type=none',
    '--allow-privileged=true',
    '--profiling=false',
    ...(opts.apiServerArgs ?? []),
  ];
  let apiServer: ChildProcess;
  const launchApiServer = async () => {
    apiServer = tb.spawn(null, apiArgs, { logFile: logs.apiServer, env, stopTimeoutMs: 10_000 });
    const child = apiServer;
    await waitUntil('kube-apiserver', child, logs.apiServer, opts.readyTimeoutMs ?? 90_000, async () => {
      const r = await apiRequest(url, credentials, 'GET', '/readyz', undefined, 2000);
      if (r.status !== 200) return `HTTP ${r.status} ${r.body.split('\n').filter((l) => l.includes('[-]')).join('; ')}`;
      // Ready can come a moment before the apiserver's own controller has
      // created the default "kubernetes" Service, which every cluster has.
      const k = await apiRequest(url, credentials, 'GET', '/api/v1/namespaces/default/services/kubernetes', undefined, 2000);
      return k.status === 200 ? true : `ready, but the kubernetes Service: HTTP ${k.status}`;
    });
  };
  await launchApiServer();

  const v = await apiRequest(url, credentials, 'GET', '/version');
  const version = (v.json as { gitVersion?: string } | undefined)?.gitVersion;
  if (v.status !== 200 || !version) throw new Error(`GET /version: HTTP ${v.status} ${v.body.slice(0, 200)}`);

  const kubeconfigPath = opts.kubeconfigPath ?? path.join(pkiDir, 'kubeconfig');
  await writeFile(kubeconfigPath, kubeconfigYaml(url, credentials), { mode: 0o600 });

  let stopped: Promise<void> | null = null;
  return {
    url,
    port: apiPort,
    kubeconfigPath,
    caPem: pki.caPem,
    credentials,
    version,
    logs,
    pids: {
      etcd: etcd.pid!,
      get apiServer() {
        return apiServer.pid!;
      },
    },
    request: (method, apiPath, body) => apiRequest(url, credentials, method, apiPath, body),
    async restartApiServer() {
      await stopChild(apiServer, 10_000);
      await launchApiServer();
    },
    stop() {
      stopped ??= (async () => {
        await stopChild(apiServer, 10_000);
        await stopChild(etcd, 5000);
      })();
      return stopped;
    },
  };
}

// ---- carrying the API into a network namespace ----

// Runs inside the namespace: listens on 127.0.0.1:PORT there and pipes every
// connection to the unix socket. Prints "ready" once listening. Plain JS for
// `node -e`, so it needs no loader and no file of its own.
const INNER_RELAY = `
const net = require('node:net');
const [port, sock] = process.argv.slice(1);
const srv = net.createServer((c) => {
  const u = net.connect(sock);
  c.pipe(u).pipe(c);
  const end = () => { c.destroy(); u.destroy(); };
  c.on('error', end); u.on('error', end); c.on('close', end); u.on('close', end);
});
srv.on('error', (e) => { console.error(String(e)); process.exit(1); });
srv.listen(Number(port), '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => process.exit(0));
`;

export interface Relay {
  /** https://127.0.0.1:PORT, valid inside `ns` only. */
  url: string;
  /** A kubeconfig pointing at `url` (same admin credentials). */
  kubeconfigPath: string;
}

/**
 * Makes the control plane reachable at https://127.0.0.1:PORT inside network
 * namespace `ns`. A process inside `ns` listens there and forwards to a unix
 * socket (in a temp dir of the run); this process serves that socket and
 * forwards to the apiserver on the root namespace's loopback. TLS passes
 * through untouched (the serving certificate names 127.0.0.1). The root
 * namespace gets no new address or route.
 */
export async function relayInto(tb: Testbed, ns: string, cp: ControlPlane, opts: { port?: number } = {}): Promise<Relay> {
  const dir = await tb.tempDir('relay');
  const sock = path.join(dir, 'api.sock');
  const sockets = new Set<net.Socket>();
  const outer = net.createServer((c) => {
    const u = net.connect(cp.port, '127.0.0.1');
    sockets.add(c).add(u);
    c.pipe(u).pipe(c);
    const end = () => {
      c.destroy();
      u.destroy();
      sockets.delete(c);
      sockets.delete(u);
    };
    for (const s of [c, u]) s.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve, reject) => {
    outer.once('error', reject);
    outer.listen(sock, () => resolve());
  });
  const closeOuter = () => {
    for (const s of sockets) s.destroy();
    outer.close();
  };
  tb.defer(`relay ${sock}`, closeOuter, closeOuter);

  const port = opts.port ?? 6443;
  const inner = tb.spawn(ns, [process.execPath, '-e', INNER_RELAY, String(port), sock], {
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  inner.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4096)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`relay in ${ns}: not ready within 10 s ${stderr}`)), 10_000);
    inner.stdout!.once('data', () => {
      clearTimeout(timer);
      inner.stdout!.resume(); // keep draining
      resolve();
    });
    inner.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`relay in ${ns} exited (${code}): ${stderr}`));
    });
  });

  const url = `https://127.0.0.1:${port}`;
  const kubeconfigPath = path.join(dir, 'kubeconfig');
  await writeFile(kubeconfigPath, kubeconfigYaml(url, cp.credentials), { mode: 0o600 });
  return { url, kubeconfigPath };
}
