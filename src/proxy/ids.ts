// Frontend (service) and backend ids: u32, never 0 (0 means "none" in the
// maps). An id stays with its key while the key exists, so conntrack entries,
// which remember ids, keep matching across syncs and agent restarts (ids are
// restored from the pinned maps on start). New keys get fresh ids; a released
// id is handed out again only once the fresh ones run out, so a stale
// conntrack entry is unlikely to meet a new frontend under its old id.

export class IdsExhaustedError extends Error {
  constructor(readonly what: string) {
    super(`no free ${what} id left`);
    this.name = 'IdsExhaustedError';
  }
}

export class IdAllocator {
  private readonly byKey = new Map<string, number>();
  /**
   * Id -> key. Ids are dense from 1 (fresh ones count up, restored ones are
   * what an earlier agent counted), so an array indexed by id is a third of
   * a Map's size (100k backends); a far-off id makes it sparse, which V8
   * stores as a dictionary: still correct.
   */
  private readonly byId: Array<string | undefined> = [];
  private readonly released: number[] = []; // FIFO: the longest released first
  private next = 1;

  constructor(
    readonly what: string,
    private readonly max = 0xffffffff,
  ) {}

  get size(): number {
    return this.byKey.size;
  }

  get(key: string): number | undefined {
    return this.byKey.get(key);
  }

  keyOf(id: number): string | undefined {
    return this.byId[id];
  }

  keys(): IterableIterator<string> {
    return this.byKey.keys();
  }

  /** The key's id, allocating one if it has none. */
  allocate(key: string): number {
    const have = this.byKey.get(key);
    if (have !== undefined) return have;
    let id: number | undefined;
    while (this.next <= this.max && this.byId[this.next] !== undefined) this.next++;
    if (this.next <= this.max) id = this.next++;
    else {
      while (this.released.length > 0) {
        const r = this.released.shift()!;
        if (this.byId[r] === undefined) {
          id = r;
          break;
        }
      }
    }
    if (id === undefined) throw new IdsExhaustedError(this.what);
    this.byKey.set(key, id);
    this.byId[id] = key;
    return id;
  }

  /**
   * Claim `id` for `key` (found in the maps on start). False, and nothing
   * changes, when the key already has another id or the id belongs to another
   * key: the caller then treats that map entry as stale.
   */
  restore(key: string, id: number): boolean {
    if (!Number.isInteger(id) || id < 1 || id > this.max) return false;
    const haveId = this.byKey.get(key);
    const haveKey = this.byId[id];
    if (haveId !== undefined || haveKey !== undefined) return haveId === id && haveKey === key;
    this.byKey.set(key, id);
    this.byId[id] = key;
    if (id >= this.next) this.next = id + 1;
    return true;
  }

  release(key: string): void {
    const id = this.byKey.get(key);
    if (id === undefined) return;
    this.byKey.delete(key);
    this.byId[id] = undefined;
    this.released.push(id);
  }

  /** Release every key not in `keep` (a Set, or the desired state's map itself: no copy of 100k keys). */
  retain(keep: { has(key: string): boolean }): void {
    // Deleting from a Map while iterating it is well defined: entries not yet visited stay, deleted ones are skipped.
    for (const key of this.byKey.keys()) if (!keep.has(key)) this.release(key);
  }
}
