// `kbp agent`: manifests -> desired state -> maps, then tc hooks on pod
// devices. The order is the point: the maps are programmed (and ids restored
// from what an earlier agent pinned) before any device is attached, so a
// hook never runs against empty maps; on exit the hooks and pins stay, so
// traffic keeps flowing until the next agent takes over.

import { existsSync } from 'node:fs';
import { bpfObjectPath } from '../paths.js';
import { native, type BpfObject } from '../native/binding.js';
import * as abi from '../maps/abi.js';
import { BpfMapWriter } from '../maps/writer.js';
import { Logger } from '../log.js';
import { ManifestWatcher } from '../k8s/watch.js';
import type { ObjectSet } from '../k8s/types.js';
import { computeDesired, type DesiredProblem } from '../proxy/desired.js';
import { Syncer } from '../proxy/syncer.js';
import { BoundedFrequencyRunner } from '../proxy/runner.js';
import { buildApi } from '../api/app.js';
import { ensureBpffs } from './bpffs.js';
import { DeviceAttacher } from './devices.js';
import type { AgentConfig } from './options.js';

export const PROGRAM_NAME = 'kbp_from_pod';

/** Log each problem of the desired state once while it persists. */
function problemLogger(log: Logger): (problems: DesiredProblem[]) => void {
  let last = new Set<string>();
  return (problems) => {
    const now = new Set<string>();
    for (const p of problems) {
      const key = `${p.level}|${p.object}|${p.reason}`;
      now.add(key);
      if (!last.has(key)) log[p.level](p.reason, { object: p.object });
    }
    last = now;
  };
}

/** Runs until SIGINT/SIGTERM; resolves with the exit code. */
export async function runAgent(cfg: AgentConfig, log = new Logger(undefined, cfg.logLevel)): Promise<number> {
  log.info('starting', { nodeName: cfg.nodeName, manifests: cfg.manifests, bpffs: cfg.bpffs, podDevices: cfg.podDevices, pid: process.pid });

  const { created } = await ensureBpffs(cfg.bpffs);
  if (created) log.info('created pin folder on bpffs', { bpffs: cfg.bpffs });
  const objPath = bpfObjectPath('kbp_pod');
  if (!existsSync(objPath)) throw new Error(`BPF object ${objPath} not found (run "make build")`);

  const n = native();
  const obj: BpfObject = await n.openObject(objPath, { pinRoot: cfg.bpffs });
  const cleanups: Array<() => unknown> = [() => obj.close()];
  try {
    const prog = obj.program(PROGRAM_NAME);
    const maps = new Map([abi.KBP_MAP_SERVICES, abi.KBP_MAP_BACKENDS, abi.KBP_MAP_REVNAT].map((name) => [name, obj.map(name)] as const));
    log.info('BPF object loaded', { object: objPath, prog: prog.name, progId: prog.info.id, maps: [...maps.keys()].join(',') });

    const writer = new BpfMapWriter(maps);
    const syncLog = log.child({ component: 'syncer' });
    const syncer = new Syncer({ writer, log: syncLog });
    await syncer.restore();

    let objects: ObjectSet = { services: [], endpointSlices: [] };
    const logProblems = problemLogger(log.child({ component: 'desired' }));
    let firstSynced!: () => void;
    const firstSync = new Promise<void>((r) => (firstSynced = r));
    const runner = new BoundedFrequencyRunner(
      'sync',
      async (reason) => {
        // The periodic run re-reads the maps: anything changed behind our back is repaired.
        if (reason === 'periodic') syncer.requestFullResync();
        const desired = computeDesired(objects.services, objects.endpointSlices, cfg.nodeName);
        logProblems(desired.problems);
        const r = await syncer.sync(desired);
        if (r.ok) firstSynced();
        return r.ok;
      },
      { minIntervalMs: cfg.minSyncMs, maxIntervalMs: cfg.syncPeriodMs, retryIntervalMs: cfg.retryMs, log: syncLog },
    );
    cleanups.push(() => runner.stop());

    let ready = false;
    if (cfg.apiListen) {
      const api = await buildApi({
        nodeName: cfg.nodeName,
        reader: writer,
        frontend: (id) => syncer.frontend(id),
        health: () => ({ ready, lastUpdated: syncer.stats.lastSuccess }),
        log: log.child({ component: 'api' }),
      });
      await api.listen(cfg.apiListen);
      cleanups.push(() => api.close());
      log.info('API listening', { address: `${cfg.apiListen.host}:${cfg.apiListen.port}` });
    }

    const watcher = new ManifestWatcher({
      dir: cfg.manifests,
      log: log.child({ component: 'manifests' }),
      onChange: (set) => {
        objects = set;
        runner.run();
      },
    });
    cleanups.push(() => watcher.close());

    // Signals from here on: stop cleanly at any stage.
    let stop!: (sig: string) => void;
    const stopped = new Promise<string>((r) => (stop = r));
    const onSignal = (sig: NodeJS.Signals) => stop(sig);
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    cleanups.push(() => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    });

    const first = await watcher.start();
    log.info('manifests loaded', { files: first.files.length, services: first.services.length, endpointSlices: first.endpointSlices.length });
    runner.start();
    runner.run();
    const early = await Promise.race([firstSync.then(() => undefined), stopped]);
    if (early) {
      log.info('stopping before the first successful sync', { signal: early });
      return 0;
    }

    const devices = new DeviceAttacher({ native: n, prog, patterns: cfg.podDevicePatterns, log: log.child({ component: 'devices' }), relistMs: 10_000 });
    cleanups.push(() => devices.close());
    await devices.start();
    ready = true;
    log.info('ready', { attached: [...devices.attached.values()].sort().join(',') || '-' });

    const sig = await stopped;
    log.info('stopping; programs stay attached and maps stay pinned', { signal: sig });
    return 0;
  } finally {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch (err) {
        log.warn('cleanup step failed', { err });
      }
    }
  }
}
