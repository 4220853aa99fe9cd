// `--map-sizes KEY=N[,KEY=N]`: capacities of the datapath maps, set before the
// BPF object is loaded (libbpf's bpf_map__set_max_entries, through the addon's
// openObject maxEntries). Keys name what a map holds, not its versioned name,
// so deploy overlays survive an ABI bump.
//
// A pinned map keeps the size it was created with: libbpf reuses a pin only
// when type, key/value size, flags and max_entries all match, and otherwise
// fails the load with a bare EINVAL. The agent therefore compares the sizes it
// is asked for (the flag, else the defaults) with the pins first and refuses
// to start with a message that names the map, both sizes and the way out
// (`kbp detach` drops the pins, and with them conntrack: established flows are
// balanced again).

import path from 'node:path';
import * as abi from '../maps/abi.js';
import type { Native, NativeError } from '../native/binding.js';

/** Flag key -> [map name, default capacity]. */
export const MAP_SIZE_KEYS = {
  services: [abi.KBP_MAP_SERVICES, abi.KBP_SERVICES_MAX],
  backends: [abi.KBP_MAP_BACKENDS, abi.KBP_BACKENDS_MAX],
  revnat: [abi.KBP_MAP_REVNAT, abi.KBP_REVNAT_MAX],
  conntrack: [abi.KBP_MAP_CT, abi.KBP_CT_MAX],
  snat: [abi.KBP_MAP_SNAT, abi.KBP_SNAT_MAX],
  affinity: [abi.KBP_MAP_AFFINITY, abi.KBP_AFFINITY_MAX],
  sockrev: [abi.KBP_MAP_SOCK_REVNAT, abi.KBP_SOCK_REVNAT_MAX],
} as const satisfies Record<string, readonly [string, number]>;

export type MapSizeKey = keyof typeof MAP_SIZE_KEYS;

// The kernel caps hash maps at 2^31 - 1 entries; an LRU map needs at least
// one entry per possible CPU to be usable, so tiny sizes are left to the kernel
// to refuse (its error names the map).
const MAX_ENTRIES_LIMIT = 2 ** 31 - 1;

/** Parses "conntrack=4096,snat=1024" into map name -> max entries (only the keys given). */
export function parseMapSizes(s: string, flag = '--map-sizes'): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of s.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([a-z]+)=(\d+)$/.exec(part);
    if (!m) throw new Error(`${flag}: expected KEY=N[,KEY=N], got ${JSON.stringify(part)}`);
    const key = m[1]!;
    if (!Object.hasOwn(MAP_SIZE_KEYS, key)) throw new Error(`${flag}: unknown key ${JSON.stringify(key)} (one of ${Object.keys(MAP_SIZE_KEYS).join(', ')})`);
    const n = Number(m[2]);
    if (!Number.isSafeInteger(n) || n < 1 || n > MAX_ENTRIES_LIMIT) throw new Error(`${flag}: ${key}=${m[2]} is out of range 1..${MAX_ENTRIES_LIMIT}`);
    const [name] = MAP_SIZE_KEYS[key as MapSizeKey];
    if (out[name] !== undefined) throw new Error(`${flag}: ${key} given twice`);
    out[name] = n;
  }
  return out;
}

/** Every sized map's capacity: the flag's where given, else the default. */
export function effectiveMapSizes(given: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, def] of Object.values(MAP_SIZE_KEYS)) out[name] = given[name] ?? def;
  return out;
}

export class MapSizeMismatchError extends Error {
  constructor(readonly mismatches: Array<{ key: string; map: string; pinned: number; wanted: number }>, bpffs: string) {
    super(
      `pinned maps under ${bpffs} have other sizes than this agent would load: ` +
        mismatches.map((m) => `${m.key} (${m.map}) is pinned with ${m.pinned} entries, wanted ${m.wanted}`).join('; ') +
        `. A pinned map cannot be resized: start with --map-sizes ${mismatches.map((m) => `${m.key}=${m.pinned}`).join(',')} to keep the pins, ` +
        `or run \`kbp detach --bpffs ${bpffs}\` first (drops conntrack: established flows are balanced again)`,
    );
    this.name = 'MapSizeMismatchError';
  }
}

/** Throws MapSizeMismatchError when a map pinned under bpffs has another capacity than `sizes` asks for. */
export async function checkPinnedSizes(n: Native, bpffs: string, sizes: Record<string, number>): Promise<void> {
  const mismatches: MapSizeMismatchError['mismatches'] = [];
  for (const [key, [name]] of Object.entries(MAP_SIZE_KEYS)) {
    const wanted = sizes[name];
    if (wanted === undefined) continue;
    let pinned: number;
    try {
      const m = await n.openPinnedMap(path.join(bpffs, name));
      pinned = m.info.maxEntries;
      m.close();
    } catch (err) {
      if ((err as NativeError).code === 'ENOENT') continue; // not pinned yet: created at load
      throw err;
    }
    if (pinned !== wanted) mismatches.push({ key, map: name, pinned, wanted });
  }
  if (mismatches.length) throw new MapSizeMismatchError(mismatches, bpffs);
}
