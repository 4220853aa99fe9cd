// Map entries as the API shows them, decoded through the codecs the writer
// and the datapath share (src/maps/abi.ts). u64 fields (nanosecond
// timestamps, counters) become decimal strings in the generic dumps: JSON
// numbers lose precision past 2^53.

import * as abi from '../maps/abi.js';
import { backendStateName, svcFlagNames } from '../maps/format.js';
import type { PagedMap } from './paging.js';
import { ascii, type JsonText } from './json-text.js';

export const MAP_TYPE_NAMES: Readonly<Record<number, string>> = {
  1: 'hash',
  2: 'array',
  5: 'percpu_hash',
  6: 'percpu_array',
  9: 'lru_hash',
  10: 'lru_percpu_hash',
  11: 'lpm_trie',
};

export const mapTypeName = (t: number): string => MAP_TYPE_NAMES[t] ?? `type${t}`;

/** CPUs a per-CPU value spans (1 for ordinary maps). */
export function cpusOf(map: PagedMap): number {
  const stride = Math.ceil(map.info.valueSize / 8) * 8;
  return Math.max(1, Math.floor(map.valueBufferSize / stride));
}

type Json = string | number | boolean | null | Json[] | { [k: string]: Json };

function jsonable(o: object): { [k: string]: Json } {
  const out: { [k: string]: Json } = {};
  for (const [k, v] of Object.entries(o)) out[k] = typeof v === 'bigint' ? v.toString() : (v as Json);
  return out;
}

export const ctFlagNames = (flags: number): string[] => [
  ...(flags & abi.KBP_CT_F_SEEN_REPLY ? ['seen-reply'] : []),
  ...(flags & abi.KBP_CT_F_CLOSING ? ['closing'] : []),
];

const TCP_FLAG_NAMES = ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG', 'ECE', 'CWR'];
export const tcpFlagNames = (f: number): string[] => TCP_FLAG_NAMES.filter((_, i) => f & (1 << i));

/**
 * One entry of a kbp map, decoded; `value` of the stats map is summed over
 * CPUs. Maps without a codec show hex.
 */
export function decodeEntry(name: string, key: Buffer, value: Buffer, cpus: number): { key: { [k: string]: Json }; value: { [k: string]: Json } } {
  if (name === abi.KBP_MAP_STATS) {
    const index = key.readUInt32LE(0);
    return { key: { index, name: abi.STAT_NAMES[index] ?? `stat${index}` }, value: jsonable(abi.decodePerCpuStat(value, cpus)) };
  }
  const codec = (abi.MAP_CODECS as Record<string, { key: abi.StructCodec<object>; value: abi.StructCodec<object> } | undefined>)[name];
  if (!codec) return { key: { hex: key.toString('hex') }, value: { hex: value.toString('hex') } };
  const k = jsonable(codec.key.decode(key));
  const v = jsonable(codec.value.decode(value));
  // Names beside the numbers a reader would otherwise look up in abi.h.
  if ('proto' in k) k.protocol = abi.protoName(k.proto as number);
  if ('proto' in v) v.protocol = abi.protoName(v.proto as number);
  if (name === abi.KBP_MAP_SERVICES) v.flagNames = svcFlagNames(v.flags as number);
  if (name === abi.KBP_MAP_BACKENDS) v.stateName = backendStateName(v.state as number);
  if (name === abi.KBP_MAP_CT) {
    k.dirName = k.dir === abi.KBP_CT_FORWARD ? 'forward' : 'reply';
    v.flagNames = ctFlagNames(v.flags as number).join(',') || '-';
  }
  return { key: k, value: v };
}

// ---------------------------------------------------------------- conntrack and affinity pages
//
// A conntrack dump can be a million entries, so its pages are written
// straight from the kernel's batch buffer as JSON bytes (./json-text.ts):
// fields are read at the codecs' offsets, names come from tables built once
// from the same functions the generic dump uses, numbers are written as
// digits. The text is exactly what the entry schemas' serializer would write
// for the same entry (test/api/entry-json.test.ts checks that byte for byte).

/** Writes one entry of a batch (key at keys[keyAt], value at values[valueAt]) as the next item of the page; false when the filter rejects it. */
export type EntryWriter = (out: JsonText, keys: Buffer, keyAt: number, values: Buffer, valueAt: number) => boolean;

export interface CtFilter {
  service?: number;
  backend?: number;
  client?: string;
}

function offsetOf(codec: abi.StructCodec<unknown>, name: string): number {
  const f = codec.fields.find((x) => x.name === name);
  if (!f) throw new Error(`${codec.cName} has no field ${name}`);
  return f.offset;
}

const CT_KEY = { saddr: 0, daddr: 0, sport: 0, dport: 0, proto: 0, dir: 0 };
const CT_VALUE = { created_ns: 0, last_seen_ns: 0, backend_id: 0, svc_id: 0, flags: 0, tcp_flags: 0 };
const AFF_KEY = { client: 0, svc_id: 0 };
const AFF_VALUE = { last_used_ns: 0, backend_id: 0, slot: 0 };
for (const [codec, offsets] of [[abi.ctKey, CT_KEY], [abi.ctValue, CT_VALUE], [abi.affinityKey, AFF_KEY], [abi.affinityValue, AFF_VALUE]] as const) {
  for (const name of Object.keys(offsets)) (offsets as Record<string, number>)[name] = offsetOf(codec as abi.StructCodec<unknown>, name);
}

const json = (v: unknown): string => JSON.stringify(v);
const CT_OPEN = [false, true].map((forward) => ascii(`{"direction":${json(forward ? 'forward' : 'reply')},"protocol":`));
const CT_PROTO = Array.from({ length: 256 }, (_, p) => ascii(`${json(abi.protoName(p))},"src":"`));
const CT_DST = ascii('","dst":"');
const CT_CLIENT = ascii('","client":"');
const SERVICE_ID = ascii('","serviceId":');
const BACKEND_ID = ascii(',"backendId":');
const ctFlagBits = (i: number): number => (i & 1 ? abi.KBP_CT_F_SEEN_REPLY : 0) | (i & 2 ? abi.KBP_CT_F_CLOSING : 0);
const CT_FLAGS = [0, 1, 2, 3].map((i) => ascii(`,"flags":${json(ctFlagNames(ctFlagBits(i)))},"tcpFlags":`));
const CT_TCP_FLAGS = Array.from({ length: 256 }, (_, f) => ascii(`${json(tcpFlagNames(f))},"ageSeconds":`));
const IDLE = ascii(',"idleSeconds":');
const AFF_OPEN = ascii('{"client":"');
const SLOT = ascii(',"slot":');

/** CLOCK_MONOTONIC in ns (the timestamps' clock), split in u32 halves for exact arithmetic in doubles. */
interface Now {
  hi: number;
  lo: number;
}
const splitNs = (ns: bigint): Now => ({ hi: Number(ns >> 32n), lo: Number(ns & 0xffffffffn) });

/** Whole milliseconds from the u64 nanosecond timestamp at buf[at] to now, 0 when it is not in the past (what Number((now - then) / 1_000_000n) gives). */
function millisSince(now: Now, buf: Buffer, at: number): number {
  const lo = buf.readUInt32LE(at);
  const hi = buf.readUInt32LE(at + 4);
  // Exact while it is below 2^53 ns (104 days); beyond, bigints.
  const ns = (now.hi - hi) * 4294967296 + (now.lo - lo);
  if (ns <= 0) return 0;
  if (ns >= 2 ** 53) return Number((((BigInt(now.hi) << 32n) | BigInt(now.lo)) - buf.readBigUInt64LE(at)) / 1_000_000n);
  const ms = Math.floor(ns / 1e6);
  return ms * 1e6 > ns ? ms - 1 : ms; // the division may round up to the next integer
}

/** Conntrack entries as ConntrackEntry items, filtered on the raw fields. */
export function ctWriter(filter: CtFilter, nowNs: bigint): EntryWriter {
  const now = splitNs(nowNs);
  const client = filter.client === undefined ? -1 : abi.ipv4ToNumber(filter.client);
  return (out, k, ka, v, va) => {
    if (filter.service !== undefined && v.readUInt32LE(va + CT_VALUE.svc_id) !== filter.service) return false;
    if (filter.backend !== undefined && v.readUInt32LE(va + CT_VALUE.backend_id) !== filter.backend) return false;
    const forward = k[ka + CT_KEY.dir] === abi.KBP_CT_FORWARD;
    const saddr = k.readUInt32BE(ka + CT_KEY.saddr);
    const daddr = k.readUInt32BE(ka + CT_KEY.daddr);
    // forward: the client sent it; reply: the backend answers the client.
    const peer = forward ? saddr : daddr;
    if (client >= 0 && peer !== client) return false;
    out.item();
    out.raw(CT_OPEN[forward ? 1 : 0]!);
    out.raw(CT_PROTO[k[ka + CT_KEY.proto]!]!);
    out.ipv4(saddr);
    out.byte(58);
    out.uint(k.readUInt16BE(ka + CT_KEY.sport));
    out.raw(CT_DST);
    out.ipv4(daddr);
    out.byte(58);
    out.uint(k.readUInt16BE(ka + CT_KEY.dport));
    out.raw(CT_CLIENT);
    out.ipv4(peer);
    out.raw(SERVICE_ID);
    out.uint(v.readUInt32LE(va + CT_VALUE.svc_id));
    out.raw(BACKEND_ID);
    out.uint(v.readUInt32LE(va + CT_VALUE.backend_id));
    const flags = v.readUInt16LE(va + CT_VALUE.flags);
    out.raw(CT_FLAGS[(flags & abi.KBP_CT_F_SEEN_REPLY ? 1 : 0) | (flags & abi.KBP_CT_F_CLOSING ? 2 : 0)]!);
    out.raw(CT_TCP_FLAGS[v[va + CT_VALUE.tcp_flags]!]!);
    out.millisAsSeconds(millisSince(now, v, va + CT_VALUE.created_ns));
    out.raw(IDLE);
    out.millisAsSeconds(millisSince(now, v, va + CT_VALUE.last_seen_ns));
    out.byte(125);
    return true;
  };
}

/** sessionAffinity entries as AffinityEntry items. */
export function affinityWriter(filter: CtFilter, nowNs: bigint): EntryWriter {
  const now = splitNs(nowNs);
  const client = filter.client === undefined ? -1 : abi.ipv4ToNumber(filter.client);
  return (out, k, ka, v, va) => {
    if (filter.service !== undefined && k.readUInt32LE(ka + AFF_KEY.svc_id) !== filter.service) return false;
    const addr = k.readUInt32BE(ka + AFF_KEY.client);
    if (client >= 0 && addr !== client) return false;
    if (filter.backend !== undefined && v.readUInt32LE(va + AFF_VALUE.backend_id) !== filter.backend) return false;
    out.item();
    out.raw(AFF_OPEN);
    out.ipv4(addr);
    out.raw(SERVICE_ID);
    out.uint(k.readUInt32LE(ka + AFF_KEY.svc_id));
    out.raw(BACKEND_ID);
    out.uint(v.readUInt32LE(va + AFF_VALUE.backend_id));
    out.raw(SLOT);
    out.uint(v.readUInt16LE(va + AFF_VALUE.slot));
    out.raw(IDLE);
    out.millisAsSeconds(millisSince(now, v, va + AFF_VALUE.last_used_ns));
    out.byte(125);
    return true;
  };
}

/** Any map's entries as MapEntry items (decodeEntry through the entry schema's serializer: small maps, or a generic look at a big one). */
export function mapEntryWriter(map: PagedMap, name: string, toJson: (entry: ReturnType<typeof decodeEntry>) => string): EntryWriter {
  const cpus = cpusOf(map);
  const keySize = map.info.keySize;
  const valueSize = map.valueBufferSize;
  return (out, k, ka, v, va) => {
    out.item();
    out.text(toJson(decodeEntry(name, k.subarray(ka, ka + keySize), v.subarray(va, va + valueSize), cpus)));
    return true;
  };
}

// ---------------------------------------------------------------- stats

export interface StatView {
  index: number;
  name: string;
  packets: number;
  bytes: number;
}

/**
 * The stats map summed over CPUs, one row per counter this build knows
 * (zeros included: a reason that never fired is information). The map has
 * spare slots (KBP_STAT_SLOTS) for reasons a newer datapath may add; those
 * are not reported until this build names them.
 */
export async function readStats(map: PagedMap): Promise<StatView[]> {
  const cpus = cpusOf(map);
  const out: StatView[] = [];
  let cursor: Buffer | null = null;
  for (;;) {
    const page = await map.lookupBatch(cursor, abi.KBP_STAT_SLOTS);
    for (let i = 0; i < page.count; i++) {
      const index = page.keys.readUInt32LE(i * map.info.keySize);
      if (index >= abi.KBP_STAT_MAX) continue;
      const s = abi.decodePerCpuStat(page.values.subarray(i * map.valueBufferSize, (i + 1) * map.valueBufferSize), cpus);
      out.push({ index, name: abi.STAT_NAMES[index] ?? `stat${index}`, packets: Number(s.packets), bytes: Number(s.bytes) });
    }
    if (!page.next) break;
    cursor = page.next;
  }
  return out.sort((a, b) => a.index - b.index);
}
