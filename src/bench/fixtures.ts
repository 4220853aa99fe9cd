// A loaded kbp datapath on a private bpffs, with helpers to program frontends
// the way the syncer does and to run packets through the program with
// BPF_PROG_TEST_RUN. The datapath tests (test/bpf) and the per-packet benchmark
// (kbp bench packet) share it, so the benchmark measures exactly the paths the
// tests assert.

import { native, type BpfMap, type BpfObject, type BpfProgram, type TestRunResult } from '../native/binding.js';
import { bpfObjectPath } from '../paths.js';
import { Testbed } from '../testbed/netns.js';
import {
  backendKey,
  backendValue,
  ctKey,
  ctValue,
  decodePerCpuStat,
  KBP_BACKEND_ACTIVE,
  KBP_BACKEND_F_LOCAL,
  KBP_BACKEND_TERMINATING,
  KBP_MAP_CONFIG,
  KBP_MAP_SNAT,
  KBP_MAP_SRC_RANGES,
  KBP_SVC_F_SOURCE_RANGES,
  srcRangeKey,
  srcRangeKeyOf,
  srcRangeValue,
  configValue,
  snatKey,
  snatValue,
  type SnatKey,
  type SnatValue,
  KBP_MAP_BACKENDS,
  KBP_MAP_CT,
  KBP_MAP_REVNAT,
  KBP_MAP_SERVICES,
  KBP_MAP_STATS,
  KBP_SCOPE_EXTERNAL,
  KBP_STAT_MAX,
  KBP_SVC_F_AFFINITY,
  KBP_SVC_F_CLUSTER_IP,
  KBP_MAP_AFFINITY,
  affinityKey,
  affinityValue,
  type AffinityKey,
  type AffinityValue,
  KBP_SVC_F_VIP_MARKER,
  revnatKey,
  revnatValue,
  statKey,
  svcKey,
  svcValue,
  type CtKey,
  type CtValue,
  type StatValue,
} from '../maps/abi.js';
import { IPPROTO_TCP, IPPROTO_UDP, type L4Proto } from './packets.js';

export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;
/** bpf_redirect's verdict: the (rewritten) packet leaves through another hook. */
export const TC_ACT_REDIRECT = 7;
export const XDP_DROP = 1;
export const XDP_PASS = 2;

export interface FixtureBackend {
  id: number;
  ip: string;
  port: number;
  /** Terminating backends exist in the backend map but get no slot. */
  terminating?: boolean;
  /** Runs on this node (KBP_BACKEND_F_LOCAL); default true. */
  local?: boolean;
}

export interface FixtureFrontend {
  svcId: number;
  vip: string;
  port: number;
  proto: L4Proto;
  backends: FixtureBackend[];
  flags?: number;
  /** sessionAffinity ClientIP timeout in seconds (sets KBP_SVC_F_AFFINITY). */
  affinityTimeout?: number;
  /** loadBalancerSourceRanges (sets KBP_SVC_F_SOURCE_RANGES). */
  sourceRanges?: string[];
  /** KBP_SCOPE_*; default external. */
  scope?: number;
}

export function protoNum(p: L4Proto): number {
  return p === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP;
}

/** Frontends (with their backends) as the records the syncer writes, for batch updates. */
export interface EncodedState {
  backends: { keys: Buffer; values: Buffer; count: number };
  services: { keys: Buffer; values: Buffer; count: number };
  revnat: { keys: Buffer; values: Buffer; count: number };
  srcRanges: { keys: Buffer; values: Buffer; count: number };
}

/** Encode frontends into batch buffers: backends, slots + service entries + VIP markers, revnat. */
export function encodeFrontends(frontends: readonly FixtureFrontend[]): EncodedState {
  const backendsSeen = new Map<number, FixtureBackend & { proto: number }>();
  const svc: Array<[Parameters<typeof svcKey.encode>[0], Parameters<typeof svcValue.encode>[0]]> = [];
  const vips = new Set<string>();
  for (const fe of frontends) {
    const proto = protoNum(fe.proto);
    const active = fe.backends.filter((b) => !b.terminating);
    for (const b of fe.backends) backendsSeen.set(b.id, { ...b, proto });
    active.forEach((b, i) => {
      svc.push([
        { vip: fe.vip, port: fe.port, proto, scope: fe.scope ?? KBP_SCOPE_EXTERNAL, slot: i + 1 },
        { backend_id: b.id, svc_id: fe.svcId, count: 0, flags: 0, affinity_timeout: 0 },
      ]);
    });
    svc.push([
      { vip: fe.vip, port: fe.port, proto, scope: fe.scope ?? KBP_SCOPE_EXTERNAL, slot: 0 },
      {
        backend_id: 0,
        svc_id: fe.svcId,
        count: active.length,
        flags: (fe.flags ?? KBP_SVC_F_CLUSTER_IP) | (fe.affinityTimeout ? KBP_SVC_F_AFFINITY : 0) | (fe.sourceRanges ? KBP_SVC_F_SOURCE_RANGES : 0),
        affinity_timeout: fe.affinityTimeout ?? 0,
      },
    ]);
    // Only ClusterIPs get a VIP marker: a node address also serves the node's
    // own ports, and kube-proxy drops nothing there.
    if ((fe.flags ?? KBP_SVC_F_CLUSTER_IP) & KBP_SVC_F_CLUSTER_IP) vips.add(fe.vip);
  }
  for (const vip of vips) {
    svc.push([
      { vip, port: 0, proto: 0, scope: KBP_SCOPE_EXTERNAL, slot: 0 },
      { backend_id: 0, svc_id: 0, count: 0, flags: KBP_SVC_F_VIP_MARKER, affinity_timeout: 0 },
    ]);
  }

  const ranges = frontends.flatMap((fe) => (fe.sourceRanges ?? []).map((cidr) => srcRangeKeyOf(fe.svcId, cidr)));
  const backends = [...backendsSeen.values()];
  const out: EncodedState = {
    backends: { keys: Buffer.alloc(backends.length * backendKey.size), values: Buffer.alloc(backends.length * backendValue.size), count: backends.length },
    services: { keys: Buffer.alloc(svc.length * svcKey.size), values: Buffer.alloc(svc.length * svcValue.size), count: svc.length },
    revnat: { keys: Buffer.alloc(frontends.length * revnatKey.size), values: Buffer.alloc(frontends.length * revnatValue.size), count: frontends.length },
    srcRanges: { keys: Buffer.alloc(ranges.length * srcRangeKey.size), values: Buffer.alloc(ranges.length * srcRangeValue.size), count: ranges.length },
  };
  ranges.forEach((k, i) => srcRangeKey.encodeInto(k, out.srcRanges.keys, i * srcRangeKey.size));
  backends.forEach((b, i) => {
    backendKey.encodeInto({ id: b.id }, out.backends.keys, i * backendKey.size);
    backendValue.encodeInto(
      {
        ip: b.ip,
        port: b.port,
        proto: b.proto,
        state: b.terminating ? KBP_BACKEND_TERMINATING : KBP_BACKEND_ACTIVE,
        flags: b.local === false ? 0 : KBP_BACKEND_F_LOCAL,
      },
      out.backends.values,
      i * backendValue.size,
    );
  });
  svc.forEach(([k, v], i) => {
    svcKey.encodeInto(k, out.services.keys, i * svcKey.size);
    svcValue.encodeInto(v, out.services.values, i * svcValue.size);
  });
  frontends.forEach((fe, i) => {
    revnatKey.encodeInto({ svc_id: fe.svcId }, out.revnat.keys, i * revnatKey.size);
    revnatValue.encodeInto({ vip: fe.vip, port: fe.port }, out.revnat.values, i * revnatValue.size);
  });
  return out;
}

/** The pod and node objects loaded with their maps pinned (shared) on a private bpffs. */
export class DatapathFixture {
  private constructor(
    private readonly testbed: Testbed,
    private readonly objects: BpfObject[],
    /** tc ingress on pod-facing devices. */
    readonly prog: BpfProgram,
    /** tc ingress on node-facing devices (uplinks). */
    readonly nodeProg: BpfProgram,
    /** XDP on node-facing devices (--nodeport-acceleration xdp). */
    readonly xdpProg: BpfProgram,
    readonly services: BpfMap,
    readonly backends: BpfMap,
    readonly revnat: BpfMap,
    readonly ct: BpfMap,
    readonly stats: BpfMap,
    readonly affinity: BpfMap,
    readonly snat: BpfMap,
    readonly config: BpfMap,
    readonly srcRanges: BpfMap,
  ) {}

  static async open(opts: { maxEntries?: Record<string, number> } = {}): Promise<DatapathFixture> {
    // A private bpffs, unmounted (and its pins gone) at close or if this process dies.
    const testbed = Testbed.create();
    try {
      const pinRoot = await testbed.mountBpffs();
      const obj = await native().openObject(bpfObjectPath('kbp_pod'), { pinRoot, maxEntries: opts.maxEntries });
      // Loaded second, the node object reuses every map the pod object pinned.
      const nodeObj = await native().openObject(bpfObjectPath('kbp_node'), { pinRoot, maxEntries: opts.maxEntries });
      const xdpObj = await native().openObject(bpfObjectPath('kbp_xdp'), { pinRoot, maxEntries: opts.maxEntries });
      return new DatapathFixture(
        testbed,
        [obj, nodeObj, xdpObj],
        obj.program('kbp_from_pod'),
        nodeObj.program('kbp_from_node'),
        xdpObj.program('kbp_xdp_node'),
        obj.map(KBP_MAP_SERVICES),
        obj.map(KBP_MAP_BACKENDS),
        obj.map(KBP_MAP_REVNAT),
        obj.map(KBP_MAP_CT),
        obj.map(KBP_MAP_STATS),
        obj.map(KBP_MAP_AFFINITY),
        obj.map(KBP_MAP_SNAT),
        obj.map(KBP_MAP_CONFIG),
        obj.map(KBP_MAP_SRC_RANGES),
      );
    } catch (err) {
      await testbed.teardown();
      throw err;
    }
  }

  /** Write frontends in the syncer's order: backends, slots, revnat, service entries last. */
  async program(frontends: readonly FixtureFrontend[]): Promise<void> {
    const s = encodeFrontends(frontends);
    await this.backends.updateBatch(s.backends.keys, s.backends.values, s.backends.count);
    await this.revnat.updateBatch(s.revnat.keys, s.revnat.values, s.revnat.count);
    // Ranges before the service entry that turns the check on. (LPM tries take no batches.)
    for (let i = 0; i < s.srcRanges.count; i++) {
      await this.srcRanges.update(s.srcRanges.keys.subarray(i * srcRangeKey.size, (i + 1) * srcRangeKey.size), s.srcRanges.values.subarray(i * srcRangeValue.size, (i + 1) * srcRangeValue.size));
    }
    await this.services.updateBatch(s.services.keys, s.services.values, s.services.count);
  }

  /** One packet through the pod-facing program. */
  run(data: Buffer, repeat = 1): Promise<TestRunResult> {
    return this.prog.testRun({ data, repeat });
  }

  /** One packet through the node-facing program. */
  runNode(data: Buffer): Promise<TestRunResult> {
    return this.nodeProg.testRun({ data });
  }

  /** One packet through the node-facing XDP program. */
  runXdp(data: Buffer): Promise<TestRunResult> {
    return this.xdpProg.testRun({ data });
  }

  async setConfig(nodeIp: string): Promise<void> {
    await this.config.update(statKey(0), configValue.encode({ node_ip: nodeIp, flags: 0 }));
  }

  async snatLookup(k: SnatKey): Promise<SnatValue | null> {
    const v = await this.snat.lookup(snatKey.encode(k));
    return v ? snatValue.decode(v) : null;
  }

  async ctLookup(k: CtKey): Promise<CtValue | null> {
    const v = await this.ct.lookup(ctKey.encode(k));
    return v ? ctValue.decode(v) : null;
  }

  async ctSet(k: CtKey, v: CtValue): Promise<void> {
    await this.ct.update(ctKey.encode(k), ctValue.encode(v));
  }

  async ctDelete(k: CtKey): Promise<boolean> {
    return this.ct.delete(ctKey.encode(k));
  }

  async snatDelete(k: SnatKey): Promise<boolean> {
    return this.snat.delete(snatKey.encode(k));
  }

  async affinityLookup(k: AffinityKey): Promise<AffinityValue | null> {
    const v = await this.affinity.lookup(affinityKey.encode(k));
    return v ? affinityValue.decode(v) : null;
  }

  async affinitySet(k: AffinityKey, v: AffinityValue): Promise<void> {
    await this.affinity.update(affinityKey.encode(k), affinityValue.encode(v));
  }

  async ctCount(): Promise<number> {
    let n = 0;
    let cursor: Buffer | null = null;
    do {
      const page: Awaited<ReturnType<BpfMap['lookupBatch']>> = await this.ct.lookupBatch(cursor, 4096);
      n += page.count;
      cursor = page.next;
    } while (cursor);
    return n;
  }

  async deleteBackend(id: number): Promise<boolean> {
    return this.backends.delete(backendKey.encode({ id }));
  }

  /** Every counter, summed over CPUs, by stat index. */
  async readStats(): Promise<StatValue[]> {
    const nCpus = native().numPossibleCpus();
    const out: StatValue[] = [];
    for (let i = 0; i < KBP_STAT_MAX; i++) {
      const v = await this.stats.lookup(statKey(i));
      out.push(v ? decodePerCpuStat(v, nCpus) : { packets: 0n, bytes: 0n });
    }
    return out;
  }

  async close(): Promise<void> {
    for (const o of this.objects) o.close();
    await this.testbed.teardown();
  }
}
