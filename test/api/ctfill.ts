// Filling a kernel conntrack map for the paging test and benchmark.

import * as abi from '../../src/maps/abi.js';
import type { BpfMap } from '../../src/native/binding.js';
import type { PagedMap } from '../../src/api/paging.js';

/** Conntrack entry i: a distinct forward tuple client 10.244.x.y:port -> 10.96.0.10:80. */
export function ctRecord(i: number, keys: Buffer, values: Buffer, at: number): void {
  abi.ctKey.encodeInto(
    { saddr: `10.${244 + ((i >>> 24) & 3)}.${(i >>> 16) & 255}.${(i >>> 8) & 255}`, daddr: '10.96.0.10', sport: 1024 + (i & 255), dport: 80, proto: abi.IPPROTO_TCP, dir: abi.KBP_CT_FORWARD },
    keys,
    at * abi.ctKey.size,
  );
  abi.ctValue.encodeInto(
    { created_ns: 1n, last_seen_ns: 1n, backend_id: 1 + (i % 7), svc_id: 1 + (i % 3), nat_addr: '0.0.0.0', nat_port: 0, flags: 0, tcp_flags: 0, client_port: 0 },
    values,
    at * abi.ctValue.size,
  );
}

export async function fill(map: BpfMap, n: number): Promise<void> {
  const chunk = 10_000;
  for (let i = 0; i < n; i += chunk) {
    const c = Math.min(chunk, n - i);
    const keys = Buffer.alloc(c * abi.ctKey.size);
    const values = Buffer.alloc(c * abi.ctValue.size);
    for (let j = 0; j < c; j++) ctRecord(i + j, keys, values, j);
    await map.updateBatch(keys, values, c);
  }
}

/** Counts what each batch call returned. */
export function watched(m: BpfMap): { map: PagedMap; largest: () => number; calls: () => number } {
  let largest = 0;
  let calls = 0;
  const seen = <P extends { count: number }>(p: P): P => {
    calls++;
    largest = Math.max(largest, p.count);
    return p;
  };
  return {
    map: {
      info: m.info,
      valueBufferSize: m.valueBufferSize,
      lookupBatch: async (cursor, max) => seen(await m.lookupBatch(cursor, max)),
      lookupBatchInto: async (cursor, max, into) => seen(await m.lookupBatchInto!(cursor, max, into)),
    },
    largest: () => largest,
    calls: () => calls,
  };
}
