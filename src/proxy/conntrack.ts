// Stale UDP flows. A UDP "flow" has no end the datapath can see, so a client
// that keeps sending from the same port would keep its conntrack entry, and
// with it the backend id, long after the backend is gone (kube-proxy deletes
// the kernel's conntrack entries of a removed UDP endpoint for the same
// reason). After the syncer removed backends, every conntrack entry (both
// directions carry the backend id) naming one of the removed UDP backends is
// deleted, so the next packet is balanced afresh and the id can never match a
// later backend. TCP entries are left alone: the datapath re-balances a flow
// whose backend is missing, and TCP peers notice a dead backend themselves.

import * as abi from '../maps/abi.js';
import type { MapWriter } from '../maps/writer.js';
import type { BatchPage, BpfMap } from '../native/binding.js';
import type { RemovedBackend } from './syncer.js';

export interface FlushResult {
  scanned: number;
  deleted: number;
}

/** Delete the conntrack entries of removed UDP backends. Rejects on a map error. */
export async function flushStaleUdpFlows(writer: MapWriter, removed: readonly RemovedBackend[]): Promise<FlushResult> {
  const ids = new Set(removed.filter((b) => b.proto === abi.IPPROTO_UDP).map((b) => b.id));
  if (ids.size === 0) return { scanned: 0, deleted: 0 };
  const entries = await writer.entries(abi.KBP_MAP_CT);
  const stale: Buffer[] = [];
  for (const e of entries) {
    if (abi.ctKey.decode(e.key).proto !== abi.IPPROTO_UDP) continue;
    if (ids.has(abi.ctValue.decode(e.value).backend_id)) stale.push(e.key);
  }
  const deleted = stale.length ? await writer.deleteBatch(abi.KBP_MAP_CT, stale) : 0;
  return { scanned: entries.length, deleted };
}

// ---------------------------------------------------------------- garbage collection
//
// The datapath already treats a conntrack entry idle past its lifetime as
// absent (ct4_live in bpf/lib/conntrack.h); the collector makes the space and
// the SNAT ports of such flows free again instead of waiting for LRU eviction,
// which only starts when a map is full — by then a NodePort's SNAT port range
// towards one backend can be exhausted long before.
//   1. Conntrack: every entry (either direction) past its lifetime is deleted.
//   2. SNAT: an entry is kept while the FORWARD entry of its flow lives; the
//      flow is found from the SNAT value (client) and the frontend (revnat).
//      Entries younger than the shortest lifetime are not checked: their flow
//      cannot have ended yet, or the next pass sees it.
// Both walk the maps a page at a time: a conntrack map can hold a million
// entries and the agent must not hold them all.

/** The map operations the collector needs (BpfMap, or a fake in tests). */
export type GcMap = Pick<BpfMap, 'info' | 'lookupBatch' | 'lookup' | 'deleteBatch'>;

export interface GcMaps {
  ct: GcMap;
  snat: GcMap;
  revnat: GcMap;
}

export interface GcResult {
  ctScanned: number;
  ctDeleted: number;
  snatScanned: number;
  snatDeleted: number;
}

const GC_PAGE = 4096;

/** Idle lifetime of a conntrack entry, as the datapath applies it. */
export function ctLifetimeNs(proto: number, flags: number): bigint {
  if (proto !== abi.IPPROTO_TCP) return BigInt(abi.KBP_CT_LIFETIME_OTHER_NS);
  return BigInt(flags & abi.KBP_CT_F_CLOSING ? abi.KBP_CT_LIFETIME_CLOSING_NS : abi.KBP_CT_LIFETIME_TCP_NS);
}

/** Whether an entry still describes a flow at `nowNs` (CLOCK_MONOTONIC, the datapath's clock). */
export function ctLive(proto: number, v: Pick<abi.CtValue, 'last_seen_ns' | 'flags'>, nowNs: bigint): boolean {
  return nowNs - v.last_seen_ns <= ctLifetimeNs(proto, v.flags);
}

/** Walk a map a page at a time; `visit` returns the keys of the page to delete. */
async function sweep(map: GcMap, visit: (keys: Buffer, values: Buffer, count: number) => Promise<Buffer[]> | Buffer[]): Promise<{ scanned: number; deleted: number }> {
  let cursor: Buffer | null = null;
  let scanned = 0;
  let deleted = 0;
  do {
    const page: BatchPage = await map.lookupBatch(cursor, GC_PAGE);
    scanned += page.count;
    const doomed = await visit(page.keys, page.values, page.count);
    if (doomed.length) deleted += await map.deleteBatch(Buffer.concat(doomed), doomed.length);
    cursor = page.next;
  } while (cursor);
  return { scanned, deleted };
}

/** One collection pass over conntrack, then SNAT. `nowNs` defaults to CLOCK_MONOTONIC. */
export async function collectConntrack(maps: GcMaps, nowNs: () => bigint = () => process.hrtime.bigint()): Promise<GcResult> {
  const ks = maps.ct.info.keySize;
  const vs = maps.ct.info.valueSize;
  const ct = await sweep(maps.ct, (keys, values, count) => {
    const now = nowNs();
    const doomed: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      const key = keys.subarray(i * ks, (i + 1) * ks);
      const proto = abi.ctKey.decode(key).proto;
      if (!ctLive(proto, abi.ctValue.decode(values, i * vs), now)) doomed.push(key);
    }
    return doomed;
  });

  const frontends = new Map<number, abi.RevNat | null>();
  const frontend = async (svcId: number): Promise<abi.RevNat | null> => {
    if (!frontends.has(svcId)) {
      const v = await maps.revnat.lookup(abi.revnatKey.encode({ svc_id: svcId }));
      frontends.set(svcId, v ? abi.revnatValue.decode(v) : null);
    }
    return frontends.get(svcId) ?? null;
  };
  const youngest = BigInt(Math.min(abi.KBP_CT_LIFETIME_CLOSING_NS, abi.KBP_CT_LIFETIME_OTHER_NS));
  const sks = maps.snat.info.keySize;
  const svs = maps.snat.info.valueSize;
  const snat = await sweep(maps.snat, async (keys, values, count) => {
    const now = nowNs();
    const doomed: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      const key = keys.subarray(i * sks, (i + 1) * sks);
      const v = abi.snatValue.decode(values, i * svs);
      if (now - v.created_ns <= youngest) continue;
      const k = abi.snatKey.decode(key);
      const fe = await frontend(v.svc_id);
      const fwd = fe
        ? await maps.ct.lookup(abi.ctKey.encode({ saddr: v.client_addr, daddr: fe.vip, sport: v.client_port, dport: fe.port, proto: k.proto, dir: abi.KBP_CT_FORWARD }))
        : null;
      if (!fwd || !ctLive(k.proto, abi.ctValue.decode(fwd), now)) doomed.push(key);
    }
    return doomed;
  });
  return { ctScanned: ct.scanned, ctDeleted: ct.deleted, snatScanned: snat.scanned, snatDeleted: snat.deleted };
}
