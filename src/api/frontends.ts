// Programmed frontends as the kernel maps hold them, decoded through the same
// codecs the syncer writes with. The Service names come from the syncer's
// id index (the maps carry ids, not names).

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

export interface BackendView {
  slot: number;
  id: number;
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
      if (!s) continue;
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
