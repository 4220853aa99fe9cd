// A cgroup of a test's own, for the host-services socket programs: they are
// attached to a cgroup, and a test must never attach them to the machine's
// cgroup root, where every process of the machine (and of the other engineers'
// runs) would pass them.
//
// The cgroup v2 hierarchy is mounted a second time on a temp dir under /tmp
// (`ip netns exec` replaces /sys, so /sys/fs/cgroup is not visible to the
// agent and the probes it runs), and the run's child cgroup kbp-<run id> is
// made there. Processes join it by writing their pid to its cgroup.procs
// before they exec (wrap()). At teardown, whatever is still inside is killed,
// the child is removed (which drops every program attached to it) and the
// view unmounted. The mount point is deliberately not one of the run's temp
// dirs: those are removed recursively by cleanupStale, which on a mounted
// cgroup hierarchy would remove other cgroups.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmdirSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run, type Testbed } from './netns.js';

const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

export class TestCgroup {
  private constructor(
    /** The private cgroup v2 mount. */
    readonly mount: string,
    /** The run's child cgroup, as seen through that mount (pass this to --host-services-cgroup). */
    readonly path: string,
  ) {}

  static async create(tb: Testbed): Promise<TestCgroup> {
    const mount = mkdtempSync(path.join(os.tmpdir(), `kbp-${tb.runId}-cgroup2-`));
    try {
      await run('mount', ['-t', 'cgroup2', 'cgroup2', mount]);
    } catch (err) {
      rmdirSync(mount);
      throw new Error(`cannot mount a cgroup v2 view (the host-services programs need cgroup v2): ${(err as Error).message}`);
    }
    const cg = new TestCgroup(mount, path.join(mount, `kbp-${tb.runId}`));
    tb.defer(`cgroup ${cg.path}`, () => cg.release(), () => cg.release());
    await mkdir(cg.path);
    return cg;
  }

  /** argv that moves itself into this cgroup, then execs argv (inside a namespace too: ip netns exec NS ...wrap(argv)). */
  wrap(argv: readonly string[]): string[] {
    return ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', this.path, ...argv];
  }

  /** Pids inside (none once the cgroup is gone). */
  pids(): number[] {
    try {
      return readFileSync(path.join(this.path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  }

  /** Synchronous so the exit path can use it too; never throws. */
  private release(): void {
    for (let i = 0; i < 50 && this.pids().length; i++) {
      // Only the run's own children join this cgroup.
      for (const pid of this.pids()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      sleepSync(100);
    }
    try {
      rmdirSync(this.path);
    } catch {
      // absent, or still busy: reported by the leftover check below
    }
    try {
      execFileSync('umount', [this.mount], { stdio: 'ignore' });
    } catch {
      try {
        execFileSync('umount', ['-l', this.mount], { stdio: 'ignore' });
      } catch {
        // not mounted
      }
    }
    try {
      rmdirSync(this.mount);
    } catch {
      // still mounted or gone
    }
  }
}
