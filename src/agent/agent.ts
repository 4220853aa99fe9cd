// `kbp agent`: objects (API informers or a manifest folder) -> change
// trackers -> desired state per changed Service -> syncer -> maps, then tc
// hooks on pod devices and uplinks (uplinks.ts), and the health check ports
// of externalTrafficPolicy Local Services (healthcheck.ts). The order is the
// point: nothing is synced before the source has listed every kind once, the
// maps are programmed (and ids restored from what an earlier agent pinned)
// and the node config written before any device is attached, so a hook never
// runs against empty maps; on exit the hooks and pins stay, so traffic keeps
// flowing until the next agent takes over.

import { AGENT_ENV, missingAgentEnv, missingNodeFlags } from './nodeflags.js';
import { existsSync } from 'node:fs';
import v8 from 'node:v8';
import { bpfObjectPath } from '../paths.js';
import { native, type BpfObject } from '../native/binding.js';
import * as abi from '../maps/abi.js';
import { BpfMapWriter } from '../maps/writer.js';
import { Logger } from '../log.js';
import { ManifestSource, type ObjectSource } from '../k8s/source.js';
import { ProxyState } from '../proxy/state.js';
import type { DesiredState } from '../proxy/desired.js';
import { Syncer } from '../proxy/syncer.js';
import { collectConntrack, flushStaleUdpFlows } from '../proxy/conntrack.js';
import { BoundedFrequencyRunner } from '../proxy/runner.js';
import { startApi } from '../api/server.js';
import { ensureBpffs } from './bpffs.js';
import { checkPinnedSizes, effectiveMapSizes } from './mapsizes.js';
import { DeviceAttacher } from './devices.js';
import { HealthCheckServers } from './healthcheck.js';
import { MapMigration } from './migrate.js';
import { Uplinks } from './uplinks.js';
import { loadHostServices } from './hostservices.js';
import { releaseMemory } from './memory.js';
import type { AgentConfig } from './options.js';

export const PROGRAM_NAME = 'kbp_from_pod';

async function makeSource(cfg: AgentConfig, log: Logger): Promise<ObjectSource> {
  if (cfg.source.kind === 'manifests') return new ManifestSource({ dir: cfg.source.dir, nodeName: cfg.nodeName, log: log.child({ component: 'manifests' }) });
  // Loaded only in cluster mode: the manifests mode needs no Kubernetes client.
  const { InformerSource } = await import('../k8s/informers.js');
  return new InformerSource({ kubeconfig: cfg.source.kind === 'kubeconfig' ? cfg.source.path : undefined, nodeName: cfg.nodeName, log: log.child({ component: 'informers' }) });
}

/** Runs until SIGINT/SIGTERM; resolves with the exit code. */
export async function runAgent(cfg: AgentConfig, log = new Logger(undefined, cfg.logLevel)): Promise<number> {
  log.info('starting', { nodeName: cfg.nodeName, source: cfg.source.kind, bpffs: cfg.bpffs, podDevices: cfg.podDevices, nodeDevices: cfg.nodeDevices || undefined, nodePortAcceleration: cfg.nodeDevices ? cfg.nodePortAcceleration : undefined, pid: process.pid });
  const missingFlags = [...missingNodeFlags(process.execArgv), ...missingAgentEnv(process.env).map((k) => `${k}=${AGENT_ENV[k]}`)];
  if (missingFlags.length) log.warn('running without some of the agent\'s node flags or environment (this Node has no process.execve to apply them): start node with them', { missing: missingFlags.join(' '), node: process.version });

  const { created } = await ensureBpffs(cfg.bpffs);
  if (created) log.info('created pin folder on bpffs', { bpffs: cfg.bpffs });
  const objPath = bpfObjectPath('kbp_pod');
  if (!existsSync(objPath)) throw new Error(`BPF object ${objPath} not found (run "make build")`);

  const n = native();
  // Maps an older agent pinned with another layout are carried over (or, when
  // newer or unknown, refused) before anything is loaded: migrate.ts.
  const migration = await MapMigration.plan(n, cfg.bpffs, log.child({ component: 'migrate' }));
  // Every sized map gets its capacity explicitly (the flag's, else abi.h's
  // default), so both objects agree with each other and with the pins.
  const maxEntries = effectiveMapSizes(cfg.mapSizes);
  if (Object.keys(cfg.mapSizes).length) log.info('map sizes', cfg.mapSizes);
  await checkPinnedSizes(n, cfg.bpffs, maxEntries);
  const obj: BpfObject = await n.openObject(objPath, { pinRoot: cfg.bpffs, maxEntries });
  const cleanups: Array<() => unknown> = [() => obj.close(), () => migration.close()];
  try {
    const prog = obj.program(PROGRAM_NAME);
    const maps = new Map([abi.KBP_MAP_SERVICES, abi.KBP_MAP_BACKENDS, abi.KBP_MAP_REVNAT, abi.KBP_MAP_CT, abi.KBP_MAP_SRC_RANGES].map((name) => [name, obj.map(name)] as const));
    log.info('BPF object loaded', { object: objPath, prog: prog.name, progId: prog.info.id, maps: [...maps.keys()].join(',') });
    const mapOf = (name: string) => obj.map(name);
    await migration.initial(mapOf);

    const writer = new BpfMapWriter(maps);
    const syncLog = log.child({ component: 'syncer' });
    const syncer = new Syncer({ writer, log: syncLog });
    await syncer.restore();

    // The node program reuses the maps the pod program pinned.
    const uplinks = cfg.nodeDevicePatterns.length ? await Uplinks.load(n, cfg.bpffs, cfg.nodeDevicePatterns, log.child({ component: 'uplinks' }), maxEntries, cfg.nodePortAcceleration) : undefined;
    if (uplinks) cleanups.push(() => uplinks.close());
    const hostServices = await loadHostServices(n, cfg, log.child({ component: 'hostservices' }), maxEntries);
    if (hostServices) cleanups.push(() => hostServices.close());

    const state = new ProxyState(cfg.nodeName, log.child({ component: 'desired' }));
    state.useNodeIps(cfg.nodeIps);
    let ready = false;
    const healthChecks = new HealthCheckServers({ proxyHealthy: () => ready, log: log.child({ component: 'healthcheck' }) });
    cleanups.push(() => healthChecks.close());
    let lastDesired: DesiredState | undefined;
    const ctLog = log.child({ component: 'conntrack' });
    let firstSynced!: () => void;
    const firstSync = new Promise<void>((r) => (firstSynced = r));
    const runner = new BoundedFrequencyRunner(
      'sync',
      async (reason) => {
        // The periodic run re-reads the maps: anything changed behind our back is repaired.
        if (reason === 'periodic') syncer.requestFullResync();
        const { desired, changes, recomputed, triggers } = state.compute();
        lastDesired = desired;
        if (changes.healthChecks) await healthChecks.update(state.healthChecks());
        if (recomputed) syncLog.debug('desired state recomputed', { services: recomputed, frontends: changes.frontends.size, backends: changes.backends.size });
        const r = await syncer.sync(desired, changes, triggers);
        if (!r.ok) return false;
        try {
          await uplinks?.setNodeIp(state.addresses[0]);
        } catch (err) {
          syncLog.error('cannot write the node config', { err });
          return false;
        }
        firstSynced();
        if (r.removedBackends.length) {
          // After the backends are gone from the maps: no new flow can pick them any more.
          try {
            const f = await flushStaleUdpFlows(writer, r.removedBackends);
            if (f.deleted) ctLog.info('flushed conntrack entries of removed UDP backends', { deleted: f.deleted, scanned: f.scanned });
          } catch (err) {
            ctLog.warn('cannot flush conntrack entries of removed UDP backends', { err });
          }
        }
        return true;
      },
      { minIntervalMs: cfg.minSyncMs, maxIntervalMs: cfg.syncPeriodMs, retryIntervalMs: cfg.retryMs, log: syncLog },
    );
    cleanups.push(() => runner.stop());

    if (cfg.api) {
      // Every map the API dumps, read through the same codecs the syncer writes with.
      const apiMaps = new Map(abi.DATAPATH_MAPS.map((name) => [name, obj.map(name)] as const));
      const api = await startApi(
        {
          nodeName: cfg.nodeName,
          maps: apiMaps,
          frontend: (id) => syncer.frontend(id),
          syncStats: () => syncer.stats,
          onSync: (fn) => syncer.onSync(fn),
          desired: () => lastDesired?.frontends.values(),
          health: () => ({ ready, lastUpdated: syncer.stats.lastSuccess }),
          healthStaleMs: 2 * cfg.syncPeriodMs,
          log: log.child({ component: 'api' }),
        },
        cfg.api,
      );
      cleanups.push(() => api.close());
      log.info('API listening', { url: api.url, auth: cfg.api.auth });
    }

    // No sync before every kind has been listed once (kube-proxy's HasSynced);
    // after that, every event that changed something asks for a sync.
    let sourceSynced = false;
    let markSourceSynced!: () => void;
    const sourceSyncedP = new Promise<void>((r) => (markSourceSynced = r));
    // While the first list is still arriving (pages of 500), fold what came in
    // into the desired state between pages, so the first sync does not compute
    // every Service at once after the last page. Only once this node is known:
    // its zone and addresses change every Service's result.
    let precompute: NodeJS.Immediate | undefined;
    const kick = (changed: boolean) => {
      if (!changed) return;
      if (sourceSynced) runner.run();
      else if (state.node.node) {
        precompute ??= setImmediate(() => {
          precompute = undefined;
          if (!sourceSynced) state.precompute();
        });
      }
    };
    cleanups.push(() => {
      if (precompute) clearImmediate(precompute);
    });
    const source = await makeSource(cfg, log);
    cleanups.push(() => source.close());

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

    log.info('object source', { source: source.description });
    await source.start({
      service: (key, svc) => kick(state.onService(key, svc)),
      endpointSlice: (key, slice, triggerTime) => kick(state.onEndpointSlice(key, slice, triggerTime)),
      node: (node) => kick(state.onNode(node)),
      synced: () => {
        sourceSynced = true;
        markSourceSynced();
      },
    });
    const notYet = await Promise.race([sourceSyncedP.then(() => undefined), stopped]);
    if (notYet) {
      log.info('stopping before the objects were listed', { signal: notYet });
      return 0;
    }
    log.info('objects listed', { services: state.services.size, endpointSlices: state.endpoints.size, node: state.node.node?.metadata.name ?? '-' });
    runner.start();
    runner.run();
    const early = await Promise.race([firstSync.then(() => undefined), stopped]);
    if (early) {
      log.info('stopping before the first successful sync', { signal: early });
      return 0;
    }

    await migration.beforeSwitch(mapOf);
    const devices = new DeviceAttacher({ native: n, prog, patterns: cfg.podDevicePatterns, log: log.child({ component: 'devices' }), relistMs: 10_000 });
    cleanups.push(() => devices.close());
    let uplinksAttached: Awaited<ReturnType<Uplinks['attach']>> | undefined;
    try {
      await devices.start();
      uplinksAttached = await uplinks?.attach();
      await hostServices?.attach();
    } catch (err) {
      await migration.abort();
      throw err;
    }
    await migration.afterSwitch(mapOf);
    // The first list's garbage, before the agent reports ready (src/agent/memory.ts).
    log.info('memory released after the first sync', { ...releaseMemory() });
    ready = true;
    const mem = process.memoryUsage();
    const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((sp) => [sp.space_name.replace(/_space$/, ''), Math.round(sp.space_used_size / 2 ** 20) + '/' + Math.round(sp.physical_space_size / 2 ** 20)]));
    log.info('ready', {
      rssMiB: Math.round(mem.rss / 2 ** 20),
      heapUsedMiB: Math.round(mem.heapUsed / 2 ** 20),
      heapTotalMiB: Math.round(mem.heapTotal / 2 ** 20),
      externalMiB: Math.round(mem.external / 2 ** 20),
      heapSpacesMiB: Object.entries(spaces).map(([k, v]) => `${k}=${v}`).join(','),
      attached: [...devices.attached.values()].sort().join(',') || '-',
      uplinks: uplinksAttached ? [...uplinksAttached.tc.values()].sort().join(',') || '-' : undefined,
      xdp: uplinksAttached?.xdp ? [...uplinksAttached.xdp.values()].sort().join(',') || '-' : undefined,
      nodeIps: state.addresses.join(',') || undefined,
    });

    // Ended flows give back their conntrack space and SNAT ports (the datapath
    // already ignores them; this frees them before LRU pressure would).
    if (cfg.ctGcIntervalMs > 0) {
      const gcMaps = { ct: obj.map(abi.KBP_MAP_CT), snat: obj.map(abi.KBP_MAP_SNAT), revnat: obj.map(abi.KBP_MAP_REVNAT) };
      const pressure = [new LruPressure(abi.KBP_MAP_CT, gcMaps.ct.info.maxEntries, ctLog), new LruPressure(abi.KBP_MAP_SNAT, gcMaps.snat.info.maxEntries, ctLog)];
      let running = false;
      const timer = setInterval(() => {
        if (running) return;
        running = true;
        collectConntrack(gcMaps)
          .then((r) => {
            if (r.ctDeleted || r.snatDeleted) ctLog.info('collected ended flows', { ...r });
            pressure[0]!.observe(r.ctScanned, r.ctScanned - r.ctDeleted);
            pressure[1]!.observe(r.snatScanned, r.snatScanned - r.snatDeleted);
          })
          .catch((err) => ctLog.warn('conntrack garbage collection failed', { err }))
          .finally(() => (running = false));
      }, cfg.ctGcIntervalMs);
      timer.unref();
      cleanups.push(() => clearInterval(timer));
    }

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

/**
 * Conntrack and SNAT are LRU maps: when full, the kernel evicts the least
 * recently used entries instead of refusing new flows, so new flows never
 * fail, but an idle established flow may lose its entry and be balanced
 * again on its next packet. That is not an error the datapath can count, so
 * the garbage collector's pass reports it: a warning when a map was found at
 * least 70% full (once per episode), a note when it is back under 50%; the
 * fill level is the kbp_map_entries / kbp_map_max_entries metrics. 70%, not
 * more: the kernel's LRU starts evicting before max_entries, because every
 * CPU keeps some free entries of its own (in a 256-entry map on 2 CPUs,
 * eviction began at 192 entries).
 */
class LruPressure {
  private high = false;

  constructor(
    private readonly map: string,
    private readonly maxEntries: number,
    private readonly log: Logger,
  ) {}

  observe(scanned: number, kept: number): void {
    if (!this.high && scanned >= 0.7 * this.maxEntries) {
      this.high = true;
      this.log.warn('map nearly full: the kernel evicts the least recently used flows, idle established flows may be balanced again; raise --map-sizes', { map: this.map, entries: scanned, kept, maxEntries: this.maxEntries });
    } else if (this.high && kept < 0.5 * this.maxEntries) {
      this.high = false;
      this.log.info('map pressure over', { map: this.map, entries: kept, maxEntries: this.maxEntries });
    }
  }
}
