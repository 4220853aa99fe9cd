// The node-facing half of the datapath: kbp_from_node at tc ingress of the
// node's uplinks (--node-devices), for NodePort, LoadBalancer and externalIP
// traffic entering the node and for replies from other nodes. Its object is
// loaded with the same pin root as the pod program, so both share every map
// (libbpf reuses the pinned ones); only the config entry is specific to it:
// the node address clients of LoadBalancer and externalIP frontends are
// masqueraded to when their backend runs on another node (a NodePort client
// is masqueraded to the node address it targeted).
//
// The agent writes the config with every sync and attaches only after the
// first one, so the program never runs against empty maps or without config.
//
// With --nodeport-acceleration xdp, kbp_xdp_node (same pins) also goes on
// every uplink, after tc: it translates new and established flows to
// frontends before an skb exists and passes everything else to tc, so a
// device whose driver refuses XDP simply keeps tc alone (logged once). With
// xdp-tx the config flag KBP_CONFIG_F_XDP_TX lets it send a translated packet
// back out of its uplink itself when the route says so.
//
// The datapath translates at tc ingress, before routing, so the node forwards
// packets whose source is one of its own addresses: masqueraded requests
// (source = this node) and replies leaving from a NodePort (source = the node
// address the client targeted). Linux drops those as martians unless
// accept_local is on, so attaching to uplinks turns on
// net.ipv4.conf.all.accept_local in the node's network namespace.

import { readFile, writeFile } from 'node:fs/promises';
import type { BpfMap, BpfObject, Native } from '../native/binding.js';
import { bpfObjectPath } from '../paths.js';
import * as abi from '../maps/abi.js';
import type { Logger } from '../log.js';
import type { NodePortAcceleration } from './options.js';
import { DeviceAttacher } from './devices.js';

export const NODE_PROGRAM_NAME = 'kbp_from_node';
export const XDP_PROGRAM_NAME = 'kbp_xdp_node';
const ACCEPT_LOCAL = '/proc/sys/net/ipv4/conf/all/accept_local';

export class Uplinks {
  private nodeIp: string | undefined;
  private devices: DeviceAttacher | undefined;
  private xdpDevices: DeviceAttacher | undefined;
  private warnedNoIp = false;

  private constructor(
    private readonly native: Native,
    private readonly obj: BpfObject,
    private readonly xdpObj: BpfObject | undefined,
    private readonly config: BpfMap,
    private readonly patterns: RegExp[],
    private readonly log: Logger,
    /** kbp_config flags written with the node address. */
    private readonly configFlags: number,
  ) {}

  /** Loads kbp_node (and kbp_xdp unless acceleration is none) with the maps pinned under bpffs (loaded there by the pod program first). */
  static async load(native: Native, bpffs: string, patterns: RegExp[], log: Logger, maxEntries?: Record<string, number>, acceleration: NodePortAcceleration = 'none'): Promise<Uplinks> {
    // Same capacities as the pod object, or libbpf refuses to reuse its pins.
    const load = async (name: 'kbp_node' | 'kbp_xdp', prog: string) => {
      const objPath = bpfObjectPath(name);
      const obj = await native.openObject(objPath, { pinRoot: bpffs, maxEntries });
      try {
        const p = obj.program(prog);
        log.info('BPF object loaded', { object: objPath, prog: p.name, progId: p.info.id });
        return obj;
      } catch (err) {
        obj.close();
        throw err;
      }
    };
    const obj = await load('kbp_node', NODE_PROGRAM_NAME);
    try {
      const xdpObj = acceleration !== 'none' ? await load('kbp_xdp', XDP_PROGRAM_NAME) : undefined;
      const flags = acceleration === 'xdp-tx' ? abi.KBP_CONFIG_F_XDP_TX : 0;
      return new Uplinks(native, obj, xdpObj, obj.map(abi.KBP_MAP_CONFIG), patterns, log, flags);
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  /** Writes the config entry when this node's primary address changed (undefined: not known yet). */
  async setNodeIp(ip: string | undefined): Promise<void> {
    if (ip === this.nodeIp) return;
    if (ip === undefined) {
      if (!this.warnedNoIp) {
        this.warnedNoIp = true;
        this.log.warn('no node IPv4 address known (give --node-ip, or a Node with an InternalIP): no NodePort frontends, LoadBalancer/externalIP flows to other nodes are dropped');
      }
      return;
    }
    await this.config.update(abi.statKey(0), abi.configValue.encode({ node_ip: ip, flags: this.configFlags }));
    this.log.info('node config written', { nodeIp: ip });
    this.nodeIp = ip;
  }

  /** Attaches to every matching uplink, now and as they appear: tc, then XDP in front of it. */
  async attach(): Promise<{ tc: ReadonlyMap<number, string>; xdp?: ReadonlyMap<number, string> }> {
    await this.acceptLocal();
    this.devices = new DeviceAttacher({ native: this.native, prog: this.obj.program(NODE_PROGRAM_NAME), patterns: this.patterns, log: this.log, relistMs: 10_000 });
    await this.devices.start();
    if (!this.xdpObj) {
      await this.removeStaleXdp();
      return { tc: this.devices.attached };
    }
    this.xdpDevices = new DeviceAttacher({ native: this.native, prog: this.xdpObj.program(XDP_PROGRAM_NAME), patterns: this.patterns, log: this.log, hook: 'xdp', relistMs: 10_000 });
    await this.xdpDevices.start();
    return { tc: this.devices.attached, xdp: this.xdpDevices.attached };
  }

  /** Without acceleration, a kbp_xdp_node an earlier agent left on an uplink goes (another owner's program stays). */
  private async removeStaleXdp(): Promise<void> {
    for (const [ifindex, device] of this.devices?.attached ?? []) {
      try {
        if (await this.native.xdpDetach({ ifindex }, XDP_PROGRAM_NAME)) this.log.info(`removed ${XDP_PROGRAM_NAME} an earlier agent left (--nodeport-acceleration none)`, { device, ifindex });
      } catch (err) {
        this.log.warn(`cannot remove ${XDP_PROGRAM_NAME} from the uplink; it keeps translating NodePort flows on the same maps`, { device, ifindex, err });
      }
    }
  }

  private async acceptLocal(): Promise<void> {
    try {
      if ((await readFile(ACCEPT_LOCAL, 'utf8')).trim() === '1') return;
      await writeFile(ACCEPT_LOCAL, '1');
      this.log.info('set net.ipv4.conf.all.accept_local=1: translated packets with a node address as source are forwarded, not dropped as martians');
    } catch (err) {
      this.log.warn('cannot set net.ipv4.conf.all.accept_local=1: masqueraded NodePort/LoadBalancer flows and NodePort replies will be dropped as martians', { err });
    }
  }

  close(): void {
    this.devices?.close();
    this.xdpDevices?.close();
    this.obj.close();
    this.xdpObj?.close();
  }
}
