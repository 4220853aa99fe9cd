// In-memory stand-ins for the kernel maps the API reads: FakeBpfMap pages
// like BPF_MAP_LOOKUP_BATCH (an opaque 4-byte cursor, never splitting a
// "bucket"), and helpers that program frontends through the codecs.
//
// Address conventions: ClusterIPs 10.96.0.x, pods 10.244.<node>.<pod>
// (node-1 = this node), clients 10.244.1.100+.

import type { Test } from 'tap';
import * as abi from '../../src/maps/abi.js';
import type { BatchBuffers, BatchInto, BatchPage } from '../../src/native/binding.js';
import type { PagedMap } from '../../src/api/paging.js';
import { buildApi, type ApiDeps, type ApiOptions } from '../../src/api/app.js';

export const BPF_MAP_TYPE_HASH = 1;
export const BPF_MAP_TYPE_PERCPU_ARRAY = 6;
export const BPF_MAP_TYPE_LRU_HASH = 9;

export class FakeBpfMap implements PagedMap {
  readonly info;
  readonly valueBufferSize: number;
  readonly rows = new Map<string, Buffer>();
  /** maxCount of every lookupBatch call. */
  readonly batches: number[] = [];
  fail: Error | undefined;

  constructor(name: string, type: number, keySize: number, valueSize: number, maxEntries: number, readonly cpus = 1) {
    this.info = { id: 1, name, type, keySize, valueSize, maxEntries, flags: 0 };
    this.valueBufferSize = type === BPF_MAP_TYPE_PERCPU_ARRAY ? cpus * Math.ceil(valueSize / 8) * 8 : valueSize;
  }

  set(key: Buffer, value: Buffer): void {
    if (key.length !== this.info.keySize || value.length !== this.valueBufferSize) throw new Error(`${this.info.name}: bad sizes`);
    this.rows.set(key.toString('hex'), Buffer.from(value));
  }

  async lookupBatch(cursor: Buffer | null, maxCount: number): Promise<BatchPage> {
    this.batches.push(maxCount);
    if (this.fail) throw this.fail;
    const keys = [...this.rows.keys()];
    const start = cursor ? cursor.readUInt32LE(0) : 0;
    const end = Math.min(keys.length, start + maxCount);
    const page = keys.slice(start, end);
    const next = end < keys.length ? Buffer.alloc(4) : null;
    next?.writeUInt32LE(end, 0);
    return {
      keys: Buffer.concat(page.map((k) => Buffer.from(k, 'hex'))),
      values: Buffer.concat(page.map((k) => this.rows.get(k)!)),
      count: page.length,
      next,
    };
  }

  async lookupBatchInto(cursor: Buffer | null, maxCount: number, into: BatchBuffers): Promise<BatchInto> {
    // Like the addon: the caller's buffers must hold maxCount entries.
    if (into.keys.length < maxCount * this.info.keySize || into.values.length < maxCount * this.valueBufferSize) throw new Error('into: buffers too small');
    const page = await this.lookupBatch(cursor, maxCount);
    page.keys.copy(into.keys);
    page.values.copy(into.values);
    page.next?.copy(into.next);
    return { count: page.count, next: page.next ? page.next.length : 0 };
  }
}

export interface FakeMaps {
  svc: FakeBpfMap;
  backends: FakeBpfMap;
  revnat: FakeBpfMap;
  ct: FakeBpfMap;
  affinity: FakeBpfMap;
  stats: FakeBpfMap;
  set: Map<string, FakeBpfMap>;
}

export function fakeMaps(cpus = 2): FakeMaps {
  const svc = new FakeBpfMap(abi.KBP_MAP_SERVICES, BPF_MAP_TYPE_HASH, abi.svcKey.size, abi.svcValue.size, 1024);
  const backends = new FakeBpfMap(abi.KBP_MAP_BACKENDS, BPF_MAP_TYPE_HASH, abi.backendKey.size, abi.backendValue.size, 1024);
  const revnat = new FakeBpfMap(abi.KBP_MAP_REVNAT, BPF_MAP_TYPE_HASH, abi.revnatKey.size, abi.revnatValue.size, 1024);
  const ct = new FakeBpfMap(abi.KBP_MAP_CT, BPF_MAP_TYPE_LRU_HASH, abi.ctKey.size, abi.ctValue.size, 1 << 20);
  const affinity = new FakeBpfMap(abi.KBP_MAP_AFFINITY, BPF_MAP_TYPE_LRU_HASH, abi.affinityKey.size, abi.affinityValue.size, 1024);
  const stats = new FakeBpfMap(abi.KBP_MAP_STATS, BPF_MAP_TYPE_PERCPU_ARRAY, 4, abi.statValue.size, abi.KBP_STAT_SLOTS, cpus);
  for (let i = 0; i < abi.KBP_STAT_SLOTS; i++) stats.set(abi.statKey(i), Buffer.alloc(stats.valueBufferSize));
  const set = new Map([svc, backends, revnat, ct, affinity, stats].map((m) => [m.info.name, m]));
  return { svc, backends, revnat, ct, affinity, stats, set };
}

export interface FrontendSpec {
  id: number;
  vip: string;
  port: number;
  proto?: number;
  flags?: number;
  affinity?: number;
  /** Backend ids in slot order. */
  slots: number[];
  /** Override the entry's count (drift: count beyond the slots). */
  count?: number;
}

export function putFrontend(m: FakeMaps, f: FrontendSpec): void {
  const base = { vip: f.vip, port: f.port, proto: f.proto ?? abi.IPPROTO_TCP, scope: 0 };
  f.slots.forEach((backend_id, i) => m.svc.set(abi.svcKey.encode({ ...base, slot: i + 1 }), abi.svcValue.encode({ backend_id, svc_id: f.id, count: 0, flags: 0, affinity_timeout: 0 })));
  m.revnat.set(abi.revnatKey.encode({ svc_id: f.id }), abi.revnatValue.encode({ vip: f.vip, port: f.port }));
  m.svc.set(
    abi.svcKey.encode({ ...base, slot: 0 }),
    abi.svcValue.encode({ backend_id: 0, svc_id: f.id, count: f.count ?? f.slots.length, flags: f.flags ?? abi.KBP_SVC_F_CLUSTER_IP, affinity_timeout: f.affinity ?? 0 }),
  );
}

export function putBackend(m: FakeMaps, id: number, ip: string, port: number, state = abi.KBP_BACKEND_ACTIVE, proto = abi.IPPROTO_TCP): void {
  m.backends.set(abi.backendKey.encode({ id }), abi.backendValue.encode({ ip, port, proto, state, flags: abi.KBP_BACKEND_F_LOCAL }));
}

export function putVipMarker(m: FakeMaps, vip: string): void {
  m.svc.set(abi.svcKey.encode({ vip, port: 0, proto: 0, scope: 0, slot: 0 }), abi.svcValue.encode({ backend_id: 0, svc_id: 0, count: 0, flags: abi.KBP_SVC_F_VIP_MARKER, affinity_timeout: 0 }));
}

/** A forward and a reply conntrack entry of one flow client -> vip:port, DNATed to backend ip:port. */
export function putFlow(
  m: FakeMaps,
  f: { client: string; sport: number; vip: string; port: number; backendIp: string; backendPort: number; svc: number; backend: number; createdNs: bigint; lastNs: bigint; proto?: number },
): void {
  const proto = f.proto ?? abi.IPPROTO_TCP;
  const v = { created_ns: f.createdNs, last_seen_ns: f.lastNs, backend_id: f.backend, svc_id: f.svc, nat_addr: '0.0.0.0', nat_port: 0, flags: 0, tcp_flags: 0x12, client_port: 0 };
  m.ct.set(abi.ctKey.encode({ saddr: f.client, daddr: f.vip, sport: f.sport, dport: f.port, proto, dir: abi.KBP_CT_FORWARD }), abi.ctValue.encode(v));
  m.ct.set(abi.ctKey.encode({ saddr: f.backendIp, daddr: f.client, sport: f.backendPort, dport: f.sport, proto, dir: abi.KBP_CT_REPLY }), abi.ctValue.encode({ ...v, flags: abi.KBP_CT_F_SEEN_REPLY }));
}

/** Set a stats counter on each CPU. */
export function putStat(m: FakeMaps, index: number, perCpu: Array<[packets: number, bytes: number]>): void {
  const buf = Buffer.alloc(m.stats.valueBufferSize);
  perCpu.forEach(([p, b], cpu) => abi.statValue.encodeInto({ packets: BigInt(p), bytes: BigInt(b) }, buf, cpu * 16));
  m.stats.set(abi.statKey(index), buf);
}

export const NODE = 'node-1';
export const T_SYNC = new Date('2026-01-02T03:04:05.000Z');
export const T_NOW = new Date('2026-01-02T03:04:06.000Z');

/** The API over fake maps; closed at teardown. */
export async function build(t: Test, over: Partial<ApiDeps> = {}, opts: ApiOptions = {}) {
  const maps = fakeMaps();
  const state = { ready: true, lastUpdated: T_SYNC as Date | undefined };
  const app = await buildApi(
    {
      nodeName: NODE,
      maps: maps.set,
      frontend: () => undefined,
      health: () => ({ ready: state.ready, lastUpdated: state.lastUpdated }),
      now: () => T_NOW,
      monotonicNs: () => 100_000_000_000n,
      ...over,
    },
    opts,
  );
  t.teardown(() => app.close());
  return { app, maps, state };
}
