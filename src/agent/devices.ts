// Pod-facing devices (and node-facing ones, with another program and other
// globs): attach the tc ingress program (or, for NodePort acceleration, the
// XDP program) to every link whose name matches the globs, at start and
// whenever one appears (netlink link watch).
// Link events repeat (every state change of a link is an RTM_NEWLINK) and can
// be lost (ENOBUFS when the socket overflows), so attaching is idempotent and
// a full re-list reconciles after any doubt, and periodically as well.

import type { BpfProgram, LinkWatcher, Native, NativeError } from '../native/binding.js';
import type { Logger } from '../log.js';

/** Shell-style glob (*, ?, [...]) on a whole device name. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end === -1) re += '\\[';
      else {
        let body = glob.slice(i + 1, end).replace(/\\/g, '\\\\');
        if (body.startsWith('!')) body = '^' + body.slice(1);
        re += `[${body}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export function parseGlobs(list: string, flag = '--pod-devices'): RegExp[] {
  const globs = list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (globs.length === 0) throw new Error(`${flag}: no pattern given`);
  return globs.map(globToRegExp);
}

export type LinkNative = Pick<Native, 'listLinks' | 'watchLinks' | 'tcAttach' | 'xdpAttach'>;

/** Where the program goes on each device. */
export type DeviceHook = 'tc ingress' | 'xdp';

export interface DeviceAttacherOptions {
  native: LinkNative;
  prog: BpfProgram;
  patterns: RegExp[];
  log: Logger;
  /** Default tc ingress. */
  hook?: DeviceHook;
  /** Safety-net re-list period (ms); 0 disables. */
  relistMs?: number;
}

const goneCodes = new Set(['ENODEV', 'ENXIO', 'ENOENT']);
/**
 * XDP refusals that retrying cannot change while the device stays what it is:
 * the driver has no native XDP (EOPNOTSUPP), the device's settings rule it out
 * (EINVAL: MTU, LRO, ...), or another owner's XDP program is there (EBUSY).
 * Such a device is declined once, with the reason, and stays on tc alone.
 */
const xdpDeclineCodes = new Set(['EOPNOTSUPP', 'EINVAL', 'EBUSY', 'ERANGE', 'E2BIG']);

export class DeviceAttacher {
  /** ifindex -> name of every device our program is attached to. */
  readonly attached = new Map<number, string>();
  /** ifindex -> name of every device the hook refused for good (XDP only). */
  readonly declined = new Map<number, string>();
  private readonly inflight = new Map<number, Promise<void>>();
  private watcher: LinkWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private relisting: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly opts: DeviceAttacherOptions) {}

  matches(name: string): boolean {
    return this.opts.patterns.some((p) => p.test(name));
  }

  /** Watch first, then list, so a link created in between is not missed. */
  async start(): Promise<void> {
    this.watcher = this.opts.native.watchLinks(
      undefined,
      (ev) => {
        if (this.closed) return;
        if (ev.type === 'del') {
          this.declined.delete(ev.ifindex);
          if (this.attached.delete(ev.ifindex)) this.opts.log.info('device gone', { device: ev.name, ifindex: ev.ifindex });
          return;
        }
        if (this.matches(ev.name)) void this.ensure(ev.ifindex, ev.name);
      },
      (err: NativeError) => {
        if (this.closed) return;
        this.opts.log[err.code === 'ENOBUFS' ? 'info' : 'warn']('link watch error; re-listing devices', { code: err.code, err });
        void this.relist();
      },
    );
    await this.relist();
    if (this.opts.relistMs) {
      this.timer = setInterval(() => void this.relist(), this.opts.relistMs);
      this.timer.unref();
    }
  }

  /** Attach to every matching link not yet attached; forget links that are gone. */
  relist(): Promise<void> {
    if (this.relisting) return this.relisting;
    this.relisting = (async () => {
      try {
        const links = await this.opts.native.listLinks();
        const present = new Map(links.map((l) => [l.ifindex, l.name]));
        for (const known of [this.attached, this.declined]) {
          for (const [ifindex, name] of known) if (present.get(ifindex) !== name) known.delete(ifindex);
        }
        await Promise.all(links.filter((l) => this.matches(l.name)).map((l) => this.ensure(l.ifindex, l.name)));
      } catch (err) {
        this.opts.log.warn('cannot list devices', { err, code: (err as NativeError).code });
      }
    })().finally(() => (this.relisting = undefined));
    return this.relisting;
  }

  /** Attach once per (ifindex, name); concurrent calls share one attempt. */
  ensure(ifindex: number, name: string): Promise<void> {
    if (this.closed || this.attached.get(ifindex) === name || this.declined.get(ifindex) === name) return Promise.resolve();
    const running = this.inflight.get(ifindex);
    if (running) return running;
    const hook = this.opts.hook ?? 'tc ingress';
    const p = (async () => {
      try {
        const r = hook === 'xdp' ? await this.opts.native.xdpAttach({ ifindex }, this.opts.prog) : await this.opts.native.tcAttach({ ifindex }, this.opts.prog);
        if (this.closed) return;
        this.attached.set(ifindex, name);
        this.opts.log.info(`attached ${hook}`, { device: name, ifindex, prog: this.opts.prog.name, progId: r.progId });
      } catch (err) {
        const code = (err as NativeError).code;
        // A veth can vanish right after it appeared (a pod that failed to start).
        if (goneCodes.has(code)) this.opts.log.debug('device vanished before attach', { device: name, ifindex, code });
        else if (hook === 'xdp' && xdpDeclineCodes.has(code)) {
          this.declined.set(ifindex, name);
          this.opts.log.warn('XDP not available on this device: its NodePort traffic stays on tc alone', { device: name, ifindex, code, reason: (err as Error).message });
        } else this.opts.log.warn(`cannot attach ${hook}; will retry on the next link event or re-list`, { device: name, ifindex, code, err });
      }
    })().finally(() => this.inflight.delete(ifindex));
    this.inflight.set(ifindex, p);
    return p;
  }

  /** Wait for attaches in flight (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.inflight.size || this.relisting) await Promise.all([...this.inflight.values(), this.relisting]);
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    clearInterval(this.timer);
  }
}
