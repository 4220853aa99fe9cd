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
// Memory (10k Services x 10 endpoints must fit an agent of ~150 MB): the
// first list is read in pages of LIST_PAGE_SIZE objects as plain JSON (no
// client-node model instances), each object projected (src/k8s/project.ts)
// as its page arrives. ListWatch keeps every object it has seen (to tell
// deletes after a re-list) but only reads metadata.namespace/name and
// resourceVersion of them, so it is handed a stub with just those; the
// projection travels beside the stub (a WeakMap) to the handler, once. The
// change trackers then hold the only copy of what the proxy reads.

import http from 'node:http';
import https from 'node:https';
// Only the informer and watch modules of client-node: its package index (and
// its KubeConfig) load every generated API client (see kubeconfig.ts).
import type { KubeConfig, KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';
import { ListWatch } from '@kubernetes/client-node/dist/cache.js';
import { Watch } from '@kubernetes/client-node/dist/watch.js';
import type { Logger } from '../log.js';
import { inClusterApiConfig, readSimpleKubeConfig, type ApiConfig } from './kubeconfig.js';
import { projectEndpointSlice, projectNode, projectService } from './project.js';
import type { ObjectSource, SourceHandler } from './source.js';
import type { EndpointSlice, Node, Service } from './types.js';

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
  /** Objects per list request (default LIST_PAGE_SIZE). */
  listPageSize?: number;
}

/**
 * Loads the kubeconfig (file or in-cluster), as kube-proxy's --kubeconfig
 * does: read here when it is one of the common kinds (kubeconfig.ts), else by
 * client-node's KubeConfig (exec and auth-provider plugins, proxies, …).
 */
export async function loadKubeConfig(path: string | undefined): Promise<ApiConfig> {
  let kc: ApiConfig | null = path ? readSimpleKubeConfig(path) : inClusterApiConfig();
  if (!kc) {
    const { KubeConfig: Full } = await import('@kubernetes/client-node');
    const full = new Full();
    full.loadFromFile(path!);
    kc = full as ApiConfig;
  }
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

/** Objects per list request (client-go's reflector pages the same way). */
export const LIST_PAGE_SIZE = 500;

/** What ListWatch keeps of an object: its identity and version. */
interface Stub extends KubernetesObject {
  metadata: { name: string; namespace?: string; resourceVersion?: string };
}

/** What the handler gets for an added or updated object: its projection (undefined: unusable) and a slice's trigger time. */
interface Arrival<T> {
  object: T | undefined;
  trigger: number | undefined;
}

const stubKey = (s: Stub) => `${s.metadata.namespace || 'default'}/${s.metadata.name}`;

/** An API error with the HTTP status, as ListWatch and the restart logic read it (statusCode 410: list again). */
class ApiStatusError extends Error {
  constructor(
    message: string,
    readonly statusCode: number,
  ) {
    super(message);
  }
}

/** GET one API path as JSON, authenticated the way client-node's own requests are (kubeconfig or in-cluster). */
async function getJson(kc: ApiConfig, apiPath: string): Promise<unknown> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('no current cluster');
  const url = new URL(cluster.server.replace(/\/+$/, '') + apiPath);
  const opts: https.RequestOptions = { method: 'GET', headers: { accept: 'application/json' }, timeout: 60_000 };
  await kc.applyToHTTPSOptions(opts);
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'http:' ? http : https).request(url, opts, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) {
          let message = text.slice(0, 300);
          try {
            message = (JSON.parse(text) as { message?: string }).message ?? message;
          } catch {
            // not a Status object: keep the text
          }
          reject(new ApiStatusError(`GET ${url.pathname}: HTTP ${res.statusCode}: ${message}`, res.statusCode ?? 0));
          return;
        }
        try {
          resolve(JSON.parse(text));
        } catch (err) {
          reject(new Error(`GET ${url.pathname}: invalid JSON: ${(err as Error).message}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url.pathname}: no answer in ${opts.timeout} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** One kind's informer with restart-on-error and a synced flag. */
class Informer<T> {
  synced = false;
  private closed = false;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly lw: ListWatch<Stub>;
  /** Projections on their way from the list or watch, through ListWatch, to the handler. */
  private readonly arrivals = new WeakMap<Stub, Arrival<T>>();
  private readonly deliver: (stub: Stub, arrival: Arrival<T> | undefined) => void;
  /**
   * Before the first list completes, objects are handed over page by page (the
   * agent computes while the next page is on its way); if that list fails part
   * way, what the retry no longer lists is reported deleted. Keyed by stubKey.
   */
  private handedEarly = new Map<string, Stub>();

  constructor(
    readonly kind: string,
    private readonly kc: ApiConfig,
    private readonly path: string,
    private readonly fieldSelector: string | undefined,
    private readonly project: (o: unknown) => T | undefined,
    private readonly keepTrigger: boolean,
    /** An add or update (arrival), or a delete (undefined). */
    deliver: (stub: Stub, arrival: Arrival<T> | undefined) => void,
    private readonly onSynced: () => void,
    private readonly log: Logger,
    private readonly backoff: Backoff,
    private readonly pageSize: number,
  ) {
    const watch = new Watch(kc as KubeConfig); // Watch calls getCurrentCluster and applyToFetchOptions only
    const stubWatch = {
      watch: (p: string, params: Record<string, string | number | boolean | undefined>, cb: (phase: string, obj: unknown, raw: unknown) => void, done: (err: unknown) => void) =>
        watch.watch(p, params, (phase, obj, raw) => cb(phase, phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED' ? this.stub(obj) : obj, raw), done),
    } as unknown as Watch;
    this.lw = new ListWatch<Stub>(path, stubWatch, () => this.list(), false, undefined, fieldSelector);
    this.deliver = deliver;
    const arrived = (stub: Stub) => {
      this.failures = 0;
      this.handOver(stub);
    };
    this.lw.on('add', arrived);
    this.lw.on('update', arrived);
    this.lw.on('delete', (stub: Stub) => {
      this.failures = 0;
      deliver(stub, undefined);
    });
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

  /** The projection waiting beside `stub`, to the handler (once). */
  private handOver(stub: Stub): void {
    const a = this.arrivals.get(stub);
    this.arrivals.delete(stub);
    if (a) this.deliver(stub, a);
  }

  /** The stub ListWatch keeps; the projection waits beside it for the handler. */
  private stub(raw: unknown): Stub {
    const m = (raw as KubernetesObject | undefined)?.metadata;
    const stub: Stub = { metadata: { name: m?.name ?? '', namespace: m?.namespace, resourceVersion: m?.resourceVersion } };
    this.arrivals.set(stub, { object: this.project(raw), trigger: this.keepTrigger ? lastChangeTriggerTime(raw) : undefined });
    return stub;
  }

  /**
   * Every object, in pages; a continue token that expired (410) fails the
   * list, and the restart lists again. The first list hands each page over as
   * it arrives (ListWatch's adds for them later find nothing waiting); later
   * lists leave it to ListWatch to tell adds, updates and deletes.
   */
  private async list(): Promise<KubernetesListObject<Stub>> {
    const early = !this.synced;
    const items: Stub[] = [];
    let resourceVersion = '';
    let token: string | undefined;
    let pages = 0;
    do {
      const q = new URLSearchParams({ limit: String(this.pageSize) });
      if (token) q.set('continue', token);
      if (this.fieldSelector) q.set('fieldSelector', this.fieldSelector);
      const page = (await getJson(this.kc, `${this.path}?${q}`)) as { metadata?: { resourceVersion?: string; continue?: string }; items?: unknown[] };
      for (const raw of page.items ?? []) {
        const stub = this.stub(raw);
        items.push(stub);
        if (early) {
          this.handedEarly.set(stubKey(stub), stub);
          this.handOver(stub);
        }
      }
      resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
      token = page.metadata?.continue || undefined;
      pages++;
    } while (token);
    if (early) {
      // Handed over by an earlier attempt that failed part way, and gone since.
      for (const s of items) this.handedEarly.delete(stubKey(s));
      for (const gone of this.handedEarly.values()) this.deliver(gone, undefined);
      this.handedEarly = new Map();
    }
    this.failures = 0;
    // ListWatch delivers the list's items synchronously once this promise
    // settles (microtasks); a macrotask later they have all been handed over.
    if (!this.synced) setImmediate(() => this.markSynced(items.length));
    else this.log.info('re-listed', { kind: this.kind, items: items.length, pages });
    return { apiVersion: 'v1', kind: 'List', metadata: { resourceVersion }, items };
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
  private informers: Informer<unknown>[] = [];

  constructor(private readonly opts: InformerSourceOptions) {
    this.description = opts.kubeconfig ? `kubeconfig ${opts.kubeconfig}` : 'in-cluster config';
  }

  async start(h: SourceHandler): Promise<void> {
    const kc = await loadKubeConfig(this.opts.kubeconfig);
    const log = this.opts.log;
    const backoff = this.opts.backoff ?? DEFAULT_BACKOFF;
    const nodeName = this.opts.nodeName;
    const pageSize = this.opts.listPageSize ?? LIST_PAGE_SIZE;
    let synced = false;
    const onSynced = () => {
      if (!synced && this.informers.every((i) => i.synced)) {
        synced = true;
        h.synced();
      }
    };
    // An object without a name (no projection either) never reaches the handler.
    const named = <T,>(deliver: (key: string, a: Arrival<T> | undefined, stub: Stub) => void) => (stub: Stub, a: Arrival<T> | undefined) => {
      if (stub.metadata.name && (a === undefined || a.object !== undefined)) deliver(stubKey(stub), a, stub);
    };
    this.informers = [
      new Informer<Service>('Service', kc, '/api/v1/services', undefined, projectService, false,
        named<Service>((key, a) => h.service(key, a?.object)), onSynced, log, backoff, pageSize),
      new Informer<EndpointSlice>('EndpointSlice', kc, '/apis/discovery.k8s.io/v1/endpointslices', undefined, projectEndpointSlice, true,
        named<EndpointSlice>((key, a) => h.endpointSlice(key, a?.object, a?.trigger)), onSynced, log, backoff, pageSize),
      new Informer<Node>('Node', kc, '/api/v1/nodes', `metadata.name=${nodeName}`, projectNode, false,
        named<Node>((_key, a, stub) => {
          if (stub.metadata.name === nodeName) h.node(a?.object);
        }), onSynced, log, backoff, pageSize),
    ] as Informer<unknown>[];
    log.info('watching the API server', { server: kc.getCurrentCluster()!.server, node: this.opts.nodeName });
    for (const i of this.informers) i.start();
  }

  async close(): Promise<void> {
    await Promise.all(this.informers.map((i) => i.close()));
  }
}
