// A single-node cluster inside network namespaces, wired the way Calico wires
// pods: routed, not bridged.
//
//   pod ns                          node ns
//   eth0 10.244.1.X/32  <── veth ──> veth<pod>  (169.254.1.1/32, no subnet)
//   default via 169.254.1.1 onlink           route 10.244.1.X/32 dev veth<pod>
//
// Every host veth carries the same link-local gateway address 169.254.1.1, so
// a pod's ARP for its gateway is answered by the node on that veth, and the
// node's ARP for a pod goes out the pod's own veth. The node forwards between
// pods by its /32 routes. ClusterIPs (10.96.0.0/12) belong to no interface and
// the node has no route for them: a pod reaches one through its default route,
// the packet enters the node at the pod's host veth, and kbp's tc ingress
// program rewrites it there, before the node routes it. Without kbp such a
// packet is answered with ICMP "net unreachable" by the node.
//
// All of this exists only inside the run's namespaces; the root namespace
// gets no address, route or rule.

import { CommandError, ip, nsExec, type Testbed } from './netns.js';

/** The gateway every pod routes through; owned by each host veth. */
export const POD_GATEWAY = '169.254.1.1';
/** Pods' addresses on this node (EndpointSlices in examples/ use it). */
export const POD_CIDR = '10.244.1.0/24';
/** Service ClusterIP range (kube-apiserver's --service-cluster-ip-range). */
export const SERVICE_CIDR = '10.96.0.0/12';
/** The agent's --pod-devices glob matching every host veth this topology makes. */
export const POD_DEVICE_GLOB = 'veth*';

const IFNAMSIZ = 15; // usable characters of a Linux interface name

/** `veth<pod>`, within the 15-character interface name limit. */
export function hostVethName(podName: string): string {
  const name = `veth${podName}`;
  if (name.length > IFNAMSIZ) {
    throw new Error(`pod name ${podName} too long for its host veth name (${name} > ${IFNAMSIZ} chars)`);
  }
  return name;
}

async function sysctl(ns: string, ...settings: string[]): Promise<void> {
  await nsExec(ns, 'sysctl', ['-q', '-w', ...settings]);
}

export interface Pod {
  readonly name: string;
  readonly ns: string;
  readonly ip: string;
  /** The pod's veth end in the node namespace (where kbp attaches). */
  readonly hostVeth: string;
}

export interface ClusterOptions {
  /** Short name of the node; its namespace is `<prefix><nodeName>`. */
  nodeName?: string;
}

/** One node namespace, its pods, and a private bpffs for the node's agent. */
export class Cluster {
  private readonly pods = new Map<string, Pod>();

  private constructor(
    readonly testbed: Testbed,
    readonly nodeName: string,
    /** The node namespace's full name. */
    readonly nodeNs: string,
    /** The node agent's bpffs (pass as --bpffs). */
    readonly bpffs: string,
  ) {}

  static async create(tb: Testbed, opts: ClusterOptions = {}): Promise<Cluster> {
    const nodeName = opts.nodeName ?? 'node';
    const bpffs = await tb.mountBpffs();
    const nodeNs = await tb.addNamespace(nodeName);
    // The node routes between pods; rp_filter off because replies are
    // rewritten (source = ClusterIP) and pods are reached by /32 routes.
    await sysctl(
      nodeNs,
      'net.ipv4.ip_forward=1',
      'net.ipv4.conf.all.rp_filter=0',
      'net.ipv4.conf.default.rp_filter=0',
    );
    return new Cluster(tb, nodeName, nodeNs, bpffs);
  }

  pod(name: string): Pod {
    const p = this.pods.get(name);
    if (!p) throw new Error(`no pod ${name}`);
    return p;
  }

  listPods(): Pod[] {
    return [...this.pods.values()];
  }

  /** Creates pod `name` with address `podIp` (a /32 on its eth0). */
  async addPod(name: string, podIp: string): Promise<Pod> {
    if (this.pods.has(name)) throw new Error(`pod ${name} exists`);
    const hostVeth = hostVethName(name);
    const ns = await this.testbed.addNamespace(`pod-${name}`);
    const node = this.nodeNs;
    // Both ends are created directly in their namespaces: nothing appears in
    // the root namespace, not even for a moment.
    await ip('-n', node, 'link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    await sysctl(node, `net.ipv4.conf.${hostVeth}.rp_filter=0`);
    await ip('-n', node, 'addr', 'add', `${POD_GATEWAY}/32`, 'dev', hostVeth, 'scope', 'link');
    await ip('-n', node, 'link', 'set', hostVeth, 'up');
    await ip('-n', ns, 'addr', 'add', `${podIp}/32`, 'dev', 'eth0');
    await ip('-n', ns, 'link', 'set', 'eth0', 'up');
    await ip('-n', ns, 'route', 'add', 'default', 'via', POD_GATEWAY, 'dev', 'eth0', 'onlink');
    await ip('-n', node, 'route', 'add', `${podIp}/32`, 'dev', hostVeth, 'scope', 'link');
    const pod: Pod = { name, ns, ip: podIp, hostVeth };
    this.pods.set(name, pod);
    return pod;
  }

  /** Deletes a pod (its namespace, and with it both veth ends and its route). */
  async removePod(name: string): Promise<void> {
    const pod = this.pod(name);
    this.pods.delete(name);
    await this.testbed.removeNamespace(pod.ns);
    // The kernel destroys a namespace's devices asynchronously once its last
    // process is gone; wait for the host veth so callers see the pod gone.
    const deadline = Date.now() + 5000;
    while (await this.hasLink(pod.hostVeth)) {
      if (Date.now() > deadline) throw new Error(`host veth ${pod.hostVeth} still present 5 s after deleting ${pod.ns}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async hasLink(dev: string): Promise<boolean> {
    try {
      await ip('-n', this.nodeNs, 'link', 'show', 'dev', dev);
      return true;
    } catch {
      return false;
    }
  }

  /** `tc filter show dev <hostVeth> ingress` in the node namespace ('' when none). */
  async ingressFilters(dev: string): Promise<string> {
    try {
      const { stdout } = await nsExec(this.nodeNs, 'tc', ['filter', 'show', 'dev', dev, 'ingress']);
      return stdout.trim();
    } catch (err) {
      // tc exits 2 with no output when the device has no clsact qdisc at all;
      // a missing device is an error (it would make "no filter" meaningless).
      if (err instanceof CommandError && err.exitCode === 2 && !err.stdout.trim()) return '';
      throw err;
    }
  }
}
