// One-line text form of map entries, decoded through the codecs: used by test
// goldens and for logging. Lines sort by the decoded key, in the order a
// reader expects (address, port, protocol, scope, slot numerically).

import * as abi from './abi.js';
import type { MapEntry, FakeOp } from './writer.js';

const fePart = (vip: string, port: number, proto: number): string => `${vip}:${port}/${abi.protoName(proto)}`;

export function svcFlagNames(flags: number): string {
  const names: Array<[number, string]> = [
    [abi.KBP_SVC_F_CLUSTER_IP, 'cluster-ip'],
    [abi.KBP_SVC_F_NODE_PORT, 'node-port'],
    [abi.KBP_SVC_F_EXTERNAL_IP, 'external-ip'],
    [abi.KBP_SVC_F_LOAD_BALANCER, 'load-balancer'],
    [abi.KBP_SVC_F_AFFINITY, 'affinity'],
    [abi.KBP_SVC_F_VIP_MARKER, 'vip-marker'],
    [abi.KBP_SVC_F_REJECT, 'reject'],
    [abi.KBP_SVC_F_SOURCE_RANGES, 'source-ranges'],
    [abi.KBP_SVC_F_MASQUERADE, 'masquerade'],
    [abi.KBP_SVC_F_INTERNAL_SCOPE, 'internal-scope'],
  ];
  const out = names.filter(([bit]) => flags & bit).map(([, n]) => n);
  const rest = names.reduce((f, [bit]) => f & ~bit, flags);
  if (rest) out.push(`0x${rest.toString(16)}`);
  return out.join(',') || '-';
}

export function backendStateName(state: number): string {
  if (state === abi.KBP_BACKEND_ACTIVE) return 'active';
  if (state === abi.KBP_BACKEND_TERMINATING) return 'terminating';
  return `state${state}`;
}

export function formatKey(map: string, key: Buffer): string {
  switch (map) {
    case abi.KBP_MAP_SERVICES: {
      const k = abi.svcKey.decode(key);
      return `${fePart(k.vip, k.port, k.proto)} scope=${k.scope} slot=${k.slot}`;
    }
    case abi.KBP_MAP_BACKENDS:
      return `backend=${abi.backendKey.decode(key).id}`;
    case abi.KBP_MAP_REVNAT:
      return `svc=${abi.revnatKey.decode(key).svc_id}`;
    case abi.KBP_MAP_SRC_RANGES: {
      const k = abi.srcRangeKey.decode(key);
      return `svc=${k.svc_id} ${k.addr}/${k.prefixlen - 32}`;
    }
    default:
      return key.toString('hex');
  }
}

export function formatValue(map: string, key: Buffer, value: Buffer): string {
  switch (map) {
    case abi.KBP_MAP_SERVICES: {
      const k = abi.svcKey.decode(key);
      const v = abi.svcValue.decode(value);
      if (k.slot === 0) {
        return `svc=${v.svc_id} count=${v.count} flags=${svcFlagNames(v.flags)} affinity=${v.affinity_timeout}` + (v.backend_id ? ` backend=${v.backend_id}!` : '');
      }
      return `svc=${v.svc_id} backend=${v.backend_id}` + (v.count || v.flags || v.affinity_timeout ? ` count=${v.count} flags=${v.flags} affinity=${v.affinity_timeout}` : '');
    }
    case abi.KBP_MAP_BACKENDS: {
      const b = abi.backendValue.decode(value);
      return `${fePart(b.ip, b.port, b.proto)} ${backendStateName(b.state)}` + (b.flags & abi.KBP_BACKEND_F_LOCAL ? ' local' : '');
    }
    case abi.KBP_MAP_REVNAT: {
      const r = abi.revnatValue.decode(value);
      return `${r.vip}:${r.port}`;
    }
    case abi.KBP_MAP_SRC_RANGES:
      return abi.srcRangeValue.decode(value).flags ? `flags=${abi.srcRangeValue.decode(value).flags}` : 'allow';
    default:
      return value.toString('hex');
  }
}

export function formatEntry(map: string, e: MapEntry): string {
  return `${formatKey(map, e.key)} -> ${formatValue(map, e.key, e.value)}`;
}

function sortKey(map: string, key: Buffer): Array<number> {
  switch (map) {
    case abi.KBP_MAP_SERVICES: {
      const k = abi.svcKey.decode(key);
      return [abi.ipv4ToNumber(k.vip), k.port, k.proto, k.scope, k.slot];
    }
    case abi.KBP_MAP_BACKENDS:
      return [abi.backendKey.decode(key).id];
    case abi.KBP_MAP_REVNAT:
      return [abi.revnatKey.decode(key).svc_id];
    case abi.KBP_MAP_SRC_RANGES: {
      const k = abi.srcRangeKey.decode(key);
      return [k.svc_id, abi.ipv4ToNumber(k.addr), k.prefixlen];
    }
    default:
      return [...key];
  }
}

function cmp(a: number[], b: number[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/** A whole map as sorted text lines, for golden comparisons. */
export function formatMap(map: string, entries: readonly MapEntry[]): string[] {
  return [...entries].sort((a, b) => cmp(sortKey(map, a.key), sortKey(map, b.key))).map((e) => formatEntry(map, e));
}

/** An operation of FakeMapWriter's log as text lines (one per key). */
export function formatOp(op: FakeOp): string[] {
  return op.keys.map((key, i) => {
    const v = op.values?.[i];
    return `${op.op} ${op.map} ${formatKey(op.map, key)}` + (v ? ` -> ${formatValue(op.map, key, v)}` : '');
  });
}
