// The JSON text of one page, written as bytes into a buffer that is reused
// by every page the agent serves, and sent as it is. A page of conntrack
// entries never exists as objects or strings: the entry writers
// (./decode.ts) copy precomputed fragments and digits straight from the
// kernel's batch buffer into the text, so serving a million entries
// allocates next to nothing per entry and the agent's memory stays one page
// whatever the dump's size.
//
// One buffer per page rather than a stream of chunks: piping a stream into
// the response creates stream and listener objects per page that outlive
// the page long enough to be promoted to V8's old space (measured with the
// sampling heap profiler), which is the growth this module exists to avoid.
// A buffer goes back to the pool when the response has finished (every byte
// handed to the kernel's socket); one a client abandons is left to the
// garbage collector, since a write may still hold it.

import type { FastifyReply } from 'fastify';

/** A fresh buffer's size: a page of 500 conntrack entries (about 100 KiB) fits. */
const INITIAL_SIZE = 128 * 1024;
/** Idle buffers kept for the next pages, and the largest kept (a page of 5000 conntrack entries, the largest limit, takes about 1.1 MiB). */
const MAX_IDLE = 2;
const MAX_KEPT_SIZE = 2 * 1024 * 1024;
const idle: Buffer[] = [];

function recycle(b: Buffer): void {
  if (idle.length < MAX_IDLE && b.length <= MAX_KEPT_SIZE) idle.push(b);
}

export const ascii = (s: string): Buffer => Buffer.from(s, 'latin1');

export class JsonText {
  private buf: Buffer;
  private at = 0;
  private items = 0;
  private sent = false;

  constructor() {
    this.buf = idle.pop() ?? Buffer.allocUnsafeSlow(INITIAL_SIZE);
  }

  /** Room for n more bytes (a buffer twice as large when they do not fit; the smaller one, never sent, goes back to the pool). */
  private room(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafeSlow(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(grown, 0, 0, this.at);
    recycle(this.buf);
    this.buf = grown;
  }

  /** Bytes as they are (precomputed fragments). */
  raw(b: Buffer): void {
    this.room(b.length);
    this.buf.set(b, this.at);
    this.at += b.length;
  }

  /** JSON text (UTF-8). */
  text(s: string): void {
    this.room(Buffer.byteLength(s));
    this.at += this.buf.write(s, this.at, 'utf8');
  }

  byte(c: number): void {
    this.room(1);
    this.buf[this.at++] = c;
  }

  /** A non-negative integer below 2^53, as JSON (and String(n)) writes it. */
  uint(n: number): void {
    let len = 1;
    for (let x = n; x >= 10; x = Math.floor(x / 10)) len++;
    this.room(len);
    const c = this.buf;
    let at = this.at + len;
    do {
      const q = Math.floor(n / 10);
      c[--at] = 48 + (n - q * 10);
      n = q;
    } while (n > 0);
    this.at += len;
  }

  /** A u32 in host arithmetic as a dotted quad (no quotes). */
  ipv4(a: number): void {
    this.uint(a >>> 24);
    this.byte(46);
    this.uint((a >>> 16) & 255);
    this.byte(46);
    this.uint((a >>> 8) & 255);
    this.byte(46);
    this.uint(a & 255);
  }

  /** Milliseconds as seconds, the JSON number String(ms / 1000) gives (ms a non-negative integer). */
  millisAsSeconds(ms: number): void {
    const frac = ms % 1000;
    this.uint((ms - frac) / 1000);
    if (frac === 0) return;
    this.byte(46);
    this.byte(48 + Math.floor(frac / 100));
    if (frac % 100 === 0) return;
    this.byte(48 + (Math.floor(frac / 10) % 10));
    if (frac % 10 !== 0) this.byte(48 + (frac % 10));
  }

  /** Starts the next element of the array being written: a comma before every element but the first. */
  item(): void {
    if (this.items++ > 0) this.byte(44);
  }

  /** The whole text as a string (tests). */
  toString(): string {
    return this.buf.toString('utf8', 0, this.at);
  }

  /** Gives the buffer back unsent (the page failed before anything was sent). */
  discard(): void {
    if (!this.sent) recycle(this.buf);
    this.sent = true;
  }

  /** Sends the text as the reply's body; the buffer returns to the pool once the response has finished. */
  send(reply: FastifyReply): FastifyReply {
    const buf = this.buf;
    this.sent = true;
    reply.raw.once('finish', () => recycle(buf));
    return reply.type('application/json; charset=utf-8').send(buf.subarray(0, this.at));
  }
}
