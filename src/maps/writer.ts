// The map writer: the only way the syncer (and the API's reader) touches the
// datapath maps. Keys and values are already-encoded records (src/maps/abi.ts),
// so the same interface serves every map. BpfMapWriter goes to the kernel
// through the addon; FakeMapWriter keeps maps in memory for tests, with an
// operation log and injectable failures.

import type { BpfMap, NativeError } from '../native/binding.js';

export interface MapEntry {
  key: Buffer;
  value: Buffer;
}

/**
 * Entries of one map encoded back to back, as the batch syscalls take them:
 * entry i's key at i * key size of `keys`, its value at i * value size of
 * `values`. The syncer encodes a whole phase into one pair of buffers instead
 * of two small buffers per entry (230k entries at 10k Services).
 */
export interface PackedEntries {
  keys: Buffer;
  values: Buffer;
  count: number;
}

export interface MapReader {
  /** Every entry of the map, in the kernel's iteration order. */
  entries(map: string): Promise<MapEntry[]>;
}

export interface MapWriter extends MapReader {
  update(map: string, key: Buffer, value: Buffer): Promise<void>;
  /** Resolves false when the key was absent. */
  delete(map: string, key: Buffer): Promise<boolean>;
  /** Creates or replaces every entry; rejects at the first one that fails (earlier ones stay written). */
  updateBatch(map: string, entries: readonly MapEntry[]): Promise<void>;
  /** Resolves with the number deleted; absent keys are skipped. */
  deleteBatch(map: string, keys: readonly Buffer[]): Promise<number>;
  /** updateBatch of packed entries. */
  updatePacked(map: string, batch: PackedEntries): Promise<void>;
}

/** The packed entries one by one, key and value as views (no copy). */
export function unpack(batch: PackedEntries): MapEntry[] {
  const ks = batch.keys.length / batch.count;
  const vs = batch.values.length / batch.count;
  return Array.from({ length: batch.count }, (_, i) => ({ key: batch.keys.subarray(i * ks, (i + 1) * ks), value: batch.values.subarray(i * vs, (i + 1) * vs) }));
}


export type MapOp = 'update' | 'delete' | 'updateBatch' | 'deleteBatch' | 'entries';

/** A map operation failed. `code` is the errno name when the kernel gave one. */
export class MapOpError extends Error {
  constructor(
    readonly map: string,
    readonly op: MapOp,
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${op} on ${map} failed: ${message}`, options);
    this.name = 'MapOpError';
  }
}

/**
 * An update was refused because the map has no room: the kernel answers E2BIG
 * for a full hash map and ENOMEM/ENOSPC when it cannot allocate an element.
 * The syncer counts these separately: they need a bigger map, not a retry.
 */
export class MapFullError extends MapOpError {
  constructor(map: string, op: MapOp, code: string, options?: { cause?: unknown }) {
    super(map, op, code, `map is full (${code})`, options);
    this.name = 'MapFullError';
  }
}

const fullCodes = new Set(['E2BIG', 'ENOSPC', 'ENOMEM']);

/** Wrap whatever an operation threw into MapFullError / MapOpError. */
export function mapError(map: string, op: MapOp, err: unknown): MapOpError {
  if (err instanceof MapOpError) return err;
  const e = err as Partial<NativeError>;
  const code = typeof e?.code === 'string' ? e.code : 'EUNKNOWN';
  if ((op === 'update' || op === 'updateBatch') && fullCodes.has(code)) return new MapFullError(map, op, code, { cause: err });
  return new MapOpError(map, op, code, e?.message ?? String(err), { cause: err });
}

// ---------------------------------------------------------------- kernel maps

/** Batch syscalls not supported by this kernel or map type: fall back to one entry at a time. */
const noBatchCodes = new Set(['EINVAL', 'ENOTSUPP', 'EOPNOTSUPP', 'ENOTSUP']);

export interface BpfMapWriterOptions {
  /** Entries per batch syscall. */
  batchSize?: number;
}

export class BpfMapWriter implements MapWriter {
  private readonly batchSize: number;
  private readonly noBatch = new Set<string>();

  constructor(
    private readonly maps: ReadonlyMap<string, BpfMap>,
    opts: BpfMapWriterOptions = {},
  ) {
    this.batchSize = opts.batchSize ?? 4096;
  }

  private map(name: string, op: MapOp): BpfMap {
    const m = this.maps.get(name);
    if (!m) throw new MapOpError(name, op, 'ENOENT', 'map not open');
    return m;
  }

  async update(name: string, key: Buffer, value: Buffer): Promise<void> {
    try {
      await this.map(name, 'update').update(key, value);
    } catch (err) {
      throw mapError(name, 'update', err);
    }
  }

  async delete(name: string, key: Buffer): Promise<boolean> {
    try {
      return await this.map(name, 'delete').delete(key);
    } catch (err) {
      throw mapError(name, 'delete', err);
    }
  }

  async updateBatch(name: string, entries: readonly MapEntry[]): Promise<void> {
    await this.updatePacked(name, { keys: Buffer.concat(entries.map((e) => e.key)), values: Buffer.concat(entries.map((e) => e.value)), count: entries.length });
  }

  async updatePacked(name: string, batch: PackedEntries): Promise<void> {
    const m = this.map(name, 'updateBatch');
    if (batch.count === 0) return;
    const ks = batch.keys.length / batch.count;
    const vs = batch.values.length / batch.count;
    for (let i = 0; i < batch.count; i += this.batchSize) {
      const n = Math.min(this.batchSize, batch.count - i);
      const keys = batch.keys.subarray(i * ks, (i + n) * ks);
      const values = batch.values.subarray(i * vs, (i + n) * vs);
      if (!this.noBatch.has(name) && n > 1) {
        try {
          await m.updateBatch(keys, values, n);
          continue;
        } catch (err) {
          if (!noBatchCodes.has((err as NativeError).code)) throw mapError(name, 'updateBatch', err);
          // Rewriting entries a partial batch already wrote is harmless.
          this.noBatch.add(name);
        }
      }
      for (const e of unpack({ keys, values, count: n })) await this.update(name, e.key, e.value);
    }
  }

  async deleteBatch(name: string, keys: readonly Buffer[]): Promise<number> {
    const m = this.map(name, 'deleteBatch');
    let n = 0;
    for (let i = 0; i < keys.length; i += this.batchSize) {
      const chunk = keys.slice(i, i + this.batchSize);
      if (this.noBatch.has(name) || chunk.length === 1) {
        for (const k of chunk) if (await this.delete(name, k)) n++;
        continue;
      }
      try {
        n += await m.deleteBatch(Buffer.concat(chunk), chunk.length);
      } catch (err) {
        if (!noBatchCodes.has((err as NativeError).code)) throw mapError(name, 'deleteBatch', err);
        this.noBatch.add(name);
        for (const k of chunk) if (await this.delete(name, k)) n++;
      }
    }
    return n;
  }

  async entries(name: string): Promise<MapEntry[]> {
    const m = this.map(name, 'entries');
    try {
      if (!this.noBatch.has(name)) {
        try {
          return await readBatched(m, this.batchSize);
        } catch (err) {
          if (!noBatchCodes.has((err as NativeError).code)) throw err;
          this.noBatch.add(name);
        }
      }
      return await readByKey(m);
    } catch (err) {
      throw mapError(name, 'entries', err);
    }
  }
}

async function readBatched(m: BpfMap, batchSize: number): Promise<MapEntry[]> {
  const { keySize } = m.info;
  const valueSize = m.valueBufferSize;
  const out: MapEntry[] = [];
  let cursor: Buffer | null = null;
  let count = batchSize;
  for (;;) {
    let page;
    try {
      page = await m.lookupBatch(cursor, count);
    } catch (err) {
      // A hash bucket holds more entries than one page: the kernel asks for a bigger page.
      if ((err as NativeError).code === 'ENOSPC' && count < 1 << 20) {
        count *= 2;
        continue;
      }
      throw err;
    }
    for (let i = 0; i < page.count; i++) {
      out.push({
        key: Buffer.from(page.keys.subarray(i * keySize, (i + 1) * keySize)),
        value: Buffer.from(page.values.subarray(i * valueSize, (i + 1) * valueSize)),
      });
    }
    if (!page.next) return out;
    cursor = page.next;
  }
}

async function readByKey(m: BpfMap): Promise<MapEntry[]> {
  const out: MapEntry[] = [];
  let key = await m.nextKey(null);
  while (key) {
    const value = await m.lookup(key);
    // An entry deleted between nextKey and lookup is simply gone.
    if (value) out.push({ key, value });
    key = await m.nextKey(key);
  }
  return out;
}

// ---------------------------------------------------------------- fake

export interface FakeOp {
  op: MapOp;
  map: string;
  keys: Buffer[];
  values?: Buffer[];
}

export interface FakeMapSpec {
  keySize: number;
  valueSize: number;
  /** Number of entries before an update of a new key fails with E2BIG. */
  maxEntries?: number;
}

/**
 * In-memory maps keyed by the hex of the encoded key. Like the kernel's hash
 * maps it refuses new keys past maxEntries (E2BIG) and applies a batch entry by
 * entry up to the first failure. `failWith` injects a failure: it sees every
 * operation before it runs and may return the error to throw (a NativeError-like
 * object with `code`). `ops` records every operation that ran (reads included
 * only when `logReads` is set).
 */
export class FakeMapWriter implements MapWriter {
  readonly ops: FakeOp[] = [];
  logReads = false;
  failWith: ((op: FakeOp) => Error | undefined) | undefined;
  private readonly data = new Map<string, Map<string, Buffer>>();

  constructor(private readonly specs: Readonly<Record<string, FakeMapSpec>>) {
    for (const name of Object.keys(specs)) this.data.set(name, new Map());
  }

  private table(name: string, op: MapOp): { spec: FakeMapSpec; rows: Map<string, Buffer> } {
    const rows = this.data.get(name);
    const spec = this.specs[name];
    if (!rows || !spec) throw new MapOpError(name, op, 'ENOENT', 'map not open');
    return { spec, rows };
  }

  private begin(op: FakeOp): void {
    const err = this.failWith?.(op);
    if (err) throw mapError(op.map, op.op, err);
    if (op.op !== 'entries' || this.logReads) this.ops.push(op);
  }

  private put(name: string, op: MapOp, key: Buffer, value: Buffer): void {
    const { spec, rows } = this.table(name, op);
    if (key.length !== spec.keySize || value.length !== spec.valueSize) {
      throw new MapOpError(name, op, 'EINVAL', `key/value size ${key.length}/${value.length}, map has ${spec.keySize}/${spec.valueSize}`);
    }
    const k = key.toString('hex');
    if (!rows.has(k) && spec.maxEntries !== undefined && rows.size >= spec.maxEntries) throw new MapFullError(name, op, 'E2BIG');
    rows.set(k, Buffer.from(value));
  }

  async update(name: string, key: Buffer, value: Buffer): Promise<void> {
    this.table(name, 'update');
    this.begin({ op: 'update', map: name, keys: [key], values: [value] });
    this.put(name, 'update', key, value);
  }

  async delete(name: string, key: Buffer): Promise<boolean> {
    const { rows } = this.table(name, 'delete');
    this.begin({ op: 'delete', map: name, keys: [key] });
    return rows.delete(key.toString('hex'));
  }

  async updateBatch(name: string, entries: readonly MapEntry[]): Promise<void> {
    this.table(name, 'updateBatch');
    this.begin({ op: 'updateBatch', map: name, keys: entries.map((e) => e.key), values: entries.map((e) => e.value) });
    for (const e of entries) this.put(name, 'updateBatch', e.key, e.value);
  }

  /** Recorded as the updateBatch it stands for, one key and value per entry. */
  async updatePacked(name: string, batch: PackedEntries): Promise<void> {
    await this.updateBatch(name, unpack(batch));
  }

  async deleteBatch(name: string, keys: readonly Buffer[]): Promise<number> {
    const { rows } = this.table(name, 'deleteBatch');
    this.begin({ op: 'deleteBatch', map: name, keys: [...keys] });
    let n = 0;
    for (const k of keys) if (rows.delete(k.toString('hex'))) n++;
    return n;
  }

  async entries(name: string): Promise<MapEntry[]> {
    const { rows } = this.table(name, 'entries');
    this.begin({ op: 'entries', map: name, keys: [] });
    return [...rows].map(([k, v]) => ({ key: Buffer.from(k, 'hex'), value: Buffer.from(v) }));
  }

  /** Current content, sorted by key bytes (stable goldens). */
  snapshot(name: string): MapEntry[] {
    const { rows } = this.table(name, 'entries');
    return [...rows.keys()].sort().map((k) => ({ key: Buffer.from(k, 'hex'), value: Buffer.from(rows.get(k)!) }));
  }

  size(name: string): number {
    return this.table(name, 'entries').rows.size;
  }
}
