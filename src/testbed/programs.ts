// Starting the testbed's own programs (pods/server, pods/probe) inside
// namespaces, and talking to a probe.
//
// The programs are siblings of this module: .js under dist/, .ts when this
// module itself runs from source under a TypeScript loader (tap). In the
// latter case the child gets the loader flags this process was started with,
// so tests always run the programs from the same tree as themselves.

import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Testbed } from './netns.js';
import type { GetResult, HttpResult, ProbeRequest, UdpResult } from './probe-protocol.js';

const here = fileURLToPath(import.meta.url);
const ext = path.extname(here);

/** Environment for node children: without tap's NODE_OPTIONS hooks. */
export function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  return env;
}

/** `node [loader flags] <program>`: the argv that runs one of our pod programs. */
export function programArgv(name: 'server' | 'probe'): string[] {
  const file = path.join(path.dirname(here), 'pods', `${name}${ext}`);
  if (!existsSync(file)) throw new Error(`testbed program missing: ${file} (run make build)`);
  const loaderFlags =
    ext === '.ts'
      ? process.execArgv.filter((a) => /typescript|ts-node|tsx|--loader|--import|source-maps/.test(a) && !/processinfo|@tapjs\/mock/.test(a))
      : [];
  return [process.execPath, ...loaderFlags, file];
}

/** Resolves with the first stdout line of `child`, or rejects if it exits or times out first. */
function firstLine(child: ChildProcess, what: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    if (!child.stdout) {
      reject(new Error(`${what}: no stdout pipe`));
      return;
    }
    const rl = createInterface({ input: child.stdout });
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => {
      stderr += c.toString();
      if (stderr.length > 8192) stderr = stderr.slice(-8192);
    });
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${what}: not ready within ${timeoutMs} ms${stderr ? `\n${stderr}` : ''}`));
    }, timeoutMs);
    const onExit = (code: number | null, signal: string | null) => {
      cleanup();
      reject(new Error(`${what}: exited (${code ?? signal}) before it was ready${stderr ? `\n${stderr}` : ''}`));
    };
    const onLine = (line: string) => {
      cleanup();
      resolve(line);
    };
    const cleanup = () => {
      clearTimeout(timer);
      child.off('exit', onExit);
      rl.off('line', onLine);
      rl.close();
    };
    child.once('exit', onExit);
    rl.once('line', onLine);
  });
}

/** A backend pod's server (pods/server): HTTP and UDP on `port`, answering with the pod's name. */
export async function startPodServer(tb: Testbed, ns: string, podName: string, port = 8080): Promise<ChildProcess> {
  const child = tb.spawn(ns, [...programArgv('server'), '--name', podName, '--port', String(port)], {
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const line = await firstLine(child, `server in ${ns}`, 15_000);
  if (line.trim() !== 'ready') throw new Error(`server in ${ns}: unexpected first line ${line}`);
  child.stdout?.resume();
  return child;
}

type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
}

/** One probe process inside a namespace; every method is one request/response. */
export class Probe {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private exited = false;

  private constructor(
    readonly ns: string,
    private readonly child: ChildProcess,
  ) {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      let msg: { id: number; result?: unknown; error?: string };
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        return;
      }
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error !== undefined) p.reject(new Error(`probe in ${ns}: ${msg.error}`));
      else p.resolve(msg.result);
    });
    child.once('exit', (code, signal) => {
      this.exited = true;
      for (const p of this.pending.values()) p.reject(new Error(`probe in ${ns} exited (${code ?? signal})`));
      this.pending.clear();
    });
  }

  /** opts.wrap: rewrites the probe's argv, e.g. TestCgroup.wrap to start it inside a cgroup. */
  static async start(tb: Testbed, ns: string, opts: { wrap?: (argv: string[]) => string[] } = {}): Promise<Probe> {
    const argv = programArgv('probe');
    const child = tb.spawn(ns, opts.wrap ? opts.wrap(argv) : argv, { env: childEnv(), stdio: ['pipe', 'pipe', 'inherit'] });
    const probe = new Probe(ns, child);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`probe in ${ns}: not ready within 15 s`)), 15_000);
      probe.pending.set(0, {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
    return probe;
  }

  private call<T>(req: WithoutId<ProbeRequest>): Promise<T> {
    if (this.exited) return Promise.reject(new Error(`probe in ${this.ns} has exited`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.stdin!.write(`${JSON.stringify({ ...req, id })}\n`);
    });
  }

  /** `count` sequential GETs, each on a new TCP connection. */
  http(host: string, port: number, opts: { count?: number; timeoutMs?: number; path?: string; localPort?: number } = {}): Promise<HttpResult[]> {
    return this.call<HttpResult[]>({
      op: 'http',
      host,
      port,
      count: opts.count ?? 1,
      timeoutMs: opts.timeoutMs ?? 2000,
      ...(opts.path ? { path: opts.path } : {}),
      ...(opts.localPort ? { localPort: opts.localPort } : {}),
    });
  }

  /** One datagram from an unconnected socket; the result tells who replied. */
  udp(host: string, port: number, opts: { timeoutMs?: number; payload?: string; connect?: boolean } = {}): Promise<UdpResult> {
    return this.call<UdpResult>({
      op: 'udp',
      host,
      port,
      timeoutMs: opts.timeoutMs ?? 2000,
      ...(opts.payload ? { payload: opts.payload } : {}),
      ...(opts.connect ? { connect: true } : {}),
    });
  }

  get(url: string, timeoutMs = 2000): Promise<GetResult> {
    return this.call<GetResult>({ op: 'get', url, timeoutMs });
  }
}
