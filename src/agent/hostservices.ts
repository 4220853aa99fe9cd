// Host services: ClusterIPs for the node's own network namespace (kubelet,
// hostNetwork pods, node daemons), whose traffic never passes a pod device's
// tc ingress. kube-proxy serves them from its OUTPUT chain; kbp balances their
// sockets instead (bpf/kbp_sock.c): cgroup/connect4 and cgroup/sendmsg4 point
// a socket aimed at a ClusterIP at a backend, chosen from the same maps as
// the tc datapath; cgroup/recvmsg4 and cgroup/getpeername4 report the
// ClusterIP back to the application.
//
// The programs hang off a cgroup v2 directory (--host-services-cgroup, the
// root /sys/fs/cgroup by default) and so see every socket of every process
// below it, pods included; they act only on sockets of the namespace whose
// cookie the agent writes into kbp_hostns_v1 (its own: it runs in the node's
// namespace), so pods keep going through tc. The cookie is written before
// anything is attached, and the agent attaches only after the first sync (as
// for tc), so the programs never run against empty maps.
//
// Each hook is a bpf_link pinned under <bpffs>/links/ (links run alongside
// other programs on the cgroup: a CNI's, systemd's). Like tc filters they stay
// when the agent exits, so host traffic keeps its Services while the agent
// restarts; the next agent finds them by their pins and swaps its programs in
// atomically (bpf_link_update; no CAP_SYS_ADMIN needed, unlike finding a
// program attached by id). `kbp detach` detaches and unpins them before it
// unpins the maps they read, and an agent started with the feature off does
// the same, so no hook is left serving from maps nobody syncs.

import fs from 'node:fs/promises';
import path from 'node:path';
import { bpfObjectPath } from '../paths.js';
import * as abi from '../maps/abi.js';
import type { BpfObject, BpfProgram, CgroupHook, Native, NativeError } from '../native/binding.js';
import type { Logger } from '../log.js';

export const DEFAULT_HOST_SERVICES_CGROUP = '/sys/fs/cgroup';

/** Each hook and the program of bpf/kbp_sock.c that serves it. */
export const HOST_SERVICE_HOOKS: ReadonlyArray<{ hook: CgroupHook; program: string }> = [
  { hook: 'connect4', program: 'kbp_sock_connect4' },
  { hook: 'sendmsg4', program: 'kbp_sock_sendmsg4' },
  { hook: 'recvmsg4', program: 'kbp_sock_recvmsg4' },
  { hook: 'getpeername4', program: 'kbp_sock_getpeername4' },
];

/** Folder under the bpffs pin root holding one link per hook (not kbp_*: migrate.ts reads those as maps). */
export const LINKS_DIR = 'links';
const linkPin = (bpffs: string, hook: CgroupHook) => path.join(bpffs, LINKS_DIR, `cgroup_${hook}`);

/** --host-services-cgroup: where to attach; `explicit` false for the default (a missing cgroup v2 there is a warning, not an error). */
export interface HostServicesConfig {
  cgroup: string;
  explicit: boolean;
}

export class HostServices {
  private constructor(
    private readonly native: Native,
    private readonly obj: BpfObject,
    private readonly bpffs: string,
    private readonly cgroup: string,
    private readonly log: Logger,
  ) {}

  /** Loads kbp_sock with the maps pinned under bpffs (the pod program's, shared by pin name). */
  static async load(native: Native, bpffs: string, cgroup: string, log: Logger, maxEntries?: Record<string, number>): Promise<HostServices> {
    const objPath = bpfObjectPath('kbp_sock');
    const obj = await native.openObject(objPath, { pinRoot: bpffs, maxEntries });
    try {
      const progs = HOST_SERVICE_HOOKS.map(({ program }) => obj.program(program));
      log.info('BPF object loaded', { object: objPath, progs: progs.map((p) => `${p.name}:${p.info.id}`).join(','), cgroup });
      return new HostServices(native, obj, bpffs, cgroup, log);
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  /**
   * Writes this namespace's cookie (the programs act only on its sockets),
   * then links every hook: the links an earlier agent pinned are updated in
   * place, missing ones created. Resolves with the hooks and whether each
   * link was updated or new.
   */
  async attach(): Promise<Array<{ hook: CgroupHook; linkId: number; updated: boolean }>> {
    const cookie = await this.native.netnsCookie();
    await this.obj.map(abi.KBP_MAP_HOST_NS).update(abi.statKey(0), abi.hostNsValue.encode({ netns_cookie: cookie, flags: 0 }));
    await fs.mkdir(path.join(this.bpffs, LINKS_DIR), { recursive: true });
    const done: Array<{ hook: CgroupHook; linkId: number; updated: boolean }> = [];
    for (const { hook, program } of HOST_SERVICE_HOOKS) {
      const prog: BpfProgram = this.obj.program(program);
      try {
        done.push({ hook, ...(await this.native.cgroupLink({ path: this.cgroup, hook }, prog, linkPin(this.bpffs, hook))) });
      } catch (err) {
        throw Object.assign(new Error(`cannot attach ${program} to ${hook} of cgroup ${this.cgroup}: ${(err as Error).message}`), { code: (err as NativeError).code, cause: err });
      }
    }
    this.log.info('host services attached', {
      cgroup: this.cgroup,
      hooks: done.map((d) => d.hook).join(','),
      updated: done.filter((d) => d.updated).length,
      netnsCookie: cookie.toString(),
    });
    return done;
  }

  close(): void {
    this.obj.close();
  }
}

/**
 * Whether `dir` can take the programs: a cgroup v2 directory. Resolves with
 * null, or why not (the addon's ENOTDIR/ENOENT message).
 */
export async function cgroupProblem(n: Pick<Native, 'cgroupQuery'>, dir: string): Promise<string | null> {
  try {
    await n.cgroupQuery({ path: dir, hook: 'connect4' });
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * Detach and unpin every host-services link pinned under bpffs (`kbp detach`,
 * and an agent with the feature off). Resolves with one line per link.
 */
export async function detachHostServices(n: Pick<Native, 'linkDetach'>, bpffs: string): Promise<string[]> {
  const dir = path.join(bpffs, LINKS_DIR);
  let names: string[];
  try {
    names = (await fs.readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const lines: string[] = [];
  for (const name of names) {
    const pin = path.join(dir, name);
    const detached = await n.linkDetach(pin);
    await fs.unlink(pin);
    lines.push(`${detached ? 'detached and unpinned' : 'unpinned'} ${pin}`);
  }
  await fs.rmdir(dir);
  return lines;
}

/**
 * The agent's start: loads the programs when --host-services-cgroup is on
 * and names a cgroup v2 directory. An explicit path that is none fails the
 * start; the default (/sys/fs/cgroup) that is none (a cgroup v1 or hybrid
 * host, or no cgroup mount in this mount namespace) only warns.
 */
export async function loadHostServices(n: Native, cfg: { bpffs: string; hostServices: HostServicesConfig | null }, log: Logger, maxEntries?: Record<string, number>): Promise<HostServices | undefined> {
  const off = async () => {
    for (const line of await detachHostServices(n, cfg.bpffs)) log.info(`host services off: ${line}`);
  };
  if (!cfg.hostServices) {
    await off();
    return undefined;
  }
  const { cgroup, explicit } = cfg.hostServices;
  const problem = await cgroupProblem(n, cgroup);
  if (problem) {
    if (explicit) throw new Error(`--host-services-cgroup ${cgroup}: ${problem}`);
    log.warn('host services off: the node\'s own sockets do not reach ClusterIPs (give --host-services-cgroup a cgroup v2 mount, or "off")', { cgroup, reason: problem });
    await off();
    return undefined;
  }
  return HostServices.load(n, cfg.bpffs, cgroup, log, maxEntries);
}
