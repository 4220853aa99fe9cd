// TypeScript view of bpf/include/kbp/abi.h: constants and one codec per struct.
//
// Each struct is declared as a field table {name, offset, size, kind} with the
// C field names, so test/maps/abi.test.ts compares it field by field with the
// sizes and offsets the C++ compiler computed from the header (native().layout()).
// Nothing here is trusted on its own: a field moved in abi.h fails that test.
//
// Conventions of the decoded form: IPv4 addresses are dotted strings, ports are
// numbers in host form (the codec swaps them to network order, as the header
// stores them), other integers are host order, u64 are bigints. Padding fields
// are not part of the decoded objects; they are written as zero.

// ---------------------------------------------------------------- constants

export const KBP_ABI_VERSION = 2;

export const KBP_MAP_SERVICES = 'kbp_svc_v1';
export const KBP_MAP_BACKENDS = 'kbp_backend_v2';
export const KBP_MAP_REVNAT = 'kbp_revnat_v1';
export const KBP_MAP_CT = 'kbp_ct4_v2';
export const KBP_MAP_STATS = 'kbp_stats_v2';
export const KBP_MAP_AFFINITY = 'kbp_affinity_v1';
export const KBP_MAP_SNAT = 'kbp_snat4_v1';
export const KBP_MAP_CONFIG = 'kbp_config_v1';
export const KBP_MAP_SRC_RANGES = 'kbp_srcrange_v1';
export const KBP_MAP_SOCK_REVNAT = 'kbp_sockrev_v1';
export const KBP_MAP_HOST_NS = 'kbp_hostns_v1';

export const KBP_SERVICES_MAX = 1 << 20;
export const KBP_BACKENDS_MAX = 1 << 18;
export const KBP_REVNAT_MAX = 1 << 18;
export const KBP_CT_MAX = 1 << 19;
export const KBP_AFFINITY_MAX = 1 << 18;
export const KBP_SNAT_MAX = 1 << 18;
export const KBP_SRC_RANGES_MAX = 1 << 16;
export const KBP_SOCK_REVNAT_MAX = 1 << 16;

export const KBP_TC_HANDLE = 0x6b62;
export const KBP_TC_PRIORITY = 1;
export const KBP_CONFIG_F_XDP_TX = 1 << 0;

export const KBP_SCOPE_EXTERNAL = 0;
export const KBP_SCOPE_INTERNAL = 1;

export const KBP_SVC_F_CLUSTER_IP = 1 << 0;
export const KBP_SVC_F_NODE_PORT = 1 << 1;
export const KBP_SVC_F_EXTERNAL_IP = 1 << 2;
export const KBP_SVC_F_LOAD_BALANCER = 1 << 3;
export const KBP_SVC_F_AFFINITY = 1 << 4;
export const KBP_SVC_F_VIP_MARKER = 1 << 5;
export const KBP_SVC_F_REJECT = 1 << 6;
export const KBP_SVC_F_SOURCE_RANGES = 1 << 7;
export const KBP_SVC_F_MASQUERADE = 1 << 8;
export const KBP_SVC_F_INTERNAL_SCOPE = 1 << 9;

export const KBP_BACKEND_ACTIVE = 0;
export const KBP_BACKEND_TERMINATING = 1;
export const KBP_BACKEND_F_LOCAL = 1 << 0;

export const KBP_CT_FORWARD = 0;
export const KBP_CT_REPLY = 1;
export const KBP_CT_F_SEEN_REPLY = 1 << 0;
export const KBP_CT_F_CLOSING = 1 << 1;
export const KBP_CT_F_SNAT = 1 << 2;
export const KBP_CT_F_HAIRPIN = 1 << 3;
/** The client's port was remapped: its reply tuple was held by another live flow. */
export const KBP_CT_F_PORT_REMAP = 1 << 4;
/** 169.254.42.1 as a host-order number (abi.h); hairpinned clients appear from it. */
export const KBP_HAIRPIN_ADDR = 0xa9fe2a01;
export const HAIRPIN_ADDR = '169.254.42.1';
export const KBP_CT_REFRESH_NS = 1_000_000_000;
export const KBP_CT_LIFETIME_TCP_NS = 6 * 3600 * 1_000_000_000;
export const KBP_CT_LIFETIME_CLOSING_NS = 30 * 1_000_000_000;
export const KBP_CT_LIFETIME_OTHER_NS = 60 * 1_000_000_000;

/** enum kbp_stat, in order; the index is the array map key. */
export const KBP_STAT_NEW_FLOW = 0;
export const KBP_STAT_ESTABLISHED = 1;
export const KBP_STAT_REVNAT = 2;
export const KBP_STAT_PASS = 3;
export const KBP_STAT_DROP_NO_BACKEND = 4;
export const KBP_STAT_DROP_UNKNOWN_PORT = 5;
export const KBP_STAT_DROP_CT_INSERT = 6;
export const KBP_STAT_DROP_BACKEND_MISSING = 7;
export const KBP_STAT_DROP_REWRITE = 8;
export const KBP_STAT_DROP_FRAGMENT = 9;
export const KBP_STAT_DROP_MALFORMED = 10;
export const KBP_STAT_SNAT = 11;
export const KBP_STAT_DROP_SNAT_PORTS = 12;
export const KBP_STAT_DROP_NO_CONFIG = 13;
export const KBP_STAT_DROP_CT_CLASH = 14;
export const KBP_STAT_REJECT = 15;
export const KBP_STAT_ICMP_REVNAT = 16;
export const KBP_STAT_HAIRPIN = 17;
export const KBP_STAT_DROP_SOURCE_RANGE = 18;
export const KBP_STAT_XDP_FORWARD = 19;
export const KBP_STAT_SOCK_XLATE = 20;
export const KBP_STAT_SOCK_REJECT = 21;
export const KBP_STAT_XDP_TX = 22;
export const KBP_STAT_PORT_REMAP = 23;
export const KBP_STAT_MAX = 24;
export const KBP_STAT_SLOTS = 64;

export const KBP_SNAT_PORT_MIN = 61000;
export const KBP_SNAT_PORT_MAX = 65535;
export const KBP_SNAT_TRIES = 8;

/** Readable name of each stat index (metrics labels, CLI tables). */
export const STAT_NAMES: readonly string[] = [
  'new_flow',
  'established',
  'revnat',
  'pass',
  'drop_no_backend',
  'drop_unknown_port',
  'drop_ct_insert',
  'drop_backend_missing',
  'drop_rewrite',
  'drop_fragment',
  'drop_malformed',
  'snat',
  'drop_snat_ports',
  'drop_no_config',
  'drop_ct_clash',
  'reject',
  'icmp_revnat',
  'hairpin',
  'drop_source_range',
  'xdp_forward',
  'sock_xlate',
  'sock_reject',
  'xdp_tx',
  'port_remap',
];

/** Every constant above under its C name, for comparison with native().constants(). */
export const ABI_CONSTANTS: Readonly<Record<string, number | string>> = {
  KBP_ABI_VERSION,
  KBP_MAP_SERVICES,
  KBP_MAP_BACKENDS,
  KBP_MAP_REVNAT,
  KBP_MAP_CT,
  KBP_MAP_STATS,
  KBP_MAP_AFFINITY,
  KBP_MAP_SNAT,
  KBP_MAP_CONFIG,
  KBP_MAP_SRC_RANGES,
  KBP_MAP_SOCK_REVNAT,
  KBP_MAP_HOST_NS,
  KBP_SERVICES_MAX,
  KBP_BACKENDS_MAX,
  KBP_REVNAT_MAX,
  KBP_CT_MAX,
  KBP_AFFINITY_MAX,
  KBP_SNAT_MAX,
  KBP_SRC_RANGES_MAX,
  KBP_SOCK_REVNAT_MAX,
  KBP_TC_HANDLE,
  KBP_TC_PRIORITY,
  KBP_CONFIG_F_XDP_TX,
  KBP_SCOPE_EXTERNAL,
  KBP_SCOPE_INTERNAL,
  KBP_SVC_F_CLUSTER_IP,
  KBP_SVC_F_NODE_PORT,
  KBP_SVC_F_EXTERNAL_IP,
  KBP_SVC_F_LOAD_BALANCER,
  KBP_SVC_F_AFFINITY,
  KBP_SVC_F_VIP_MARKER,
  KBP_SVC_F_REJECT,
  KBP_SVC_F_SOURCE_RANGES,
  KBP_SVC_F_MASQUERADE,
  KBP_SVC_F_INTERNAL_SCOPE,
  KBP_BACKEND_ACTIVE,
  KBP_BACKEND_TERMINATING,
  KBP_BACKEND_F_LOCAL,
  KBP_CT_FORWARD,
  KBP_CT_REPLY,
  KBP_CT_F_SEEN_REPLY,
  KBP_CT_F_CLOSING,
  KBP_CT_F_SNAT,
  KBP_CT_F_HAIRPIN,
  KBP_CT_F_PORT_REMAP,
  KBP_HAIRPIN_ADDR,
  KBP_CT_REFRESH_NS,
  KBP_CT_LIFETIME_TCP_NS,
  KBP_CT_LIFETIME_CLOSING_NS,
  KBP_CT_LIFETIME_OTHER_NS,
  KBP_STAT_NEW_FLOW,
  KBP_STAT_ESTABLISHED,
  KBP_STAT_REVNAT,
  KBP_STAT_PASS,
  KBP_STAT_DROP_NO_BACKEND,
  KBP_STAT_DROP_UNKNOWN_PORT,
  KBP_STAT_DROP_CT_INSERT,
  KBP_STAT_DROP_BACKEND_MISSING,
  KBP_STAT_DROP_REWRITE,
  KBP_STAT_DROP_FRAGMENT,
  KBP_STAT_DROP_MALFORMED,
  KBP_STAT_SNAT,
  KBP_STAT_DROP_SNAT_PORTS,
  KBP_STAT_DROP_NO_CONFIG,
  KBP_STAT_DROP_CT_CLASH,
  KBP_STAT_REJECT,
  KBP_STAT_ICMP_REVNAT,
  KBP_STAT_HAIRPIN,
  KBP_STAT_DROP_SOURCE_RANGE,
  KBP_STAT_XDP_FORWARD,
  KBP_STAT_SOCK_XLATE,
  KBP_STAT_SOCK_REJECT,
  KBP_STAT_XDP_TX,
  KBP_STAT_PORT_REMAP,
  KBP_STAT_MAX,
  KBP_STAT_SLOTS,
  KBP_SNAT_PORT_MIN,
  KBP_SNAT_PORT_MAX,
  KBP_SNAT_TRIES,
};

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_SCTP = 132;

export type Protocol = 'TCP' | 'UDP';

export function protoNumber(p: Protocol): number {
  return p === 'TCP' ? IPPROTO_TCP : IPPROTO_UDP;
}

/** Protocol name of an IPPROTO number; unknown numbers print as the number. */
export function protoName(n: number): string {
  if (n === IPPROTO_TCP) return 'TCP';
  if (n === IPPROTO_UDP) return 'UDP';
  if (n === IPPROTO_SCTP) return 'SCTP';
  return String(n);
}

// ---------------------------------------------------------------- addresses

/**
 * Strict dotted quad -> u32 in host arithmetic (10.0.0.1 -> 0x0a000001), or -1
 * when the text is not one (no leading zeros, no shorthand). Hand-written: it
 * runs for every endpoint of every sync.
 */
function parseIPv4(s: string): number {
  let n = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46 /* . */) {
      if (digits === 0 || ++dots > 3) return -1;
      n = n * 256 + octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 1 && octet === 0) return -1; // leading zero
      octet = octet * 10 + (c - 48);
      if (++digits > 3 || octet > 255) return -1;
    } else return -1;
  }
  if (dots !== 3 || digits === 0) return -1;
  return n * 256 + octet;
}

export function isIPv4(s: string): boolean {
  return parseIPv4(s) >= 0;
}

export function ipv4ToNumber(s: string): number {
  const n = parseIPv4(s);
  if (n < 0) throw new TypeError(`not an IPv4 address: ${JSON.stringify(s)}`);
  return n;
}

export function numberToIPv4(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

// ---------------------------------------------------------------- struct codecs

/**
 * How a field is stored:
 * ipv4 / be16: network order (an address / a port); u8 / u16 / u32 / u64: host
 * order (little endian on every architecture we build for); pad: zero bytes.
 */
export type FieldKind = 'ipv4' | 'be16' | 'u8' | 'u16' | 'u32' | 'u64' | 'pad';

export interface Field {
  name: string; // the C field name
  offset: number;
  size: number;
  kind: FieldKind;
}

export interface StructCodec<T> {
  /** The C struct name (without "struct "), the key of native().layout(). */
  readonly cName: string;
  readonly size: number;
  readonly fields: readonly Field[];
  encode(v: T): Buffer;
  /** Write v at `offset` of `buf` (batch buffers of concatenated records). */
  encodeInto(v: T, buf: Buffer, offset: number): void;
  decode(buf: Buffer, offset?: number): T;
}

const kindSize: Record<Exclude<FieldKind, 'pad'>, number> = { ipv4: 4, be16: 2, u8: 1, u16: 2, u32: 4, u64: 8 };

/** A codec from a field table (also used for older layouts, src/maps/legacy.ts). */
export function struct<T>(cName: string, size: number, fields: Field[]): StructCodec<T> {
  for (const f of fields) {
    if (f.kind !== 'pad' && kindSize[f.kind] !== f.size) throw new Error(`${cName}.${f.name}: ${f.kind} is ${kindSize[f.kind]} bytes, not ${f.size}`);
    if (f.offset + f.size > size) throw new Error(`${cName}.${f.name} runs past the struct`);
  }
  const data = fields.filter((f) => f.kind !== 'pad');
  const encodeInto = (v: T, buf: Buffer, base: number): void => {
    buf.fill(0, base, base + size);
    const rec = v as Record<string, unknown>;
    for (const f of data) {
      const x = rec[f.name];
      const at = base + f.offset;
      switch (f.kind) {
        case 'ipv4':
          buf.writeUInt32BE(ipv4ToNumber(x as string), at);
          break;
        case 'be16':
          buf.writeUInt16BE(x as number, at);
          break;
        case 'u8':
          buf.writeUInt8(x as number, at);
          break;
        case 'u16':
          buf.writeUInt16LE(x as number, at);
          break;
        case 'u32':
          buf.writeUInt32LE(x as number, at);
          break;
        case 'u64':
          buf.writeBigUInt64LE(x as bigint, at);
          break;
      }
    }
  };
  return {
    cName,
    size,
    fields,
    encodeInto,
    encode(v: T): Buffer {
      const buf = Buffer.alloc(size);
      encodeInto(v, buf, 0);
      return buf;
    },
    decode(buf: Buffer, base = 0): T {
      if (buf.length < base + size) throw new RangeError(`${cName}: need ${size} bytes at ${base}, buffer has ${buf.length}`);
      const out: Record<string, unknown> = {};
      for (const f of data) {
        const at = base + f.offset;
        switch (f.kind) {
          case 'ipv4':
            out[f.name] = numberToIPv4(buf.readUInt32BE(at));
            break;
          case 'be16':
            out[f.name] = buf.readUInt16BE(at);
            break;
          case 'u8':
            out[f.name] = buf.readUInt8(at);
            break;
          case 'u16':
            out[f.name] = buf.readUInt16LE(at);
            break;
          case 'u32':
            out[f.name] = buf.readUInt32LE(at);
            break;
          case 'u64':
            out[f.name] = buf.readBigUInt64LE(at);
            break;
        }
      }
      return out as T;
    },
  };
}

// Decoded forms. Field names are the C names, so a dump reads like the header.

/** struct kbp_svc_key: a frontend (slot 0) or one of its backend slots. */
export interface SvcKey {
  vip: string;
  port: number;
  proto: number;
  scope: number;
  slot: number;
}

/** struct kbp_svc_value: the service entry (slot 0) or a backend slot. */
export interface SvcValue {
  backend_id: number;
  svc_id: number;
  count: number;
  flags: number;
  affinity_timeout: number;
}

export interface BackendKey {
  id: number;
}

export interface Backend {
  ip: string;
  port: number;
  proto: number;
  state: number;
  flags: number; // KBP_BACKEND_F_*
}

export interface RevNatKey {
  svc_id: number;
}

export interface RevNat {
  vip: string;
  port: number;
}

export interface CtKey {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
  dir: number;
}

export interface CtValue {
  created_ns: bigint;
  last_seen_ns: bigint;
  backend_id: number;
  svc_id: number;
  nat_addr: string; // FORWARD: the source the backend sees with KBP_CT_F_SNAT/HAIRPIN/PORT_REMAP ('0.0.0.0' otherwise); REPLY: the frontend address
  nat_port: number;
  flags: number;
  tcp_flags: number;
  client_port: number; // REPLY with KBP_CT_F_PORT_REMAP: the client's own port (0 otherwise)
}

export interface AffinityKey {
  client: string;
  svc_id: number;
}

export interface AffinityValue {
  last_used_ns: bigint;
  backend_id: number;
  slot: number;
}

export interface SnatKey {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
}

export interface SnatValue {
  created_ns: bigint;
  client_addr: string;
  client_port: number;
  svc_id: number;
}

export interface Config {
  node_ip: string;
  flags: number;
}

export interface StatValue {
  packets: bigint;
  bytes: bigint;
}

const f = (name: string, offset: number, size: number, kind: FieldKind): Field => ({ name, offset, size, kind });

export const svcKey = struct<SvcKey>('kbp_svc_key', 12, [
  f('vip', 0, 4, 'ipv4'),
  f('port', 4, 2, 'be16'),
  f('proto', 6, 1, 'u8'),
  f('scope', 7, 1, 'u8'),
  f('slot', 8, 2, 'u16'),
  f('pad', 10, 2, 'pad'),
]);

export const svcValue = struct<SvcValue>('kbp_svc_value', 16, [
  f('backend_id', 0, 4, 'u32'),
  f('svc_id', 4, 4, 'u32'),
  f('count', 8, 2, 'u16'),
  f('flags', 10, 2, 'u16'),
  f('affinity_timeout', 12, 4, 'u32'),
]);

export const backendKey = struct<BackendKey>('kbp_backend_key', 4, [f('id', 0, 4, 'u32')]);

export const backendValue = struct<Backend>('kbp_backend', 12, [
  f('ip', 0, 4, 'ipv4'),
  f('port', 4, 2, 'be16'),
  f('proto', 6, 1, 'u8'),
  f('state', 7, 1, 'u8'),
  f('flags', 8, 1, 'u8'),
  f('pad', 9, 3, 'pad'),
]);

export const revnatKey = struct<RevNatKey>('kbp_revnat_key', 4, [f('svc_id', 0, 4, 'u32')]);

export const revnatValue = struct<RevNat>('kbp_revnat', 8, [
  f('vip', 0, 4, 'ipv4'),
  f('port', 4, 2, 'be16'),
  f('pad', 6, 2, 'pad'),
]);

export const ctKey = struct<CtKey>('kbp_ct_key', 16, [
  f('saddr', 0, 4, 'ipv4'),
  f('daddr', 4, 4, 'ipv4'),
  f('sport', 8, 2, 'be16'),
  f('dport', 10, 2, 'be16'),
  f('proto', 12, 1, 'u8'),
  f('dir', 13, 1, 'u8'),
  f('pad', 14, 2, 'pad'),
]);

export const ctValue = struct<CtValue>('kbp_ct_value', 40, [
  f('created_ns', 0, 8, 'u64'),
  f('last_seen_ns', 8, 8, 'u64'),
  f('backend_id', 16, 4, 'u32'),
  f('svc_id', 20, 4, 'u32'),
  f('nat_addr', 24, 4, 'ipv4'),
  f('nat_port', 28, 2, 'be16'),
  f('flags', 30, 2, 'u16'),
  f('tcp_flags', 32, 1, 'u8'),
  f('pad', 33, 1, 'pad'),
  f('client_port', 34, 2, 'be16'),
  f('pad2', 36, 4, 'pad'),
]);

export const statValue = struct<StatValue>('kbp_stat_value', 16, [
  f('packets', 0, 8, 'u64'),
  f('bytes', 8, 8, 'u64'),
]);

export const affinityKey = struct<AffinityKey>('kbp_affinity_key', 8, [
  f('client', 0, 4, 'ipv4'),
  f('svc_id', 4, 4, 'u32'),
]);

export const affinityValue = struct<AffinityValue>('kbp_affinity_value', 16, [
  f('last_used_ns', 0, 8, 'u64'),
  f('backend_id', 8, 4, 'u32'),
  f('slot', 12, 2, 'u16'),
  f('pad', 14, 2, 'pad'),
]);

export const snatKey = struct<SnatKey>('kbp_snat_key', 16, [
  f('saddr', 0, 4, 'ipv4'),
  f('daddr', 4, 4, 'ipv4'),
  f('sport', 8, 2, 'be16'),
  f('dport', 10, 2, 'be16'),
  f('proto', 12, 1, 'u8'),
  f('pad', 13, 3, 'pad'),
]);

export const snatValue = struct<SnatValue>('kbp_snat_value', 24, [
  f('created_ns', 0, 8, 'u64'),
  f('client_addr', 8, 4, 'ipv4'),
  f('client_port', 12, 2, 'be16'),
  f('pad', 14, 2, 'pad'),
  f('svc_id', 16, 4, 'u32'),
  f('pad2', 20, 4, 'pad'),
]);

export const configValue = struct<Config>('kbp_config', 8, [
  f('node_ip', 0, 4, 'ipv4'),
  f('flags', 4, 4, 'u32'),
]);

/** loadBalancerSourceRanges entry: `prefixlen` is 32 + the range's length (srcRangeKeyOf builds it). */
export interface SrcRangeKey {
  prefixlen: number;
  svc_id: number;
  addr: string;
}

export const srcRangeKey = struct<SrcRangeKey>('kbp_src_range_key', 12, [
  f('prefixlen', 0, 4, 'u32'),
  f('svc_id', 4, 4, 'u32'),
  f('addr', 8, 4, 'ipv4'),
]);

export interface SrcRange {
  flags: number;
}

export const srcRangeValue = struct<SrcRange>('kbp_src_range', 4, [f('flags', 0, 4, 'u32')]);

/** The key of one range ("10.0.0.0/8") of frontend svcId, host bits cleared. */
export function srcRangeKeyOf(svcId: number, cidr: string): SrcRangeKey {
  const [ip, len] = parseCidr(cidr);
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return { prefixlen: 32 + len, svc_id: svcId, addr: numberToIPv4((ipv4ToNumber(ip) & mask) >>> 0) };
}

/** "a.b.c.d/n" (or a bare address: /32) -> [address, n]; throws when malformed. */
export function parseCidr(cidr: string): [string, number] {
  const [ip, len, extra] = cidr.trim().split('/');
  const n = len === undefined ? 32 : /^\d{1,2}$/.test(len) ? Number(len) : NaN;
  if (extra !== undefined || !isIPv4(ip ?? '') || !(n >= 0 && n <= 32)) throw new TypeError(`not an IPv4 CIDR: ${JSON.stringify(cidr)}`);
  return [ip!, n];
}

/** struct kbp_host_ns: the node namespace's cookie for the host-services programs (0 = none). */
export interface HostNs {
  netns_cookie: bigint;
  flags: number;
}

export const hostNsValue = struct<HostNs>('kbp_host_ns', 16, [
  f('netns_cookie', 0, 8, 'u64'),
  f('flags', 8, 4, 'u32'),
  f('pad', 12, 4, 'pad'),
]);

/** struct kbp_sock_rev_key: a host socket (cookie) pointed at a backend. */
export interface SockRevKey {
  cookie: bigint;
  addr: string;
  port: number;
  proto: number;
}

export const sockRevKey = struct<SockRevKey>('kbp_sock_rev_key', 16, [
  f('cookie', 0, 8, 'u64'),
  f('addr', 8, 4, 'ipv4'),
  f('port', 12, 2, 'be16'),
  f('proto', 14, 1, 'u8'),
  f('pad', 15, 1, 'pad'),
]);

/** struct kbp_sock_rev: the frontend that socket asked for. */
export interface SockRev {
  vip: string;
  port: number;
  svc_id: number;
}

export const sockRevValue = struct<SockRev>('kbp_sock_rev', 12, [
  f('vip', 0, 4, 'ipv4'),
  f('port', 4, 2, 'be16'),
  f('pad', 6, 2, 'pad'),
  f('svc_id', 8, 4, 'u32'),
]);

/** Every struct codec, by C name. */
export const STRUCTS: Readonly<Record<string, StructCodec<unknown>>> = Object.fromEntries(
  [svcKey, svcValue, backendKey, backendValue, revnatKey, revnatValue, ctKey, ctValue, statValue, affinityKey, affinityValue, snatKey, snatValue, configValue, srcRangeKey, srcRangeValue, hostNsValue, sockRevKey, sockRevValue].map((c) => [c.cName, c as StructCodec<unknown>]),
);

/** The key of an array map: its index, host order. */
export const arrayIndexKey = struct<{ index: number }>('__u32', 4, [f('index', 0, 4, 'u32')]);

/** Key and value codec of each map, by map name (the stats map is per-CPU: decodePerCpuStat). */
export const MAP_CODECS = {
  [KBP_MAP_SERVICES]: { key: svcKey, value: svcValue },
  [KBP_MAP_BACKENDS]: { key: backendKey, value: backendValue },
  [KBP_MAP_REVNAT]: { key: revnatKey, value: revnatValue },
  [KBP_MAP_CT]: { key: ctKey, value: ctValue },
  [KBP_MAP_AFFINITY]: { key: affinityKey, value: affinityValue },
  [KBP_MAP_SNAT]: { key: snatKey, value: snatValue },
  [KBP_MAP_SRC_RANGES]: { key: srcRangeKey, value: srcRangeValue },
  [KBP_MAP_SOCK_REVNAT]: { key: sockRevKey, value: sockRevValue },
  [KBP_MAP_CONFIG]: { key: arrayIndexKey, value: configValue },
  [KBP_MAP_HOST_NS]: { key: arrayIndexKey, value: hostNsValue },
} as const;

/** Every map the datapath pins (each KBP_MAP_* of abi.h, in its order): the API dumps them all. */
export const DATAPATH_MAPS: readonly string[] = Object.entries(ABI_CONSTANTS)
  .filter(([k]) => k.startsWith('KBP_MAP_'))
  .map(([, name]) => name as string);

/** The stats map key is a plain __u32 index. */
export function statKey(index: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(index, 0);
  return b;
}

/**
 * A per-CPU value as the kernel returns it (nCpus records, each rounded up to
 * 8 bytes), summed over CPUs.
 */
export function decodePerCpuStat(buf: Buffer, nCpus: number): StatValue {
  const stride = Math.ceil(statValue.size / 8) * 8;
  if (buf.length < stride * nCpus) throw new RangeError(`per-CPU stat: need ${stride * nCpus} bytes, got ${buf.length}`);
  let packets = 0n;
  let bytes = 0n;
  for (let cpu = 0; cpu < nCpus; cpu++) {
    const v = statValue.decode(buf, cpu * stride);
    packets += v.packets;
    bytes += v.bytes;
  }
  return { packets, bytes };
}
