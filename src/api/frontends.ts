// Programmed frontends as the kernel maps hold them, decoded through the same
// codecs the syncer writes with. The Service names come from the syncer's
// id index (the maps carry ids, not names). compareDesired() sets what the
// kernel holds against what the agent last computed, frontend by frontend.

import * as abi from '../maps/abi.js';
import type { MapReader } from '../maps/writer.js';
import { backendStateName, svcFlagNames } from '../maps/format.js';
import type { ProgrammedFrontend } from '../proxy/syncer.js';

export interface FrontendView {
  id: number;
  vip: string;
  port: number;
  protocol: string;
  scope: number;
  namespace: string | null; // null: an id the agent has not (yet) synced, e.g. just after a restart
  name: string | null;
  portName: string | null;
  flags: string[];
  affinityTimeout: number;
  backends: BackendView[];
}

/** A frontend with its comparison against the desired state. */
export interface FrontendDriftView extends FrontendView {
  /** Empty when the kernel holds what is desired (or nothing is known of the desired state). */
  drift: string[];
}

export interface BackendView {
  slot: number;
  id: number; // 0: the slot entry itself is missing
  ip: string | null; // null: the slot points at a missing backend (a sync in flight)
  port: number | null;
  protocol: string | null;
  state: string | null;
}

export async function readFrontends(reader: MapReader, names: (id: number) => ProgrammedFrontend | undefined): Promise<FrontendView[]> {
  const [svcs, backends] = await Promise.all([reader.entries(abi.KBP_MAP_SERVICES), reader.entries(abi.KBP_MAP_BACKENDS)]);
  const be = new Map<number, abi.Backend>();
  for (const e of backends) be.set(abi.backendKey.decode(e.key).id, abi.backendValue.decode(e.value));

  const entries = new Map<string, { k: abi.SvcKey; v: abi.SvcValue }>();
  const slots = new Map<string, Map<number, abi.SvcValue>>();
  for (const e of svcs) {
    const k = abi.svcKey.decode(e.key);
    const v = abi.svcValue.decode(e.value);
    const fe = `${k.vip}|${k.port}|${k.proto}|${k.scope}`;
    if (k.slot === 0) entries.set(fe, { k, v });
    else {
      const m = slots.get(fe) ?? new Map<number, abi.SvcValue>();
      m.set(k.slot, v);
      slots.set(fe, m);
    }
  }

  const out: FrontendView[] = [];
  for (const [fe, { k, v }] of entries) {
    if (v.flags & abi.KBP_SVC_F_VIP_MARKER) continue;
    const n = names(v.svc_id);
    const views: BackendView[] = [];
    // What the datapath can pick: slots 1..count.
    for (let slot = 1; slot <= v.count; slot++) {
      const s = slots.get(fe)?.get(slot);
      if (!s) {
        // count covers a slot the map lacks: the datapath drops flows that pick it.
        views.push({ slot, id: 0, ip: null, port: null, protocol: null, state: null });
        continue;
      }
      const b = be.get(s.backend_id);
      views.push({
        slot,
        id: s.backend_id,
        ip: b?.ip ?? null,
        port: b?.port ?? null,
        protocol: b ? abi.protoName(b.proto) : null,
        state: b ? backendStateName(b.state) : null,
      });
    }
    out.push({
      id: v.svc_id,
      vip: k.vip,
      port: k.port,
      protocol: abi.protoName(k.proto),
      scope: k.scope,
      namespace: n?.service.namespace ?? null,
      name: n?.service.name ?? null,
      portName: n ? n.service.portName : null,
      flags: svcFlagNames(v.flags).split(',').filter((f) => f !== '-'),
      affinityTimeout: v.affinity_timeout,
      backends: views,
    });
  }
  return out.sort((a, b) => abi.ipv4ToNumber(a.vip) - abi.ipv4ToNumber(b.vip) || a.port - b.port || a.protocol.localeCompare(b.protocol));
}

// ---------------------------------------------------------------- desired vs realized

/**
 * The part of a desired frontend the comparison needs (structurally what
 * src/proxy/desired.ts computes; kept minimal so the API does not follow every
 * change there). `active` holds backend keys "IP:PORT/PROTO".
 */
export interface DesiredFrontendLike {
  vip: string;
  port: number;
  proto: number;
  scope: number;
  flags: number;
  affinityTimeout: number;
  service: { namespace: string; name: string; portName: string };
  active: readonly string[];
}

export interface MissingFrontend {
  vip: string;
  port: number;
  protocol: string;
  scope: number;
  namespace: string;
  name: string;
  portName: string;
}

export interface ServicesView {
  /** Whether the desired state was known; without it nothing is compared. */
  desiredKnown: boolean;
  /** No frontend drifts and none is missing (null: desired state unknown). */
  inSync: boolean | null;
  items: FrontendDriftView[];
  /** Desired frontends the kernel does not hold. */
  missing: MissingFrontend[];
}

const feKey = (vip: string, port: number, protocol: string, scope: number): string => `${vip}:${port}/${protocol}#${scope}`;

/**
 * Per realized frontend, the reasons it differs from the desired one: not
 * desired at all, other flags or affinity timeout, backends in slots other
 * than the desired active set (compared by address, so ids may differ), or a
 * slot pointing at no backend entry. A sync in flight shows as drift until it
 * finishes; a drift that persists past a sync is a bug or an outside write.
 */
export function compareDesired(realized: readonly FrontendView[], desired: Iterable<DesiredFrontendLike> | undefined): ServicesView {
  if (desired === undefined) return { desiredKnown: false, inSync: null, items: realized.map((f) => ({ ...f, drift: [] })), missing: [] };
  const want = new Map<string, DesiredFrontendLike>();
  for (const d of desired) want.set(feKey(d.vip, d.port, abi.protoName(d.proto), d.scope), d);
  const seen = new Set<string>();
  const items: FrontendDriftView[] = realized.map((f) => {
    const key = feKey(f.vip, f.port, f.protocol, f.scope);
    const d = want.get(key);
    if (!d) return { ...f, drift: ['not desired'] };
    seen.add(key);
    const drift: string[] = [];
    const flags = svcFlagNames(d.flags).split(',').filter((x) => x !== '-');
    if (flags.join(',') !== f.flags.join(',')) drift.push(`flags: desired ${flags.join(',') || '-'}`);
    if (d.affinityTimeout !== f.affinityTimeout) drift.push(`affinity timeout: desired ${d.affinityTimeout}`);
    if (f.backends.some((b) => b.ip === null)) drift.push('slot without backend entry');
    const have = f.backends.filter((b) => b.ip !== null).map((b) => `${b.ip}:${b.port}/${b.protocol}`);
    const wantSet = new Set(d.active);
    const extra = have.filter((b) => !wantSet.has(b));
    const haveSet = new Set(have);
    const lacking = [...wantSet].filter((b) => !haveSet.has(b));
    if (lacking.length) drift.push(`backends missing: ${lacking.sort().join(' ')}`);
    if (extra.length) drift.push(`backends not desired: ${extra.sort().join(' ')}`);
    if (have.length !== haveSet.size) drift.push('a backend holds several slots');
    return { ...f, drift };
  });
  const missing: MissingFrontend[] = [];
  for (const [key, d] of want) {
    if (seen.has(key)) continue;
    missing.push({ vip: d.vip, port: d.port, protocol: abi.protoName(d.proto), scope: d.scope, ...d.service });
  }
  return { desiredKnown: true, inSync: missing.length === 0 && items.every((i) => i.drift.length === 0), items, missing };
}

// ---------------------------------------------------------------- backends

export interface BackendEntryView {
  id: number;
  ip: string;
  port: number;
  protocol: string;
  state: string;
  /** Frontend ids whose slots 1..count name this backend (none: kept for established flows only). */
  frontends: number[];
}

export async function readBackends(reader: MapReader): Promise<BackendEntryView[]> {
  const [svcs, backends] = await Promise.all([reader.entries(abi.KBP_MAP_SERVICES), reader.entries(abi.KBP_MAP_BACKENDS)]);
  const counts = new Map<string, number>();
  const slotRefs: Array<{ fe: string; slot: number; v: abi.SvcValue }> = [];
  for (const e of svcs) {
    const k = abi.svcKey.decode(e.key);
    const v = abi.svcValue.decode(e.value);
    const fe = `${k.vip}|${k.port}|${k.proto}|${k.scope}`;
    if (k.slot === 0) counts.set(fe, v.count);
    else slotRefs.push({ fe, slot: k.slot, v });
  }
  const refs = new Map<number, Set<number>>();
  for (const { fe, slot, v } of slotRefs) {
    if (slot > (counts.get(fe) ?? 0)) continue; // stale slot beyond count: never picked
    const s = refs.get(v.backend_id) ?? new Set<number>();
    s.add(v.svc_id);
    refs.set(v.backend_id, s);
  }
  return backends
    .map((e) => {
      const id = abi.backendKey.decode(e.key).id;
      const b = abi.backendValue.decode(e.value);
      return { id, ip: b.ip, port: b.port, protocol: abi.protoName(b.proto), state: backendStateName(b.state), frontends: [...(refs.get(id) ?? [])].sort((x, y) => x - y) };
    })
    .sort((a, b) => a.id - b.id);
}
