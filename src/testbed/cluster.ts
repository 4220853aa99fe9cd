// `make cluster-up` / `make cluster-down`: the test harness's control plane
// (apiserver.ts), kept running in the background for development.
//
//   node dist/testbed/cluster.js up     start (or find running), return once ready
//   node dist/testbed/cluster.js down   stop, remove data, state and kubeconfig
//   node dist/testbed/cluster.js status
//
// `up` starts a detached `serve` process that owns a Testbed holding etcd,
// kube-apiserver and their temp dirs, exactly as a test would; SIGTERM makes
// it tear all of that down. Its state (pid, url, logs) is in
// .cache/cluster/state.json and the admin kubeconfig in .cache/kubeconfig.

import { spawn } from 'node:child_process';
import { mkdirSync, openSync, closeSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { projectRoot } from '../paths.js';
import { ensureK8sBins, K8sBinsUnavailable, startControlPlane } from './apiserver.js';
import { cleanupStale, Testbed } from './netns.js';
import { childEnv } from './programs.js';

export const clusterDir = path.join(projectRoot, '.cache', 'cluster');
export const clusterKubeconfig = path.join(projectRoot, '.cache', 'kubeconfig');
const stateFile = path.join(clusterDir, 'state.json');
const serveLog = path.join(clusterDir, 'serve.log');

export interface ClusterState {
  pid: number;
  url: string;
  version: string;
  kubeconfigPath: string;
  logs: { etcd: string; apiServer: string; serve: string };
  pids: { etcd: number; apiServer: number };
  startedAt: string;
}

export function readClusterState(): ClusterState | null {
  try {
    return JSON.parse(readFileSync(stateFile, 'utf8')) as ClusterState;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function tail(file: string, lines = 30): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** The detached process: owns the control plane until SIGTERM. */
async function serve(): Promise<void> {
  const tb = Testbed.create();
  // Registered first, so it runs last at teardown.
  tb.defer('cluster state', () => {
    rmSync(stateFile, { force: true });
    rmSync(clusterKubeconfig, { force: true });
  }, () => {
    rmSync(stateFile, { force: true });
    rmSync(clusterKubeconfig, { force: true });
  });
  try {
    const cp = await startControlPlane(tb, { logDir: clusterDir, kubeconfigPath: clusterKubeconfig });
    const state: ClusterState = {
      pid: process.pid,
      url: cp.url,
      version: cp.version,
      kubeconfigPath: cp.kubeconfigPath,
      logs: { ...cp.logs, serve: serveLog },
      pids: cp.pids,
      startedAt: new Date().toISOString(),
    };
    writeFileSync(`${stateFile}.tmp`, `${JSON.stringify(state, null, 2)}\n`);
    renameSync(`${stateFile}.tmp`, stateFile);
    console.log(`control plane ${cp.version} ready at ${cp.url}`);
    // If either process dies, the cluster is broken: say so and clean up
    // rather than leave a half cluster behind a live pid.
    const watch = setInterval(() => {
      for (const [name, pid] of Object.entries(cp.pids)) {
        if (!alive(pid)) {
          console.error(`${name} (pid ${pid}) exited; tearing down`);
          clearInterval(watch);
          void tb.teardown().finally(() => process.exit(1));
          return;
        }
      }
    }, 2000);
  } catch (err) {
    if (err instanceof K8sBinsUnavailable) console.error(err.message);
    else console.error(err);
    await tb.teardown();
    process.exit(1);
  }
}

async function up(): Promise<number> {
  const running = readClusterState();
  if (running && alive(running.pid)) {
    console.log(`already up: ${running.version} at ${running.url} (pid ${running.pid})\nexport KUBECONFIG=${running.kubeconfigPath}`);
    return 0;
  }
  // Build (or find) the binaries here, so a missing Go fails in the foreground.
  await ensureK8sBins();
  mkdirSync(clusterDir, { recursive: true });
  rmSync(stateFile, { force: true });
  const fd = openSync(serveLog, 'w');
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'serve'], {
    detached: true,
    stdio: ['ignore', fd, fd],
    env: childEnv(),
    cwd: projectRoot,
  });
  closeSync(fd);
  child.unref();
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline) {
    const st = readClusterState();
    if (st && st.pid === child.pid) {
      console.log(`up: kube-apiserver ${st.version} at ${st.url} (pid ${st.pid}; logs in ${clusterDir})\nexport KUBECONFIG=${st.kubeconfigPath}`);
      return 0;
    }
    if (child.exitCode !== null || child.signalCode !== null || !alive(child.pid!)) {
      console.error(`cluster-up failed:\n${await tail(serveLog)}`);
      return 1;
    }
    await sleep(200);
  }
  console.error(`cluster-up: not ready within 180 s; stopping it\n${await tail(serveLog)}`);
  process.kill(child.pid!, 'SIGTERM');
  return 1;
}

/** SIGKILL for a recorded pid, only if it still runs `binary` (pids get reused). */
function killIfStill(pid: number, binary: string): void {
  try {
    if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]!.endsWith(binary)) return;
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

async function down(): Promise<number> {
  const st = readClusterState();
  if (st && alive(st.pid)) {
    process.kill(st.pid, 'SIGTERM');
    const deadline = Date.now() + 30_000;
    while (alive(st.pid) && Date.now() < deadline) await sleep(100);
    if (alive(st.pid)) {
      console.error(`cluster-down: pid ${st.pid} ignored SIGTERM for 30 s; killing it`);
      process.kill(st.pid, 'SIGKILL');
    }
    console.log(`down: stopped ${st.version} (pid ${st.pid})`);
  } else {
    console.log('down: not running');
  }
  if (st) {
    // Left running only if the serve process died without tearing down.
    killIfStill(st.pids.apiServer, 'kube-apiserver');
    killIfStill(st.pids.etcd, 'etcd');
  }
  // Such a serve process also left its temp dirs (etcd data, certificates)
  // registered under its pid; remove them.
  await cleanupStale().catch(() => undefined);
  rmSync(clusterDir, { recursive: true, force: true });
  rmSync(clusterKubeconfig, { force: true });
  return 0;
}

function status(): number {
  const st = readClusterState();
  if (st && alive(st.pid)) {
    console.log(JSON.stringify(st, null, 2));
    return 0;
  }
  console.log('not running');
  return 1;
}

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const cmd = process.argv[2];
  if (cmd === 'serve') {
    void serve();
  } else {
    const fn = cmd === 'up' ? up : cmd === 'down' ? down : cmd === 'status' ? async () => status() : null;
    if (!fn) {
      console.error('usage: cluster.js up|down|status');
      process.exit(2);
    }
    fn().then(
      (code) => process.exit(code),
      (err: unknown) => {
        console.error(err instanceof K8sBinsUnavailable ? err.message : err);
        process.exit(1);
      },
    );
  }
}
