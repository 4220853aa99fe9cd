// The syncer: make the datapath maps hold the desired state, writing only the
// entries that differ.
//
// The maps' content is read once (on start, and again after any failure) and
// then tracked in memory, so a sync costs one comparison per entry and one
// syscall per changed entry (or per batch). Writes follow the order the
// datapath needs to never see a dangling reference:
//
//   1. backends (new or changed)
//   2. backend slots 1..n of every frontend
//   3. revnat entries
//   4. slot-0 service entries, then VIP markers (count goes up only when the
//      slots it covers exist)
//   5. stale slots (> new count) of kept frontends
//   6. removed frontends: service entry first, then its slots, then revnat
//   7. backends no frontend references any more
//
// Slots are dense (the datapath picks a random slot in 1..count) and stable:
// a backend keeps its slot while it stays, and the hole left by a removed one
// is filled by moving the last, so an endpoint change rewrites a handful of
// entries, not the frontend.
//
// A sync given the changes since the previous one (DesiredChanges, from the
// assembler) visits only the frontends, backends and VIPs named there, so one
// endpoint change costs a handful of map operations and no pass over 10k
// Services. Without changes, or when the maps must be re-read (first sync,
// after a failure, periodic resync), it visits everything.
//
// Memory and time at 10k Services x 10 endpoints (230k entries): each phase
// is encoded back to back into one key and one value buffer (PackedEntries,
// one batch syscall per 4096 entries), not two small buffers per entry, and
// the slots the maps hold are kept as backend ids per frontend (SlotTable),
// not as an object per slot.

import * as abi from '../maps/abi.js';
import { MapFullError, unpack, type MapWriter, type PackedEntries } from '../maps/writer.js';
import type { Logger } from '../log.js';
import { IdAllocator } from './ids.js';
import { backendKeyOf, frontendIdOf, frontendKey, type DesiredChanges, type DesiredState, type ServiceRef } from './desired.js';

const S = abi.KBP_MAP_SERVICES;
const B = abi.KBP_MAP_BACKENDS;
const R = abi.KBP_MAP_REVNAT;
const SR = abi.KBP_MAP_SRC_RANGES;

/** A frontend as the maps identify it (scope included). */
function feId(vip: string, port: number, proto: number, scope: number): string {
  return frontendIdOf(frontendKey(vip, port, proto), scope);
}

const isMarker = (k: abi.SvcKey): boolean => k.port === 0 && k.proto === 0;

/**
 * The slots 1..n of one frontend as the maps hold them. A slot the syncer
 * writes points at a backend and carries the frontend's id and zeros, so the
 * table keeps only the backend id per slot (0: no entry; ids are never 0)
 * and the frontend id once. A slot read back from the maps with anything
 * else in it (another frontend id, a count, flags) is kept whole, aside, so
 * comparisons stay exact.
 */
export class SlotTable {
  private readonly ids: number[] = [];
  private svcId = 0;
  private normal = 0; // slots in `ids`
  private odd: Map<number, abi.SvcValue> | undefined;

  get size(): number {
    return this.normal + (this.odd?.size ?? 0);
  }

  /** The backend id in `slot`, undefined when the slot has no entry. */
  backendId(slot: number): number | undefined {
    const o = this.odd?.get(slot);
    if (o) return o.backend_id;
    return this.ids[slot - 1] || undefined;
  }

  /** Whether `slot` holds exactly the entry the syncer writes for backendId under svcId. */
  holds(slot: number, backendId: number, svcId: number): boolean {
    if (backendId === 0) return false; // never written: 0 is "no backend"
    const o = this.odd?.get(slot);
    if (o) return o.backend_id === backendId && o.svc_id === svcId && o.count === 0 && o.flags === 0 && o.affinity_timeout === 0;
    return this.ids[slot - 1] === backendId && this.svcId === svcId;
  }

  /** Record what `slot` holds now (v is copied, not kept). */
  set(slot: number, v: abi.SvcValue): void {
    this.delete(slot);
    if (this.normal === 0) this.svcId = v.svc_id;
    if (v.backend_id !== 0 && v.svc_id === this.svcId && v.count === 0 && v.flags === 0 && v.affinity_timeout === 0) {
      while (this.ids.length < slot - 1) this.ids.push(0);
      this.ids[slot - 1] = v.backend_id;
      this.normal++;
    } else (this.odd ??= new Map()).set(slot, { ...v });
  }

  delete(slot: number): void {
    if (this.odd?.delete(slot)) return;
    if (this.ids[slot - 1]) {
      this.ids[slot - 1] = 0;
      this.normal--;
      while (this.ids.length && this.ids[this.ids.length - 1] === 0) this.ids.pop();
    }
  }

  /** The slots with an entry, ascending. */
  slots(): number[] {
    const out: number[] = [];
    this.ids.forEach((id, i) => {
      if (id) out.push(i + 1);
    });
    if (this.odd) {
      out.push(...this.odd.keys());
      out.sort((a, b) => a - b);
    }
    return out;
  }
}

interface TrackedFrontend {
  base: abi.SvcKey; // slot 0
  entry: abi.SvcValue | undefined; // undefined: slots without a service entry (left by a failed sync)
  slots: SlotTable;
}

interface Tracked {
  frontends: Map<string, TrackedFrontend>;
  backends: Map<number, abi.Backend>;
  revnat: Map<number, abi.RevNat>;
  /** loadBalancerSourceRanges by frontend id, "a.b.c.d/n". */
  srcRanges: Map<number, Set<string>>;
}

interface WantedFrontend {
  base: abi.SvcKey;
  entry: abi.SvcValue;
  /** Backend ids by slot, index i = slot i + 1; each slot entry is {backend_id, svc_id: entry.svc_id}. */
  slotIds: number[];
}

/** Encode `items` back to back with the two codecs (see PackedEntries). */
function pack<T, K, V>(items: readonly T[], kc: abi.StructCodec<K>, vc: abi.StructCodec<V>, kv: (item: T, i: number) => [K, V]): PackedEntries {
  const keys = Buffer.allocUnsafe(items.length * kc.size);
  const values = Buffer.allocUnsafe(items.length * vc.size);
  // encodeInto zero-fills each record first: padding is never left uninitialized.
  items.forEach((item, i) => {
    const [k, v] = kv(item, i);
    kc.encodeInto(k, keys, i * kc.size);
    vc.encodeInto(v, values, i * vc.size);
  });
  return { keys, values, count: items.length };
}

export interface ProgrammedFrontend {
  id: number;
  frontend: string; // "10.96.0.10:80/TCP"
  service: ServiceRef;
}

/** A backend entry the sync deleted (its conntrack entries may need flushing). */
export interface RemovedBackend {
  id: number;
  key: string;
  proto: number;
}

export interface SyncResult {
  ok: boolean;
  full: boolean; // the maps were (re-)read first
  /** Every desired entry was visited (not only the changed ones). */
  complete: boolean;
  removedBackends: RemovedBackend[];
  updates: number;
  deletes: number;
  /** Updates plus deletes issued by this sync, per map (also when it failed part-way). */
  writes: Record<string, number>;
  /**
   * When the changes this sync programmed happened (epoch ms: a slice's
   * last-change-trigger-time, else the event's arrival). Only on success; a
   * failed sync hands its times on to the next successful one.
   */
  programmed: number[];
  /** Epoch ms at the end of the sync. */
  endedAt: number;
  durationMs: number;
  error?: Error;
}

/** Called after every sync, successful or not (metrics). */
export type SyncListener = (r: SyncResult) => void;

export interface SyncerStats {
  syncs: number;
  fullSyncs: number;
  failures: number;
  mapFull: number;
  lastSuccess: Date | undefined;
  lastError: string | undefined;
  lastResult: SyncResult | undefined;
  /** Updates plus deletes issued since start, per map (kbp_map_writes_total). */
  mapWrites: Record<string, number>;
}

export interface SyncerOptions {
  writer: MapWriter;
  log: Logger;
  /** Use a batch syscall from this many entries of one phase on (default 4). */
  batchMin?: number;
  now?: () => Date;
}

const sameSvc = (a: abi.SvcValue | undefined, b: abi.SvcValue): boolean =>
  !!a && a.backend_id === b.backend_id && a.svc_id === b.svc_id && a.count === b.count && a.flags === b.flags && a.affinity_timeout === b.affinity_timeout;
const sameBackend = (a: abi.Backend | undefined, b: abi.Backend): boolean => !!a && a.ip === b.ip && a.port === b.port && a.proto === b.proto && a.state === b.state && a.flags === b.flags;
const sameRevNat = (a: abi.RevNat | undefined, b: abi.RevNat): boolean => !!a && a.vip === b.vip && a.port === b.port;

export class Syncer {
  readonly frontendIds = new IdAllocator('frontend');
  readonly backendIds = new IdAllocator('backend');
  readonly stats: SyncerStats = { syncs: 0, fullSyncs: 0, failures: 0, mapFull: 0, lastSuccess: undefined, lastError: undefined, lastResult: undefined, mapWrites: { [S]: 0, [B]: 0, [R]: 0 } };
  private tracked: Tracked | undefined;
  private programmed = new Map<number, ProgrammedFrontend>();
  /**
   * Per frontend, a signature of what the last successful sync wrote (id,
   * flags, affinity, backend ids): an unchanged frontend is skipped without
   * building its entries. Cleared whenever the maps are re-read.
   */
  private applied = new Map<string, string>();
  private readonly writer: MapWriter;
  private readonly log: Logger;
  private readonly batchMin: number;
  private readonly now: () => Date;
  private updates = 0;
  private deletes = 0;
  private removed: RemovedBackend[] = [];
  private writes: Record<string, number> = {};
  /** Change times not yet programmed (a failed sync leaves them for the next). */
  private unprogrammed: number[] = [];
  private readonly listeners = new Set<SyncListener>();
  /** The maps were read and not yet compared with a whole desired state: stale entries may hide anywhere. */
  private needComplete = true;

  constructor(opts: SyncerOptions) {
    this.writer = opts.writer;
    this.log = opts.log;
    this.batchMin = opts.batchMin ?? 4;
    this.now = opts.now ?? (() => new Date());
  }

  /** Make the next sync re-read the maps (periodic drift check, or after a failure). */
  requestFullResync(): void {
    this.tracked = undefined;
  }

  /** Call `fn` after every sync (metrics); returns the unsubscribe. */
  onSync(fn: SyncListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Service name of a frontend id, as of the last sync. */
  frontend(id: number): ProgrammedFrontend | undefined {
    return this.programmed.get(id);
  }

  /**
   * Read the maps and restore ids from them, so the first sync rewrites
   * nothing that is already right. Called by the first sync if not before.
   */
  async restore(): Promise<void> {
    const [svcs, backends, revnat, ranges] = await Promise.all([this.writer.entries(S), this.writer.entries(B), this.writer.entries(R), this.writer.entries(SR)]);
    const t: Tracked = { frontends: new Map(), backends: new Map(), revnat: new Map(), srcRanges: new Map() };
    for (const e of svcs) {
      const k = abi.svcKey.decode(e.key);
      const v = abi.svcValue.decode(e.value);
      const id = feId(k.vip, k.port, k.proto, k.scope);
      let fe = t.frontends.get(id);
      if (!fe) {
        fe = { base: { ...k, slot: 0 }, entry: undefined, slots: new SlotTable() };
        t.frontends.set(id, fe);
      }
      if (k.slot === 0) fe.entry = v;
      else fe.slots.set(k.slot, v);
    }
    for (const e of backends) t.backends.set(abi.backendKey.decode(e.key).id, abi.backendValue.decode(e.value));
    for (const e of revnat) t.revnat.set(abi.revnatKey.decode(e.key).svc_id, abi.revnatValue.decode(e.value));
    for (const e of ranges) {
      const k = abi.srcRangeKey.decode(e.key);
      let set = t.srcRanges.get(k.svc_id);
      if (!set) t.srcRanges.set(k.svc_id, (set = new Set()));
      set.add(`${k.addr}/${k.prefixlen - 32}`);
    }

    let conflicts = 0;
    for (const [id, fe] of t.frontends) {
      if (!fe.entry || isMarker(fe.base) || fe.entry.svc_id === 0) continue;
      if (!this.frontendIds.restore(id, fe.entry.svc_id)) conflicts++;
    }
    for (const [id, b] of t.backends) if (!this.backendIds.restore(backendKeyOf(b.ip, b.port, b.proto), id)) conflicts++;
    this.tracked = t;
    this.applied = new Map();
    this.needComplete = true;
    this.log.info('maps read', {
      frontends: [...t.frontends.values()].filter((f) => !isMarker(f.base)).length,
      slots: svcs.length - t.frontends.size,
      backends: t.backends.size,
      revnat: t.revnat.size,
      idConflicts: conflicts || undefined,
    });
  }

  /**
   * Bring the maps to `desired`. With `changes`, only what they name is
   * visited (unless the maps must be re-read first). `triggers`: when the
   * changes behind this sync happened (epoch ms), reported back as
   * `programmed` once a sync succeeds. Never throws: failures are logged,
   * counted and returned.
   */
  async sync(desired: DesiredState, changes?: DesiredChanges, triggers?: readonly number[]): Promise<SyncResult> {
    const start = performance.now();
    if (triggers?.length) for (const at of triggers) this.unprogrammed.push(at);
    const full = this.tracked === undefined;
    const complete = full || changes === undefined || this.needComplete;
    this.updates = 0;
    this.deletes = 0;
    this.removed = [];
    this.writes = {};
    this.stats.syncs++;
    if (full) this.stats.fullSyncs++;
    let result: SyncResult;
    try {
      if (!this.tracked) await this.restore();
      await this.apply(desired, this.tracked!, complete ? undefined : changes);
      if (complete) this.needComplete = false;
      this.stats.lastSuccess = this.now();
      this.stats.lastError = undefined;
      const programmed = this.unprogrammed;
      this.unprogrammed = [];
      result = { ok: true, full, complete, removedBackends: this.removed, updates: this.updates, deletes: this.deletes, writes: this.writes, programmed, endedAt: Date.now(), durationMs: performance.now() - start };
      const level = this.updates + this.deletes > 0 || full ? 'info' : 'debug';
      this.log[level]('maps synced', {
        full,
        complete: complete || undefined,
        updates: this.updates,
        deletes: this.deletes,
        frontends: desired.frontends.size,
        backends: desired.backends.size,
        ms: result.durationMs.toFixed(1),
      });
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.tracked = undefined; // whatever was half-written, the next sync reads it back
      this.stats.failures++;
      this.stats.lastError = error.message;
      if (error instanceof MapFullError) {
        this.stats.mapFull++;
        this.log.error('map full: sync incomplete, will retry with a full resync; raise the map size', { map: error.map, code: error.code, updates: this.updates, deletes: this.deletes });
      } else {
        this.log.error('sync failed, next sync is a full resync', { err: error, code: (error as { code?: string }).code, updates: this.updates, deletes: this.deletes });
      }
      result = { ok: false, full, complete, removedBackends: this.removed, updates: this.updates, deletes: this.deletes, writes: this.writes, programmed: [], endedAt: Date.now(), durationMs: performance.now() - start, error };
    }
    this.stats.lastResult = result;
    for (const fn of this.listeners) {
      try {
        fn(result);
      } catch (err) {
        this.log.warn('sync listener failed', { err });
      }
    }
    return result;
  }

  private async apply(desired: DesiredState, cur: Tracked, changes: DesiredChanges | undefined): Promise<void> {
    const visitBackends: Iterable<string> = changes ? changes.backends : desired.backends.keys();
    const visitFrontends: Iterable<string> = changes ? changes.frontends : desired.frontends.keys();
    const visitVips: Iterable<string> = changes ? changes.vips : desired.vips;

    // ---- ids (restored ones first, then fresh ones in desired order)
    const wantBackends = new Map<number, abi.Backend>();
    for (const key of visitBackends) {
      const b = desired.backends.get(key);
      // The desired object itself (never mutated) becomes the tracked value: no copy per backend.
      if (b) wantBackends.set(this.backendIds.allocate(b.key), b);
    }
    const wantFrontends = new Map<string, WantedFrontend>(); // changed ones only
    const wantRevNat = new Map<number, abi.RevNat>();
    const wantRanges = new Map<number, readonly string[]>(); // visited frontends' loadBalancerSourceRanges
    const gone: string[] = []; // visited frontends no longer desired
    const programmed = changes ? this.programmed : new Map<number, ProgrammedFrontend>();
    const applied = changes ? this.applied : new Map<string, string>();
    for (const id of visitFrontends) {
      const f = desired.frontends.get(id);
      if (!f) {
        gone.push(id);
        continue;
      }
      const svcId = this.frontendIds.allocate(id);
      const activeIds = f.active.map((k) => this.backendIds.allocate(k));
      wantRevNat.set(svcId, { vip: f.vip, port: f.port });
      wantRanges.set(svcId, f.sourceRanges ?? []);
      programmed.set(svcId, { id: svcId, frontend: f.key, service: f.service });
      const sig = [svcId, f.flags, f.affinityTimeout, activeIds.join(','), f.sourceRanges?.join(',') ?? ''].join('|');
      if (!changes && this.applied.get(id) === sig) {
        applied.set(id, sig);
        continue;
      }
      applied.set(id, sig);
      const have = cur.frontends.get(id)?.slots;
      const slotIds = assignSlots(activeIds, have && ((slot) => have.backendId(slot)));
      wantFrontends.set(id, {
        base: { vip: f.vip, port: f.port, proto: f.proto, scope: f.scope, slot: 0 },
        entry: { backend_id: 0, svc_id: svcId, count: slotIds.length, flags: f.flags, affinity_timeout: f.affinityTimeout },
        slotIds,
      });
    }
    const markers = new Map<string, WantedFrontend>();
    for (const vip of visitVips) {
      const id = feId(vip, 0, 0, abi.KBP_SCOPE_EXTERNAL);
      if (!desired.vips.has(vip)) {
        gone.push(id);
        continue;
      }
      markers.set(id, {
        base: { vip, port: 0, proto: 0, scope: abi.KBP_SCOPE_EXTERNAL, slot: 0 },
        entry: { backend_id: 0, svc_id: 0, count: 0, flags: abi.KBP_SVC_F_VIP_MARKER, affinity_timeout: 0 },
        slotIds: [],
      });
    }
    this.programmed = programmed;

    // ---- 1. backends
    const backendWrites = [...wantBackends].filter(([id, b]) => !sameBackend(cur.backends.get(id), b));
    const backendKey = { id: 0 };
    // The kernel takes the backends (on the addon's worker thread) while the
    // slots are worked out and encoded here; they are written only once it is
    // done, so the order the datapath needs holds. (230k entries: the kernel's
    // share is a few hundred ms.)
    const backendsWritten = this.put(
      B,
      pack(backendWrites, abi.backendKey, abi.backendValue, ([id, b]) => {
        backendKey.id = id;
        return [backendKey, b];
      }),
    );
    backendsWritten.catch(() => {}); // awaited below; this only keeps it from counting as unhandled meanwhile

    // ---- 2. slots 1..n
    // Slot writes as parallel arrays (write i: frontend, slot, backend id): 100k of them on a first sync, no object each.
    const swFe: string[] = [];
    const swWant: WantedFrontend[] = [];
    const swSlot: number[] = [];
    for (const [id, w] of wantFrontends) {
      const have = cur.frontends.get(id)?.slots;
      const svcId = w.entry.svc_id;
      for (let i = 0; i < w.slotIds.length; i++) {
        if (have?.holds(i + 1, w.slotIds[i]!, svcId)) continue;
        swFe.push(id);
        swWant.push(w);
        swSlot.push(i + 1);
      }
    }
    const slotKey: abi.SvcKey = { vip: '', port: 0, proto: 0, scope: 0, slot: 0 };
    const slotValue: abi.SvcValue = { backend_id: 0, svc_id: 0, count: 0, flags: 0, affinity_timeout: 0 };
    const slotEntry = (i: number): [abi.SvcKey, abi.SvcValue] => {
      const w = swWant[i]!;
      Object.assign(slotKey, w.base);
      slotKey.slot = swSlot[i]!;
      slotValue.backend_id = w.slotIds[swSlot[i]! - 1]!;
      slotValue.svc_id = w.entry.svc_id;
      return [slotKey, slotValue];
    };
    const slotBatch = pack(swSlot, abi.svcKey, abi.svcValue, (_slot, i) => slotEntry(i));
    await backendsWritten;
    for (const [id, b] of wantBackends) cur.backends.set(id, b);
    const slotsWritten = this.put(S, slotBatch);
    slotsWritten.catch(() => {}); // awaited below, as backendsWritten

    // Worked out while the kernel takes the slots: revnat, source ranges and service entries to write.
    const revWrites = [...wantRevNat].filter(([id, r]) => !sameRevNat(cur.revnat.get(id), r));
    const rangeWrites: Array<[number, string]> = [];
    for (const [svcId, want] of wantRanges) for (const cidr of want) if (!cur.srcRanges.get(svcId)?.has(cidr)) rangeWrites.push([svcId, cidr]);
    const entryWrites: Array<[string, WantedFrontend]> = [];
    for (const group of [wantFrontends, markers]) {
      for (const [id, w] of group) if (!sameSvc(cur.frontends.get(id)?.entry, w.entry)) entryWrites.push([id, w]);
    }
    const entryBatch = pack(entryWrites, abi.svcKey, abi.svcValue, ([, w]) => [w.base, w.entry]);
    await slotsWritten;
    for (let i = 0; i < swSlot.length; i++) this.track(cur, swFe[i]!, swWant[i]!.base).slots.set(swSlot[i]!, slotEntry(i)[1]);

    // ---- 3. revnat
    await this.put(R, pack(revWrites, abi.revnatKey, abi.revnatValue, ([svc_id, r]) => [{ svc_id }, r]));
    for (const [id, r] of revWrites) cur.revnat.set(id, r);

    // ---- 3b. source ranges, before the service entry that turns their check on
    const rangeKey = (svc_id: number, cidr: string) => abi.srcRangeKey.encode(abi.srcRangeKeyOf(svc_id, cidr));
    await this.put(SR, pack(rangeWrites, abi.srcRangeKey, abi.srcRangeValue, ([svcId, cidr]) => [abi.srcRangeKeyOf(svcId, cidr), { flags: 0 }]));
    for (const [svcId, cidr] of rangeWrites) {
      let set = cur.srcRanges.get(svcId);
      if (!set) cur.srcRanges.set(svcId, (set = new Set()));
      set.add(cidr);
    }

    // ---- 4. service entries, then VIP markers
    await this.put(S, entryBatch);
    for (const [id, w] of entryWrites) this.track(cur, id, w.base).entry = w.entry;

    // ---- 5. stale slots of kept frontends
    const trims: Array<{ fe: TrackedFrontend; slot: number }> = [];
    for (const [id, w] of [...wantFrontends, ...markers]) {
      const fe = cur.frontends.get(id);
      if (!fe) continue;
      for (const slot of fe.slots.slots()) if (slot > w.slotIds.length) trims.push({ fe, slot });
    }
    await this.drop(S, trims.map((x) => abi.svcKey.encode({ ...x.fe.base, slot: x.slot })));
    for (const x of trims) x.fe.slots.delete(x.slot);

    // ---- 6. removed frontends: entry, then slots, then revnat
    const removed: Array<[string, TrackedFrontend]> = changes
      ? gone.flatMap((id) => (cur.frontends.has(id) ? [[id, cur.frontends.get(id)!] as [string, TrackedFrontend]] : []))
      : [...cur.frontends].filter(([id]) => !desired.frontends.has(id) && !markers.has(id));
    const withEntry = removed.filter(([, fe]) => fe.entry);
    await this.drop(S, withEntry.map(([, fe]) => abi.svcKey.encode(fe.base)));
    for (const [, fe] of withEntry) fe.entry = undefined;
    const removedSlots = removed.flatMap(([, fe]) => fe.slots.slots().map((slot) => abi.svcKey.encode({ ...fe.base, slot })));
    await this.drop(S, removedSlots);
    for (const [id] of removed) cur.frontends.delete(id);
    const staleRev = changes
      ? gone.map((id) => this.frontendIds.get(id)).filter((id): id is number => id !== undefined && cur.revnat.has(id))
      : [...cur.revnat.keys()].filter((id) => !wantRevNat.has(id));
    await this.drop(R, staleRev.map((svc_id) => abi.revnatKey.encode({ svc_id })));
    for (const id of staleRev) cur.revnat.delete(id);
    // Ranges the visited frontends no longer have, and those of frontends that are gone.
    const staleRanges: Array<[number, string]> = [];
    for (const [svcId, have] of cur.srcRanges) {
      const want = wantRanges.get(svcId);
      const visited = want !== undefined || !changes || staleRev.includes(svcId);
      if (visited) for (const cidr of have) if (!want?.includes(cidr)) staleRanges.push([svcId, cidr]);
    }
    await this.drop(SR, staleRanges.map(([svcId, cidr]) => rangeKey(svcId, cidr)));
    for (const [svcId, cidr] of staleRanges) {
      const set = cur.srcRanges.get(svcId)!;
      set.delete(cidr);
      if (!set.size) cur.srcRanges.delete(svcId);
    }

    // ---- 7. unreferenced backends
    const staleBackends = changes
      ? [...changes.backends].filter((k) => !desired.backends.has(k)).map((k) => this.backendIds.get(k)).filter((id): id is number => id !== undefined && cur.backends.has(id))
      : [...cur.backends.keys()].filter((id) => !wantBackends.has(id));
    await this.drop(B, staleBackends.map((id) => abi.backendKey.encode({ id })));
    for (const id of staleBackends) {
      const b = cur.backends.get(id)!;
      this.removed.push({ id, key: backendKeyOf(b.ip, b.port, b.proto), proto: b.proto });
      cur.backends.delete(id);
    }

    // Everything desired is written: ids of what is gone can be released.
    if (changes) {
      for (const id of gone) {
        const svcId = this.frontendIds.get(id);
        if (svcId !== undefined) programmed.delete(svcId);
        applied.delete(id);
        this.frontendIds.release(id);
      }
      for (const k of changes.backends) if (!desired.backends.has(k)) this.backendIds.release(k);
    } else {
      this.frontendIds.retain(new Set(desired.frontends.keys()));
      this.backendIds.retain(new Set(desired.backends.keys()));
    }
    this.applied = applied;
  }

  private track(cur: Tracked, id: string, base: abi.SvcKey): TrackedFrontend {
    let fe = cur.frontends.get(id);
    if (!fe) {
      fe = { base: { ...base, slot: 0 }, entry: undefined, slots: new SlotTable() };
      cur.frontends.set(id, fe);
    }
    return fe;
  }

  private async put(map: string, batch: PackedEntries): Promise<void> {
    if (batch.count === 0) return;
    if (batch.count < this.batchMin) {
      for (const e of unpack(batch)) {
        await this.writer.update(map, e.key, e.value);
        this.updates++;
        this.wrote(map, 1);
      }
      return;
    }
    await this.writer.updatePacked(map, batch);
    this.updates += batch.count;
    this.wrote(map, batch.count);
  }

  private wrote(map: string, n: number): void {
    this.writes[map] = (this.writes[map] ?? 0) + n;
    this.stats.mapWrites[map] = (this.stats.mapWrites[map] ?? 0) + n;
  }

  private async drop(map: string, keys: Buffer[]): Promise<void> {
    if (keys.length === 0) return;
    if (keys.length < this.batchMin) {
      for (const k of keys) {
        await this.writer.delete(map, k);
        this.deletes++;
        this.wrote(map, 1);
      }
      return;
    }
    await this.writer.deleteBatch(map, keys);
    this.deletes += keys.length;
    this.wrote(map, keys.length);
  }
}

/**
 * Slot layout for a frontend: backends that stay keep their slot when it is
 * still within 1..n; the others (new ones, and those beyond n) fill the holes
 * in order. Returns backend ids by slot (index 0 = slot 1).
 */
export function assignSlots(activeIds: readonly number[], current: ((slot: number) => number | undefined) | undefined): number[] {
  const n = activeIds.length;
  // Nothing there yet (a first sync into empty maps), or nothing moved: the order as given.
  if (!current || activeIds.every((id, i) => current(i + 1) === id)) return activeIds.slice();
  const out: Array<number | undefined> = new Array(n).fill(undefined);
  const want = new Set(activeIds);
  const placed = new Set<number>();
  for (let s = 1; s <= n; s++) {
    const id = current(s);
    if (id !== undefined && want.has(id) && !placed.has(id)) {
      out[s - 1] = id;
      placed.add(id);
    }
  }
  const rest = activeIds.filter((id) => !placed.has(id));
  let r = 0;
  for (let i = 0; i < n; i++) if (out[i] === undefined) out[i] = rest[r++];
  return out as number[];
}
