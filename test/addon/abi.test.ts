// layout() and constants() against bpf/include/kbp/abi.h itself: the header
// is parsed here independently (struct fields and their C types, #defines,
// enum members), so a struct, field or constant added to abi.h but not
// exported by the addon, or exported wrongly, fails this test.
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { native } from '../../src/native/binding.js';
import { projectRoot } from '../../src/paths.js';

const header = readFileSync(path.join(projectRoot, 'bpf', 'include', 'kbp', 'abi.h'), 'utf8');
const code = header.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');

const TYPE_SIZES: Record<string, number> = { __u8: 1, __u16: 2, __be16: 2, __u32: 4, __be32: 4, __u64: 8, __be64: 8 };

interface ParsedField {
  name: string;
  size: number;
}

function parseStructs(): Map<string, ParsedField[]> {
  const structs = new Map<string, ParsedField[]>();
  for (const m of code.matchAll(/struct\s+(kbp_\w+)\s*\{([^}]*)\};/g)) {
    const fields: ParsedField[] = [];
    for (const decl of (m[2] as string).split(';').map((s) => s.trim()).filter(Boolean)) {
      const f = /^(\w+)\s+(\w+)(?:\[(\d+)\])?$/.exec(decl);
      if (!f) throw new Error(`cannot parse field "${decl}" of ${m[1]}`);
      const typeSize = TYPE_SIZES[f[1] as string];
      if (typeSize === undefined) throw new Error(`unknown type ${f[1]} in ${m[1]}`);
      fields.push({ name: f[2] as string, size: typeSize * (f[3] ? Number(f[3]) : 1) });
    }
    structs.set(m[1] as string, fields);
  }
  return structs;
}

function evalConstant(expr: string): number | string {
  const s = /^"([^"]*)"$/.exec(expr);
  if (s) return s[1] as string;
  const arith = expr.replace(/\b(0x[0-9a-fA-F]+|\d+)(?:ull|ul|ll|u|l)?\b/gi, '$1');
  if (!/^[\s0-9a-fA-Fx()<>|+*-]+$/.test(arith)) throw new Error(`unexpected constant expression ${expr}`);
  return Function(`"use strict"; return (${arith});`)() as number;
}

function parseConstants(): Map<string, number | string> {
  const constants = new Map<string, number | string>();
  for (const m of code.matchAll(/^#define\s+(KBP_\w+)[ \t]+(.+?)\s*$/gm)) {
    const name = m[1] as string;
    if (name === 'KBP_STATIC_ASSERT') continue; // a macro, not a constant
    constants.set(name, evalConstant(m[2] as string));
  }
  for (const m of code.matchAll(/enum\s+kbp_\w+\s*\{([^}]*)\};/g)) {
    let next = 0;
    for (const member of (m[1] as string).split(',').map((s) => s.trim()).filter(Boolean)) {
      const e = /^(\w+)(?:\s*=\s*(.+))?$/.exec(member);
      if (!e) throw new Error(`cannot parse enum member "${member}"`);
      if (e[2] !== undefined) next = evalConstant(e[2]) as number;
      constants.set(e[1] as string, next++);
    }
  }
  return constants;
}

t.test('layout() has the static sizes of abi.h', async (t) => {
  const layout = native().layout();
  const sizes = Object.fromEntries(Object.entries(layout).map(([k, v]) => [k, v.size]));
  t.same(sizes, {
    kbp_svc_key: 12,
    kbp_svc_value: 16,
    kbp_backend_key: 4,
    kbp_backend: 12,
    kbp_revnat_key: 4,
    kbp_revnat: 8,
    kbp_ct_key: 16,
    kbp_ct_value: 40,
    kbp_stat_value: 16,
    kbp_affinity_key: 8,
    kbp_affinity_value: 16,
    kbp_snat_key: 16,
    kbp_snat_value: 24,
    kbp_config: 8,
    kbp_src_range_key: 12,
    kbp_src_range: 4,
    kbp_host_ns: 16,
    kbp_sock_rev_key: 16,
    kbp_sock_rev: 12,
  });
});

t.test('layout() covers every struct and field of abi.h, in order, at the C offsets', async (t) => {
  const layout = native().layout();
  const parsed = parseStructs();
  t.ok(parsed.size >= 9, 'parsed the structs of abi.h');
  t.same(Object.keys(layout).sort(), [...parsed.keys()].sort(), 'same set of structs');
  for (const [name, fields] of parsed) {
    const got = layout[name];
    if (!got) continue; // reported by the set comparison above
    t.same(Object.keys(got.fields), fields.map((f) => f.name), `${name} field names in declaration order`);
    // abi.h pads explicitly, so every field starts where the previous ended.
    let offset = 0;
    for (const f of fields) {
      t.same(got.fields[f.name], { offset, size: f.size }, `${name}.${f.name}`);
      offset += f.size;
    }
    t.equal(got.size, offset, `${name} has no implicit padding`);
  }
  t.same(layout.kbp_ct_value?.fields.pad2, { offset: 36, size: 4 }, 'array field size');
});

t.test('constants() exports every #define and enum member of abi.h', async (t) => {
  const constants = native().constants();
  const parsed = parseConstants();
  t.same(Object.keys(constants).sort(), [...parsed.keys()].sort(), 'same names');
  for (const [name, value] of parsed) t.equal(constants[name], value, name);
  t.match(constants, {
    KBP_MAP_SERVICES: 'kbp_svc_v1',
    KBP_MAP_CT: 'kbp_ct4_v2',
    KBP_TC_HANDLE: 0x6b62,
    KBP_TC_PRIORITY: 1,
    KBP_STAT_NEW_FLOW: 0,
    KBP_STAT_MAX: 24,
    KBP_MAP_SOCK_REVNAT: 'kbp_sockrev_v1',
    KBP_MAP_HOST_NS: 'kbp_hostns_v1',
    KBP_HAIRPIN_ADDR: 0xa9fe2a01,
    KBP_SVC_F_VIP_MARKER: 32,
    KBP_CT_REFRESH_NS: 1e9,
  });
});

t.test('numPossibleCpus() counts /sys/devices/system/cpu/possible', async (t) => {
  const spec = readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim();
  let count = 0;
  for (const part of spec.split(',')) {
    const [a, b] = part.split('-').map(Number) as [number, number | undefined];
    count += b === undefined ? 1 : b - a + 1;
  }
  t.equal(native().numPossibleCpus(), count);
});
