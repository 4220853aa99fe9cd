// An independent model of what kbp's datapath must do to one packet, for the
// malformed-packet fuzz (src/reliability/fuzz.ts). Written from the behaviour
// README.md and DESIGN.md describe, never from bpf/: it parses the bytes
// itself, keeps its own conntrack, SNAT and affinity tables, and for every
// packet says what the packet must become:
//   untouched  TC_ACT_OK, output byte-identical to the input
//   drop       TC_ACT_SHOT, counted under a named reason
//   translate  TC_ACT_OK, output = input with the destination and/or source
//              address and port replaced (and only those bytes plus the two
//              checksums changed); each checksum keeps its verification
//              residue, so a valid checksum stays valid and a broken one stays
//              broken by the same amount; a UDP checksum of 0 ("none") stays 0
//              and a set one never becomes 0
// A new flow's backend is random in the datapath, so the model names the
// allowed backends (the active ones, or the client's sticky one under
// ClientIP affinity) and the allowed SNAT ports, and learns which one the
// datapath took from the output, after checking it was allowed.
//
// Rules (the spec as this model reads it):
//  - Not IPv4 (ethertype), or the 20-byte IPv4 header does not fit, or IHL < 5:
//    not ours, untouched and not counted.
//  - Not TCP/UDP: untouched (counted as pass). ICMP errors: see
//    icmpError, the one place that decides them.
//  - A fragment (MF set or offset > 0) or a TCP/UDP header that does not fit:
//    dropped when the destination is a ClusterIP (a known frontend address),
//    untouched otherwise. Node addresses are no ClusterIPs: the node serves
//    its own ports there.
//  - To a frontend (address, port, protocol): a flow recorded and still open
//    follows its backend; otherwise a new flow picks an active backend (none:
//    drop, or, for a frontend whose Service has no endpoints at all, an ICMP
//    port unreachable from the frontend sent back out: see reject), a pod
//    that gets itself as backend sees the flow from 169.254.42.1 (port kept;
//    its reply goes back to it from the frontend), and on the node-facing program a backend on another node gets the
//    client masqueraded to the node (the NodePort address the client used, or
//    the configured node IP) with a free port in 61000-65535. A new flow whose
//    reply tuple belongs to another flow, open or closing, through another
//    frontend (or to a remapped flow) keeps its client address but leaves from
//    another port of 61000-65535 whose reply tuple is free, as netfilter's NAT
//    does on such a clash; its replies go back to the client's own port. The
//    same frontend on the same client port again (a new connection after a
//    close) takes the tuple over. A flow is closing once a FIN or RST was seen
//    on one of its later packets; a bare SYN on a closing flow starts a new flow.
//    A new flow to a frontend with loadBalancerSourceRanges from a source
//    outside them is dropped, whatever the endpoints.
//  - Not to a frontend: on the node-facing program a reply to a masqueraded
//    client goes back to the client, from the frontend; on both, a reply of a
//    recorded flow leaves from the frontend the client addressed. Anything else
//    to a ClusterIP is dropped (unknown port); the rest is untouched.
//  - Checksums are not judged: a packet with a bad checksum or a bad total
//    length is translated like a good one (its checksum stays as wrong as it
//    was), and the stack drops it after tc, as it would without kbp.
//  - an IPv4 ethertype with a version nibble other than 4: untouched, uncounted.
// XDP in front of the node-facing program (README, "XDP"; see xdpRule): a
// forward service flow (new, masqueraded, hairpin or established, to any
// frontend, external scope) whose L4 checksum is complete is translated or
// dropped in XDP exactly as the node-facing program would do it, and tc then
// sees a packet that is no service traffic any more (untouched, counted as
// pass); everything else, a forward flow whose checksum field holds only the
// pseudo-header sum included, passes to tc byte-identical and uncounted.
// Time does not pass in the model: the fuzz clears both the maps and the model
// long before any idle lifetime (30 s at the shortest) could run out.

export type Verdict = 'untouched' | 'drop' | 'translate' | 'reject';

export type DropReason = 'no_backend' | 'unknown_port' | 'fragment' | 'malformed' | 'no_config' | 'snat_ports' | 'source_range';
/** How the datapath counts a packet (its stats map); null: not counted. xdp_forward: translated in XDP (besides its outcome). */
export type CountedAs = 'pass' | 'new_flow' | 'established' | 'revnat' | 'snat' | 'hairpin' | 'port_remap' | 'reject' | 'icmp_revnat' | 'xdp_forward' | `drop_${DropReason}` | null;

export interface ModelBackend {
  id: number;
  ip: string;
  port: number;
  terminating?: boolean;
  /** On this node (default true). */
  local?: boolean;
}

export interface ModelFrontend {
  svcId: number;
  vip: string;
  port: number;
  proto: 'tcp' | 'udp';
  backends: ModelBackend[];
  /** KBP_SVC_F_* flags; default ClusterIP. */
  kind?: 'clusterIP' | 'nodePort' | 'loadBalancer' | 'externalIP';
  affinityTimeout?: number;
  /** The Service has no endpoints at all (KBP_SVC_F_REJECT): new flows are rejected, not dropped. */
  reject?: boolean;
  /** KBP_SVC_F_MASQUERADE (externalTrafficPolicy Cluster): every new flow is masqueraded, from either program, to any backend. */
  masquerade?: boolean;
  /** KBP_SVC_F_INTERNAL_SCOPE (externalTrafficPolicy Local): the pod program uses this frontend (same address and port, its own id and backends) instead. */
  forPods?: ModelFrontend;
  /** loadBalancerSourceRanges (CIDRs): a new flow from a source outside all of them drops, from either program (kube-proxy's KUBE-FW chain). */
  sourceRanges?: string[];
}

const TCP = 6;
const UDP = 17;
const ICMP = 1;
const ETH = 14;
const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const ACK = 0x10;
export const SNAT_PORT_MIN = 61000;
export const SNAT_PORT_MAX = 65535;


/** The fields of a packet the model looks at, read straight from the bytes. */
export interface Parsed {
  len: number;
  ihl: number; // bytes
  proto: number;
  saddr: string;
  daddr: string;
  fragment: boolean;
  /** Offset of the L4 header; whether the TCP (20 B) / UDP (8 B) header fits. */
  l4off: number;
  l4ok: boolean;
  sport: number;
  dport: number;
  tcpFlags: number;
}

const ip4 = (b: Buffer, o: number) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;

const ipNumber = (ip: string) => ip.split('.').reduce((n, x) => n * 256 + Number(x), 0);

/** Whether an address lies in a CIDR ("a.b.c.d/len"). */
function inCidr(ip: string, cidr: string): boolean {
  const [net, len] = cidr.split('/');
  const size = 2 ** (32 - Number(len));
  return Math.floor(ipNumber(ip) / size) === Math.floor(ipNumber(net!) / size);
}

/** null: not IPv4 as far as the datapath is concerned (untouched, not counted). */
export function parse(b: Buffer): Parsed | null {
  if (b.length < ETH + 20 || b.readUInt16BE(12) !== 0x0800) return null;
  const ihl = (b[ETH]! & 0x0f) * 4;
  if (ihl < 20) return null;
  if (b[ETH]! >> 4 !== 4) return null; // another version behind the IPv4 ethertype: untouched
  const proto = b[ETH + 9]!;
  const l4off = ETH + ihl;
  const fragment = (b.readUInt16BE(ETH + 6) & 0x3fff) !== 0;
  const need = proto === TCP ? 20 : 8;
  const l4ok = !fragment && (proto === TCP || proto === UDP) && b.length >= l4off + need;
  return {
    len: b.length,
    ihl,
    proto,
    saddr: ip4(b, ETH + 12),
    daddr: ip4(b, ETH + 16),
    fragment,
    l4off,
    l4ok,
    sport: l4ok ? b.readUInt16BE(l4off) : 0,
    dport: l4ok ? b.readUInt16BE(l4off + 2) : 0,
    tcpFlags: l4ok && proto === TCP ? b[l4off + 13]! : 0,
  };
}

// ---- checksums (RFC 1071 sums, written here, not imported) ----

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

function sumWords(b: Buffer, from: number, to: number, initial = 0): number {
  let s = initial;
  for (let i = from; i + 1 < to; i += 2) s += b.readUInt16BE(i);
  if ((to - from) % 2) s += b[to - 1]! << 8;
  return fold(s);
}

/** The one's-complement sum over a header including its checksum (0xffff when valid). */
export function ipResidue(b: Buffer, ihl: number): number {
  return sumWords(b, ETH, ETH + ihl);
}

/** Same for the TCP/UDP segment: pseudo header (addresses as in `b`) plus every byte after l4off. */
export function l4Residue(b: Buffer, l4off: number, proto: number): number {
  const len = b.length - l4off;
  let s = sumWords(b, ETH + 12, ETH + 20); // both addresses
  s = fold(s + proto + len);
  return sumWords(b, l4off, b.length, s);
}

/** One's-complement equality: 0x0000 and 0xffff are both zero. */
const sameResidue = (a: number, b: number) => a === b || (a % 0xffff === 0 && b % 0xffff === 0);

/**
 * Whether a TCP/UDP packet's checksum field holds only the pseudo-header sum
 * (folded, not inverted): what a local sender's CHECKSUM_PARTIAL packet
 * carries through a veth, and what XDP leaves to tc (README, "XDP"). The
 * pseudo header's length is the segment length the IPv4 header states (total
 * length minus header length, a 16-bit field: RFC 793, RFC 768), not the
 * frame's. A UDP checksum of 0 is no checksum at all, i.e. complete.
 */
export function pseudoHeaderOnly(b: Buffer, p: Parsed): boolean {
  const csum = b.readUInt16BE(p.l4off + (p.proto === TCP ? 16 : 6));
  if (p.proto === UDP && csum === 0) return false;
  const len = (b.readUInt16BE(ETH + 2) - p.ihl) & 0xffff;
  return csum === fold(sumWords(b, ETH + 12, ETH + 20) + p.proto + len);
}

// ---- tables ----

interface Flow {
  fe: ModelFrontend;
  backend: ModelBackend;
  closing: boolean;
  snat?: { addr: string; port: number };
  /** The client is its own backend: it sees the flow from HAIRPIN_ADDR. */
  hairpin?: boolean;
  /** The port the backend sees the client at when its own reply tuple was held by another flow. */
  remap?: number;
}
interface ReplyEntry {
  fe: ModelFrontend; // the frontend the client addressed
  closing: boolean;
  /** Hairpin: the pod the reply (addressed to HAIRPIN_ADDR) goes back to. */
  client?: string;
  /** A remapped flow (keyed by the remapped port): the client's own port. */
  clientPort?: number;
}
interface SnatEntry {
  fe: ModelFrontend;
  client: string;
  clientPort: number;
}

const tuple = (saddr: string, daddr: string, sport: number, dport: number, proto: number) => `${saddr}:${sport}>${daddr}:${dport}/${proto}`;

/** A pod that gets itself as backend (README, hairpin): it sees the flow from HAIRPIN_ADDR, port kept. */
const isHairpin = (p: Parsed, b: ModelBackend) => b.ip === p.saddr;

/** The reply tuple of an unmasqueraded flow of p to backend b: backend -> client (or -> HAIRPIN_ADDR), at the client's port or the one it was remapped to. */
const replyTuple = (p: Parsed, b: ModelBackend, port = p.sport) => tuple(b.ip, isHairpin(p, b) ? HAIRPIN_ADDR : p.saddr, b.port, port, p.proto);

export interface Expectation {
  /** A new flow's verdict and count are settled by check(). */
  verdict: Verdict;
  counted: CountedAs;
  /** Short description, for failure messages. */
  what: string;
  /**
   * A packet of a forward service flow to a frontend (new, masqueraded,
   * hairpin, remapped, established, or one the forward path drops: no backend,
   * no config, SNAT ports); not a REJECT answer. What XDP may take (xdpRule).
   */
  forward?: boolean;
  /**
   * Checks the datapath's result; returns null when it is what the model
   * allows (and then commits what the model learned: the flow and its
   * backend), else what is wrong.
   */
  check(retval: number, out: Buffer): string | null;
}

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;

export class DatapathModel {
  private readonly frontends = new Map<string, ModelFrontend>();
  private readonly clusterIps = new Set<string>();
  private flows = new Map<string, Flow>(); // forward tuple -> flow
  private replies = new Map<string, ReplyEntry>(); // reply tuple -> entry
  private snat = new Map<string, SnatEntry>(); // (backend, nat addr, backend port, nat port, proto)
  /** client|svcId -> the backend the client sticks to (several: one of them, not known which, after a dropped first flow). */
  private affinity = new Map<string, ModelBackend[]>();

  constructor(
    frontends: readonly ModelFrontend[],
    /** The configured node IP (masquerade source of LoadBalancer/externalIP flows); undefined: none. */
    private readonly nodeIp: string | undefined,
  ) {
    for (const fe of frontends) {
      this.frontends.set(`${fe.vip}:${fe.port}/${fe.proto === 'tcp' ? TCP : UDP}`, fe);
      if ((fe.kind ?? 'clusterIP') === 'clusterIP') this.clusterIps.add(fe.vip);
    }
  }

  /** Forget every flow (the fuzz clears the kernel's conntrack, SNAT and affinity maps at the same time). */
  reset(): void {
    this.flows = new Map();
    this.replies = new Map();
    this.snat = new Map();
    this.affinity = new Map();
  }

  /** Recorded flows, for the generator to aim replies and repeats at. */
  flowTuples(): Array<{ proto: number; client: string; clientPort: number; fe: ModelFrontend; backend: ModelBackend; snat?: { addr: string; port: number }; hairpin?: boolean; remap?: number }> {
    return [...this.flows.entries()].map(([k, f]) => {
      const m = /^(.+):(\d+)>.+\/(\d+)$/.exec(k)!;
      return { proto: Number(m[3]), client: m[1]!, clientPort: Number(m[2]), fe: f.fe, backend: f.backend, snat: f.snat, hairpin: f.hairpin, remap: f.remap };
    });
  }

  expect(pkt: Buffer, fromNode: boolean): Expectation {
    const p = parse(pkt);
    if (!p) return untouched(pkt, null, 'not IPv4');
    if (p.proto === ICMP && isIcmpError(pkt, p)) return this.icmpError(pkt, p, fromNode);
    if (p.proto !== TCP && p.proto !== UDP) return untouched(pkt, 'pass', `IPv4 protocol ${p.proto}`);
    if (p.fragment) return this.clusterIps.has(p.daddr) ? drop('fragment', 'fragment to a ClusterIP') : untouched(pkt, 'pass', 'fragment, not to a ClusterIP');
    if (!p.l4ok) return this.clusterIps.has(p.daddr) ? drop('malformed', 'truncated L4 to a ClusterIP') : untouched(pkt, 'pass', 'truncated L4');
    const fe = this.frontends.get(`${p.daddr}:${p.dport}/${p.proto}`);
    if (fe) {
      const exp = this.forward(pkt, p, !fromNode && fe.forPods ? fe.forPods : fe, fromNode);
      exp.forward = exp.verdict !== 'reject';
      return exp;
    }
    // Replies: the node-facing program looks up the SNAT table first, the
    // pod-facing one the reply table.
    const t = tuple(p.saddr, p.daddr, p.sport, p.dport, p.proto);
    const sn = this.snat.get(t);
    const rep = this.replies.get(t);
    if (sn && (fromNode || !rep)) {
      return translate(pkt, p, 'revnat', 'reply to a masqueraded client', { daddr: sn.client, dport: sn.clientPort, saddr: sn.fe.vip, sport: sn.fe.port });
    }
    if (rep) {
      return translate(pkt, p, 'revnat', 'reply of a recorded flow', { saddr: rep.fe.vip, sport: rep.fe.port, ...(rep.client ? { daddr: rep.client } : {}), ...(rep.clientPort !== undefined ? { dport: rep.clientPort } : {}) }, () => {
        if (p.tcpFlags & (FIN | RST)) rep.closing = true;
      });
    }
    if (this.clusterIps.has(p.daddr)) return drop('unknown_port', 'ClusterIP, port not served');
    return untouched(pkt, 'pass', 'not service traffic');
  }

  /**
   * What kbp_xdp_node in front of the node-facing program must do with a
   * packet whose tc expectation (expect(pkt, true)) is `exp`:
   *   forward  act exactly as `exp` says the node-facing program acts (the
   *            same translation, or one of the drops it allows, counted the
   *            same) and count xdp_forward when it translated; the result
   *            then reaches tc, where it is no service traffic (see
   *            expectBehindXdp)
   *   pass     XDP_PASS with the packet byte-identical and nothing counted:
   *            tc decides it as if XDP were not there
   * README: XDP balances, masquerades and DNATs new and established flows to
   * a frontend; replies, ICMP, REJECT answers, fragments, anything it does not
   * know, and packets whose L4 checksum field holds only a pseudo-header sum
   * pass to tc unchanged.
   */
  xdpRule(pkt: Buffer, exp: Expectation): 'forward' | 'pass' {
    const p = parse(pkt);
    return p && exp.forward && !pseudoHeaderOnly(pkt, p) ? 'forward' : 'pass';
  }

  /**
   * What the node-facing program must do with the packet XDP translated:
   * leave it alone (it goes from the client, or its masquerade, to a backend:
   * no frontend, no reply of a recorded flow), counted as pass. Judged by
   * the model's own rules, as any packet arriving at tc, and refused if those
   * say anything else.
   */
  expectBehindXdp(out: Buffer): Expectation {
    const exp = this.expect(out, true);
    if (exp.verdict === 'untouched' && exp.counted === 'pass') return exp;
    return { ...exp, check: () => `model: the translated packet would be ${exp.verdict} (${exp.what}) at tc, want untouched (pass)` };
  }

  private forward(pkt: Buffer, p: Parsed, fe: ModelFrontend, fromNode: boolean): Expectation {
    const key = tuple(p.saddr, p.daddr, p.sport, p.dport, p.proto);
    const flow = this.flows.get(key);
    const bareSyn = (p.tcpFlags & (SYN | ACK)) === SYN;
    const live = flow && !(flow.closing && bareSyn) ? flow : undefined;
    if (live && live.fe.svcId === fe.svcId) {
      const to = { daddr: live.backend.ip, dport: live.backend.port, ...(live.snat ? { saddr: live.snat.addr, sport: live.snat.port } : live.hairpin ? { saddr: HAIRPIN_ADDR } : {}), ...(live.remap !== undefined ? { sport: live.remap } : {}) };
      return translate(pkt, p, 'established', `established flow to ${fe.vip}:${fe.port}`, to, () => {
        if (p.tcpFlags & (FIN | RST)) live.closing = true;
      });
    }
    // A live flow recorded under another frontend id (the same address and
    // port through the other program's entry, or a replaced frontend) keeps
    // its backend (and a remapped client port) and is recorded again as a new
    // flow of this one: no endpoint check, no affinity.
    const rebind = live !== undefined;
    if (fe.sourceRanges && !fe.sourceRanges.some((cidr) => inCidr(p.saddr, cidr))) return drop('source_range', `new flow to ${fe.vip}:${fe.port} from ${p.saddr}, outside its source ranges`);
    const active = fe.backends.filter((b) => !b.terminating);
    if (!rebind && active.length === 0) {
      return fe.reject ? reject(pkt, p, `frontend ${fe.vip}:${fe.port} without endpoints`) : drop('no_backend', `frontend ${fe.vip}:${fe.port} without active backend`);
    }
    const affKey = `${p.saddr}|${fe.svcId}`;
    const sticky = rebind ? undefined : fe.affinityTimeout ? this.affinity.get(affKey) : undefined;
    const allowed = live ? [live.backend] : (sticky ?? active);
    const masquerade = (b: ModelBackend) => (fromNode && b.local === false) || fe.masquerade === true;
    const natAddr = fe.kind === 'nodePort' ? p.daddr : this.nodeIp;
    if (allowed.every(masquerade) && !natAddr) return drop('no_config', 'masquerade needed, no node IP configured');
    const what = `new flow to ${fe.vip}:${fe.port} (allowed: ${allowed.map((b) => `${b.ip}:${b.port}`).join(' ')})`;
    const exp: Expectation = {
      verdict: 'translate',
      counted: 'new_flow', // settled in check(): new_flow, snat or a drop
      what,
      check: (retval, out) => {
        if (retval === TC_ACT_SHOT) {
          // Legitimate only when the backend it may have picked needs SNAT
          // without a node IP. (A held reply tuple is remapped; running out
          // of the 8 random ports tried needs thousands of flows between
          // one client port and one backend, which no run here makes.)
          if (!(allowed.some(masquerade) && !natAddr)) return `dropped a ${what}`;
          exp.verdict = 'drop';
          exp.counted = 'drop_no_config';
          return null;
        }
        // Which backend did it take? Only the destination tells.
        const op = retval === TC_ACT_OK ? parse(out) : null;
        const b = op && allowed.find((x) => x.ip === op.daddr && x.port === op.dport);
        if (!b) return `${what}: retval ${retval}, went to ${op ? `${op.daddr}:${op.dport}` : 'an unparsable packet'}`;
        if (masquerade(b) && !natAddr) return `${what}: masqueraded without a node IP`;
        let snat: Flow['snat'];
        let remap: number | undefined;
        const hairpin = isHairpin(p, b) && !masquerade(b);
        const inRange = (port: number) => port >= SNAT_PORT_MIN && port <= SNAT_PORT_MAX;
        if (masquerade(b)) {
          const port = op.sport;
          if (op.saddr !== natAddr || !inRange(port)) return `${what}: source ${op.saddr}:${port}, want ${natAddr}:${SNAT_PORT_MIN}-${SNAT_PORT_MAX}`;
          if (this.snat.has(tuple(b.ip, natAddr!, b.port, port, p.proto))) return `${what}: SNAT port ${port} already held by another flow`;
          snat = { addr: natAddr!, port };
        } else if (live?.remap !== undefined) {
          // Re-recorded under this frontend id: the backend knows the client by its remapped port.
          remap = live.remap;
        } else if (this.replyHeld(p, b)) {
          // The reply tuple belongs to another live flow: the client's port is remapped.
          remap = op.sport;
          if (!inRange(remap)) return `${what}: took ${b.ip}:${b.port}, whose reply tuple another flow holds, from port ${remap}, want one of ${SNAT_PORT_MIN}-${SNAT_PORT_MAX}`;
          if (this.replies.has(replyTuple(p, b, remap))) return `${what}: remapped to port ${remap}, whose reply tuple another flow holds too`;
        }
        const source = snat ? { saddr: snat.addr, sport: snat.port } : { ...(hairpin ? { saddr: HAIRPIN_ADDR } : {}), ...(remap !== undefined ? { sport: remap } : {}) };
        const err = checkRewrite(pkt, p, out, { daddr: b.ip, dport: b.port, ...source });
        if (err) return `${what}: ${err}`;
        // Commit what the datapath recorded.
        exp.counted = snat ? 'snat' : remap !== undefined ? 'port_remap' : hairpin ? 'hairpin' : 'new_flow';
        this.flows.set(key, { fe, backend: b, closing: false, snat, hairpin, remap });
        if (snat) this.snat.set(tuple(b.ip, snat.addr, b.port, snat.port, p.proto), { fe, client: p.saddr, clientPort: p.sport });
        else this.replies.set(replyTuple(p, b, remap), { fe, closing: false, client: hairpin ? p.saddr : undefined, clientPort: remap !== undefined ? p.sport : undefined });
        if (fe.affinityTimeout && !rebind) this.affinity.set(affKey, [b]);
        return null;
      },
    };
    return exp;
  }

  /**
   * An ICMP error (destination unreachable, time exceeded, parameter problem)
   * that quotes a datagram of a recorded flow as it left this node towards the
   * backend (client or its masquerade -> backend) goes to the client as if the
   * frontend had sent it: outer source = the frontend, outer destination = the
   * client (when it was the quote's source), the quote restored to client ->
   * frontend. Found through the SNAT table or the reply table. Every other ICMP packet passes untouched.
   */
  private icmpError(pkt: Buffer, p: Parsed, fromNode: boolean): Expectation {
    const q = quoteOf(pkt, p);
    if (!q) return untouched(pkt, 'pass', 'ICMP error, no TCP/UDP quote to translate');
    const back = tuple(q.daddr, q.saddr, q.dport, q.sport, q.proto);
    const sn = this.snat.get(back);
    if (sn) {
      return icmpTranslate(pkt, p, q, 'ICMP error about a masqueraded flow', {
        outer: { saddr: sn.fe.vip, daddr: sn.client },
        inner: { saddr: sn.client, sport: sn.clientPort, daddr: sn.fe.vip, dport: sn.fe.port },
      });
    }
    const rep = this.replies.get(back);
    if (!rep) return untouched(pkt, 'pass', 'ICMP error about no recorded flow');
    const client = q.saddr === HAIRPIN_ADDR ? q.daddr : q.saddr;
    return icmpTranslate(pkt, p, q, 'ICMP error about a recorded flow', {
      outer: { saddr: rep.fe.vip, daddr: p.daddr === q.saddr ? client : p.daddr },
      inner: { saddr: client, sport: rep.clientPort ?? q.sport, daddr: rep.fe.vip, dport: rep.fe.port },
    });
  }

  /**
   * Does another flow hold the reply tuple a new flow of p to backend b would
   * have: one through another frontend (open or closing: the backend may still
   * hold it in TIME_WAIT), or a remapped flow? Then the datapath remaps the
   * client's port. The model never outlives an idle lifetime (see reset), so
   * every entry it holds is live.
   */
  private replyHeld(p: Parsed, b: ModelBackend): boolean {
    const r = this.replies.get(replyTuple(p, b));
    return !!r && ((r.clientPort !== undefined && r.clientPort !== p.sport) || r.fe.vip !== p.daddr || r.fe.port !== p.dport);
  }
}

// ---- expectations ----

function untouched(pkt: Buffer, counted: CountedAs, what: string): Expectation {
  return {
    verdict: 'untouched',
    counted,
    what,
    check: (retval, out) => {
      if (retval !== TC_ACT_OK) return `${what}: retval ${retval}, want TC_ACT_OK untouched`;
      if (!out.equals(pkt)) return `${what}: packet changed at byte ${firstDiff(pkt, out)}`;
      return null;
    },
  };
}

function drop(reason: DropReason, what: string): Expectation {
  return {
    verdict: 'drop',
    counted: `drop_${reason}`,
    what,
    check: (retval) => (retval === TC_ACT_SHOT ? null : `${what}: retval ${retval}, want TC_ACT_SHOT (${reason})`),
  };
}

interface Rewrite {
  saddr?: string;
  sport?: number;
  daddr?: string;
  dport?: number;
}

function translate(pkt: Buffer, p: Parsed, counted: CountedAs, what: string, to: Rewrite, commit?: () => void): Expectation {
  return {
    verdict: 'translate',
    counted,
    what,
    check: (retval, out) => {
      if (retval !== TC_ACT_OK) return `${what}: retval ${retval}, want TC_ACT_OK translated`;
      const err = checkRewrite(pkt, p, out, to);
      if (err) return `${what}: ${err}`;
      commit?.();
      return null;
    },
  };
}

const ipBytes = (s: string) => Buffer.from(s.split('.').map(Number));

/** out must be pkt with exactly `to` rewritten and both checksums carrying their residue over. */
function checkRewrite(pkt: Buffer, p: Parsed, out: Buffer, to: Rewrite): string | null {
  if (out.length !== pkt.length) return `length ${out.length}, want ${pkt.length}`;
  const want = Buffer.from(pkt);
  if (to.saddr !== undefined) ipBytes(to.saddr).copy(want, ETH + 12);
  if (to.daddr !== undefined) ipBytes(to.daddr).copy(want, ETH + 16);
  if (to.sport !== undefined) want.writeUInt16BE(to.sport, p.l4off);
  if (to.dport !== undefined) want.writeUInt16BE(to.dport, p.l4off + 2);
  const ipCsum = ETH + 10;
  const l4Csum = p.l4off + (p.proto === TCP ? 16 : 6);
  // Everything but the two checksum fields must match exactly.
  for (const off of [ipCsum, l4Csum]) out.copy(want, off, off, off + 2);
  if (!out.equals(want)) return `bytes differ from the expected translation at ${firstDiff(want, out)}`;
  if (!sameResidue(ipResidue(pkt, p.ihl), ipResidue(out, p.ihl))) return `IPv4 checksum residue ${ipResidue(pkt, p.ihl).toString(16)} -> ${ipResidue(out, p.ihl).toString(16)}`;
  if (p.proto === UDP && pkt.readUInt16BE(l4Csum) === 0) {
    if (out.readUInt16BE(l4Csum) !== 0) return 'UDP checksum 0 (none) was filled in';
  } else if (p.proto === UDP && out.readUInt16BE(l4Csum) === 0) {
    // A computed 0 is sent as 0xffff (RFC 768); 0 would turn the check off.
    return 'UDP checksum became 0 (none)';
  } else if (!sameResidue(l4Residue(pkt, p.l4off, p.proto), l4Residue(out, p.l4off, p.proto))) {
    return `L4 checksum residue ${l4Residue(pkt, p.l4off, p.proto).toString(16)} -> ${l4Residue(out, p.l4off, p.proto).toString(16)}`;
  }
  return null;
}

function firstDiff(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

// ---- ICMP errors ----

/** ICMP types that carry the header of the packet they report on (RFC 792). */
const ICMP_ERROR_TYPES = new Set([3, 4, 5, 11, 12]);
/** The ones the datapath translates (source quench and redirect are left alone). */
const ICMP_TRANSLATED_TYPES = new Set([3, 11, 12]);
/** The source a pod that reaches itself through a frontend sees (hairpin). */
export const HAIRPIN_ADDR = '169.254.42.1';

function isIcmpError(pkt: Buffer, p: Parsed): boolean {
  const off = ETH + p.ihl;
  return !p.fragment && pkt.length > off && ICMP_ERROR_TYPES.has(pkt[off]!);
}

/** Where an ICMP error's quote is and what it says; null when it cannot be translated. */
interface Quote {
  icmpOff: number;
  inOff: number; // quoted IPv4 header
  inIhl: number;
  l4Off: number; // quoted TCP/UDP header
  proto: number;
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
}

/** A quote the datapath can translate: a translated type, an IPv4 header with IHL >= 5, TCP or UDP, no later fragment, 8 L4 bytes. */
function quoteOf(pkt: Buffer, p: Parsed): Quote | null {
  const icmpOff = ETH + p.ihl;
  const inOff = icmpOff + 8;
  if (!ICMP_TRANSLATED_TYPES.has(pkt[icmpOff]!) || pkt.length < inOff + 20) return null;
  const inIhl = (pkt[inOff]! & 0x0f) * 4;
  const proto = pkt[inOff + 9]!;
  if (inIhl < 20 || (proto !== TCP && proto !== UDP) || (pkt.readUInt16BE(inOff + 6) & 0x1fff) !== 0) return null;
  const l4Off = inOff + inIhl;
  if (pkt.length < l4Off + 8) return null;
  return { icmpOff, inOff, inIhl, l4Off, proto, saddr: ip4(pkt, inOff + 12), daddr: ip4(pkt, inOff + 16), sport: pkt.readUInt16BE(l4Off), dport: pkt.readUInt16BE(l4Off + 2) };
}

interface IcmpRewrite {
  outer: { saddr: string; daddr: string };
  inner: { saddr: string; sport: number; daddr: string; dport: number };
}

/**
 * The error with exactly these addresses and ports replaced; every checksum
 * that covers them carries its residue over: the outer IPv4 header's, the
 * quoted IPv4 header's, the ICMP checksum over all the rest of the frame, and
 * the quoted L4 checksum when the quote holds it (UDP: unless 0, "none", which
 * stays 0; TCP: when its bytes 16-17 are in the frame), judged over the words
 * it covers that change (addresses of its pseudo header, ports).
 */
function icmpTranslate(pkt: Buffer, p: Parsed, q: Quote, what: string, to: IcmpRewrite): Expectation {
  return {
    verdict: 'translate',
    counted: 'icmp_revnat',
    what,
    check: (retval, out) => {
      if (retval !== TC_ACT_OK) return `${what}: retval ${retval}, want TC_ACT_OK translated`;
      if (out.length !== pkt.length) return `${what}: length ${out.length}, want ${pkt.length}`;
      const want = Buffer.from(pkt);
      ipBytes(to.outer.saddr).copy(want, ETH + 12);
      ipBytes(to.outer.daddr).copy(want, ETH + 16);
      ipBytes(to.inner.saddr).copy(want, q.inOff + 12);
      ipBytes(to.inner.daddr).copy(want, q.inOff + 16);
      want.writeUInt16BE(to.inner.sport, q.l4Off);
      want.writeUInt16BE(to.inner.dport, q.l4Off + 2);
      const l4Csum = q.l4Off + (q.proto === TCP ? 16 : 6);
      const hasL4Csum = pkt.length >= l4Csum + 2;
      const csums = [ETH + 10, q.icmpOff + 2, q.inOff + 10, ...(hasL4Csum ? [l4Csum] : [])];
      for (const off of csums) out.copy(want, off, off, off + 2);
      if (!out.equals(want)) return `${what}: bytes differ from the expected translation at ${firstDiff(want, out)}`;
      if (!sameResidue(ipResidue(pkt, p.ihl), ipResidue(out, p.ihl))) return `${what}: outer IPv4 checksum residue changed`;
      if (!sameResidue(sumWords(pkt, q.inOff, q.inOff + q.inIhl), sumWords(out, q.inOff, q.inOff + q.inIhl))) return `${what}: quoted IPv4 checksum residue changed`;
      if (!sameResidue(sumWords(pkt, q.icmpOff, pkt.length), sumWords(out, q.icmpOff, out.length))) return `${what}: ICMP checksum residue changed`;
      if (hasL4Csum) {
        if (q.proto === UDP && pkt.readUInt16BE(l4Csum) === 0) {
          if (out.readUInt16BE(l4Csum) !== 0) return `${what}: quoted UDP checksum 0 (none) was filled in`;
        } else {
          const covered = (b: Buffer) => fold(sumWords(b, q.inOff + 12, q.inOff + 20) + sumWords(b, q.l4Off, q.l4Off + 4) + b.readUInt16BE(l4Csum));
          if (!sameResidue(covered(pkt), covered(out))) return `${what}: quoted L4 checksum does not follow the rewrite`;
        }
      }
      return null;
    },
  };
}

/**
 * A packet to a frontend without endpoints becomes the ICMP destination
 * unreachable / port unreachable iptables' REJECT would send, sent back out
 * of the device it came in on (TC_ACT_REDIRECT): Ethernet addresses swapped;
 * IPv4 header of 20 bytes from the frontend to the client, TOS 0, ID 0, no
 * flags, TTL 64; ICMP type 3 code 3 with 4 zero bytes, quoting the packet's
 * IPv4 header (options included) and its first 8 L4 bytes, as received.
 */
function reject(pkt: Buffer, p: Parsed, what: string): Expectation {
  const quote = pkt.subarray(ETH, p.l4off + 8);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 8 + quote.length, 2);
  ip[8] = 64;
  ip[9] = ICMP;
  pkt.copy(ip, 12, ETH + 16, ETH + 20);
  pkt.copy(ip, 16, ETH + 12, ETH + 16);
  ip.writeUInt16BE(~sumWords(ip, 0, 20) & 0xffff, 10);
  const icmp = Buffer.concat([Buffer.from([3, 3, 0, 0, 0, 0, 0, 0]), quote]);
  icmp.writeUInt16BE(~sumWords(icmp, 0, icmp.length) & 0xffff, 2);
  const frame = Buffer.concat([pkt.subarray(6, 12), pkt.subarray(0, 6), pkt.subarray(12, 14), ip, icmp]);
  return {
    verdict: 'reject',
    counted: 'reject',
    what,
    check: (retval, out) => {
      if (retval !== TC_ACT_REDIRECT) return `${what}: retval ${retval}, want TC_ACT_REDIRECT (rejected)`;
      if (!out.equals(frame)) return `${what}: ICMP frame differs at byte ${firstDiff(frame, out)}`;
      return null;
    },
  };
}
