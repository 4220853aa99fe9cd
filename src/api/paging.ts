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

import type { BpfMap, NativeError } from '../native/binding.js';
import type { MapEntry, MapReader } from '../maps/writer.js';
import { MapOpError, mapError } from '../maps/writer.js';

/** What the API needs of a map: its description and paged reads. */
export type PagedMap = Pick<BpfMap, 'info' | 'valueBufferSize' | 'lookupBatch'>;

export type MapSet = ReadonlyMap<string, PagedMap>;

/** Where a walk resumes: the batch starting at `cursor` (null: the map's start), minus `skip` entries already served. */
export interface Position {
  cursor: Buffer | null;
  skip: number;
}

export const START: Position = { cursor: null, skip: 0 };

/** Entries fetched per batch syscall. */
export const KERNEL_BATCH = 1024;

export interface ScanResult<T> {
  items: T[];
  /** null: the walk reached the end of the map. */
  next: Position | null;
  /** Entries looked at (matching or not). */
  scanned: number;
}

/**
 * Walk `map` from `from`, calling `visit` on each entry (key and value are
 * views into the batch buffer, valid during the call only) and keeping what it
 * returns, until `limit` items are kept, `budget` entries were scanned, or the
 * map ends.
 */
export async function scan<T>(
  map: PagedMap,
  from: Position,
  opts: { limit: number; budget?: number; batch?: number },
  visit: (key: Buffer, value: Buffer) => T | undefined,
): Promise<ScanResult<T>> {
  const { keySize } = map.info;
  const valueSize = map.valueBufferSize;
  const budget = opts.budget ?? Number.POSITIVE_INFINITY;
  const items: T[] = [];
  let cursor = from.cursor;
  let skip = from.skip;
  const maxCount = Math.max(1, opts.batch ?? KERNEL_BATCH);
  // Raised when one hash bucket holds more entries than asked (ENOSPC).
  let minCount = 1;
  let scanned = 0;
  for (;;) {
    // Ask for no more than this page can still use: a page then ends where its
    // last batch ends (no entries read only to be read again by the next
    // page), and each batch costs one syscall and one buffer the size of what
    // is served.
    const want = skip + Math.min(opts.limit - items.length, budget - scanned);
    const count = Math.max(minCount, Math.min(maxCount, want));
    let page;
    try {
      page = await map.lookupBatch(cursor, count);
    } catch (err) {
      // One hash bucket holds more entries than the batch: the kernel wants a bigger one.
      if ((err as NativeError).code === 'ENOSPC' && count < 1 << 20) {
        minCount = count * 2;
        continue;
      }
      throw err;
    }
    for (let i = skip; i < page.count; i++) {
      scanned++;
      const item = visit(page.keys.subarray(i * keySize, (i + 1) * keySize), page.values.subarray(i * valueSize, (i + 1) * valueSize));
      if (item !== undefined) items.push(item);
      if (items.length >= opts.limit || scanned >= budget) {
        // Resume inside this batch, or at the next one when this batch is used up.
        const next: Position | null = i + 1 < page.count ? { cursor, skip: i + 1 } : page.next ? { cursor: page.next, skip: 0 } : null;
        return { items, next, scanned };
      }
    }
    skip = Math.max(0, skip - page.count);
    if (!page.next) return { items, next: null, scanned };
    cursor = page.next;
  }
}

/** Every entry of a map (for the small maps: services, backends, revnat). */
export async function readAll(map: PagedMap): Promise<MapEntry[]> {
  const { items } = await scan(map, START, { limit: Number.POSITIVE_INFINITY }, (key, value) => ({ key: Buffer.from(key), value: Buffer.from(value) }));
  return items;
}

/** Number of entries, counted batch by batch (nothing kept). */
export async function countEntries(map: PagedMap): Promise<number> {
  const { scanned } = await scan(map, START, { limit: Number.POSITIVE_INFINITY }, () => undefined);
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
