// Long-lived connections through a Service, each busy: N TCP connections from
// a pod, every one sending a keep-alive GET every `intervalMs` (the next only
// once the previous was answered) until told to stop. "Do established flows
// survive X, and keep their backend?": the summary says, per connection, how
// many requests were answered, which pods answered, which client ports the
// backends saw (one, unless the connection was replaced), the slowest answer
// and any error. A connection that closes or errors stays failed.

import { createInterface, type Interface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import type { Testbed } from './netns.js';
import { childEnv } from './programs.js';

const PROGRAM = `
const net = require('node:net');
const [host, port, n, interval, timeout] = process.argv.slice(1).map((x, i) => (i === 0 ? x : Number(x)));
const now = () => performance.timeOrigin + performance.now();
const conns = [];
let open = 0;
for (let i = 0; i < n; i++) {
  const c = { requests: 0, answered: 0, pods: new Set(), clientPorts: new Set(), maxLatencyMs: 0, errors: [], sentAt: 0, buf: '', timer: null };
  const s = net.connect(port, host, () => {
    s.setNoDelay(true);
    if (++open === n) console.log('connected');
    send();
  });
  const fail = (e) => { if (!c.failed) { c.failed = true; c.errors.push(e); } clearTimeout(c.timer); };
  const send = () => {
    if (c.failed || c.stopped) return;
    c.requests++;
    c.sentAt = now();
    c.timer = setTimeout(() => fail('no answer within ' + timeout + ' ms'), timeout);
    s.write('GET / HTTP/1.1\\r\\nHost: svc\\r\\nConnection: keep-alive\\r\\n\\r\\n');
  };
  s.on('data', (d) => {
    c.buf += d;
    for (;;) {
      const end = c.buf.indexOf('\\r\\n\\r\\n');
      if (end < 0) return;
      const m = /content-length: *(\\d+)/i.exec(c.buf.slice(0, end));
      const len = m ? Number(m[1]) : 0;
      if (c.buf.length < end + 4 + len) return;
      const body = c.buf.slice(end + 4, end + 4 + len);
      c.buf = c.buf.slice(end + 4 + len);
      clearTimeout(c.timer);
      c.maxLatencyMs = Math.max(c.maxLatencyMs, now() - c.sentAt);
      try {
        const hello = JSON.parse(body);
        c.pods.add(hello.pod);
        c.clientPorts.add(hello.remotePort);
        c.answered++;
      } catch { fail('bad answer: ' + body.slice(0, 100)); }
      setTimeout(send, interval);
    }
  });
  s.on('error', (e) => fail(e.code || e.message));
  s.on('close', () => fail('closed'));
  conns.push(c);
}
require('node:readline').createInterface({ input: process.stdin }).on('line', () => {
  for (const c of conns) { c.stopped = true; clearTimeout(c.timer); }
  // The request in flight (if any) gets its answer time.
  setTimeout(() => {
    console.log(JSON.stringify(conns.map((c) => ({
      requests: c.requests, answered: c.answered, pods: [...c.pods], clientPorts: [...c.clientPorts],
      maxLatencyMs: Math.round(c.maxLatencyMs), errors: c.errors,
    }))));
    process.exit(0);
  }, 500);
});
`;

export interface ChatterSummary {
  requests: number;
  answered: number;
  /** Pods that answered on this connection (one, if it kept its backend). */
  pods: string[];
  /** Client ports the backends saw (one, if the connection was never replaced). */
  clientPorts: number[];
  maxLatencyMs: number;
  errors: string[];
}

export class Chatter {
  private readonly lines: Interface;

  private constructor(private readonly child: ChildProcess) {
    this.lines = createInterface({ input: child.stdout! });
  }

  /** Opens `n` connections from namespace `ns`; resolves once all are established. */
  static async start(tb: Testbed, ns: string, host: string, port: number, opts: { connections: number; intervalMs: number; timeoutMs?: number }): Promise<Chatter> {
    const args = [host, port, opts.connections, opts.intervalMs, opts.timeoutMs ?? 5000].map(String);
    const child = tb.spawn(ns, [process.execPath, '-e', PROGRAM, ...args], { env: childEnv(), stdio: ['pipe', 'pipe', 'inherit'] });
    const c = new Chatter(child);
    const first = await c.nextLine(10_000);
    if (first !== 'connected') throw new Error(`chatter: unexpected ${first}`);
    return c;
  }

  private nextLine(timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`chatter: no output within ${timeoutMs} ms`)), timeoutMs);
      this.lines.once('line', (l) => {
        clearTimeout(timer);
        resolve(l);
      });
    });
  }

  /** Stops sending; one summary per connection. */
  async stop(): Promise<ChatterSummary[]> {
    this.child.stdin!.write('stop\n');
    return JSON.parse(await this.nextLine(10_000)) as ChatterSummary[];
  }
}
