// Map layouts of earlier ABI versions, and how their entries become entries of
// the current maps. An upgraded agent finds the maps an older agent pinned
// (src/agent/migrate.ts) and copies what they hold through these converters,
// so established flows keep their backend across a layout change.
//
// ABI v1 is bpf/include/kbp/abi.h as of commit 9f7111a (the last v1 commit;
// v2 came with cd86087). Its field tables below are checked against that
// header, taken from git history, by test/maps/legacy.test.ts. Only the maps
// whose layout changed have an entry: kbp_svc_v1, kbp_revnat_v1 and
// kbp_affinity_v1 kept their names and layouts, so v2 reuses those pins as
// they are.
//
// A converter is pure: decoded old entry in, encoded new entry out (or null to
// leave the entry behind), with the current maps' content it needs passed in.

import * as abi from './abi.js';
import type { Field, FieldKind } from './abi.js';

const f = (name: string, offset: number, size: number, kind: FieldKind): Field => ({ name, offset, size, kind });

// kernel map types (uapi/linux/bpf.h, enum bpf_map_type)
export const BPF_MAP_TYPE_HASH = 1;
export const BPF_MAP_TYPE_PERCPU_ARRAY = 6;
export const BPF_MAP_TYPE_LRU_HASH = 9;

// ---------------------------------------------------------------- ABI v1 layouts

/** struct kbp_backend in v1: no locality flags, 8 bytes. */
export interface BackendV1 {
  ip: string;
  port: number;
  proto: number;
  state: number;
}

export const backendValueV1 = abi.struct<BackendV1>('kbp_backend', 8, [
  f('ip', 0, 4, 'ipv4'),
  f('port', 4, 2, 'be16'),
  f('proto', 6, 1, 'u8'),
  f('state', 7, 1, 'u8'),
]);

/** struct kbp_ct_value in v1: no NAT fields, 32 bytes. The key is unchanged. */
export interface CtValueV1 {
  created_ns: bigint;
  last_seen_ns: bigint;
  backend_id: number;
  svc_id: number;
  flags: number; // SEEN_REPLY, CLOSING (the same bits in v2)
  tcp_flags: number;
}

export const ctValueV1 = abi.struct<CtValueV1>('kbp_ct_value', 32, [
  f('created_ns', 0, 8, 'u64'),
  f('last_seen_ns', 8, 8, 'u64'),
  f('backend_id', 16, 4, 'u32'),
  f('svc_id', 20, 4, 'u32'),
  f('flags', 24, 2, 'u16'),
  f('tcp_flags', 26, 1, 'u8'),
  f('pad', 27, 5, 'pad'),
]);

/** v1's enum kbp_stat ended at KBP_STAT_DROP_MALFORMED (10); the indices 0..10 mean the same in v2. */
export const KBP_STAT_MAX_V1 = 11;

// ---------------------------------------------------------------- conversions

/** What converters may consult: the current revnat map, decoded (frontend id -> frontend). */
export interface ConvertContext {
  revnat: ReadonlyMap<number, abi.RevNat>;
}

/**
 * How the entries of a map are carried over:
 * - objects: state the syncer owns (backends): copied once, before the ids are
 *   restored, so the first sync finds them and rewrites only what differs;
 * - flows: state the datapath creates (conntrack): copied before the switch,
 *   again right before it, and once more after it for what old programs
 *   created meanwhile;
 * - counters: per-CPU counters added into the new map once, after the switch.
 */
export type CarryKind = 'objects' | 'flows' | 'counters';

export interface LegacyMap {
  /** The pinned name, e.g. kbp_ct4_v1. */
  readonly name: string;
  /** The current map it migrates into. */
  readonly into: string;
  readonly kind: CarryKind;
  /** Shape the old pin must have; anything else is refused, never reinterpreted. */
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries?: number;
  /**
   * True when the old datapath drops every forward packet whose entry here is
   * missing: emptying this map right before the switch stops old programs from
   * creating flows the last copy would miss (their packets are dropped for the
   * few milliseconds of the switch and retransmitted by the clients).
   */
  readonly quiesce?: boolean;
  /** Old key/value -> new key/value, or null to leave the entry behind. Not used for counters. */
  convert?(key: Buffer, value: Buffer, ctx: ConvertContext): { key: Buffer; value: Buffer } | null;
  /** For flows: whether the converted old value is more recent than the one the new map holds. */
  newer?(converted: Buffer, existing: Buffer): boolean;
}

export function convertBackendV1(v: BackendV1): abi.Backend {
  // Locality is new in v2; the syncer sets it on its first sync.
  return { ...v, flags: 0 };
}

/**
 * A v1 conntrack value in v2's layout. v2's REPLY entries also name the
 * frontend the client addressed (nat_addr/nat_port: how the datapath tells
 * this flow's reply tuple from another live flow's); v1 kept only the frontend
 * id, so the address comes from revnat. A REPLY entry whose frontend is gone
 * is left behind: its replies could not be translated anyway.
 */
export function convertCtV1(key: abi.CtKey, v: CtValueV1, ctx: ConvertContext): abi.CtValue | null {
  const out: abi.CtValue = { ...v, nat_addr: '0.0.0.0', nat_port: 0, client_port: 0 };
  if (key.dir !== abi.KBP_CT_REPLY) return out;
  const fe = ctx.revnat.get(v.svc_id);
  if (!fe) return null;
  return { ...out, nat_addr: fe.vip, nat_port: fe.port };
}

const lastSeen = (ct: Buffer) => ct.readBigUInt64LE(8); // created_ns, then last_seen_ns

/** Every map of ABI v1 whose layout changed in v2. */
export const LEGACY_MAPS: readonly LegacyMap[] = [
  {
    name: 'kbp_backend_v1',
    into: abi.KBP_MAP_BACKENDS,
    kind: 'objects',
    type: BPF_MAP_TYPE_HASH,
    keySize: abi.backendKey.size,
    valueSize: backendValueV1.size,
    // v1's lb4_forward: no backend, no translation (DROP_BACKEND_MISSING), for new and established flows alike.
    quiesce: true,
    convert: (key, value) => ({ key, value: abi.backendValue.encode(convertBackendV1(backendValueV1.decode(value))) }),
  },
  {
    name: 'kbp_ct4_v1',
    into: abi.KBP_MAP_CT,
    kind: 'flows',
    type: BPF_MAP_TYPE_LRU_HASH,
    keySize: abi.ctKey.size,
    valueSize: ctValueV1.size,
    convert: (key, value, ctx) => {
      const v = convertCtV1(abi.ctKey.decode(key), ctValueV1.decode(value), ctx);
      return v ? { key, value: abi.ctValue.encode(v) } : null;
    },
    newer: (converted, existing) => lastSeen(converted) > lastSeen(existing),
  },
  {
    name: 'kbp_stats_v1',
    into: abi.KBP_MAP_STATS,
    kind: 'counters',
    type: BPF_MAP_TYPE_PERCPU_ARRAY,
    keySize: 4,
    valueSize: abi.statValue.size,
    maxEntries: KBP_STAT_MAX_V1,
  },
];

/** "kbp_ct4_v2" -> { family: "ct4", version: 2 }; null for a name of another form. */
export function parseMapName(name: string): { family: string; version: number } | null {
  const m = /^kbp_([a-z0-9]+)_v(\d+)$/.exec(name);
  return m ? { family: m[1]!, version: Number(m[2]) } : null;
}
