// The Kubernetes API as an object source: one informer (client-node's
// ListWatch: list, then watch from the list's resourceVersion) per kind —
// Services and EndpointSlices of every namespace, and this node's Node
// (fieldSelector metadata.name=<node>, for its zone label).
//
// What ListWatch does by itself: after a watch ends cleanly (the server's
// timeout, a dropped connection that closes cleanly) it watches again from the
// last resourceVersion; on 410 Gone (an event or a status) it lists again and
// reports what disappeared meanwhile as deletes. What it leaves to us: after
// any other error it stops. Each informer is restarted here with exponential
// backoff (client-go's reflector does the same), reset once it lists or
// receives an event again. HasSynced: an informer has synced once its first
// list has been delivered; the source calls `synced` when all three have.
//
// Memory: ListWatch keeps every object it has seen (to tell deletes after a
// re-list). It only reads metadata.namespace/name/resourceVersion of them, so
// objects are slimmed before they reach it — the projection the proxy reads
// (src/k8s/project.ts) plus resourceVersion and a slice's trigger time — both
// the list's items and every watch event. At 10k Services x 10 endpoints that
// keeps the deserialized API objects (managedFields, status, client-node
// model instances) out of the heap.

import {
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  ListWatch,
  Watch,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import type { Logger } from '../log.js';
import { inClusterKubeConfig } from './incluster.js';
import { projectEndpointSlice, projectNode, projectService } from './project.js';
import type { ObjectSource, SourceHandler } from './source.js';
import { nsName } from './types.js';

export interface Backoff {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 800, maxMs: 30_000 };

export interface InformerSourceOptions {
  /** A kubeconfig file, or undefined for the in-cluster config (service account). */
  kubeconfig: string | undefined;
  nodeName: string;
  log: Logger;
  backoff?: Backoff;
}

/** Loads the kubeconfig (file or in-cluster, see incluster.ts), as kube-proxy's --kubeconfig does. */
export function loadKubeConfig(path: string | undefined): KubeConfig {
  let kc: KubeConfig;
  if (path) {
    kc = new KubeConfig();
    kc.loadFromFile(path);
  } else kc = inClusterKubeConfig();
  if (!kc.getCurrentCluster()) throw new Error(path ? `kubeconfig ${path}: no current cluster` : 'in-cluster config: no cluster');
  return kc;
}

const TRIGGER_TIME = 'endpoints.kubernetes.io/last-change-trigger-time';

/** The EndpointSlice controller's stamp of when the change behind this slice version happened (epoch ms). */
export function lastChangeTriggerTime(o: unknown): number | undefined {
  const v = (o as { metadata?: { annotations?: Record<string, unknown> } } | undefined)?.metadata?.annotations?.[TRIGGER_TIME];
  if (typeof v !== 'string') return undefined;
  const t = Date.parse(v);
  return Number.isFinite(t) ? t : undefined;
}

/**
 * What ListWatch keeps of an object: the projection, with the resourceVersion
 * it compares and (slices) the trigger time annotation. Projecting it again
 * gives the same projection. Unprojectable objects are kept as they are (the
 * handler ignores them).
 */
function slimmer(project: (o: unknown) => { metadata: object } | undefined, keepTrigger = false) {
  return (o: KubernetesObject): KubernetesObject => {
    const p = project(o);
    if (!p) return o;
    const resourceVersion = o.metadata?.resourceVersion;
    const trigger = keepTrigger ? o.metadata?.annotations?.[TRIGGER_TIME] : undefined;
    const metadata = p.metadata as { annotations?: Record<string, string> };
    return {
      ...p,
      metadata: { ...metadata, resourceVersion, ...(trigger ? { annotations: { ...metadata.annotations, [TRIGGER_TIME]: trigger } } : {}) },
    } as KubernetesObject;
  };
}

/** One kind's informer with restart-on-error and a synced flag. */
class Informer {
  synced = false;
  private closed = false;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly lw: ListWatch<KubernetesObject>;

  constructor(
    readonly kind: string,
    watch: Watch,
    path: string,
    list: () => Promise<KubernetesListObject<KubernetesObject>>,
    fieldSelector: string | undefined,
    slim: (obj: KubernetesObject) => KubernetesObject,
    onObject: (obj: unknown, deleted: boolean) => void,
    private readonly onSynced: () => void,
    private readonly log: Logger,
    private readonly backoff: Backoff,
  ) {
    const listed = async () => {
      const l = await list();
      l.items = l.items.map(slim);
      this.failures = 0;
      // ListWatch delivers the list's items synchronously once this promise
      // settles (microtasks); a macrotask later they have all been handed over.
      if (!this.synced) setImmediate(() => this.markSynced(l.items.length));
      else this.log.info('re-listed', { kind: this.kind, items: l.items.length });
      return l;
    };
    const slimWatch = {
      watch: (p: string, params: Record<string, string | number | boolean | undefined>, cb: (phase: string, obj: unknown, raw: unknown) => void, done: (err: unknown) => void) =>
        watch.watch(p, params, (phase, obj, raw) => cb(phase, phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED' ? slim(obj as KubernetesObject) : obj, raw), done),
    } as unknown as Watch;
    this.lw = new ListWatch(path, slimWatch, listed, false, undefined, fieldSelector);
    const deliver = (deleted: boolean) => (o: KubernetesObject) => {
      this.failures = 0;
      onObject(o, deleted);
    };
    this.lw.on('add', deliver(false));
    this.lw.on('update', deliver(false));
    this.lw.on('delete', deliver(true));
    this.lw.on('error', (err) => this.failed(err));
  }

  start(): void {
    this.lw.start().catch((err) => this.failed(err));
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.lw.stop();
  }

  private markSynced(items: number): void {
    if (this.synced || this.closed) return;
    this.synced = true;
    this.log.info('informer synced', { kind: this.kind, items });
    this.onSynced();
  }

  private failed(err: unknown): void {
    if (this.closed) return;
    const e = err as { message?: string; code?: unknown; statusCode?: unknown };
    const delay = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** Math.min(this.failures, 16));
    const jittered = Math.round(delay * (0.8 + 0.4 * Math.random()));
    this.failures++;
    this.log.warn('informer failed, restarting', { kind: this.kind, err: e?.message ?? String(err), status: e?.statusCode ?? e?.code, retryMs: jittered, failures: this.failures });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (!this.closed) this.start();
    }, jittered);
  }
}

export class InformerSource implements ObjectSource {
  readonly description: string;
  private informers: Informer[] = [];

  constructor(private readonly opts: InformerSourceOptions) {
    this.description = opts.kubeconfig ? `kubeconfig ${opts.kubeconfig}` : 'in-cluster config';
  }

  async start(h: SourceHandler): Promise<void> {
    const kc = loadKubeConfig(this.opts.kubeconfig);
    const core = kc.makeApiClient(CoreV1Api);
    const discovery = kc.makeApiClient(DiscoveryV1Api);
    const watch = new Watch(kc);
    const log = this.opts.log;
    const backoff = this.opts.backoff ?? DEFAULT_BACKOFF;
    const nodeSelector = `metadata.name=${this.opts.nodeName}`;
    let synced = false;
    const onSynced = () => {
      if (!synced && this.informers.every((i) => i.synced)) {
        synced = true;
        h.synced();
      }
    };
    const asList = (p: Promise<unknown>) => p as Promise<KubernetesListObject<KubernetesObject>>;
    this.informers = [
      new Informer(
        'Service',
        watch,
        '/api/v1/services',
        () => asList(core.listServiceForAllNamespaces()),
        undefined,
        slimmer(projectService),
        (o, deleted) => {
          const s = projectService(o);
          if (s) h.service(nsName(s), deleted ? undefined : s);
        },
        onSynced,
        log,
        backoff,
      ),
      new Informer(
        'EndpointSlice',
        watch,
        '/apis/discovery.k8s.io/v1/endpointslices',
        () => asList(discovery.listEndpointSliceForAllNamespaces()),
        undefined,
        slimmer(projectEndpointSlice, true),
        (o, deleted) => {
          const s = projectEndpointSlice(o);
          if (s) h.endpointSlice(nsName(s), deleted ? undefined : s, deleted ? undefined : lastChangeTriggerTime(o));
        },
        onSynced,
        log,
        backoff,
      ),
      new Informer(
        'Node',
        watch,
        '/api/v1/nodes',
        () => asList(core.listNode({ fieldSelector: nodeSelector })),
        nodeSelector,
        slimmer(projectNode),
        (o, deleted) => {
          const n = projectNode(o);
          if (n && n.metadata.name === this.opts.nodeName) h.node(deleted ? undefined : n);
        },
        onSynced,
        log,
        backoff,
      ),
    ];
    log.info('watching the API server', { server: kc.getCurrentCluster()!.server, node: this.opts.nodeName });
    for (const i of this.informers) i.start();
  }

  async close(): Promise<void> {
    await Promise.all(this.informers.map((i) => i.close()));
  }
}
