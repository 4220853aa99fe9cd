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
// Attachments use BPF_F_ALLOW_MULTI, so other programs on the cgroup (a CNI's,
// systemd's) keep running; kbp's own program on a hook is found by name
// (kbp_*) and replaced atomically (BPF_F_REPLACE). Like tc filters they stay
// when the agent exits, so host traffic keeps its Services while the agent
// restarts; `kbp detach --host-services-cgroup PATH` removes them, before it
// unpins the maps they read.

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

/** The kernel keeps 15 characters of a program name (BPF_OBJ_NAME_LEN - 1): every kbp program starts with this. */
const isKbpProgram = (name: string) => name.startsWith('kbp_');

/** --host-services-cgroup: where to attach; `explicit` false for the default (a missing cgroup v2 there is a warning, not an error). */
export interface HostServicesConfig {
  cgroup: string;
  explicit: boolean;
}

/** kbp programs attached directly to the cgroup at the hook, as [id, name]. */
async function kbpProgramsAt(n: Pick<Native, 'cgroupQuery' | 'progInfo'>, path: string, hook: CgroupHook): Promise<Array<{ id: number; name: string }>> {
  const { progIds } = await n.cgroupQuery({ path, hook });
  const out: Array<{ id: number; name: string }> = [];
  for (const id of progIds) {
    const name = await n.progInfo(id).then(
      (i) => i.name,
      () => '?', // unloaded between query and lookup: not attached any more
    );
    if (isKbpProgram(name)) out.push({ id, name });
  }
  return out;
}

export class HostServices {
  private constructor(
    private readonly native: Native,
    private readonly obj: BpfObject,
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
      return new HostServices(native, obj, cgroup, log);
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  /**
   * Writes this namespace's cookie (the programs act only on its sockets),
   * then attaches every hook, replacing kbp's program there if one is
   * attached and detaching any further kbp program (left by an interrupted
   * run). Resolves with the hooks attached.
   */
  async attach(): Promise<CgroupHook[]> {
    const cookie = await this.native.netnsCookie();
    await this.obj.map(abi.KBP_MAP_HOST_NS).update(abi.statKey(0), abi.hostNsValue.encode({ netns_cookie: cookie, flags: 0 }));
    const done: CgroupHook[] = [];
    for (const { hook, program } of HOST_SERVICE_HOOKS) {
      const prog: BpfProgram = this.obj.program(program);
      const target = { path: this.cgroup, hook };
      const [old, ...extra] = await kbpProgramsAt(this.native, this.cgroup, hook);
      try {
        if (old?.id !== prog.info.id) await this.native.cgroupAttach(target, prog, old?.id);
      } catch (err) {
        throw Object.assign(new Error(`cannot attach ${program} to ${hook} of cgroup ${this.cgroup}: ${(err as Error).message}`), { code: (err as NativeError).code, cause: err });
      }
      for (const e of extra) await this.native.cgroupDetach(target, e.id);
      if (extra.length) this.log.warn('detached surplus kbp programs', { hook, cgroup: this.cgroup, progIds: extra.map((e) => e.id).join(',') });
      done.push(hook);
    }
    this.log.info('host services attached', { cgroup: this.cgroup, hooks: done.join(','), netnsCookie: cookie.toString() });
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

/** `kbp detach`: every kbp program off every host-services hook of the cgroup. Resolves with one line per program detached. */
export async function detachHostServices(n: Pick<Native, 'cgroupQuery' | 'cgroupDetach' | 'progInfo'>, cgroup: string): Promise<string[]> {
  const lines: string[] = [];
  for (const { hook } of HOST_SERVICE_HOOKS) {
    for (const p of await kbpProgramsAt(n, cgroup, hook)) {
      if (await n.cgroupDetach({ path: cgroup, hook }, p.id)) lines.push(`detached ${p.name} (prog id ${p.id}) from ${hook} of cgroup ${cgroup}`);
    }
  }
  return lines;
}

/**
 * The agent's start: loads the programs when --host-services-cgroup is on
 * and names a cgroup v2 directory. An explicit path that is none fails the
 * start; the default (/sys/fs/cgroup) that is none (a cgroup v1 or hybrid
 * host, or no cgroup mount in this mount namespace) only warns.
 */
export async function loadHostServices(n: Native, cfg: { bpffs: string; hostServices: HostServicesConfig | null }, log: Logger, maxEntries?: Record<string, number>): Promise<HostServices | undefined> {
  if (!cfg.hostServices) return undefined;
  const { cgroup, explicit } = cfg.hostServices;
  const problem = await cgroupProblem(n, cgroup);
  if (problem) {
    if (explicit) throw new Error(`--host-services-cgroup ${cgroup}: ${problem}`);
    log.warn('host services off: the node\'s own sockets do not reach ClusterIPs (give --host-services-cgroup a cgroup v2 mount, or "off")', { cgroup, reason: problem });
    return undefined;
  }
  return HostServices.load(n, cfg.bpffs, cgroup, log, maxEntries);
}
