// Network namespaces for tests, the demo and benchmarks, and a Testbed that owns
// everything one run creates.
//
// Every namespace a run creates is named `kbp-<6 hex>-<short name>`; the hex is
// the run id. A run also registers itself in a small file under
// /tmp/kbp-testbed/ (its pid, its bpffs mounts and temp dirs), so that
// cleanupStale() can tell a crashed run's leftovers from a run that is still
// going (another test file, another engineer's shell) and only removes the
// former.
//
// Teardown runs in reverse creation order, is idempotent, and is wired to
// process exit, SIGINT, SIGTERM and uncaught errors. Those paths differ: on
// 'exit' only synchronous work is possible, so every resource carries both an
// async and a sync way to release it.

import { execFile, execFileSync, spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

// ---- running commands ----

export interface RunResult {
  stdout: string;
  stderr: string;
}

export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`command failed (exit ${exitCode}): ${argv.join(' ')}${stderr.trim() ? `\n${stderr.trim()}` : ''}`);
    this.name = 'CommandError';
  }
}

export interface RunOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  input?: string;
}

/** Runs a command to completion; rejects with CommandError on a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 30_000, env: opts.env ?? process.env, maxBuffer: 64 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err) {
          const code = typeof err.code === 'number' ? err.code : null;
          reject(new CommandError([cmd, ...args], code, stdout, stderr || err.message));
          return;
        }
        resolve({ stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** `ip ARGS...` in the current (root) namespace. */
export function ip(...args: string[]): Promise<RunResult> {
  return run('ip', args);
}

/** Runs a command inside a namespace (`ip netns exec NS CMD ARGS...`). */
export function nsExec(ns: string, cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

/** Best-effort synchronous command for exit paths; never throws. */
function runSyncQuiet(cmd: string, args: readonly string[]): string {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'], encoding: 'utf8', timeout: 10_000 });
  } catch {
    return '';
  }
}

export async function listNamespaces(): Promise<string[]> {
  const { stdout } = await ip('netns', 'list');
  return parseNetnsList(stdout);
}

function parseNetnsList(out: string): string[] {
  // Lines look like "name" or "name (id: 3)".
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.length > 0);
}

/** Pids of the processes living in a namespace (`ip netns pids`). */
function netnsPidsSync(ns: string): number[] {
  return runSyncQuiet('ip', ['netns', 'pids', ns])
    .split(/\s+/)
    .filter(Boolean)
    .map(Number)
    .filter((p) => Number.isInteger(p) && p > 0 && p !== process.pid);
}

/** Kills every process in the namespace, then deletes it. Synchronous; never throws. */
function deleteNamespaceSync(ns: string): void {
  for (const pid of netnsPidsSync(ns)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  runSyncQuiet('ip', ['netns', 'del', ns]);
}

async function deleteNamespace(ns: string): Promise<void> {
  // The processes were normally stopped already (children are torn down
  // before namespaces); anything still inside is a stray and gets SIGKILL.
  deleteNamespaceSync(ns);
}

function isMountPoint(dir: string): boolean {
  try {
    const target = path.resolve(dir);
    return readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .some((l) => l.split(' ')[1] === target);
  } catch {
    return false;
  }
}

function unmountSync(dir: string): void {
  if (!isMountPoint(dir)) return;
  runSyncQuiet('umount', [dir]);
  if (isMountPoint(dir)) runSyncQuiet('umount', ['-l', dir]);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// ---- run registry (for cleanupStale) ----

const REGISTRY_DIR = path.join(os.tmpdir(), 'kbp-testbed');
export const DEFAULT_PREFIX = 'kbp-';

interface RunRecord {
  pid: number;
  prefix: string;
  mounts: string[];
  dirs: string[];
}

function registryPath(runId: string): string {
  return path.join(REGISTRY_DIR, `${runId}.json`);
}

function writeRecord(runId: string, rec: RunRecord): void {
  mkdirSync(REGISTRY_DIR, { recursive: true });
  const tmp = `${registryPath(runId)}.tmp`;
  writeFileSync(tmp, JSON.stringify(rec));
  renameSync(tmp, registryPath(runId));
}

function readRecord(runId: string): RunRecord | null {
  try {
    return JSON.parse(readFileSync(registryPath(runId), 'utf8')) as RunRecord;
  } catch {
    return null;
  }
}

export interface StaleCleanup {
  namespaces: string[];
  mounts: string[];
  dirs: string[];
  /** Namespaces with the prefix that belong to no registered run: left alone. */
  unknown: string[];
}

/**
 * Removes what crashed runs left behind: namespaces named `<prefix><runid>-…`
 * whose run is registered with a pid that no longer exists, with their bpffs
 * mounts and temp dirs. Namespaces of live runs, and namespaces with the prefix
 * that no run registered (someone else's), are left alone.
 */
export async function cleanupStale(prefix: string = DEFAULT_PREFIX): Promise<StaleCleanup> {
  const result: StaleCleanup = { namespaces: [], mounts: [], dirs: [], unknown: [] };
  const runIdOf = (ns: string): string | null => {
    if (!ns.startsWith(prefix)) return null;
    const m = /^([0-9a-f]{6})-/.exec(ns.slice(prefix.length));
    return m?.[1] ?? null;
  };
  const deadRuns = new Map<string, RunRecord>();
  let files: string[] = [];
  try {
    files = readdirSync(REGISTRY_DIR).filter((f) => /^[0-9a-f]{6}\.json$/.test(f));
  } catch {
    // no registry yet
  }
  for (const f of files) {
    const runId = f.slice(0, 6);
    const rec = readRecord(runId);
    if (rec && rec.prefix === prefix && !pidAlive(rec.pid)) deadRuns.set(runId, rec);
  }
  for (const ns of await listNamespaces()) {
    const runId = runIdOf(ns);
    if (runId === null) continue;
    if (deadRuns.has(runId)) {
      deleteNamespaceSync(ns);
      result.namespaces.push(ns);
    } else if (!readRecord(runId)) {
      result.unknown.push(ns);
    }
  }
  for (const [runId, rec] of deadRuns) {
    for (const m of rec.mounts) {
      unmountSync(m);
      result.mounts.push(m);
    }
    for (const d of rec.dirs) {
      rmSync(d, { recursive: true, force: true });
      result.dirs.push(d);
    }
    rmSync(registryPath(runId), { force: true });
  }
  return result;
}

// ---- the testbed ----

interface Resource {
  label: string;
  release(): Promise<void>;
  releaseSync(): void;
}

export interface SpawnOptions {
  /** Appends the child's stdout and stderr to this file (otherwise they are piped). */
  logFile?: string;
  env?: NodeJS.ProcessEnv;
  /** Overrides stdio entirely (logFile is then ignored). */
  stdio?: StdioOptions;
  /** Grace period between SIGTERM and SIGKILL at teardown. */
  stopTimeoutMs?: number;
}

const live = new Set<Testbed>();
let hooksInstalled = false;

function installProcessHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const tb of live) tb.teardownSync();
  });
  const onSignal = (signal: NodeJS.Signals, code: number) => {
    process.stderr.write(`testbed: ${signal}, tearing down\n`);
    void Promise.allSettled([...live].map((tb) => tb.teardown())).finally(() => process.exit(code));
  };
  process.once('SIGINT', () => onSignal('SIGINT', 130));
  process.once('SIGTERM', () => onSignal('SIGTERM', 143));
  process.once('SIGHUP', () => onSignal('SIGHUP', 129));
}

/**
 * Owns everything one run creates: namespaces, bpffs mounts, temp dirs, child
 * processes, and any extra cleanup registered with defer(). teardown()
 * releases them in reverse order, once.
 */
export class Testbed {
  readonly runId: string;
  /** `kbp-<runId>-`: the start of every namespace name of this run. */
  readonly prefix: string;
  private readonly resources: Resource[] = [];
  private readonly record: RunRecord;
  private tornDown: Promise<void> | null = null;
  private syncTornDown = false;

  private constructor(prefix: string) {
    this.runId = randomBytes(3).toString('hex');
    this.prefix = `${prefix}${this.runId}-`;
    this.record = { pid: process.pid, prefix, mounts: [], dirs: [] };
    writeRecord(this.runId, this.record);
    this.resources.push({
      label: 'run registry',
      release: async () => rmSync(registryPath(this.runId), { force: true }),
      releaseSync: () => rmSync(registryPath(this.runId), { force: true }),
    });
    live.add(this);
    installProcessHooks();
  }

  static create(opts: { prefix?: string } = {}): Testbed {
    return new Testbed(opts.prefix ?? DEFAULT_PREFIX);
  }

  get closed(): boolean {
    return this.tornDown !== null || this.syncTornDown;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('testbed: already torn down');
  }

  nsName(short: string): string {
    return `${this.prefix}${short}`;
  }

  /** Creates namespace `<prefix><short>` with loopback up. Returns its full name. */
  async addNamespace(short: string): Promise<string> {
    this.assertOpen();
    const ns = this.nsName(short);
    await ip('netns', 'add', ns);
    this.resources.push({
      label: `netns ${ns}`,
      release: () => deleteNamespace(ns),
      releaseSync: () => deleteNamespaceSync(ns),
    });
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    return ns;
  }

  /** Deletes a namespace of this run before teardown (e.g. a pod going away). */
  async removeNamespace(ns: string): Promise<void> {
    const i = this.resources.findIndex((r) => r.label === `netns ${ns}`);
    if (i < 0) throw new Error(`testbed: ${ns} is not a namespace of this run`);
    const [r] = this.resources.splice(i, 1);
    await r!.release();
  }

  /** A temp dir removed at teardown. */
  async tempDir(label: string): Promise<string> {
    this.assertOpen();
    const dir = await mkdtemp(path.join(os.tmpdir(), `kbp-${this.runId}-${label}-`));
    this.record.dirs.push(dir);
    writeRecord(this.runId, this.record);
    this.resources.push({
      label: `dir ${dir}`,
      release: () => rm(dir, { recursive: true, force: true }),
      releaseSync: () => rmSync(dir, { recursive: true, force: true }),
    });
    return dir;
  }

  /**
   * A private bpffs mounted on a temp dir under /tmp (never under /sys: `ip
   * netns exec` remounts /sys, so pins there would be invisible to the agent
   * and vanish with it). Unmounted, which drops every pin, at teardown.
   */
  async mountBpffs(): Promise<string> {
    this.assertOpen();
    const dir = mkdtempSync(path.join(os.tmpdir(), `kbp-${this.runId}-bpffs-`));
    this.record.dirs.push(dir);
    this.record.mounts.push(dir);
    writeRecord(this.runId, this.record);
    this.resources.push({
      label: `dir ${dir}`,
      release: () => rm(dir, { recursive: true, force: true }),
      releaseSync: () => rmSync(dir, { recursive: true, force: true }),
    });
    await run('mount', ['-t', 'bpf', 'bpf', dir]);
    this.resources.push({
      label: `bpffs ${dir}`,
      release: async () => unmountSync(dir),
      releaseSync: () => unmountSync(dir),
    });
    return dir;
  }

  /**
   * Starts `argv` inside namespace `ns` (or in the current one when ns is
   * null). The child is stopped at teardown (SIGTERM, then SIGKILL).
   */
  spawn(ns: string | null, argv: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    this.assertOpen();
    const [cmd, ...args] = ns === null ? argv : ['ip', 'netns', 'exec', ns, ...argv];
    let stdio: StdioOptions = opts.stdio ?? 'pipe';
    let logFd: number | null = null;
    if (!opts.stdio && opts.logFile) {
      logFd = openSync(opts.logFile, 'a');
      stdio = ['ignore', logFd, logFd];
    }
    const child = spawn(cmd!, args, { stdio, env: opts.env ?? process.env });
    if (logFd !== null) closeSync(logFd); // the child holds its own copy
    child.on('error', () => {
      // reported through exit; keep an unhandled 'error' from killing the run
    });
    const grace = opts.stopTimeoutMs ?? 3000;
    this.resources.push({
      label: `process ${child.pid} ${argv.join(' ')}`,
      release: () => stopChild(child, grace),
      releaseSync: () => {
        if (child.exitCode === null && child.signalCode === null && child.pid) {
          try {
            process.kill(child.pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
      },
    });
    return child;
  }

  /** Registers an extra cleanup step; it runs in reverse order with the rest. */
  defer(label: string, release: () => Promise<void> | void, releaseSync?: () => void): void {
    this.assertOpen();
    this.resources.push({ label, release: async () => release(), releaseSync: releaseSync ?? (() => {}) });
  }

  /** Releases everything, newest first. Safe to call any number of times. */
  teardown(): Promise<void> {
    if (!this.tornDown) this.tornDown = this.doTeardown();
    return this.tornDown;
  }

  private async doTeardown(): Promise<void> {
    const errors: string[] = [];
    while (this.resources.length > 0) {
      const r = this.resources.pop()!;
      try {
        await r.release();
      } catch (err) {
        errors.push(`${r.label}: ${(err as Error).message}`);
        try {
          r.releaseSync();
        } catch {
          // best effort
        }
      }
    }
    live.delete(this);
    if (errors.length) process.stderr.write(`testbed ${this.runId}: teardown problems:\n  ${errors.join('\n  ')}\n`);
  }

  /** Synchronous teardown for process 'exit'. */
  teardownSync(): void {
    if (this.syncTornDown) return;
    this.syncTornDown = true;
    while (this.resources.length > 0) {
      const r = this.resources.pop()!;
      try {
        r.releaseSync();
      } catch {
        // best effort on the way out
      }
    }
    live.delete(this);
  }
}

/** SIGTERM, wait up to graceMs, then SIGKILL; resolves once the child has exited. */
export function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || !child.pid) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Resolves with the exit code/signal once the child exits. */
export function waitExit(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}
