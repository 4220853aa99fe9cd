// Prometheus metrics (prom-client, a registry per API instance). Everything
// is read at scrape time from the syncer's counters and the kernel maps, so
// nothing in the sync path depends on the API.
//
//   kbp_sync_total / kbp_sync_full_total / kbp_sync_failures_total
//   kbp_sync_map_full_errors_total       updates refused because a map is full
//   kbp_sync_duration_seconds            histogram of sync durations (seen at scrape time)
//   kbp_sync_last_success_timestamp_seconds
//   kbp_map_entries{map} / kbp_map_max_entries{map}
//   kbp_datapath_packets_total{reason} / kbp_datapath_bytes_total{reason}
//                                        per-CPU counters of the stats map, summed
// plus prom-client's default process metrics (RSS, CPU, event loop lag).

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../log.js';
import * as abi from '../maps/abi.js';
import type { SyncerStats, SyncResult } from '../proxy/syncer.js';
import { readStats } from './decode.js';
import { countEntries, type MapSet } from './paging.js';

export interface MetricsDeps {
  syncStats?: () => SyncerStats;
  maps?: MapSet;
  log?: Logger;
  /** How long map entry counts are reused (walking a big conntrack map costs; default 5 s). */
  countTtlMs?: number;
}

/** A counter that mirrors a monotonic number kept elsewhere. */
function mirror(c: Counter, value: number, labels?: Record<string, string>): void {
  if (labels) {
    c.remove(labels);
    c.inc(labels, value);
  } else {
    c.reset();
    c.inc(value);
  }
}

export interface Metrics {
  registry: Registry;
  /** Read the syncer's counters and the maps into the metrics; call before each scrape. */
  refresh(): Promise<void>;
}

export function createMetrics(deps: MetricsDeps): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const syncs = new Counter({ name: 'kbp_sync_total', help: 'Syncs of the maps to the desired state, successful or not.', registers });
  const full = new Counter({ name: 'kbp_sync_full_total', help: 'Syncs that re-read the maps first (start, periodic, after a failure).', registers });
  const failures = new Counter({ name: 'kbp_sync_failures_total', help: 'Syncs that failed (the next one is full).', registers });
  const mapFull = new Counter({ name: 'kbp_sync_map_full_errors_total', help: 'Syncs that failed because a map was full (E2BIG/ENOSPC/ENOMEM): raise the map size.', registers });
  const duration = new Histogram({
    name: 'kbp_sync_duration_seconds',
    help: 'Duration of syncs (each result observed once, at the first scrape after it).',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  });
  const lastSuccess = new Gauge({ name: 'kbp_sync_last_success_timestamp_seconds', help: 'Time of the last successful sync (0: none yet).', registers });
  const entries = new Gauge({ name: 'kbp_map_entries', help: 'Entries in each datapath map (hash maps counted batch by batch, cached briefly).', labelNames: ['map'], registers });
  const maxEntries = new Gauge({ name: 'kbp_map_max_entries', help: 'Capacity of each datapath map.', labelNames: ['map'], registers });
  const packets = new Counter({ name: 'kbp_datapath_packets_total', help: 'Packets by datapath outcome or drop reason, summed over CPUs.', labelNames: ['reason'], registers });
  const bytes = new Counter({ name: 'kbp_datapath_bytes_total', help: 'Bytes by datapath outcome or drop reason, summed over CPUs.', labelNames: ['reason'], registers });

  let lastSeen: SyncResult | undefined;
  const ttl = deps.countTtlMs ?? 5000;
  const counted = new Map<string, { at: number; n: number }>();

  const refreshSync = (): void => {
    if (!deps.syncStats) return;
    const s = deps.syncStats();
    mirror(syncs, s.syncs);
    mirror(full, s.fullSyncs);
    mirror(failures, s.failures);
    mirror(mapFull, s.mapFull);
    lastSuccess.set(s.lastSuccess ? s.lastSuccess.getTime() / 1000 : 0);
    if (s.lastResult && s.lastResult !== lastSeen) {
      lastSeen = s.lastResult;
      duration.observe(s.lastResult.durationMs / 1000);
    }
  };

  const refreshMaps = async (maps: MapSet): Promise<void> => {
    for (const [name, m] of maps) {
      maxEntries.set({ map: name }, m.info.maxEntries);
      if (m.info.type === 2 || m.info.type === 6) {
        entries.set({ map: name }, m.info.maxEntries); // array maps: every index exists
        continue;
      }
      let c = counted.get(name);
      if (!c || Date.now() - c.at >= ttl) {
        try {
          c = { at: Date.now(), n: await countEntries(m) };
          counted.set(name, c);
        } catch (err) {
          deps.log?.warn('metrics: counting map entries failed', { map: name, err });
          continue;
        }
      }
      entries.set({ map: name }, c.n);
    }
    const stats = maps.get(abi.KBP_MAP_STATS);
    if (!stats) return;
    try {
      for (const r of await readStats(stats)) {
        mirror(packets, r.packets, { reason: r.name });
        mirror(bytes, r.bytes, { reason: r.name });
      }
    } catch (err) {
      deps.log?.warn('metrics: reading the stats map failed', { err });
    }
  };

  return {
    registry,
    async refresh() {
      refreshSync();
      if (deps.maps) await refreshMaps(deps.maps);
    },
  };
}
