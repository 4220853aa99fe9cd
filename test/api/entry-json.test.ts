// The page writers of src/api/decode.ts write conntrack and affinity entries
// as JSON bytes straight from the batch buffer. Their text must be exactly
// what the entry schema's serializer writes for the entry decoded the plain
// way (the codecs, the name functions, bigint arithmetic), for every field
// value: the oracle below is that plain way, the serializer is the one
// fastify compiles for the route (fast-json-stringify over the schema).
// Then the text buffer itself, and walks through the reused batch buffers.

import t from 'tap';
import { createRequire } from 'node:module';
import * as abi from '../../src/maps/abi.js';
import { affinityWriter, ctFlagNames, ctWriter, tcpFlagNames, type CtFilter, type EntryWriter } from '../../src/api/decode.js';
import { JsonText } from '../../src/api/json-text.js';
import { START, scan, type PagedMap } from '../../src/api/paging.js';
import { AffinityEntry, ConntrackEntry } from '../../src/api/schemas.js';
import { BPF_MAP_TYPE_LRU_HASH, FakeBpfMap, build, putFlow } from './fakes.js';

const fjs = createRequire(import.meta.url)('fast-json-stringify') as (schema: object) => (v: unknown) => string;
const ctJson = fjs(ConntrackEntry);
const affinityJson = fjs(AffinityEntry);

/** mulberry32: the same cases every run. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(5);
const u32 = () => Math.floor(rand() * 4294967296);
const u64 = () => (BigInt(u32()) << 32n) | BigInt(u32());
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;

const seconds = (now: bigint, then: bigint) => (now > then ? Number((now - then) / 1_000_000n) / 1000 : 0);

function ctOracle(key: Buffer, value: Buffer, filter: CtFilter, now: bigint): string | undefined {
  const k = abi.ctKey.decode(key);
  const v = abi.ctValue.decode(value);
  const forward = k.dir === abi.KBP_CT_FORWARD;
  const client = forward ? k.saddr : k.daddr;
  if ((filter.service !== undefined && v.svc_id !== filter.service) || (filter.backend !== undefined && v.backend_id !== filter.backend)) return undefined;
  if (filter.client !== undefined && client !== filter.client) return undefined;
  return ctJson({
    direction: forward ? 'forward' : 'reply',
    protocol: abi.protoName(k.proto),
    src: `${k.saddr}:${k.sport}`,
    dst: `${k.daddr}:${k.dport}`,
    client,
    serviceId: v.svc_id,
    backendId: v.backend_id,
    flags: ctFlagNames(v.flags),
    tcpFlags: tcpFlagNames(v.tcp_flags),
    ageSeconds: seconds(now, v.created_ns),
    idleSeconds: seconds(now, v.last_seen_ns),
  });
}

function affinityOracle(key: Buffer, value: Buffer, filter: CtFilter, now: bigint): string | undefined {
  const k = abi.affinityKey.decode(key);
  const v = abi.affinityValue.decode(value);
  if ((filter.service !== undefined && k.svc_id !== filter.service) || (filter.client !== undefined && k.client !== filter.client)) return undefined;
  if (filter.backend !== undefined && v.backend_id !== filter.backend) return undefined;
  return affinityJson({ client: k.client, serviceId: k.svc_id, backendId: v.backend_id, slot: v.slot, idleSeconds: seconds(now, v.last_used_ns) });
}

/** A timestamp around `now`: the same instant, just before or after, whole and almost-whole milliseconds and seconds ago, beyond 2^53 ns ago, random. */
function stampNear(now: bigint): bigint {
  const ago = pick([0n, 1n, 999_999n, 1_000_000n, 1_000_001n, 999_999_999n, 1_000_000_000n, 123_456_789_012n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 999_999n, 2n ** 60n, BigInt(u32()) * 1000n, u64()]);
  const t = rand() < 0.1 ? now + ago : now - ago;
  return t < 0n ? 0n : t >= 2n ** 64n ? 2n ** 64n - 1n : t;
}

const nows = [0n, 1n, 5_000_000_000n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n + 12_345n, 2n ** 63n, 2n ** 64n - 1n, u64(), u64()];
const addr = () => pick(['0.0.0.0', '255.255.255.255', '10.244.1.100', '10.96.0.10', abi.numberToIPv4(u32())]);

/** Writes each entry with `writer` into a page of its own and compares it with the oracle's text. */
function compare(writer: EntryWriter, oracle: () => string | undefined, keys: Buffer, values: Buffer): { same: boolean; got: string; want: string } {
  const out = new JsonText();
  const kept = writer(out, keys, 0, values, 0);
  const got = kept ? out.toString() : '(filtered)';
  out.discard();
  const want = oracle() ?? '(filtered)';
  return { same: got === want, got, want };
}

t.test('conntrack entries: the writer writes what the schema serializer writes for the decoded entry', async (t) => {
  const filters: CtFilter[] = [{}, { service: 2 }, { backend: 3 }, { client: '10.244.1.100' }, { service: 1, backend: 1 }];
  let compared = 0;
  let written = 0;
  const wrong: string[] = [];
  for (let i = 0; i < 20_000; i++) {
    const now = pick(nows);
    const filter = pick(filters);
    const key = abi.ctKey.encode({ saddr: addr(), daddr: addr(), sport: u32() & 0xffff, dport: pick([0, 80, 65535, u32() & 0xffff]), proto: i < 256 ? i : u32() & 255, dir: pick([abi.KBP_CT_FORWARD, abi.KBP_CT_REPLY, 7]) });
    const value = abi.ctValue.encode({
      created_ns: stampNear(now),
      last_seen_ns: stampNear(now),
      backend_id: pick([0, 1, 3, 4294967295, u32()]),
      svc_id: pick([0, 1, 2, 4294967295, u32()]),
      nat_addr: addr(),
      nat_port: u32() & 0xffff,
      flags: pick([0, 1, 2, 3, u32() & 0xffff]),
      tcp_flags: i < 256 ? i : u32() & 255,
      client_port: u32() & 0xffff,
    });
    const r = compare(ctWriter(filter, now), () => ctOracle(key, value, filter, now), key, value);
    compared++;
    if (r.got !== '(filtered)') written++;
    if (!r.same && wrong.length < 5) wrong.push(`now ${now} filter ${JSON.stringify(filter)}:\n  got  ${r.got}\n  want ${r.want}`);
  }
  t.same(wrong, [], `${compared} entries, ${written} written, all byte for byte`);
  t.ok(written > compared / 10 && written < compared, 'filters both keep and reject');
});

t.test('affinity entries: the writer writes what the schema serializer writes for the decoded entry', async (t) => {
  const filters: CtFilter[] = [{}, { service: 2 }, { backend: 3 }, { client: '10.244.1.100' }];
  const wrong: string[] = [];
  for (let i = 0; i < 5000; i++) {
    const now = pick(nows);
    const filter = pick(filters);
    const key = abi.affinityKey.encode({ client: addr(), svc_id: pick([1, 2, 4294967295, u32()]) });
    const value = abi.affinityValue.encode({ last_used_ns: stampNear(now), backend_id: pick([1, 3, u32()]), slot: u32() & 0xffff });
    const r = compare(affinityWriter(filter, now), () => affinityOracle(key, value, filter, now), key, value);
    if (!r.same && wrong.length < 5) wrong.push(`now ${now}:\n  got  ${r.got}\n  want ${r.want}`);
  }
  t.same(wrong, []);
});

t.test('an entry at any offset of a batch buffer', async (t) => {
  const now = 10n ** 12n;
  const n = 5;
  const keys = Buffer.alloc(n * abi.ctKey.size);
  const values = Buffer.alloc(n * abi.ctValue.size);
  const want: string[] = [];
  for (let i = 0; i < n; i++) {
    const k = { saddr: `10.244.1.${100 + i}`, daddr: '10.96.0.10', sport: 40000 + i, dport: 80, proto: abi.IPPROTO_TCP, dir: abi.KBP_CT_FORWARD };
    const v = { created_ns: now - BigInt(i) * 1_500_000_000n, last_seen_ns: now, backend_id: i + 1, svc_id: 9, nat_addr: '0.0.0.0', nat_port: 0, flags: 0, tcp_flags: 0x12, client_port: 0 };
    abi.ctKey.encodeInto(k, keys, i * abi.ctKey.size);
    abi.ctValue.encodeInto(v, values, i * abi.ctValue.size);
    want.push(ctOracle(abi.ctKey.encode(k), abi.ctValue.encode(v), {}, now)!);
  }
  const out = new JsonText();
  const write = ctWriter({}, now);
  out.byte(0x5b);
  for (let i = 0; i < n; i++) write(out, keys, i * abi.ctKey.size, values, i * abi.ctValue.size);
  out.byte(0x5d);
  t.equal(out.toString(), `[${want.join(',')}]`, 'items separated by commas, each from its own offset');
  out.discard();
});

t.test('JsonText: numbers as String() writes them, and texts larger than its buffer', async (t) => {
  const out = new JsonText();
  const ints = [0, 1, 9, 10, 99, 100, 65535, 4294967295, 2 ** 53 - 1, ...Array.from({ length: 200 }, () => Math.floor(rand() * 2 ** 53))];
  const millis = [0, 1, 10, 100, 999, 1000, 1001, 1010, 1100, 12_345, 9_007_199_254_740, ...Array.from({ length: 200 }, () => Math.floor(rand() * 2 ** 44))];
  const want: string[] = [];
  for (const n of ints) {
    out.item();
    out.uint(n);
    want.push(String(n));
  }
  for (const ms of millis) {
    out.item();
    out.millisAsSeconds(ms);
    want.push(String(ms / 1000));
  }
  t.equal(out.toString(), want.join(','));
  // Several times the first buffer's size, fragments and UTF-8 text mixed: it grows and keeps every byte.
  const big = new JsonText();
  const parts: string[] = [];
  for (let i = 0; i < 20_000; i++) {
    const s = i % 3 === 0 ? `"é${i}"` : `"x${i}"`;
    big.item();
    if (i % 2) big.text(s);
    else big.raw(Buffer.from(s));
    parts.push(s);
  }
  t.equal(big.toString(), parts.join(','));
  t.same(JSON.parse(`[${big.toString()}]`), parts.map((p) => JSON.parse(p)));
  out.discard();
  big.discard();
});

t.test('a walk through reused batch buffers sees every entry once, with lookupBatchInto or lookupBatch alone', async (t) => {
  const ct = new FakeBpfMap(abi.KBP_MAP_CT, BPF_MAP_TYPE_LRU_HASH, abi.ctKey.size, abi.ctValue.size, 1 << 20);
  const n = 2500;
  for (let i = 0; i < n; i++) {
    ct.set(
      abi.ctKey.encode({ saddr: abi.numberToIPv4(0x0af40000 + i), daddr: '10.96.0.10', sport: 1024 + (i % 1000), dport: 80, proto: abi.IPPROTO_TCP, dir: abi.KBP_CT_FORWARD }),
      abi.ctValue.encode({ created_ns: 1n, last_seen_ns: 1n, backend_id: 1 + (i % 5), svc_id: 1, nat_addr: '0.0.0.0', nat_port: 0, flags: 0, tcp_flags: 0, client_port: 0 }),
    );
  }
  const plain: PagedMap = { info: ct.info, valueBufferSize: ct.valueBufferSize, lookupBatch: (c, m) => ct.lookupBatch(c, m) };
  for (const [name, map] of [['lookupBatchInto', ct as PagedMap], ['lookupBatch only', plain]] as const) {
    const seen = new Map<string, number>();
    let pos = START as typeof START | null;
    let pages = 0;
    while (pos) {
      const r = await scan(map, pos, { limit: 333, batch: 100 }, (keys, k) => {
        const hex = keys.toString('hex', k, k + abi.ctKey.size);
        seen.set(hex, (seen.get(hex) ?? 0) + 1);
        return ct.rows.get(hex)?.readUInt32LE(16) !== 3; // backend 3 filtered out
      });
      pos = r.next;
      pages++;
    }
    t.equal(seen.size, n, `${name}: every entry`);
    t.ok([...seen.values()].every((c) => c === 1), `${name}: each once`);
    t.equal(pages, Math.ceil((n - n / 5) / 333), `${name}: pages of 333 kept entries`);
  }
});

t.test('pages served at the same time each get their own page buffer; HEAD gives the length without the body', async (t) => {
  const { app, maps } = await build(t);
  for (let i = 0; i < 300; i++) {
    putFlow(maps, { client: abi.numberToIPv4(0x0af40164 + i), sport: 40000 + i, vip: '10.96.0.10', port: 80, backendIp: '10.244.1.5', backendPort: 8080, svc: 2, backend: 1 + (i % 3), createdNs: 1n, lastNs: 2n });
  }
  const urls = ['/v1/conntrack?limit=600', '/v1/conntrack?limit=7', '/v1/conntrack?backend=2&limit=50', '/v1/affinity', '/v1/maps/kbp_ct_v1?limit=40'].map((u) => u.replace('kbp_ct_v1', abi.KBP_MAP_CT));
  const alone: string[] = [];
  for (const url of urls) alone.push((await app.inject(url)).body);
  const together = await Promise.all([...urls, ...urls].map((url) => app.inject(url)));
  t.same(together.map((r) => r.body), [...alone, ...alone], 'the same bodies as one at a time');
  t.equal(JSON.parse(alone[0]!).items.length, 600);
  const head = await app.inject({ method: 'HEAD', url: urls[0]! });
  t.equal(head.statusCode, 200);
  t.equal(head.headers['content-length'], String(Buffer.byteLength(alone[0]!)));
  t.equal(head.headers['content-type'], 'application/json; charset=utf-8');
  t.equal(head.body, '');
});
