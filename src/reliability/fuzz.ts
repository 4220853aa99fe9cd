// Malformed-packet fuzz of the datapath: seeded random packets through
// BPF_PROG_TEST_RUN of both entry programs (kbp_from_pod, kbp_from_node),
// each judged by the independent model in model.ts (what the packet must
// become: untouched, dropped, or translated to which tuple with its checksums
// carried over). A share of the node-facing packets (half by default) takes
// the uplink pipeline of --nodeport-acceleration xdp instead: kbp_xdp_node,
// then, unless XDP dropped it, kbp_from_node on XDP's output. The pipeline's
// end result must be what the model expects of kbp_from_node alone, and the
// XDP stage must follow the model's XDP rule (DatapathModel.xdpRule). At the
// end, the datapath's per-reason counters must equal the model's.
//
// Packets: valid TCP/UDP to every frontend and replies of the flows the model
// knows (the state the malformed ones must not disturb), with random TCP
// flags; IP options; fragments; truncated at every length; bad total lengths,
// version nibbles and checksums; ICMP errors quoting a known flow's header;
// unknown ports and protocols on ClusterIPs; other ethertypes; random bytes
// (some forced to look like IPv4); random bit flips of valid packets; and
// valid packets whose L4 checksum field holds only the pseudo-header sum (a
// local sender's CHECKSUM_PARTIAL, which XDP leaves to tc).
//
// Flows are cleared from the kernel maps and the model together every
// `resetEvery` packets, so no idle lifetime (30 s at the shortest) can run out
// during a run: the model has no clock.

import { DatapathFixture, TC_ACT_OK, TC_ACT_SHOT, XDP_DROP, XDP_PASS, type FixtureFrontend } from '../bench/fixtures.js';
import { buildPacket, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN } from '../bench/packets.js';
import * as abi from '../maps/abi.js';
import type { BpfMap } from '../native/binding.js';
import { DatapathModel, HAIRPIN_ADDR, pseudoHeaderOnly, parse, type CountedAs, type Expectation, type ModelFrontend } from './model.js';

// ---- seeded PRNG (mulberry32) ----

export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  u32(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  int(n: number): number {
    return this.u32() % n;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  chance(p: number): boolean {
    return this.u32() < p * 2 ** 32;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

// ---- the node the fuzz programs ----

export const NODE_IP = '192.168.0.1';
const LOCAL_A = { id: 1, ip: '10.244.1.2', port: 8080 };
const REMOTE_B = { id: 2, ip: '10.244.2.3', port: 8080, local: false };
const TERMINATING = { id: 3, ip: '10.244.1.4', port: 8080, terminating: true };
const DNS_LOCAL = { id: 4, ip: '10.244.1.5', port: 5353 };
const DNS_REMOTE = { id: 5, ip: '10.244.2.6', port: 5353, local: false };

/**
 * Frontends sharing backends on purpose: a client port reaching 10.244.1.2:8080
 * through the ClusterIP, the affinity ClusterIP and the NodePort makes the
 * reply tuples of different frontends meet.
 */
export const FUZZ_FRONTENDS: ModelFrontend[] = [
  { svcId: 1, vip: '10.96.0.10', port: 80, proto: 'tcp', backends: [LOCAL_A, REMOTE_B, TERMINATING] },
  { svcId: 2, vip: '10.96.0.10', port: 53, proto: 'udp', backends: [DNS_LOCAL, DNS_REMOTE] },
  { svcId: 3, vip: '10.96.0.11', port: 80, proto: 'tcp', backends: [LOCAL_A, REMOTE_B], affinityTimeout: 600 },
  { svcId: 4, vip: '10.96.0.12', port: 80, proto: 'tcp', backends: [TERMINATING] },
  // externalTrafficPolicy Cluster: local backends masqueraded too.
  { svcId: 5, vip: NODE_IP, port: 30080, proto: 'tcp', backends: [LOCAL_A, REMOTE_B], kind: 'nodePort', masquerade: true },
  { svcId: 6, vip: '172.16.0.1', port: 443, proto: 'tcp', backends: [REMOTE_B], kind: 'loadBalancer', masquerade: true },
  // loadBalancerSourceRanges: the clients in 10/8 may connect, 192.168.0.2 may not.
  { svcId: 12, vip: '172.16.0.2', port: 443, proto: 'tcp', backends: [LOCAL_A, REMOTE_B], kind: 'loadBalancer', masquerade: true, sourceRanges: ['10.0.0.0/8'] },
  // externalTrafficPolicy Local: a local backend keeps the client's address;
  // pods use the internal-scope entry (every endpoint).
  {
    svcId: 10,
    vip: NODE_IP,
    port: 30081,
    proto: 'tcp',
    backends: [LOCAL_A],
    kind: 'nodePort',
    forPods: { svcId: 11, vip: NODE_IP, port: 30081, proto: 'tcp', backends: [LOCAL_A, REMOTE_B], kind: 'nodePort' },
  },
  { svcId: 7, vip: NODE_IP, port: 30053, proto: 'udp', backends: [DNS_REMOTE], kind: 'nodePort' },
  // Services without endpoints: rejected with ICMP port unreachable.
  { svcId: 8, vip: '10.96.0.13', port: 80, proto: 'tcp', backends: [], reject: true },
  { svcId: 9, vip: NODE_IP, port: 30090, proto: 'udp', backends: [], kind: 'nodePort', reject: true },
];

const KIND_FLAGS = {
  clusterIP: abi.KBP_SVC_F_CLUSTER_IP,
  nodePort: abi.KBP_SVC_F_NODE_PORT,
  loadBalancer: abi.KBP_SVC_F_LOAD_BALANCER,
  externalIP: abi.KBP_SVC_F_EXTERNAL_IP,
} as const;

/** The model's frontends as the fixture writes them into the maps. */
export function toFixture(fes: readonly ModelFrontend[]): FixtureFrontend[] {
  const one = (fe: ModelFrontend, scope: number): FixtureFrontend => ({
    svcId: fe.svcId,
    vip: fe.vip,
    port: fe.port,
    proto: fe.proto,
    backends: fe.backends,
    flags:
      KIND_FLAGS[fe.kind ?? 'clusterIP'] |
      (fe.reject ? abi.KBP_SVC_F_REJECT : 0) |
      (fe.masquerade ? abi.KBP_SVC_F_MASQUERADE : 0) |
      (fe.forPods ? abi.KBP_SVC_F_INTERNAL_SCOPE : 0),
    affinityTimeout: fe.affinityTimeout,
    sourceRanges: fe.sourceRanges,
    scope,
  });
  return fes.flatMap((fe) => [one(fe, abi.KBP_SCOPE_EXTERNAL), ...(fe.forPods ? [one(fe.forPods, abi.KBP_SCOPE_INTERNAL)] : [])]);
}

// ---- packet generation ----

const CLIENTS = ['10.244.1.100', '10.244.1.101', '10.0.0.7', '192.168.0.2'];
const FLAG_SETS = [TCP_SYN, TCP_SYN, TCP_ACK, TCP_ACK | TCP_PSH, TCP_FIN | TCP_ACK, TCP_RST, TCP_SYN | TCP_ACK, 0, 0xff];
const OTHER_ADDRS = ['10.244.1.2', '10.96.0.99', '8.8.8.8', NODE_IP, '172.16.0.1', '10.96.0.10'];

export type Category =
  | 'valid'
  | 'reply'
  | 'unknown-port'
  | 'ip-options'
  | 'fragment'
  | 'truncated'
  | 'bad-length'
  | 'bad-version'
  | 'bad-checksum'
  | 'icmp-error'
  | 'other-protocol'
  | 'not-ipv4'
  | 'random'
  | 'bit-flip'
  | 'partial-checksum';

const WEIGHTS: Array<[Category, number]> = [
  ['valid', 24],
  ['reply', 14],
  ['unknown-port', 4],
  ['ip-options', 6],
  ['fragment', 6],
  ['truncated', 8],
  ['bad-length', 5],
  ['bad-version', 3],
  ['bad-checksum', 6],
  ['icmp-error', 6],
  ['other-protocol', 3],
  ['not-ipv4', 2],
  ['random', 6],
  ['bit-flip', 7],
  ['partial-checksum', 4],
];
const WEIGHT_TOTAL = WEIGHTS.reduce((n, [, w]) => n + w, 0);

const ETH = 14;

/** Recomputes the IPv4 header checksum in place (after a deliberate header change). */
function fixIpChecksum(b: Buffer): void {
  const ihl = (b[ETH]! & 0x0f) * 4;
  b.writeUInt16BE(0, ETH + 10);
  let s = 0;
  for (let i = ETH; i < ETH + ihl && i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  b.writeUInt16BE(~s & 0xffff, ETH + 10);
}

export class PacketGenerator {
  constructor(
    private readonly rng: Rng,
    private readonly model: DatapathModel,
  ) {}

  category(): Category {
    let r = this.rng.int(WEIGHT_TOTAL);
    for (const [c, w] of WEIGHTS) if ((r -= w) < 0) return c;
    return 'valid';
  }

  /** A well-formed packet from a client (few addresses and ports, so flows repeat and meet), or from one of the frontend's local backends, to a frontend. */
  valid(opts: { ipOptions?: Buffer; fragment?: { moreFragments: boolean; offset: number }; partialChecksum?: boolean } = {}): Buffer {
    const r = this.rng;
    const fe = r.pick(FUZZ_FRONTENDS);
    // Now and then a pod reaching its own Service: it may get itself as backend (hairpin).
    const pods = fe.backends.filter((b) => b.local !== false);
    return buildPacket({
      saddr: pods.length && r.chance(0.05) ? r.pick(pods).ip : r.pick(CLIENTS),
      daddr: fe.vip,
      proto: fe.proto,
      sport: 40000 + r.int(6),
      dport: fe.port,
      tcpFlags: r.pick(FLAG_SETS),
      payload: r.bytes(r.int(64)),
      udpZeroChecksum: fe.proto === 'udp' && !opts.partialChecksum && r.chance(0.2),
      ...opts,
    });
  }

  /** A packet of a recorded flow in either direction, else a valid one. */
  private reply(): Buffer {
    const r = this.rng;
    const flows = this.model.flowTuples();
    if (!flows.length) return this.valid();
    const f = r.pick(flows);
    const proto = f.proto === abi.IPPROTO_TCP ? 'tcp' : 'udp';
    const tcpFlags = r.pick(FLAG_SETS);
    const payload = r.bytes(r.int(32));
    if (r.chance(0.25)) return buildPacket({ saddr: f.client, daddr: f.fe.vip, proto, sport: f.clientPort, dport: f.fe.port, tcpFlags, payload });
    if (f.snat) return buildPacket({ saddr: f.backend.ip, daddr: f.snat.addr, proto, sport: f.backend.port, dport: f.snat.port, tcpFlags, payload });
    return buildPacket({ saddr: f.backend.ip, daddr: f.hairpin ? HAIRPIN_ADDR : f.client, proto, sport: f.backend.port, dport: f.remap ?? f.clientPort, tcpFlags, payload });
  }

  next(cat: Category): Buffer {
    const r = this.rng;
    switch (cat) {
      case 'valid':
        return this.valid();
      case 'reply':
        return this.reply();
      case 'unknown-port': {
        const fe = r.pick(FUZZ_FRONTENDS);
        return buildPacket({ saddr: r.pick(CLIENTS), daddr: fe.vip, proto: r.chance(0.5) ? 'tcp' : 'udp', sport: 40000 + r.int(6), dport: r.int(65536), tcpFlags: TCP_SYN });
      }
      case 'ip-options': {
        const n = 1 + r.int(10); // 4..40 bytes
        const opts = r.chance(0.5) ? Buffer.alloc(n * 4, 1) : r.bytes(n * 4); // NOPs, or garbage
        return r.chance(0.5) ? this.valid({ ipOptions: opts }) : this.reply();
      }
      case 'fragment':
        return this.valid({ fragment: { moreFragments: r.chance(0.5), offset: r.chance(0.5) ? 0 : 1 + r.int(0x1fff) } });
      case 'truncated': {
        const p = r.chance(0.7) ? this.valid() : this.reply();
        return p.subarray(0, ETH + r.int(p.length - ETH + 1));
      }
      case 'bad-length': {
        const p = r.chance(0.7) ? this.valid() : this.reply();
        p.writeUInt16BE(r.pick([0, 1, 19, 20, 21, p.length - ETH - 1, p.length - ETH + 1, 65535, r.int(65536)]), ETH + 2);
        if (r.chance(0.5)) fixIpChecksum(p);
        return p;
      }
      case 'bad-version': {
        const p = this.valid();
        p[ETH] = (r.pick([0, 1, 5, 6, 15]) << 4) | (p[ETH]! & 0x0f);
        if (r.chance(0.5)) fixIpChecksum(p);
        return p;
      }
      case 'bad-checksum': {
        const p = r.chance(0.6) ? this.valid() : this.reply();
        const ihl = (p[ETH]! & 0x0f) * 4;
        const l4csum = ETH + ihl + (p[ETH + 9] === abi.IPPROTO_TCP ? 16 : 6);
        const off = r.pick([ETH + 10, l4csum]);
        p.writeUInt16BE(r.chance(0.3) ? 0 : r.int(65536), off);
        return p;
      }
      case 'icmp-error':
        return this.icmpError();
      case 'other-protocol': {
        const p = this.valid();
        p[ETH + 9] = r.pick([1, 2, 47, 50, 132, 255, r.int(256)]);
        fixIpChecksum(p);
        return p;
      }
      case 'not-ipv4': {
        const p = this.valid();
        p.writeUInt16BE(r.pick([0x0806, 0x86dd, 0x8100, 0x88a8, r.int(65536)]), 12);
        return p;
      }
      case 'random': {
        const p = r.bytes(ETH + r.int(120));
        if (r.chance(0.5)) {
          p.writeUInt16BE(0x0800, 12);
          if (p.length > ETH) p[ETH] = 0x40 | (p[ETH]! & 0x0f);
          if (p.length > ETH + 9 && r.chance(0.6)) p[ETH + 9] = r.pick([6, 17]);
          if (p.length > ETH + 20 && r.chance(0.5)) {
            const fe = r.pick(FUZZ_FRONTENDS);
            Buffer.from(fe.vip.split('.').map(Number)).copy(p, ETH + 16);
            p[ETH] = 0x45;
            p.writeUInt16BE(0, ETH + 6);
            if (p.length > ETH + 24) p.writeUInt16BE(fe.port, ETH + 22);
          }
        }
        return p;
      }
      case 'partial-checksum':
        return this.valid({ partialChecksum: true });
      case 'bit-flip': {
        const p = r.chance(0.6) ? this.valid() : this.reply();
        for (let i = 1 + r.int(3); i > 0; i--) {
          const at = r.int(p.length);
          p[at] = p[at]! ^ (1 << r.int(8));
        }
        return p;
      }
    }
  }

  /**
   * A packet of a recorded flow as it left this node towards its backend
   * (client, or its masquerade, -> backend): what a backend or a router on the
   * way quotes in an ICMP error. Else a valid packet.
   */
  private forwarded(): Buffer {
    const r = this.rng;
    const flows = this.model.flowTuples();
    if (!flows.length) return this.valid();
    const f = r.pick(flows);
    const proto = f.proto === abi.IPPROTO_TCP ? 'tcp' : 'udp';
    const src = f.snat ? { saddr: f.snat.addr, sport: f.snat.port } : { saddr: f.hairpin ? HAIRPIN_ADDR : f.client, sport: f.remap ?? f.clientPort };
    return buildPacket({ ...src, daddr: f.backend.ip, dport: f.backend.port, proto, tcpFlags: r.pick(FLAG_SETS), payload: r.bytes(r.int(32)), udpZeroChecksum: proto === 'udp' && r.chance(0.2) });
  }

  /** ICMP destination unreachable / time exceeded quoting a packet of a known flow (either direction, or as forwarded to its backend), or of a random one. */
  private icmpError(): Buffer {
    const r = this.rng;
    const inner = (r.chance(0.5) ? this.forwarded() : this.reply()).subarray(ETH);
    const quoted = inner.subarray(0, Math.min(inner.length, ((inner[0]! & 0x0f) * 4) + r.pick([8, 8, 8, r.int(8), 18, 28, 64])));
    const type = r.pick([3, 3, 3, 11, 12, 4, 5]);
    const icmp = Buffer.alloc(8 + quoted.length);
    icmp[0] = type;
    icmp[1] = type === 3 ? r.pick([0, 1, 3, 4, 13]) : 0;
    if (type === 3) icmp.writeUInt16BE(1400, 6); // next-hop MTU for code 4
    quoted.copy(icmp, 8);
    let s = 0;
    for (let i = 0; i + 1 < icmp.length; i += 2) s += icmp.readUInt16BE(i);
    if (icmp.length % 2) s += icmp[icmp.length - 1]! << 8;
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    icmp.writeUInt16BE(~s & 0xffff, 2);
    // The error goes towards the inner packet's source, from a router or the inner destination.
    const innerSrc = [...inner.subarray(12, 16)].join('.');
    const innerDst = [...inner.subarray(16, 20)].join('.');
    const outer = buildPacket({ saddr: r.chance(0.5) ? innerDst : '10.0.0.1', daddr: innerSrc, proto: 'udp', sport: 0, dport: 0, payload: Buffer.alloc(0) });
    const ip = Buffer.from(outer.subarray(0, ETH + 20));
    ip[ETH + 9] = 1;
    ip.writeUInt16BE(20 + icmp.length, ETH + 2);
    fixIpChecksum(ip);
    return Buffer.concat([ip, icmp]);
  }
}

// ---- the run ----

export interface FuzzOptions {
  packets: number;
  seed: number;
  /** Clear flows (maps and model) every this many packets (default 20,000). */
  resetEvery?: number;
  /** Stop at the first mismatch (default true). */
  stopOnFailure?: boolean;
  /** Share of node-facing packets that go through XDP, then tc (default 0.5). */
  xdpShare?: number;
}

export interface FuzzFailure {
  index: number;
  category: Category;
  /** xdp: the uplink pipeline (kbp_xdp_node, then kbp_from_node on its output). */
  program: 'pod' | 'node' | 'xdp';
  message: string;
  packetHex: string;
  /** Output of the stage the message is about (XDP's or tc's). */
  outputHex: string;
  retval: number;
}

/** The uplink pipeline's share of the run. */
export interface XdpShare {
  /** Packets run through kbp_xdp_node (then kbp_from_node unless dropped). */
  packets: number;
  /** Changed by XDP (XDP_PASS, bytes rewritten): counted xdp_forward. */
  translated: number;
  /** XDP_DROP. */
  dropped: number;
  /** XDP_PASS unchanged: left to tc. */
  passed: number;
  /** Of those passed: forward service flows left to tc because their L4 checksum field held only the pseudo-header sum. */
  pseudoHeaderOnly: number;
}

export interface FuzzReport {
  seed: number;
  packets: number;
  seconds: number;
  packetsPerSecond: number;
  byCategory: Record<string, number>;
  byVerdict: Record<string, number>;
  failures: FuzzFailure[];
  /** Per stats reason: what the model counted vs what the datapath's counters say. */
  counters: Record<string, { model: number; datapath: number }>;
  /** Runs that threw (a runtime error of the test run itself). */
  runErrors: string[];
  /** Generated frames the kernel's test run refuses (see testRunAccepts), replaced by others. */
  refused: number;
  xdp: XdpShare;
}

/**
 * BPF_PROG_TEST_RUN refuses (EINVAL) an IPv4 frame shorter than Ethernet +
 * 20 bytes and an IPv6 one shorter than Ethernet + 40, so such frames cannot
 * be fed to the program this way (on a real device they reach tc; the model's
 * rule for them is "untouched").
 */
export function testRunAccepts(pkt: Buffer): boolean {
  const et = pkt.readUInt16BE(12);
  if (et === 0x0800) return pkt.length >= ETH + 20;
  if (et === 0x86dd) return pkt.length >= ETH + 40;
  return pkt.length >= ETH;
}

async function clearMap(m: BpfMap): Promise<void> {
  for (;;) {
    const page = await m.lookupBatch(null, 4096);
    if (page.count === 0) return;
    await m.deleteBatch(page.keys, page.count);
  }
}

interface StageResult {
  /** null: as the model says. */
  message: string | null;
  retval: number;
  out: Buffer;
  /** How the datapath counted the packet along the way, in the model's terms. */
  counted: CountedAs[];
  xdp?: 'translated' | 'dropped' | 'passed';
}

/**
 * One packet through the uplink pipeline: kbp_xdp_node, then (XDP_PASS)
 * kbp_from_node on XDP's output. `exp` is what the model expects of
 * kbp_from_node alone; the pipeline must end there, and XDP must keep to
 * the model's XDP rule on the way.
 */
async function runUplink(fx: DatapathFixture, model: DatapathModel, pkt: Buffer, exp: Expectation): Promise<StageResult> {
  const rule = model.xdpRule(pkt, exp);
  const x = await fx.runXdp(pkt);
  const outcome = x.retval === XDP_DROP ? 'dropped' : x.retval !== XDP_PASS ? null : x.data.equals(pkt) ? 'passed' : 'translated';
  const atXdp = (message: string | null): StageResult => ({ message: message && `XDP: ${message}`, retval: x.retval, out: x.data, counted: [exp.counted], xdp: outcome ?? undefined });
  if (!outcome) return atXdp(`${exp.what}: retval ${x.retval}, want XDP_PASS or XDP_DROP`);
  let behind: Expectation;
  if (rule === 'pass') {
    if (outcome !== 'passed') return atXdp(`${exp.what}: ${outcome}, want passed to tc unchanged`);
    behind = exp;
  } else {
    // XDP acts as kbp_from_node would: exp judges its output (and commits the flow).
    if (outcome === 'passed') return atXdp(`${exp.what}: passed to tc unchanged, want it handled in XDP`);
    const message = exp.check(outcome === 'dropped' ? TC_ACT_SHOT : TC_ACT_OK, x.data);
    if (message || outcome === 'dropped') return atXdp(message);
    behind = model.expectBehindXdp(x.data);
  }
  const tc = await fx.runNode(x.data);
  const message = behind.check(tc.retval, tc.data);
  const counted: CountedAs[] = behind === exp ? [exp.counted] : [exp.counted, 'xdp_forward', behind.counted];
  return { message: message && `tc behind XDP: ${message}`, retval: tc.retval, out: tc.data, counted, xdp: outcome };
}

export async function runFuzz(opts: FuzzOptions, onProgress?: (done: number) => void): Promise<FuzzReport> {
  const fx = await DatapathFixture.open();
  try {
    await fx.program(toFixture(FUZZ_FRONTENDS));
    await fx.setConfig(NODE_IP);
    const before = await fx.readStats();
    const rng = new Rng(opts.seed);
    const model = new DatapathModel(FUZZ_FRONTENDS, NODE_IP);
    const gen = new PacketGenerator(rng, model);
    const resetEvery = opts.resetEvery ?? 20_000;
    const xdpShare = opts.xdpShare ?? 0.5;
    const report: FuzzReport = {
      seed: opts.seed,
      packets: 0,
      seconds: 0,
      packetsPerSecond: 0,
      byCategory: {},
      byVerdict: {},
      failures: [],
      counters: {},
      runErrors: [],
      refused: 0,
      xdp: { packets: 0, translated: 0, dropped: 0, passed: 0, pseudoHeaderOnly: 0 },
    };
    const counted = new Map<CountedAs, number>();
    const t0 = performance.now();
    for (let i = 0; i < opts.packets; i++) {
      if (i > 0 && i % resetEvery === 0) {
        await Promise.all([fx.ct, fx.snat, fx.affinity].map(clearMap));
        model.reset();
        onProgress?.(i);
      }
      const cat = gen.category();
      const pkt = gen.next(cat);
      if (!testRunAccepts(pkt)) {
        report.refused++;
        i--;
        continue;
      }
      const fromNode = rng.chance(0.5);
      const viaXdp = fromNode && rng.chance(xdpShare);
      const exp = model.expect(pkt, fromNode);
      let res: StageResult;
      try {
        if (viaXdp) {
          res = await runUplink(fx, model, pkt, exp);
        } else {
          const r = await (fromNode ? fx.runNode(pkt) : fx.run(pkt));
          res = { message: exp.check(r.retval, r.data), retval: r.retval, out: r.data, counted: [exp.counted] };
        }
      } catch (err) {
        report.runErrors.push(`packet ${i} (${cat}, ${pkt.length} B${viaXdp ? ', through XDP' : ''}): ${(err as Error).message}`);
        if (opts.stopOnFailure !== false) break;
        continue;
      }
      report.packets++;
      report.byCategory[cat] = (report.byCategory[cat] ?? 0) + 1;
      report.byVerdict[exp.verdict] = (report.byVerdict[exp.verdict] ?? 0) + 1;
      for (const c of res.counted) counted.set(c, (counted.get(c) ?? 0) + 1);
      if (viaXdp) {
        report.xdp.packets++;
        if (res.xdp) report.xdp[res.xdp]++;
        const p = parse(pkt);
        if (res.xdp === 'passed' && exp.forward && p && pseudoHeaderOnly(pkt, p)) report.xdp.pseudoHeaderOnly++;
      }
      if (res.message) {
        const program = viaXdp ? 'xdp' : fromNode ? 'node' : 'pod';
        report.failures.push({ index: i, category: cat, program, message: res.message, packetHex: pkt.toString('hex'), outputHex: res.out.toString('hex'), retval: res.retval });
        if (opts.stopOnFailure !== false) break;
      }
    }
    report.seconds = (performance.now() - t0) / 1000;
    report.packetsPerSecond = report.packets / report.seconds;
    const after = await fx.readStats();
    abi.STAT_NAMES.forEach((name, idx) => {
      const dp = Number(after[idx]!.packets - before[idx]!.packets);
      const m = counted.get(name as CountedAs) ?? 0;
      if (dp || m) report.counters[name] = { model: m, datapath: dp };
    });
    return report;
  } finally {
    await fx.close();
  }
}
