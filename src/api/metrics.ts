// Prometheus metrics (prom-client, a registry per API instance). Counters
// and gauges are read at scrape time from the syncer's counters and the
// kernel maps; histograms are observed on every sync through the syncer's
// listener (onSync), so none is lost between scrapes. Nothing in the sync
// path depends on the API.
//
//   kbp_sync_total / kbp_sync_full_total / kbp_sync_failures_total
//   kbp_sync_map_full_errors_total       updates refused because a map is full
//   kbp_sync_duration_seconds            histogram of sync durations
//   kbp_sync_last_success_timestamp_seconds
//   kbp_map_writes_total{map}            updates + deletes the syncer issued, per map
//   kbp_map_entries{map} / kbp_map_max_entries{map}
//   kubeproxy_sync_proxy_rules_duration_seconds        kube-proxy's names, same meaning:
//   kubeproxy_sync_proxy_rules_last_timestamp_seconds  every sync's duration, the last
//   kubeproxy_network_programming_duration_seconds     successful one, and the time from
//                                        an EndpointSlice change (its last-change-trigger-time,
//                                        else the event's arrival) to the sync that programmed it
//   kbp_datapath_packets_total{reason} / kbp_datapath_bytes_total{reason}
//                                        per-CPU counters of the stats map, summed
// plus prom-client's default process metrics (RSS, CPU, event loop lag).

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../log.js';
import * as abi from '../maps/abi.js';
import type { SyncListener, SyncerStats, SyncResult } from '../proxy/syncer.js';
import { readStats } from './decode.js';
import { countEntries, type MapSet } from './paging.js';

export interface MetricsDeps {
  syncStats?: () => SyncerStats;
  /** Subscribe to every sync's result (the syncer's onSync); returns the unsubscribe. Without it, durations are sampled at scrape time. */
  onSync?: (fn: SyncListener) => () => void;
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
  /** Stop listening to the syncer. */
  close(): void;
}

// kube-proxy's buckets for sync_proxy_rules_duration_seconds.
const SYNC_BUCKETS = Array.from({ length: 15 }, (_, i) => 0.001 * 2 ** i);
// kube-proxy's start at 0.25 s (iptables); ours start at 1 ms to show the
// datapath's scale, and end like kube-proxy's (5 min).
const PROGRAMMING_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300];

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
    help: 'Duration of syncs of the maps to the desired state.',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  });
  const lastSuccess = new Gauge({ name: 'kbp_sync_last_success_timestamp_seconds', help: 'Time of the last successful sync (0: none yet).', registers });
  const writes = new Counter({ name: 'kbp_map_writes_total', help: 'Map updates and deletes issued by the syncer, per map.', labelNames: ['map'], registers });
  const kpDuration = new Histogram({ name: 'kubeproxy_sync_proxy_rules_duration_seconds', help: 'SyncProxyRules latency in seconds (every sync of the maps).', buckets: SYNC_BUCKETS, registers });
  const kpLast = new Gauge({ name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds', help: 'The last time proxy rules were successfully synced.', registers });
  const kpProgramming = new Histogram({
    name: 'kubeproxy_network_programming_duration_seconds',
    help: 'In-cluster network programming latency in seconds: EndpointSlice change (last-change-trigger-time, else event arrival) to the sync that programmed it.',
    buckets: PROGRAMMING_BUCKETS,
    registers,
  });
  const entries = new Gauge({ name: 'kbp_map_entries', help: 'Entries in each datapath map (hash maps counted batch by batch, cached briefly).', labelNames: ['map'], registers });
  const maxEntries = new Gauge({ name: 'kbp_map_max_entries', help: 'Capacity of each datapath map.', labelNames: ['map'], registers });
  const packets = new Counter({ name: 'kbp_datapath_packets_total', help: 'Packets by datapath outcome or drop reason, summed over CPUs.', labelNames: ['reason'], registers });
  const bytes = new Counter({ name: 'kbp_datapath_bytes_total', help: 'Bytes by datapath outcome or drop reason, summed over CPUs.', labelNames: ['reason'], registers });

  let lastSeen: SyncResult | undefined;
  const ttl = deps.countTtlMs ?? 5000;
  const counted = new Map<string, { at: number; n: number }>();

  const observe = (r: SyncResult): void => {
    duration.observe(r.durationMs / 1000);
    kpDuration.observe(r.durationMs / 1000);
    if (!r.ok) return;
    kpLast.set(r.endedAt / 1000);
    for (const at of r.programmed) kpProgramming.observe(Math.max(0, r.endedAt - at) / 1000);
  };
  const unsubscribe = deps.onSync?.(observe);

  const refreshSync = (): void => {
    if (!deps.syncStats) return;
    const s = deps.syncStats();
    mirror(syncs, s.syncs);
    mirror(full, s.fullSyncs);
    mirror(failures, s.failures);
    mirror(mapFull, s.mapFull);
    for (const [map, n] of Object.entries(s.mapWrites ?? {})) mirror(writes, n, { map });
    lastSuccess.set(s.lastSuccess ? s.lastSuccess.getTime() / 1000 : 0);
    if (!deps.onSync) {
      // No listener: at least the last result, once, at the first scrape after it.
      kpLast.set(s.lastSuccess ? s.lastSuccess.getTime() / 1000 : 0);
      if (s.lastResult && s.lastResult !== lastSeen) {
        lastSeen = s.lastResult;
        duration.observe(s.lastResult.durationMs / 1000);
        kpDuration.observe(s.lastResult.durationMs / 1000);
      }
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
    close() {
      unsubscribe?.();
    },
  };
}
