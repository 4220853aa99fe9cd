// Reading kernel maps page by page for the API.
//
// A conntrack map can hold a million entries, so no dump ever loads a whole
// map: a request walks the kernel's own batch cursor (BPF_MAP_LOOKUP_BATCH)
// from where the previous page stopped, keeps what its filter matches, and
// stops at `limit` items or after a scan budget, handing the client a continue
// token. The token is the kernel cursor of the batch it stopped in plus how
// many entries of that batch were already served; it holds no entries, so the
// agent keeps nothing between requests and its memory is bounded by one batch.
//
// Like the kernel's walk, a page of a map that changes meanwhile may miss or
// repeat entries that moved (LRU eviction, new flows); a dump is a view, not a
// snapshot.

import type { BatchBuffers, BatchInto, BpfMap, NativeError } from '../native/binding.js';
import type { MapEntry, MapReader } from '../maps/writer.js';
import { MapOpError, mapError } from '../maps/writer.js';

/** What the API needs of a map: its description and paged reads (into buffers the walk reuses). */
export type PagedMap = Pick<BpfMap, 'info' | 'valueBufferSize' | 'lookupBatch' | 'lookupBatchInto'>;

export type MapSet = ReadonlyMap<string, PagedMap>;

/** Where a walk resumes: the batch starting at `cursor` (null: the map's start), minus `skip` entries already served. */
export interface Position {
  cursor: Buffer | null;
  skip: number;
}

export const START: Position = { cursor: null, skip: 0 };

/** Entries fetched per batch syscall. */
export const KERNEL_BATCH = 1024;

export interface ScanResult {
  /** Entries `visit` kept. */
  kept: number;
  /** null: the walk reached the end of the map. */
  next: Position | null;
  /** Entries looked at (matching or not). */
  scanned: number;
}

/**
 * The buffers one walk hands the kernel for every batch: keys and values,
 * and two cursors used in turn (a batch reads the one the previous batch
 * wrote). A walk takes a set from its map's pool and gives it back, so a
 * dump of any length reuses the same few hundred kilobytes.
 */
interface BatchSet {
  capacity: number; // entries
  keys: Buffer;
  values: Buffer;
  into: [BatchBuffers, BatchBuffers];
}

/** Idle sets kept per map: enough for a request or two at a time; more concurrent walks allocate sets the pool then drops. */
const IDLE_SETS = 2;
const pools = new WeakMap<PagedMap, BatchSet[]>();

function takeSet(map: PagedMap, capacity: number): BatchSet {
  const pool = pools.get(map);
  const i = pool ? pool.findIndex((s) => s.capacity >= capacity) : -1;
  if (pool && i >= 0) return pool.splice(i, 1)[0]!;
  const keys = Buffer.allocUnsafeSlow(capacity * map.info.keySize);
  const values = Buffer.allocUnsafeSlow(capacity * map.valueBufferSize);
  // The longest cursor: a tag byte and the kernel's token (a bucket index or a key).
  const cursor = () => Buffer.allocUnsafeSlow(1 + Math.max(map.info.keySize, 8));
  return { capacity, keys, values, into: [{ keys, values, next: cursor() }, { keys, values, next: cursor() }] };
}

/** A batch into the set's buffers; a map with lookupBatch only has its page copied in. */
async function lookupInto(map: PagedMap, cursor: Buffer | null, count: number, into: BatchBuffers): Promise<BatchInto> {
  if (map.lookupBatchInto) return map.lookupBatchInto(cursor, count, into);
  const page = await map.lookupBatch(cursor, count);
  if (page.keys.length > into.keys.length || page.values.length > into.values.length) throw Object.assign(new Error('a bucket larger than the buffers'), { code: 'ENOSPC' });
  page.keys.copy(into.keys);
  page.values.copy(into.values);
  page.next?.copy(into.next);
  return { count: page.count, next: page.next?.length ?? 0 };
}

function giveBack(map: PagedMap, set: BatchSet): void {
  let pool = pools.get(map);
  if (!pool) pools.set(map, (pool = []));
  if (pool.length < IDLE_SETS) pool.push(set);
}

/**
 * Walk `map` from `from`, calling `visit` on each entry (its key at
 * `keys[keyAt]`, its value at `values[valueAt]`: the batch buffers, valid
 * during the call only) and counting the entries it keeps (returns true),
 * until `limit` are kept, `budget` entries were scanned, or the map ends.
 */
export async function scan(
  map: PagedMap,
  from: Position,
  opts: { limit: number; budget?: number; batch?: number },
  visit: (keys: Buffer, keyAt: number, values: Buffer, valueAt: number) => boolean,
): Promise<ScanResult> {
  const { keySize } = map.info;
  const valueSize = map.valueBufferSize;
  const budget = opts.budget ?? Number.POSITIVE_INFINITY;
  let kept = 0;
  let cursor = from.cursor;
  let skip = from.skip;
  const maxCount = Math.max(1, opts.batch ?? KERNEL_BATCH);
  // Raised when one hash bucket holds more entries than the buffers (ENOSPC).
  let minCount = 1;
  let scanned = 0;
  let set = takeSet(map, maxCount);
  let side = 0;
  try {
    for (;;) {
      // Ask for no more than this page can still use: a page then ends where its
      // last batch ends (no entries read only to be read again by the next
      // page), and each batch costs one syscall.
      const want = skip + Math.min(opts.limit - kept, budget - scanned);
      const count = Math.max(minCount, Math.min(maxCount, want));
      if (count > set.capacity) {
        if (cursor) cursor = Buffer.from(cursor); // it may be a view of the set given back
        giveBack(map, set);
        set = takeSet(map, count);
      }
      const into = set.into[side]!;
      let page;
      try {
        page = await lookupInto(map, cursor, count, into);
      } catch (err) {
        // One hash bucket holds more entries than the buffers: the kernel wants bigger ones.
        if ((err as NativeError).code === 'ENOSPC' && count < 1 << 20) {
          minCount = Math.max(count, set.capacity) * 2;
          continue;
        }
        throw err;
      }
      const { keys, values } = set;
      for (let i = skip; i < page.count; i++) {
        scanned++;
        if (visit(keys, i * keySize, values, i * valueSize)) kept++;
        if (kept >= opts.limit || scanned >= budget) {
          // Resume inside this batch, or at the next one when this batch is used up (copies: the set's cursors are reused).
          const next: Position | null =
            i + 1 < page.count ? { cursor: cursor && Buffer.from(cursor), skip: i + 1 } : page.next ? { cursor: Buffer.from(into.next.subarray(0, page.next)), skip: 0 } : null;
          return { kept, next, scanned };
        }
      }
      skip = Math.max(0, skip - page.count);
      if (!page.next) return { kept, next: null, scanned };
      cursor = into.next.subarray(0, page.next);
      side ^= 1;
    }
  } finally {
    giveBack(map, set);
  }
}

/** Every entry of a map (for the small maps: services, backends, revnat). */
export async function readAll(map: PagedMap): Promise<MapEntry[]> {
  const { keySize } = map.info;
  const valueSize = map.valueBufferSize;
  const entries: MapEntry[] = [];
  await scan(map, START, { limit: Number.POSITIVE_INFINITY }, (keys, k, values, v) => {
    entries.push({ key: Buffer.from(keys.subarray(k, k + keySize)), value: Buffer.from(values.subarray(v, v + valueSize)) });
    return true;
  });
  return entries;
}

/** Number of entries, counted batch by batch (nothing kept). */
export async function countEntries(map: PagedMap): Promise<number> {
  const { scanned } = await scan(map, START, { limit: Number.POSITIVE_INFINITY }, () => false);
  return scanned;
}

/** A MapReader over a map set: the services view reads through the same interface the syncer's writer offers. */
export function mapSetReader(maps: MapSet): MapReader {
  return {
    async entries(name: string): Promise<MapEntry[]> {
      const m = maps.get(name);
      if (!m) throw new MapOpError(name, 'entries', 'ENOENT', 'map not open');
      try {
        return await readAll(m);
      } catch (err) {
        throw mapError(name, 'entries', err);
      }
    },
  };
}

// ---------------------------------------------------------------- continue tokens

/** Longest kernel cursor accepted back from a client (hash maps use 4 bytes). */
const MAX_CURSOR = 64;

/**
 * The continue token: base64url of {v, m, c, s, q}: version, map name, cursor
 * (hex, absent at the start), skip, and a digest of the query's filters, so a
 * token is refused with a different map or filter instead of serving a
 * confusing page.
 */
export function encodeContinue(map: string, pos: Position, filter: string): string {
  const body: Record<string, unknown> = { v: 1, m: map, s: pos.skip, q: filter };
  if (pos.cursor) body.c = pos.cursor.toString('hex');
  return Buffer.from(JSON.stringify(body)).toString('base64url');
}

/** The position a token names, or undefined when it is not a token of this map and filter. */
export function decodeContinue(token: string, map: string, filter: string): Position | undefined {
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof body !== 'object' || body === null) return undefined;
  const b = body as Record<string, unknown>;
  if (b.v !== 1 || b.m !== map || b.q !== filter) return undefined;
  if (typeof b.s !== 'number' || !Number.isSafeInteger(b.s) || b.s < 0) return undefined;
  if (b.c === undefined) return { cursor: null, skip: b.s };
  if (typeof b.c !== 'string' || !/^(?:[0-9a-f]{2})+$/.test(b.c) || b.c.length > MAX_CURSOR * 2) return undefined;
  return { cursor: Buffer.from(b.c, 'hex'), skip: b.s };
}
