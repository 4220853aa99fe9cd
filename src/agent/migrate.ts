// Upgrading across a map layout change without dropping flows.
//
// Map names carry a version suffix (abi.h); a layout change bumps it, so the
// new agent's object creates new, empty maps next to the ones the old agent
// pinned, while the old programs stay attached to every device and keep
// serving from the old maps. This module carries their content over, in the
// agent's start-up order:
//
//   plan         before the new object is loaded: find older pins, check each
//                has the layout its converter expects; refuse pins of a newer
//                or unknown version (a downgrade must not silently drop their
//                state); note which program every device runs now;
//   initial      after load, before the syncer restores ids: copy backends
//                (so ids survive and the first sync writes only what differs)
//                and conntrack;
//   beforeSwitch right before the new programs are attached: copy conntrack
//                again, quiesce the old datapath (empty the old backend map: v1
//                then drops forward packets instead of creating flows a copy
//                would miss; replies are still translated), copy once more;
//                these passes convert only entries that changed since the
//                previous one, so the quiesced time stays short;
//   (attach)     tc replace at kbp's handle/priority: atomic per device;
//   afterSwitch  check no device still runs an old program, copy what old
//                programs created meanwhile, add the old counters, unpin the
//                old maps.
//
// Any failure is logged and thrown before the old maps are unpinned; after the
// quiesce it also puts the old backends back, so the old datapath keeps
// working and the next start migrates again. The first pass never overwrites
// an entry of a new map with an older one (an interrupted earlier run may have
// made the new maps the current truth); until the switch only the migration
// writes the new flow maps, and after it only entries they lack are added.

import fs from 'node:fs/promises';
import path from 'node:path';
import * as abi from '../maps/abi.js';
import { LEGACY_MAPS, parseMapName, type ConvertContext, type LegacyMap } from '../maps/legacy.js';
import { BpfMapWriter, type MapEntry } from '../maps/writer.js';
import type { BpfMap, Native, NativeError } from '../native/binding.js';
import type { Logger } from '../log.js';

const BPF_NOEXIST = 1;

/** Every map this agent's datapath uses (each KBP_MAP_* of abi.h), by family: the version it expects. */
const CURRENT = new Map(
  abi.DATAPATH_MAPS.map((name) => {
    const p = parseMapName(name);
    if (!p) throw new Error(`abi: map name ${name} is not kbp_<family>_v<N>`);
    return [p.family, { name, version: p.version }] as const;
  }),
);

export class MigrationError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MigrationError';
  }
}

export interface CopyCounts {
  map: string;
  into: string;
  /** Entries read from the old map. */
  scanned: number;
  /** Written where the new map had no entry. */
  inserted: number;
  /** Written over an earlier copy: the old entry changed since (or, in the first pass, is more recent). */
  updated: number;
  /** Unchanged since the previous pass (or, after the switch, changed but owned by the new datapath now). */
  unchanged: number;
  /** Left behind by the converter (e.g. a reply entry whose frontend is gone). */
  skipped: number;
}

interface Found {
  legacy: LegacyMap;
  map: BpfMap;
}

/** Opens the map of `name` in the new object (obj.map). */
export type MapOf = (name: string) => BpfMap;

type Phase = 'initial' | 'before quiesce' | 'before switch' | 'after switch';

const goneCodes = new Set(['ENOENT', 'ENODEV', 'EINVAL', 'ENXIO']);
const ms = (since: number) => Number((performance.now() - since).toFixed(1));

export class MapMigration {
  private quiesced: Array<{ found: Found; entries: MapEntry[] }> = [];
  /** Per old flow map: hex key -> its value as last copied (later passes skip what is unchanged). */
  private readonly copied = new Map<string, Map<string, Buffer>>();
  private done = false;

  private constructor(
    private readonly n: Pick<Native, 'listLinks' | 'tcQuery'>,
    private readonly bpffs: string,
    private readonly found: Found[],
    /** ifindex -> the kbp program each device ran before this agent loaded anything. */
    private readonly oldHooks: ReadonlyMap<number, { device: string; progId: number }>,
    private readonly log: Logger,
  ) {}

  /** Whether older maps were found (everything else is a no-op otherwise). */
  get pending(): boolean {
    return this.found.length > 0 && !this.done;
  }

  /** The old pins being migrated, e.g. ["kbp_backend_v1", "kbp_ct4_v1"]. */
  get oldMaps(): string[] {
    return this.found.map((f) => f.legacy.name);
  }

  /**
   * Look at the pins under bpffs before anything is loaded. Throws
   * MigrationError, naming every offending pin and the way out, when a pin is
   * of a newer or unknown version, has no known migration, or does not have
   * the layout its converter expects.
   */
  static async plan(n: Pick<Native, 'openPinnedMap' | 'listLinks' | 'tcQuery'>, bpffs: string, log: Logger, legacy: readonly LegacyMap[] = LEGACY_MAPS): Promise<MapMigration> {
    let names: string[];
    try {
      names = (await fs.readdir(bpffs)).filter((f) => f.startsWith('kbp_')).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      names = [];
    }
    const problems: string[] = [];
    const found: Found[] = [];
    try {
      for (const name of names) {
        const p = parseMapName(name);
        const cur = p && CURRENT.get(p.family);
        if (!p || !cur) {
          problems.push(`${name} is not a map this agent knows (pinned by a newer kbp?)`);
          continue;
        }
        if (p.version === cur.version) continue;
        if (p.version > cur.version) {
          problems.push(`${name} is newer than this agent's ${cur.name} (ABI ${abi.KBP_ABI_VERSION}): a downgrade would drop its entries`);
          continue;
        }
        const l = legacy.find((x) => x.name === name && x.into === cur.name);
        if (!l) {
          problems.push(`${name} is older than ${cur.name} and no migration from it is known`);
          continue;
        }
        const map = await n.openPinnedMap(path.join(bpffs, name));
        const i = map.info;
        const want = { type: l.type, keySize: l.keySize, valueSize: l.valueSize, maxEntries: l.maxEntries ?? i.maxEntries };
        const got = { type: i.type, keySize: i.keySize, valueSize: i.valueSize, maxEntries: i.maxEntries };
        if (JSON.stringify(want) !== JSON.stringify(got)) {
          map.close();
          problems.push(`${name} does not have the layout of ABI v${p.version} (${JSON.stringify(got)}, expected ${JSON.stringify(want)})`);
          continue;
        }
        found.push({ legacy: l, map });
      }
      if (problems.length) {
        throw new MigrationError(
          `cannot take over the maps pinned under ${bpffs}: ${problems.join('; ')}. ` +
            `Nothing was changed. Run the kbp version that pinned them, or \`kbp detach --bpffs ${bpffs}\` to start with empty maps (established flows are balanced again)`,
        );
      }
      const oldHooks = new Map<number, { device: string; progId: number }>();
      if (found.length) {
        for (const link of await n.listLinks()) {
          const progId = await n.tcQuery({ ifindex: link.ifindex }).catch((err: NativeError) => {
            if (goneCodes.has(err.code)) return null;
            throw err;
          });
          if (progId !== null) oldHooks.set(link.ifindex, { device: link.name, progId });
        }
        log.info('older maps pinned: migrating them', { bpffs, maps: found.map((f) => `${f.legacy.name}->${f.legacy.into}`).join(','), devicesOnOldPrograms: oldHooks.size });
      }
      return new MapMigration(n, bpffs, found, oldHooks, log);
    } catch (err) {
      for (const f of found) f.map.close();
      throw err;
    }
  }

  /** After the new object is loaded, before the syncer reads the maps: backends and flows. */
  async initial(mapOf: MapOf): Promise<void> {
    if (!this.pending) return;
    await this.step('initial copy', () => this.carry(mapOf, 'initial'));
  }

  /** Right before the new programs are attached: copy flows, quiesce the old datapath, copy flows again. */
  async beforeSwitch(mapOf: MapOf): Promise<void> {
    if (!this.pending) return;
    await this.step('copy before quiesce', () => this.carry(mapOf, 'before quiesce'));
    await this.step('quiesce old datapath', async () => {
      if (!this.found.some((x) => x.legacy.quiesce) && this.found.some((x) => x.legacy.kind === 'flows')) {
        this.log.warn('no old map to quiesce the old datapath with: flows opened in the last milliseconds before the switch may be balanced again');
      }
      for (const f of this.found.filter((x) => x.legacy.quiesce)) {
        const w = writerOf(f.map, f.legacy.name);
        const entries = await w.entries(f.legacy.name);
        // Remembered first: abort() puts them back if anything below fails.
        this.quiesced.push({ found: f, entries });
        const deleted = await w.deleteBatch(f.legacy.name, entries.map((e) => e.key));
        this.log.info('old datapath quiesced: its forward path drops until the switch', { map: f.legacy.name, deleted });
      }
    });
    await this.step('copy before switch', () => this.carry(mapOf, 'before switch'));
  }

  /**
   * After the new programs are attached: fails (and aborts) when a device
   * still runs a program that ran before, else copies the last flows, adds the
   * counters and unpins the old maps.
   */
  async afterSwitch(mapOf: MapOf): Promise<void> {
    if (!this.pending) return;
    await this.step('check switch', async () => {
      const still: string[] = [];
      for (const [ifindex, old] of this.oldHooks) {
        const now = await this.n.tcQuery({ ifindex }).catch((err: NativeError) => {
          if (goneCodes.has(err.code)) return null;
          throw err;
        });
        if (now === old.progId) still.push(old.device);
      }
      if (still.length) {
        throw new MigrationError(
          `devices still run the old datapath after attach: ${still.join(', ')} (not matched by --pod-devices/--node-devices, or attach failed); ` +
            `the old maps stay pinned and serve them`,
        );
      }
      this.log.info('every device switched to the new programs', { devices: this.oldHooks.size });
    });
    await this.step('copy after switch', () => this.carry(mapOf, 'after switch'));
    await this.step('unpin old maps', async () => {
      for (const f of this.found) {
        await fs.unlink(path.join(this.bpffs, f.legacy.name));
        f.map.close();
      }
      this.log.info('old maps unpinned', { maps: this.oldMaps.join(','), bpffs: this.bpffs });
    });
    this.quiesced = [];
    this.done = true;
  }

  /** Undo the quiesce: the old datapath translates again (when the switch did not happen). */
  async abort(): Promise<void> {
    for (const { found, entries } of this.quiesced.splice(0)) {
      try {
        await writerOf(found.map, found.legacy.name).updateBatch(found.legacy.name, entries);
        this.log.warn('old datapath restored: its entries are back', { map: found.legacy.name, entries: entries.length });
      } catch (err) {
        this.log.error('cannot restore the old datapath: its forward path keeps dropping until an agent takes over', { map: found.legacy.name, err });
      }
    }
  }

  close(): void {
    for (const f of this.found) f.map.close();
  }

  private async step(what: string, fn: () => Promise<void>): Promise<void> {
    const start = performance.now();
    try {
      await fn();
    } catch (err) {
      this.log.error('migration failed; the old maps stay pinned', { step: what, err });
      await this.abort();
      throw err instanceof MigrationError ? err : new MigrationError(`map migration failed at ${what}: ${(err as Error).message}`, { cause: err });
    }
    this.log.info('migration step done', { step: what, ms: ms(start) });
  }

  private async carry(mapOf: MapOf, phase: Phase): Promise<void> {
    const ctx = await convertContext(mapOf);
    for (const f of this.found) {
      const { kind } = f.legacy;
      if (kind === 'objects' && phase !== 'initial') continue;
      if (kind === 'counters') {
        if (phase === 'after switch') await this.addCounters(f, mapOf(f.legacy.into));
        continue;
      }
      let copied = this.copied.get(f.legacy.name);
      if (!copied) this.copied.set(f.legacy.name, (copied = new Map()));
      const c = await copyEntries(f, mapOf(f.legacy.into), ctx, copied, phase);
      this.log.info('entries copied', { phase, ...c });
    }
  }

  private async addCounters(f: Found, into: BpfMap): Promise<void> {
    const slots = f.map.info.maxEntries;
    if (into.valueBufferSize !== f.map.valueBufferSize) throw new MigrationError(`${f.legacy.name}: per-CPU value size ${f.map.valueBufferSize} differs from ${f.legacy.into}'s ${into.valueBufferSize}`);
    let packets = 0n;
    for (let i = 0; i < slots; i++) {
      const key = abi.statKey(i);
      const [old, cur] = await Promise.all([f.map.lookup(key), into.lookup(key)]);
      if (!old || !cur) continue;
      // Both are nCpus records of {packets, bytes} (u64 each); added CPU by CPU.
      for (let at = 0; at + 8 <= old.length; at += 8) {
        const x = old.readBigUInt64LE(at);
        if (at % 16 === 0) packets += x;
        cur.writeBigUInt64LE(cur.readBigUInt64LE(at) + x, at);
      }
      await into.update(key, cur);
    }
    this.log.info('counters added', { map: f.legacy.name, into: f.legacy.into, slots, packets: packets.toString() });
  }
}

function writerOf(map: BpfMap, name: string): BpfMapWriter {
  return new BpfMapWriter(new Map([[name, map]]));
}

async function convertContext(mapOf: MapOf): Promise<ConvertContext> {
  const entries = await writerOf(mapOf(abi.KBP_MAP_REVNAT), abi.KBP_MAP_REVNAT).entries(abi.KBP_MAP_REVNAT);
  return { revnat: new Map(entries.map((e) => [abi.revnatKey.decode(e.key).svc_id, abi.revnatValue.decode(e.value)])) };
}

/**
 * Old entries converted into `into`. `copied` remembers each key's old value
 * as last carried, so a later pass converts only what changed:
 * - initial: where the new map has no entry, insert; where it has one, write
 *   over it only if the old entry is more recent (legacy.newer);
 * - before the switch: only the migration writes the new flow maps, so new
 *   and changed entries are written as they are;
 * - after the switch: the new datapath owns the new maps: only keys never
 *   carried are inserted, and only where still absent.
 */
async function copyEntries(f: Found, into: BpfMap, ctx: ConvertContext, copied: Map<string, Buffer>, phase: Phase): Promise<CopyCounts> {
  const { legacy } = f;
  const old = await writerOf(f.map, legacy.name).entries(legacy.name);
  const w = writerOf(into, legacy.into);
  const existing = phase === 'initial' ? new Map((await w.entries(legacy.into)).map((e) => [e.key.toString('hex'), e.value])) : undefined;
  const inserts: MapEntry[] = [];
  const updates: MapEntry[] = [];
  let skipped = 0;
  let unchanged = 0;
  for (const e of old) {
    const hex = e.key.toString('hex');
    const last = copied.get(hex);
    if (last?.equals(e.value) || (last && phase === 'after switch')) {
      unchanged++;
      continue;
    }
    const c = legacy.convert!(e.key, e.value, ctx);
    copied.set(hex, e.value);
    if (!c) {
      skipped++;
      continue;
    }
    const cur = existing?.get(c.key.toString('hex'));
    if (phase === 'initial' ? !cur : !last) inserts.push(c);
    else if (phase !== 'initial' || (legacy.kind === 'flows' && legacy.newer?.(c.value, cur!))) updates.push(c);
    else unchanged++;
  }
  // Before the switch nobody else writes the new flow maps: plain writes.
  const inserted = phase === 'before quiesce' || phase === 'before switch' ? (await w.updateBatch(legacy.into, inserts), inserts.length) : await insertAbsent(into, legacy.into, inserts);
  if (updates.length) await w.updateBatch(legacy.into, updates);
  return { map: legacy.name, into: legacy.into, scanned: old.length, inserted, updated: updates.length, unchanged, skipped };
}

/** BPF_NOEXIST writes; an entry the datapath created meanwhile (EEXIST) stays as it is. */
async function insertAbsent(map: BpfMap, name: string, entries: readonly MapEntry[]): Promise<number> {
  const CHUNK = 4096;
  let n = 0;
  for (let i = 0; i < entries.length; i += CHUNK) {
    const chunk = entries.slice(i, i + CHUNK);
    try {
      n += await map.updateBatch(Buffer.concat(chunk.map((e) => e.key)), Buffer.concat(chunk.map((e) => e.value)), chunk.length, BPF_NOEXIST);
      continue;
    } catch (err) {
      if ((err as NativeError).code !== 'EEXIST') throw new MigrationError(`writing ${name}: ${(err as Error).message}`, { cause: err });
    }
    // A batch stops at the first existing key: go entry by entry for this
    // chunk (what the batch wrote before stopping counts once, as ours).
    for (const e of chunk) {
      try {
        await map.update(e.key, e.value, BPF_NOEXIST);
        n++;
      } catch (err) {
        if ((err as NativeError).code !== 'EEXIST') throw new MigrationError(`writing ${name}: ${(err as Error).message}`, { cause: err });
        if ((await map.lookup(e.key))?.equals(e.value)) n++;
      }
    }
  }
  return n;
}
