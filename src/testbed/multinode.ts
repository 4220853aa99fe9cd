// A multi-node cluster inside network namespaces: node namespaces (each a
// topology.ts Cluster with its routed pods and its own bpffs) joined by a
// fabric, plus an external client on the fabric.
//
//   fabric ns: bridge br0 172.18.0.1/24 (the "router")
//              ├── veth f-<node> ── node ns eth0 172.18.0.1N/24
//              └── veth f-client ── client ns eth0 172.18.0.100/24
//
//   node N: pods 10.244.N.0/24 (/32 routes to their host veths, topology.ts),
//           route 10.244.M.0/24 via 172.18.0.1M for every other node M
//           (host-gw: pod traffic between nodes is routed, not encapsulated),
//           default via 172.18.0.1, as a real node has one: a packet to an
//           address the node has no route for is forwarded (and passes the
//           FORWARD chain, where kube-proxy REJECTs Services without
//           endpoints) rather than refused with "network unreachable". The
//           router does not forward (ip_forward is off in its namespace).
//
// The fabric is the "physical" network: the nodes' eth0 are their uplinks
// (kbp's --node-devices), the client is outside the cluster. Node sysctls
// beyond topology.ts: send_redirects off, because a NodePort reply goes back
// out the uplink it came in on, which would otherwise earn the client an ICMP
// redirect. (accept_local, which the translated packets need, is the agent's
// job: src/agent/uplinks.ts.)
//
// Everything lives in the run's namespaces; the root namespace gets nothing.

import { Agent } from './agent.js';
import { ip, nsExec, type Testbed } from './netns.js';
import { Probe } from './programs.js';
import { Cluster } from './topology.js';
import { bpfObjectPath } from '../paths.js';

export const FABRIC_PREFIX = '172.18.0';
export const FABRIC_CIDR_LEN = 24;
/** The fabric's router (the bridge's own address): the nodes' default gateway. */
export const FABRIC_GATEWAY = `${FABRIC_PREFIX}.1`;
/** The external client's address on the fabric. */
export const EXTERNAL_CLIENT_IP = `${FABRIC_PREFIX}.100`;
/** The agent's --node-devices on this topology. */
export const UPLINK = 'eth0';

/** Node n (1-based): its name, fabric address and pod CIDR. */
export function nodePlan(n: number): { name: string; ip: string; podCidr: string; podPrefix: string } {
  return { name: `node${n}`, ip: `${FABRIC_PREFIX}.${10 + n}`, podCidr: `10.244.${n}.0/24`, podPrefix: `10.244.${n}` };
}

export interface ClusterNode {
  readonly cluster: Cluster;
  readonly name: string;
  /** The node's address on the fabric (its InternalIP). */
  readonly ip: string;
  readonly podCidr: string;
  /** "10.244.N": pods get `${podPrefix}.X`. */
  readonly podPrefix: string;
}

export class MultiNodeCluster {
  private constructor(
    readonly tb: Testbed,
    readonly fabricNs: string,
    readonly nodes: readonly ClusterNode[],
    /** The external client's namespace (on the fabric, no route into the cluster). */
    readonly clientNs: string,
    readonly clientIp: string,
  ) {}

  static async create(tb: Testbed, opts: { nodes?: number } = {}): Promise<MultiNodeCluster> {
    const count = opts.nodes ?? 2;
    const fabricNs = await tb.addNamespace('fabric');
    await ip('-n', fabricNs, 'link', 'add', 'br0', 'type', 'bridge');
    await ip('-n', fabricNs, 'link', 'set', 'br0', 'up');
    await ip('-n', fabricNs, 'addr', 'add', `${FABRIC_GATEWAY}/${FABRIC_CIDR_LEN}`, 'dev', 'br0');

    const plans = Array.from({ length: count }, (_, i) => nodePlan(i + 1));
    const nodes: ClusterNode[] = [];
    for (const plan of plans) {
      const cluster = await Cluster.create(tb, { nodeName: plan.name });
      await plug(fabricNs, `f-${plan.name}`, cluster.nodeNs, `${plan.ip}/${FABRIC_CIDR_LEN}`);
      await nsExec(cluster.nodeNs, 'sysctl', [
        '-q',
        '-w',
        'net.ipv4.conf.all.send_redirects=0',
        `net.ipv4.conf.${UPLINK}.send_redirects=0`,
        `net.ipv4.conf.${UPLINK}.rp_filter=0`,
      ]);
      nodes.push({ cluster, ...plan });
    }
    // host-gw: every node reaches the others' pods through their fabric address.
    for (const n of nodes) {
      for (const m of nodes) if (m !== n) await ip('-n', n.cluster.nodeNs, 'route', 'add', m.podCidr, 'via', m.ip, 'dev', UPLINK);
      await ip('-n', n.cluster.nodeNs, 'route', 'add', 'default', 'via', FABRIC_GATEWAY, 'dev', UPLINK);
    }
    const clientNs = await tb.addNamespace('external');
    await plug(fabricNs, 'f-client', clientNs, `${EXTERNAL_CLIENT_IP}/${FABRIC_CIDR_LEN}`);
    return new MultiNodeCluster(tb, fabricNs, nodes, clientNs, EXTERNAL_CLIENT_IP);
  }

  node(n: number): ClusterNode {
    const node = this.nodes[n - 1];
    if (!node) throw new Error(`no node ${n}`);
    return node;
  }

  /** One `kbp agent --manifests dir --node-devices eth0 [extraArgs]` per node, in node order (each with a probe in its node namespace for the API). */
  async startAgents(manifestsDir: string, extraArgs: readonly string[] = []): Promise<Agent[]> {
    const agents: Agent[] = [];
    for (const n of this.nodes) {
      const nodeProbe = await Probe.start(this.tb, n.cluster.nodeNs);
      agents.push(await Agent.start(this.tb, n.cluster, nodeProbe, { manifestsDir, extraArgs: ['--node-devices', UPLINK, ...extraArgs] }));
    }
    return agents;
  }

  /**
   * Makes the external client send complete L4 checksums, as a host behind a
   * real wire does: by default its veth offloads them, and its packets then
   * reach the nodes with CHECKSUM_PARTIAL and only the pseudo-header sum in
   * the checksum field, which the XDP datapath (rightly) leaves to tc.
   */
  async clientChecksumsComplete(): Promise<void> {
    await nsExec(this.clientNs, 'ethtool', ['-K', UPLINK, 'tx', 'off']);
  }

  /**
   * Lets the nodes' uplinks send with XDP_TX: a veth hands an XDP_TX'd frame
   * to its peer's XDP receive path, which the fabric-side ends get by running
   * an XDP program of their own (kbp_noop_xdp, XDP_PASS). Without one the
   * frame is dropped (no NAPI); with only GRO on, frames were accepted but
   * never delivered on this kernel (6.18; seen with tcpdump on the peer). A
   * NIC needs nothing of this.
   */
  async fabricNapi(): Promise<void> {
    for (const n of this.nodes) await nsExec(this.fabricNs, 'ip', ['link', 'set', 'dev', `f-${n.name}`, 'xdpdrv', 'obj', bpfObjectPath('kbp_noop_xdp'), 'sec', 'xdp']);
  }

  /** Routes `dest` (e.g. a load balancer IP, /32) from the external client through node n, as a load balancer would. */
  async routeFromClient(dest: string, n: number): Promise<void> {
    await ip('-n', this.clientNs, 'route', 'replace', dest, 'via', this.node(n).ip, 'dev', UPLINK);
  }
}

/** A veth from the fabric bridge to `ns`'s eth0 with `cidr`; both ends created in their namespaces. */
async function plug(fabricNs: string, fabricEnd: string, ns: string, cidr: string): Promise<void> {
  await ip('-n', fabricNs, 'link', 'add', fabricEnd, 'type', 'veth', 'peer', 'name', UPLINK, 'netns', ns);
  await ip('-n', fabricNs, 'link', 'set', fabricEnd, 'master', 'br0', 'up');
  await ip('-n', ns, 'addr', 'add', cidr, 'dev', UPLINK);
  await ip('-n', ns, 'link', 'set', UPLINK, 'up');
}
