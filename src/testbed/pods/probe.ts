// A long-running probe inside one namespace (a client pod, or the node to
// reach the agent's API), driven over stdin/stdout with one JSON object per
// line: {"id":1,"op":"http",...} in, {"id":1,"result":...} or
// {"id":1,"error":"..."} out. One probe per namespace keeps `ip netns exec`
// (and a node start-up) out of every request.
//
// Ops (types in ../probe-protocol.ts):
//   http  N sequential GETs, each on a NEW TCP connection (agent: false), from
//         localPort when given (the kernel's SO_REUSEADDR bind lets it follow a closed one)
//   udp   one datagram from an unconnected socket; reports who replied (connect:
//         a connected socket instead, which also reports ICMP errors, e.g. ECONNREFUSED)
//   get   one GET returning status and body (the agent's REST API)

import { createSocket } from 'node:dgram';
import { request } from 'node:http';
import { createInterface } from 'node:readline';
import type { GetResult, HttpResult, ProbeRequest, UdpResult } from '../probe-protocol.js';

function now(): number {
  return performance.timeOrigin + performance.now();
}

function errText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ? `${e.code}: ${e.message}` : String(e.message ?? err);
}

function getOnce(host: string, port: number, path: string, timeoutMs: number, localPort?: number): Promise<{ status: number; body: string; peer: string | null }> {
  return new Promise((resolve, reject) => {
    let peer: string | null = null;
    const req = request({ host, port, path, method: 'GET', agent: false, timeout: timeoutMs, ...(localPort ? { localPort } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), peer }));
      res.on('error', reject);
    });
    // remoteAddress is the kernel's getpeername() of the connected socket.
    req.on('socket', (s) => s.once('connect', () => (peer = s.remoteAddress ? `${s.remoteAddress}:${s.remotePort}` : null)));
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end();
  });
}

async function httpOnce(host: string, port: number, path: string, timeoutMs: number, localPort?: number): Promise<HttpResult> {
  const start = now();
  try {
    const { status, body, peer } = await getOnce(host, port, path, timeoutMs, localPort);
    const end = now();
    let backend: string | null = null;
    let seenFrom: string | null = null;
    try {
      const hello = JSON.parse(body) as { pod?: string; remoteAddress?: string; remotePort?: number };
      backend = hello.pod ?? null;
      seenFrom = hello.remoteAddress ? `${hello.remoteAddress}:${hello.remotePort}` : null;
    } catch {
      // not a testbed server; body is still reported
    }
    return { ok: status === 200, status, backend, seenFrom, peer, body, error: null, start, end };
  } catch (err) {
    return { ok: false, status: 0, backend: null, seenFrom: null, body: '', error: errText(err), start, end: now() };
  }
}

function udpOnce(host: string, port: number, payload: string, timeoutMs: number, connect = false): Promise<UdpResult> {
  return new Promise((resolve) => {
    // Unconnected by default: a connected socket would filter out a reply
    // whose source is not exactly host:port, hiding a broken reverse NAT. A
    // connected one is what gets ICMP errors (the kernel matches them to it).
    const sock = createSocket('udp4');
    let peer: string | null = null;
    const done = (r: UdpResult) => {
      clearTimeout(timer);
      sock.close();
      resolve(connect ? { ...r, peer } : r);
    };
    const timer = setTimeout(
      () => done({ ok: false, from: null, body: '', error: `ETIMEDOUT: no reply within ${timeoutMs} ms` }),
      timeoutMs,
    );
    sock.on('message', (msg, rinfo) =>
      done({ ok: true, from: { address: rinfo.address, port: rinfo.port }, body: msg.toString('utf8'), error: null }),
    );
    sock.on('error', (err) => done({ ok: false, from: null, body: '', error: errText(err) }));
    const sent = (err: Error | null) => {
      if (err) done({ ok: false, from: null, body: '', error: errText(err) });
    };
    if (!connect) {
      sock.send(payload, port, host, sent);
      return;
    }
    sock.connect(port, host, () => {
      // remoteAddress() is the kernel's getpeername() of the connected socket.
      const a = sock.remoteAddress();
      peer = `${a.address}:${a.port}`;
      sock.send(payload, sent);
    });
  });
}

async function handle(req: ProbeRequest): Promise<unknown> {
  switch (req.op) {
    case 'http': {
      const results: HttpResult[] = [];
      for (let i = 0; i < req.count; i++) {
        results.push(await httpOnce(req.host, req.port, req.path ?? '/', req.timeoutMs, req.localPort));
      }
      return results;
    }
    case 'udp':
      return udpOnce(req.host, req.port, req.payload ?? 'ping', req.timeoutMs, req.connect);
    case 'get': {
      const url = new URL(req.url);
      try {
        const r = await getOnce(url.hostname, Number(url.port || 80), url.pathname + url.search, req.timeoutMs);
        return { ok: true, status: r.status, body: r.body, error: null } satisfies GetResult;
      } catch (err) {
        return { ok: false, status: 0, body: '', error: errText(err) } satisfies GetResult;
      }
    }
    default:
      throw new Error(`unknown op ${(req as { op: string }).op}`);
  }
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let req: ProbeRequest;
  try {
    req = JSON.parse(line) as ProbeRequest;
  } catch {
    process.stdout.write(`${JSON.stringify({ id: -1, error: 'bad json' })}\n`);
    return;
  }
  handle(req).then(
    (result) => process.stdout.write(`${JSON.stringify({ id: req.id, result })}\n`),
    (err: unknown) => process.stdout.write(`${JSON.stringify({ id: req.id, error: errText(err) })}\n`),
  );
});
rl.on('close', () => process.exit(0));
process.stdout.write(`${JSON.stringify({ id: 0, result: 'ready' })}\n`);
