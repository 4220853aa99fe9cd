// `kbp detach`: remove what agents left in this network namespace and pin
// folder. Hooks first, then pins: an XDP program, a tc hook or a
// host-services cgroup link must never outlive the maps its program reads.
// Only our tc handle/priority, a device's XDP program and our cgroup links are
// touched, and only when the program there is one of ours (name kbp_*).
// Running it twice is harmless.

import fs from 'node:fs/promises';
import path from 'node:path';
import { native, type NativeError } from '../native/binding.js';
import { isBpffs } from './bpffs.js';
import { KBP_TC_HANDLE } from '../maps/abi.js';
import { LINKS_DIR, detachHostServices } from './hostservices.js';

export interface DetachResult {
  detached: string[]; // device names
  unpinned: string[]; // paths
  problems: string[];
}

export async function runDetach(bpffs: string, out: (line: string) => void): Promise<DetachResult> {
  const n = native();
  const res: DetachResult = { detached: [], unpinned: [], problems: [] };

  for (const link of await n.listLinks()) {
    // XDP first: it sits in front of tc and passes to it.
    const xdp = await n.xdpQuery({ ifindex: link.ifindex }).catch((err: NativeError) => {
      if (['ENODEV', 'ENOENT'].includes(err.code)) return null;
      throw err;
    });
    if (xdp && !xdp.name.startsWith('kbp_')) {
      const msg = `left ${link.name}: XDP program ${xdp.name} (id ${xdp.progId}) is not ours`;
      res.problems.push(msg);
      out(msg);
    } else if (xdp && (await n.xdpDetach({ ifindex: link.ifindex }, xdp.name))) {
      res.detached.push(link.name);
      out(`detached ${xdp.name} (prog id ${xdp.progId}) from XDP of ${link.name}`);
    }
    let progId: number | null;
    try {
      progId = await n.tcQuery({ ifindex: link.ifindex });
    } catch (err) {
      // No clsact on the device, or it vanished: nothing of ours there.
      if (['ENOENT', 'ENODEV', 'EINVAL'].includes((err as NativeError).code)) continue;
      throw err;
    }
    if (progId === null) continue;
    const name = await n.progInfo(progId).then(
      (i) => i.name,
      () => '?',
    );
    if (!name.startsWith('kbp_')) {
      const msg = `left ${link.name}: tc ingress handle 0x${KBP_TC_HANDLE.toString(16)} holds program ${name} (id ${progId}), not ours`;
      res.problems.push(msg);
      out(msg);
      continue;
    }
    if (await n.tcDetach({ ifindex: link.ifindex })) {
      res.detached.push(link.name);
      out(`detached ${name} (prog id ${progId}) from tc ingress of ${link.name}`);
    }
  }

  // The host-services links live as pins under bpffs/links (whatever cgroup
  // they hang off): detached first, then unpinned.
  if ((await fs.readdir(bpffs).catch(() => [] as string[])).includes(LINKS_DIR) && !(await isBpffs(bpffs))) {
    throw new Error(`${bpffs} is not on a BPF filesystem: refusing to delete files there`);
  }
  for (const line of await detachHostServices(n, bpffs)) {
    res.detached.push(line.split(' ').at(-1)!);
    out(line);
  }

  let names: string[] = [];
  try {
    names = (await fs.readdir(bpffs)).filter((f) => f.startsWith('kbp_')).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (names.length > 0 && !(await isBpffs(bpffs))) {
    throw new Error(`${bpffs} is not on a BPF filesystem: refusing to delete files there`);
  }
  for (const f of names) {
    const p = path.join(bpffs, f);
    try {
      await fs.unlink(p);
      res.unpinned.push(p);
      out(`unpinned ${p}`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  if (res.detached.length === 0 && res.unpinned.length === 0) out('nothing to remove');
  return res;
}
