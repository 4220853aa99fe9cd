// The Go load generator (tools/loadgen, built by scripts/loadgen.sh into the
// cache) as the benchmark uses it: `loadgen serve` in every backend pod and
// one long-lived `loadgen client` in the client pod, driven one JSON command
// per line.

import { execFile, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { projectRoot } from '../../paths.js';
import type { Testbed } from '../../testbed/netns.js';

export interface Dist {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  n: number;
}

export interface LoadResult {
  op: string;
  error?: string;
  requests: number;
  errors: number;
  firstError?: string;
  seconds: number;
  perSecond: number;
  connectMs?: Dist;
  requestMs?: Dist;
  backends?: Record<string, number>;
  /** CPU (user+system) the generator itself used during the command, seconds. */
  cpuSeconds: number;
  foundAt?: number;
  attempts?: number;
}

export type LoadCommand =
  | { op: 'conn' | 'keepalive'; targets: string[]; concurrency: number; durationMs: number }
  | { op: 'until'; target: string; want: string; timeoutMs: number; pauseUs?: number };

/** Builds (or reuses) the binary; resolves with its path. */
export function ensureLoadgen(): Promise<string> {
  const script = path.join(projectRoot, 'scripts', 'loadgen.sh');
  return new Promise((resolve, reject) => {
    execFile('bash', [script], { encoding: 'utf8', timeout: 10 * 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`scripts/loadgen.sh failed (exit ${err.code}): ${stderr.trim()}`));
      else resolve(stdout.trim().split('\n').pop()!);
    });
  });
}

/** Resolves with the child's first stdout line. */
function firstLine(child: ChildProcess, what: string, timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error(`${what}: not ready within ${timeoutMs} ms`)), timeoutMs);
    child.once('exit', (code) => reject(new Error(`${what}: exited (${code}) before it was ready`)));
    rl.once('line', (l) => {
      clearTimeout(timer);
      rl.close();
      child.stdout!.resume();
      resolve(l);
    });
  });
}

/** `loadgen serve --name NAME --port PORTS` in `ns`; resolves once it listens. */
export async function startBackend(tb: Testbed, bin: string, ns: string, name: string, ports: number[] = [8080]): Promise<ChildProcess> {
  const child = tb.spawn(ns, [bin, 'serve', '--name', name, '--port', ports.join(',')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await firstLine(child, `loadgen serve in ${ns}`);
  if (line.trim() !== 'ready') throw new Error(`loadgen serve in ${ns}: unexpected first line ${line}`);
  return child;
}

/** One `loadgen client` process; commands run one at a time. */
export class LoadClient {
  private readonly waiting: Array<(r: LoadResult) => void> = [];

  private constructor(
    readonly ns: string,
    readonly child: ChildProcess,
  ) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const w = this.waiting.shift();
      if (w) w(JSON.parse(line) as LoadResult);
    });
  }

  static async start(tb: Testbed, bin: string, ns: string): Promise<LoadClient> {
    const child = tb.spawn(ns, [bin, 'client'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const rl = createInterface({ input: child.stdout! });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`loadgen client in ${ns}: not ready in 15 s`)), 15_000);
      rl.once('line', () => {
        clearTimeout(timer);
        rl.close();
        resolve();
      });
    });
    return new LoadClient(ns, child);
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Sends a command now; the generator runs commands in order and answers in order. */
  run(cmd: LoadCommand): Promise<LoadResult> {
    return new Promise<LoadResult>((resolve, reject) => {
      if (this.child.exitCode !== null) {
        reject(new Error(`loadgen client in ${this.ns} has exited`));
        return;
      }
      this.waiting.push(resolve);
      this.child.stdin!.write(`${JSON.stringify(cmd)}\n`);
    });
  }
}
