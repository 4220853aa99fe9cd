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
