// The proxy's view of the cluster between informer events and the syncer:
// change trackers fed by the object source, and the desired state kept per
// Service. compute() recomputes only the Services whose Service or slices
// changed since the last call (all of them when this node's zone or addresses changed) and
// returns the desired state with the list of what changed, so the syncer
// visits only that. Problems of a Service (invalid spec, skipped port, …) are
// logged when they first appear, with the object and the reason, and again
// only after they went away and came back.
//
// For kubeproxy_network_programming_duration_seconds, each slice change that
// is tracked carries a time: the endpoints.kubernetes.io/last-change-trigger-time
// the EndpointSlice controller stamps on the slice when the source passes it,
// else the event's arrival. A trigger time older than this tracker is not
// measured at all, as in kube-proxy (the first list would report how old the
// cluster is).
// compute() hands the times over with the changes; the syncer reports them
// once a sync has programmed them.

import type { EndpointSlice, Node, Service } from '../k8s/types.js';
import type { Logger } from '../log.js';
import { EndpointsChangeTracker, NodeTracker, ServiceChangeTracker } from './changes.js';
import {
  DesiredAssembler,
  computeService,
  conflictProblems,
  nodeContext,
  type DesiredChanges,
  type DesiredHealthCheck,
  type DesiredProblem,
  type DesiredState,
  type NodeContext,
} from './desired.js';

export interface ComputeResult {
  desired: DesiredState;
  changes: DesiredChanges;
  /** Services recomputed by this call. */
  recomputed: number;
  /** When the slice changes taken by this call happened (epoch ms), one per slice. */
  triggers: number[];
}

export class ProxyState {
  readonly services = new ServiceChangeTracker();
  readonly endpoints = new EndpointsChangeTracker();
  readonly node: NodeTracker;
  private readonly asm = new DesiredAssembler();
  private readonly logged = new Map<string, Set<string>>(); // Service -> problem lines logged
  private ctx: NodeContext;
  private nodeIps: readonly string[] = [];
  /** Slice key -> when its oldest unsynced change happened (epoch ms). */
  private readonly triggers = new Map<string, number>();
  private readonly startedAt: number;

  constructor(
    readonly nodeName: string,
    private readonly log?: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.startedAt = now();
    // What of the Node the rules depend on: its zone and its addresses.
    this.node = new NodeTracker((n) => JSON.stringify(nodeContext(nodeName, n, this.nodeIps)));
    this.ctx = nodeContext(nodeName);
  }

  /** --node-ip: this node's addresses, overriding the Node's. Call before the first compute(). */
  useNodeIps(ips: readonly string[]): void {
    this.nodeIps = [...ips];
    this.ctx = nodeContext(this.nodeName, this.node.node, this.nodeIps);
  }

  /** Handlers for the object source; each returns true when a sync is worth asking for. */
  onService(key: string, svc: Service | undefined): boolean {
    return this.services.update(key, svc);
  }

  /** `triggerTime`: the slice's last-change-trigger-time (epoch ms), when known. */
  onEndpointSlice(key: string, slice: EndpointSlice | undefined, triggerTime?: number): boolean {
    const changed = this.endpoints.update(key, slice);
    if (changed && !this.triggers.has(key) && !(triggerTime !== undefined && triggerTime < this.startedAt)) this.triggers.set(key, triggerTime ?? this.now());
    return changed;
  }

  onNode(node: Node | undefined): boolean {
    if (node && node.metadata.name !== this.nodeName) return false;
    return this.node.update(node);
  }

  get hasPending(): boolean {
    return this.services.hasPending || this.endpoints.hasPending || this.node.hasPending;
  }

  get zone(): string | undefined {
    return this.ctx.zone;
  }

  /** This node's IPv4 addresses as of the last compute(), primary first. */
  get addresses(): readonly string[] {
    return this.ctx.addresses ?? [];
  }

  /** The healthCheckNodePorts to serve, as of the last compute(). */
  healthChecks(): Map<number, DesiredHealthCheck> {
    return this.asm.healthChecks();
  }

  compute(): ComputeResult {
    const recomputed = this.fold();
    const triggers = [...this.triggers.values()];
    this.triggers.clear();
    return { desired: this.asm.state, changes: this.asm.takeChanges(), recomputed, triggers };
  }

  /**
   * While the objects are still being listed (no sync may run yet): fold what
   * has arrived into the desired state, so the first compute() after the
   * listing has only the rest to do. The changes stay recorded for that
   * compute(); the first sync visits everything anyway. Returns the number of
   * Services computed.
   */
  precompute(): number {
    return this.fold();
  }

  /** Recompute the Services whose Service or slices changed (every one when this node changed). */
  private fold(): number {
    const dirty = new Set<string>();
    if (this.node.take()) {
      this.ctx = nodeContext(this.nodeName, this.node.node, this.nodeIps);
      this.log?.info('node zone or addresses changed: recomputing every Service', { node: this.nodeName, zone: this.ctx.zone ?? '-', addresses: this.ctx.addresses?.join(',') ?? '-' });
      for (const k of this.services.keys()) dirty.add(k);
    }
    for (const k of this.services.take().keys()) dirty.add(k);
    for (const k of this.endpoints.take()) dirty.add(k);
    for (const key of dirty) {
      const svc = this.services.get(key);
      const result = svc ? computeService(svc, this.endpoints.slicesOf(key), this.ctx) : undefined;
      this.asm.set(key, result);
      this.report(key, result ? [...result.problems, ...conflictProblems(this.asm, key)] : []);
    }
    return dirty.size;
  }

  private report(service: string, problems: DesiredProblem[]): void {
    const before = this.logged.get(service);
    if (problems.length === 0) {
      this.logged.delete(service);
      return;
    }
    const now = new Set<string>();
    for (const p of problems) {
      const line = `${p.level}|${p.object}|${p.reason}`;
      now.add(line);
      if (!before?.has(line)) this.log?.[p.level](p.reason, { object: p.object });
    }
    this.logged.set(service, now);
  }
}
