// Decoded dumps of pinned kbp maps, read with `bpftool -j map dump pinned`
// (so it works while no agent runs, and reads exactly what the datapath sees)
// and decoded through the project's own codecs (src/maps).

import { readdir } from 'node:fs/promises';
import path from 'node:path';
import * as abi from '../maps/abi.js';
import { formatMap } from '../maps/format.js';
import { run } from './netns.js';

interface BpftoolEntry {
  key: string[];
  value?: string[];
  values?: { cpu: number; value: string[] }[];
}

const bytes = (hex: string[]): Buffer => Buffer.from(hex.map((h) => parseInt(h, 16)));

function ctFlagNames(flags: number): string {
  const out: string[] = [];
  if (flags & abi.KBP_CT_F_SEEN_REPLY) out.push('seen-reply');
  if (flags & abi.KBP_CT_F_CLOSING) out.push('closing');
  return out.join(',') || '-';
}

/** The raw entries of a pinned hash map (older layouts, decoded by the caller). */
export async function pinnedEntries(pin: string): Promise<Array<{ key: Buffer; value: Buffer }>> {
  const { stdout } = await run('bpftool', ['-j', 'map', 'dump', 'pinned', pin]);
  return (JSON.parse(stdout) as BpftoolEntry[]).map((e) => ({ key: bytes(e.key), value: bytes(e.value ?? []) }));
}

/** One line per entry, sorted; per-CPU counters summed and zero counters left out. */
export async function dumpPinnedMap(pin: string): Promise<string[]> {
  const name = path.basename(pin);
  const { stdout } = await run('bpftool', ['-j', 'map', 'dump', 'pinned', pin]);
  const entries = JSON.parse(stdout) as BpftoolEntry[];
  switch (name) {
    case abi.KBP_MAP_SERVICES:
    case abi.KBP_MAP_BACKENDS:
    case abi.KBP_MAP_REVNAT:
      return formatMap(
        name,
        entries.map((e) => ({ key: bytes(e.key), value: bytes(e.value ?? []) })),
      );
    case abi.KBP_MAP_CT:
      return entries
        .map((e) => {
          const k = abi.ctKey.decode(bytes(e.key));
          const v = abi.ctValue.decode(bytes(e.value ?? []));
          const dir = k.dir === abi.KBP_CT_FORWARD ? 'forward' : 'reply  ';
          return (
            `${dir} ${k.saddr}:${k.sport} -> ${k.daddr}:${k.dport}/${abi.protoName(k.proto)} ` +
            `-> backend=${v.backend_id} svc=${v.svc_id} flags=${ctFlagNames(v.flags)}`
          );
        })
        .sort();
    case abi.KBP_MAP_STATS:
      return entries
        .map((e) => {
          const index = bytes(e.key).readUInt32LE(0);
          let packets = 0n;
          let octets = 0n;
          for (const c of e.values ?? []) {
            const s = abi.statValue.decode(bytes(c.value));
            packets += s.packets;
            octets += s.bytes;
          }
          return { index, packets, octets };
        })
        .filter((s) => s.packets > 0n)
        .sort((a, b) => a.index - b.index)
        .map((s) => `${abi.STAT_NAMES[s.index] ?? `stat${s.index}`}: ${s.packets} packets, ${s.octets} bytes`);
    default:
      return entries.map((e) => `${e.key.join(' ')} -> ${(e.value ?? []).join(' ')}`);
  }
}

/** The kbp_* pins of a bpffs folder. */
export async function kbpPins(bpffs: string): Promise<string[]> {
  return (await readdir(bpffs)).filter((f) => f.startsWith('kbp_')).sort();
}
