// Connections opened through a Service and held idle, then used: "do
// established connections survive X?". A small program runs in the client
// pod: it opens N TCP connections to HOST:PORT (the datapath picks a backend
// for each on the SYN), prints "connected", and on a line "go" sends one GET on
// each and prints, as one JSON line, which pod answered each.

import { createInterface, type Interface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import type { Testbed } from '../testbed/netns.js';
import { childEnv } from '../testbed/programs.js';

const PROGRAM = `
const net = require('node:net');
const [host, port, n] = process.argv.slice(1);
const socks = [];
let open = 0;
for (let i = 0; i < Number(n); i++) {
  const s = net.connect(Number(port), host, () => { if (++open === Number(n)) console.log('connected'); });
  s.on('error', () => {});
  socks.push(s);
}
require('node:readline').createInterface({ input: process.stdin }).on('line', async () => {
  const out = await Promise.all(socks.map((s) => new Promise((resolve) => {
    let body = '';
    const t = setTimeout(() => resolve({ ok: false, pod: null, error: 'timeout' }), 5000);
    s.on('data', (c) => (body += c));
    s.on('close', () => { clearTimeout(t); const m = /"pod":"([^"]+)"/.exec(body); resolve({ ok: !!m, pod: m ? m[1] : null, error: m ? null : body.slice(0, 100) || 'closed' }); });
    s.write('GET / HTTP/1.1\\r\\nHost: svc\\r\\nConnection: close\\r\\n\\r\\n');
  })));
  console.log(JSON.stringify(out));
  process.exit(0);
});
`;

export interface HeldAnswer {
  ok: boolean;
  pod: string | null;
  error: string | null;
}

export class HeldConnections {
  private readonly lines: Interface;

  private constructor(private readonly child: ChildProcess) {
    this.lines = createInterface({ input: child.stdout! });
  }

  /** Opens `n` connections from namespace `ns`; resolves once all are established. */
  static async open(tb: Testbed, ns: string, host: string, port: number, n: number): Promise<HeldConnections> {
    const child = tb.spawn(ns, [process.execPath, '-e', PROGRAM, host, String(port), String(n)], { env: childEnv(), stdio: ['pipe', 'pipe', 'inherit'] });
    const h = new HeldConnections(child);
    const first = await h.nextLine(10_000);
    if (first !== 'connected') throw new Error(`held connections: unexpected ${first}`);
    return h;
  }

  private nextLine(timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`held connections: no output within ${timeoutMs} ms`)), timeoutMs);
      this.lines.once('line', (l) => {
        clearTimeout(timer);
        resolve(l);
      });
    });
  }

  /** One GET on every connection: who answered each. */
  async use(): Promise<HeldAnswer[]> {
    this.child.stdin!.write('go\n');
    return JSON.parse(await this.nextLine(15_000)) as HeldAnswer[];
  }
}
