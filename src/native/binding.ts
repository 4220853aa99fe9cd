// The typed face of the native addon (addon/, node-addon-api over libbpf).
// This is the only module that loads the .node file; everything else imports
// from here. Every asynchronous call runs its libbpf/syscall work on a worker
// thread and rejects with a NativeError whose `code` is the errno name
// ("ENOENT", "EPERM", ...) and `errno` the positive number.

import { createRequire } from 'node:module';
import { addonPath } from '../paths.js';

export interface NativeError extends Error {
  code: string; // errno name, e.g. "ENOENT"
  errno: number; // positive errno
  syscall?: string; // the libbpf call or syscall that failed
}

export interface MapInfo {
  id: number;
  name: string;
  type: number; // BPF_MAP_TYPE_*
  keySize: number;
  valueSize: number; // per CPU for per-CPU maps
  maxEntries: number;
  flags: number;
}

export interface BatchPage {
  keys: Buffer; // count * keySize bytes
  values: Buffer; // count * valueSize (per-CPU maps: count * nCpus * round8(valueSize))
  count: number;
  /** Opaque cursor for the next call; null when the map has been read to the end. */
  next: Buffer | null;
}

/** Where lookupBatchInto(cursor, maxCount, into) writes a page: keys and values as in BatchPage, the next cursor at the start of `next`. */
export interface BatchBuffers {
  keys: Buffer; // room for at least maxCount keys
  values: Buffer; // room for at least maxCount values (valueBufferSize each)
  next: Buffer; // room for the longest cursor: 1 + max(keySize, 8) bytes
}

export interface BatchInto {
  /** Entries written at the start of keys/values. */
  count: number;
  /** Bytes of the next cursor written at the start of `next`; 0 when the map has been read to the end. */
  next: number;
}

export interface BpfMap {
  readonly info: MapInfo;
  /** Bytes of one value as lookup() returns it (per-CPU maps: nCpus * round8(valueSize)). */
  readonly valueBufferSize: number;
  lookup(key: Buffer): Promise<Buffer | null>; // null when absent
  update(key: Buffer, value: Buffer, flags?: number): Promise<void>; // BPF_ANY by default
  /** Resolves false when the key was absent. */
  delete(key: Buffer): Promise<boolean>;
  /** keys/values are concatenated records; resolves with the number written. */
  updateBatch(keys: Buffer, values: Buffer, count: number, flags?: number): Promise<number>;
  /** Resolves with the number deleted (absent keys are skipped, not errors). */
  deleteBatch(keys: Buffer, count: number): Promise<number>;
  /**
   * One page of up to maxCount entries, starting after `cursor` (null = start).
   * The kernel never splits a hash bucket: if a single bucket holds more than
   * maxCount entries, that page is larger. Walking a map that changes meanwhile
   * may miss or repeat entries that moved.
   */
  lookupBatch(cursor: Buffer | null, maxCount: number): Promise<BatchPage>;
  /**
   * The page lookupBatch(cursor, maxCount) gives, written by the worker
   * thread straight into the caller's buffers, so a walk reuses one set of
   * buffers instead of allocating two per page. A bucket larger than
   * maxCount grows the page only as far as the buffers reach (beyond:
   * ENOSPC, bring bigger buffers). The buffers
   * belong to the call until its promise settles: do not read or write them
   * meanwhile. `cursor` is copied when the call is made, so it may be a view
   * of `into.next`. (Every map of the addon has it; optional in this type so
   * stand-ins written before it, with lookupBatch only, still fit.)
   */
  lookupBatchInto?(cursor: Buffer | null, maxCount: number, into: BatchBuffers): Promise<BatchInto>;
  /** The key after `key` (null = first); null at the end. */
  nextKey(key: Buffer | null): Promise<Buffer | null>;
  pin(path: string): Promise<void>;
  close(): void;
}

export interface ProgInfo {
  id: number;
  name: string;
  type: number; // BPF_PROG_TYPE_*
  tag: string; // hex
}

export interface TestRunOptions {
  data: Buffer; // packet, starting at the Ethernet header
  repeat?: number; // default 1
  dataSizeOut?: number; // output buffer size, default data.length + 256
}

export interface TestRunResult {
  retval: number;
  data: Buffer; // packet after the program ran
  durationNs: number; // kernel-measured average per repeat
}

export interface BpfProgram {
  readonly name: string;
  readonly fd: number; // -1 once its object is closed
  readonly info: ProgInfo;
  testRun(opts: TestRunOptions): Promise<TestRunResult>;
  /**
   * Run once (repeat = 1) on each packet, back to back on one worker thread;
   * outputs are not copied back. For the per-packet benchmark.
   */
  testRunEach(packets: Buffer[]): Promise<{ retvals: number[]; durationsNs: number[] }>;
  pin(path: string): Promise<void>;
}

export interface OpenOptions {
  /** bpffs folder; maps declared with LIBBPF_PIN_BY_NAME are pinned/reused there (libbpf's default, /sys/fs/bpf, when absent). */
  pinRoot?: string;
  /** Resize maps before load: map name -> max entries. */
  maxEntries?: Record<string, number>;
}

export interface BpfObject {
  readonly path: string;
  maps(): BpfMap[];
  map(name: string): BpfMap; // throws NativeError ENOENT if absent
  programs(): BpfProgram[];
  program(name: string): BpfProgram; // throws NativeError ENOENT if absent
  close(): void;
}

export interface TcTarget {
  /** Device name (resolved inside netns) or ifindex. */
  ifname?: string;
  ifindex?: number;
  /** Path of a network namespace file (e.g. /var/run/netns/NAME); current namespace when absent. */
  netns?: string;
  handle?: number; // default KBP_TC_HANDLE
  priority?: number; // default KBP_TC_PRIORITY
}

/** The cgroup sock_addr hooks kbp attaches to (host services, bpf/kbp_sock.c). */
export type CgroupHook = 'connect4' | 'sendmsg4' | 'recvmsg4' | 'getpeername4';

export interface CgroupTarget {
  /** A cgroup v2 directory (anything else rejects with ENOTDIR). */
  path: string;
  hook: CgroupHook;
}

export interface LinkEvent {
  type: 'add' | 'del';
  ifindex: number;
  name: string;
  up: boolean; // IFF_UP (administratively up)
}

/** Never keeps the process alive by itself (like an unref'd timer). */
export interface LinkWatcher {
  close(): void;
}

export interface StructLayout {
  size: number;
  fields: Record<string, { offset: number; size: number }>;
}

export interface Native {
  /** Open an ELF object and load it into the kernel, pinning/reusing maps under pinRoot. */
  openObject(path: string, opts?: OpenOptions): Promise<BpfObject>;
  /** Open a map pinned on a bpffs. */
  openPinnedMap(path: string): Promise<BpfMap>;
  progInfo(id: number): Promise<ProgInfo>;
  /** Create clsact on the device if needed and attach prog at ingress (replacing ours). */
  tcAttach(target: TcTarget, prog: BpfProgram): Promise<{ ifindex: number; progId: number }>;
  /** Remove our filter from the device's ingress hook; false if none was there. */
  tcDetach(target: TcTarget): Promise<boolean>;
  /** The program id attached at our handle/priority, or null. */
  tcQuery(target: TcTarget): Promise<number | null>;
  /**
   * Attach prog as the device's native-mode XDP program (EOPNOTSUPP where the
   * driver cannot run XDP; EBUSY over a program of another name, which is left
   * alone); over one of the same name it is replaced atomically.
   */
  xdpAttach(target: TcTarget, prog: BpfProgram): Promise<{ ifindex: number; progId: number; replaced: boolean }>;
  /** Remove the device's native XDP program if it is named progName; false if it was not there. */
  xdpDetach(target: TcTarget, progName: string): Promise<boolean>;
  /** The device's native-mode XDP program, or null. */
  xdpQuery(target: TcTarget): Promise<{ progId: number; name: string } | null>;
  listLinks(netns?: string): Promise<Array<{ ifindex: number; name: string; up: boolean }>>;
  /**
   * Attach prog to the cgroup's hook through a bpf_link pinned at pinPath (on
   * a bpffs): a link pinned there for the same cgroup and hook is updated to
   * prog atomically (updated: true); any other is detached and replaced. Links
   * run alongside others' programs on the cgroup and outlive the process
   * while pinned. No CAP_SYS_ADMIN needed.
   */
  cgroupLink(target: CgroupTarget, prog: BpfProgram, pinPath: string): Promise<{ linkId: number; updated: boolean }>;
  /** Detach the link pinned at pinPath (the pin stays for the caller to remove); false when there is no pin or it was detached already. */
  linkDetach(pinPath: string): Promise<boolean>;
  /** Programs attached to this cgroup itself at the hook, in run order. */
  cgroupQuery(target: CgroupTarget): Promise<{ progIds: number[]; attachFlags: number }>;
  /** SO_NETNS_COOKIE of the namespace (a netns file; the calling thread's when absent): bpf_get_netns_cookie() of its sockets. */
  netnsCookie(netns?: string): Promise<bigint>;
  /**
   * Netlink RTMGRP_LINK subscription; callbacks run on the JS thread. Throws
   * (synchronously) if the namespace cannot be entered. onError gets ENOBUFS
   * when the kernel dropped notifications (watching goes on: re-list).
   */
  watchLinks(netns: string | undefined, onEvent: (ev: LinkEvent) => void, onError: (err: NativeError) => void): LinkWatcher;
  /** sizeof/offsetof of every struct in bpf/include/kbp/abi.h, computed by the C++ compiler. */
  layout(): Record<string, StructLayout>;
  /** Constants from abi.h (map names, flags, stat indices, tc handle/priority). */
  constants(): Record<string, number | string>;
  numPossibleCpus(): number;
  /** glibc malloc_trim(0): give the malloc heap's free pages back; true when something was released. */
  mallocTrim(): boolean;
}

let cached: Native | undefined;

/** Load the addon once. Throws a clear error when it has not been built. */
export function native(): Native {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  try {
    cached = require(addonPath()) as Native;
  } catch (err) {
    const e = err as Error;
    throw new Error(`kbp native addon not loadable at ${addonPath()} (run "make build"): ${e.message}`);
  }
  return cached;
}
