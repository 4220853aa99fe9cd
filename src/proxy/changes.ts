// Change trackers, after kube-proxy's ServiceChangeTracker and
// EndpointsChangeTracker (pkg/proxy/servicechangetracker.go,
// endpointschangetracker.go): informer handlers record each object's
// previous and current state; a sync takes the pending changes and learns
// which Services need their desired state recomputed.
//
// Objects are projections (src/k8s/project.ts) compared by fingerprint (their
// JSON text, digested), so an update that changes nothing the proxy reads is dropped on
// arrival, and an object changed and changed back before the next sync
// leaves nothing pending. Slices are grouped by the Service their label names;
// a slice whose label moves dirties both Services.

import { hash } from 'node:crypto';
import type { EndpointSlice, Node, Service } from '../k8s/types.js';

import { sliceService } from './desired.js';

interface Known<T> {
  object: T;
  fingerprint: string;
}

/**
 * A projection's fingerprint: a digest of its JSON text (the text itself would
 * double what the trackers hold: 10k slices of 10 endpoints are ~12 MB of it).
 */
function known<T>(object: T): Known<T> {
  return { object, fingerprint: hash('sha1', JSON.stringify(object), 'base64') };
}

/** A change not yet taken by a sync: the state at the last sync, and now. */
export interface Change<T> {
  previous: T | undefined;
  current: T | undefined;
}

export class ServiceChangeTracker {
  private readonly known = new Map<string, Known<Service>>();
  /** key -> fingerprint at the last take ('' = absent). */
  private readonly pending = new Map<string, { previous: Known<Service> | undefined }>();

  get size(): number {
    return this.known.size;
  }

  get(key: string): Service | undefined {
    return this.known.get(key)?.object;
  }

  keys(): IterableIterator<string> {
    return this.known.keys();
  }

  /** Record an add/update (object) or a delete (undefined). False when nothing the proxy reads changed. */
  update(key: string, object: Service | undefined): boolean {
    const before = this.known.get(key);
    const now = object ? known(object) : undefined;
    if (before?.fingerprint === now?.fingerprint) return false;
    if (now) this.known.set(key, now);
    else this.known.delete(key);
    const p = this.pending.get(key);
    if (!p) this.pending.set(key, { previous: before });
    else if (p.previous?.fingerprint === now?.fingerprint) this.pending.delete(key); // back where the last sync saw it
    return true;
  }

  get hasPending(): boolean {
    return this.pending.size > 0;
  }

  /** Pending changes (keys of Services whose spec changed), cleared. */
  take(): Map<string, Change<Service>> {
    const out = new Map<string, Change<Service>>();
    for (const [key, p] of this.pending) out.set(key, { previous: p.previous?.object, current: this.known.get(key)?.object });
    this.pending.clear();
    return out;
  }
}

export class EndpointsChangeTracker {
  /** Service key -> slice key -> slice. */
  private readonly byService = new Map<string, Map<string, Known<EndpointSlice>>>();
  private readonly serviceOf = new Map<string, string | undefined>(); // slice key -> its Service key
  private readonly known = new Map<string, Known<EndpointSlice>>();
  /** Slice key -> (its fingerprint and Service at the last take). */
  private readonly pending = new Map<string, { fingerprint: string | undefined; service: string | undefined }>();

  get size(): number {
    return this.known.size;
  }

  /** The slices of a Service ("namespace/name"). */
  slicesOf(service: string): EndpointSlice[] {
    const m = this.byService.get(service);
    return m ? [...m.values()].map((k) => k.object) : [];
  }

  update(key: string, slice: EndpointSlice | undefined): boolean {
    const before = this.known.get(key);
    const now = slice ? known(slice) : undefined;
    if (before?.fingerprint === now?.fingerprint) return false;
    const svcBefore = this.serviceOf.get(key);
    const svcNow = slice ? sliceService(slice) : undefined;
    if (svcBefore !== undefined) this.byService.get(svcBefore)?.delete(key);
    if (svcBefore !== undefined && this.byService.get(svcBefore)?.size === 0) this.byService.delete(svcBefore);
    if (now) {
      this.known.set(key, now);
      this.serviceOf.set(key, svcNow);
      if (svcNow !== undefined) {
        let m = this.byService.get(svcNow);
        if (!m) this.byService.set(svcNow, (m = new Map()));
        m.set(key, now);
      }
    } else {
      this.known.delete(key);
      this.serviceOf.delete(key);
    }
    const p = this.pending.get(key);
    if (!p) this.pending.set(key, { fingerprint: before?.fingerprint, service: svcBefore });
    else if (p.fingerprint === now?.fingerprint && p.service === svcNow) this.pending.delete(key);
    return true;
  }

  get hasPending(): boolean {
    return this.pending.size > 0;
  }

  /** Keys of the Services whose slices changed since the last take, cleared. */
  take(): Set<string> {
    const out = new Set<string>();
    for (const [key, p] of this.pending) {
      if (p.service !== undefined) out.add(p.service);
      const now = this.serviceOf.get(key);
      if (now !== undefined) out.add(now);
    }
    this.pending.clear();
    return out;
  }
}

/**
 * This node: a change of what keyOf extracts (zone, addresses) means every
 * Service is recomputed.
 */
export class NodeTracker {
  private keyAtTake: string | undefined;
  private changed = false;
  node: Node | undefined;

  constructor(readonly keyOf: (n: Node | undefined) => string | undefined) {}

  update(node: Node | undefined): boolean {
    const before = this.keyOf(this.node);
    this.node = node;
    const now = this.keyOf(node);
    if (before === now) return false;
    this.changed = now !== this.keyAtTake;
    return true;
  }

  get hasPending(): boolean {
    return this.changed;
  }

  /** True when the key differs from the last take. */
  take(): boolean {
    const c = this.changed;
    this.changed = false;
    this.keyAtTake = this.keyOf(this.node);
    return c;
  }
}

