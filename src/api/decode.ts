// Map entries as the API shows them, decoded through the codecs the writer
// and the datapath share (src/maps/abi.ts). u64 fields (nanosecond
// timestamps, counters) become decimal strings in the generic dumps: JSON
// numbers lose precision past 2^53.

import * as abi from '../maps/abi.js';
import { backendStateName, svcFlagNames } from '../maps/format.js';
import type { PagedMap } from './paging.js';

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

// ---------------------------------------------------------------- conntrack and affinity views

export interface CtView {
  direction: 'forward' | 'reply';
  protocol: string;
  src: string; // "ADDR:PORT" as the packet carries it
  dst: string;
  /** forward: the client; reply: the backend's peer (the client). */
  client: string;
  serviceId: number;
  backendId: number;
  flags: string[];
  tcpFlags: string[];
  /** Seconds since creation and since the entry was last refreshed (coarse clock, 1 s refresh). */
  ageSeconds: number;
  idleSeconds: number;
}

export interface CtFilter {
  service?: number;
  backend?: number;
  client?: string;
}

const seconds = (nowNs: bigint, thenNs: bigint): number => (nowNs > thenNs ? Number((nowNs - thenNs) / 1_000_000n) / 1000 : 0);

/** The conntrack entry as a view, or undefined when the filter rejects it (decided on the raw fields first). */
export function ctView(key: Buffer, value: Buffer, filter: CtFilter, nowNs: bigint): CtView | undefined {
  const v = abi.ctValue.decode(value);
  if (filter.service !== undefined && v.svc_id !== filter.service) return undefined;
  if (filter.backend !== undefined && v.backend_id !== filter.backend) return undefined;
  const k = abi.ctKey.decode(key);
  const forward = k.dir === abi.KBP_CT_FORWARD;
  const client = forward ? k.saddr : k.daddr;
  if (filter.client !== undefined && client !== filter.client) return undefined;
  return {
    direction: forward ? 'forward' : 'reply',
    protocol: abi.protoName(k.proto),
    src: `${k.saddr}:${k.sport}`,
    dst: `${k.daddr}:${k.dport}`,
    client,
    serviceId: v.svc_id,
    backendId: v.backend_id,
    flags: ctFlagNames(v.flags),
    tcpFlags: tcpFlagNames(v.tcp_flags),
    ageSeconds: seconds(nowNs, v.created_ns),
    idleSeconds: seconds(nowNs, v.last_seen_ns),
  };
}

export interface AffinityView {
  client: string;
  serviceId: number;
  backendId: number;
  slot: number;
  idleSeconds: number;
}

export function affinityView(key: Buffer, value: Buffer, filter: Omit<CtFilter, 'backend'> & { backend?: number }, nowNs: bigint): AffinityView | undefined {
  const k = abi.affinityKey.decode(key);
  if (filter.service !== undefined && k.svc_id !== filter.service) return undefined;
  if (filter.client !== undefined && k.client !== filter.client) return undefined;
  const v = abi.affinityValue.decode(value);
  if (filter.backend !== undefined && v.backend_id !== filter.backend) return undefined;
  return { client: k.client, serviceId: k.svc_id, backendId: v.backend_id, slot: v.slot, idleSeconds: seconds(nowNs, v.last_used_ns) };
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
