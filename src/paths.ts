// Where built artifacts live. This file sits one level below the project root
// both as source (src/paths.ts) and compiled (dist/paths.js), so the same
// relative path works under tsx in tests and under node from dist/.

import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export function addonPath(): string {
  return path.join(projectRoot, 'build', 'addon', 'Release', 'kbp_native.node');
}

/** Compiled BPF objects (make bpf). */
export function bpfObjectPath(name: 'kbp_pod' | 'kbp_node' | 'kbp_xdp' | 'kbp_sock' | 'kbp_noop' | 'kbp_noop_xdp'): string {
  return path.join(projectRoot, 'build', 'bpf', `${name}.bpf.o`);
}
