// The bpffs folder the maps are pinned in. The agent never mounts anything
// itself: mounting over an existing folder could hide someone's files, and a
// bpffs mounted inside a transient mount namespace (ip netns exec) vanishes
// with it. It only creates the folder inside an existing bpffs.

import fs from 'node:fs/promises';
import path from 'node:path';

export const BPF_FS_MAGIC = 0xcafe4a11;

export class BpffsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BpffsError';
  }
}

export async function isBpffs(dir: string): Promise<boolean> {
  try {
    return (await fs.statfs(dir)).type === BPF_FS_MAGIC;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

const mountHint = (dir: string) => `mount one with: mkdir -p ${dir} && mount -t bpf bpf ${dir}`;

/**
 * Make sure `dir` is a folder on a bpffs: use it if it is one, create it if
 * its parent is one, and otherwise fail with what to do.
 */
export async function ensureBpffs(dir: string): Promise<{ created: boolean }> {
  const st = await fs.stat(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (st) {
    if (!st.isDirectory()) throw new BpffsError(`--bpffs ${dir} is not a directory`);
    if (!(await isBpffs(dir))) throw new BpffsError(`--bpffs ${dir} is not on a BPF filesystem (bpffs); ${mountHint(dir)}`);
    return { created: false };
  }
  const parent = path.dirname(path.resolve(dir));
  if (!(await isBpffs(parent))) {
    throw new BpffsError(`--bpffs ${dir} does not exist and ${parent} is not a BPF filesystem; ${mountHint(dir)}`);
  }
  await fs.mkdir(dir, { mode: 0o700 });
  return { created: true };
}
