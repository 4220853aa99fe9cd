// Where the agent's objects come from, behind one interface: a folder of
// manifests (no cluster at all) or informers on a Kubernetes API server. The
// rest of the agent sees only add/update/delete of projected objects
// (src/k8s/project.ts) and one `synced` call once every kind has been listed
// (kube-proxy's HasSynced: nothing is programmed, and nothing shrunk, before).

import type { EndpointSlice, Node, Service } from './types.js';
import { nsName } from './types.js';
import { projectEndpointSlice, projectNode, projectService } from './project.js';
import { ManifestWatcher } from './watch.js';
import type { Logger } from '../log.js';

export interface SourceHandler {
  /** Add or update (object), or delete (undefined), keyed "namespace/name". */
  service(key: string, svc: Service | undefined): void;
  /** `triggerTime`: the slice's endpoints.kubernetes.io/last-change-trigger-time (epoch ms), when it has one. */
  endpointSlice(key: string, slice: EndpointSlice | undefined, triggerTime?: number): void;
  /** This node's Node object (undefined: deleted or not there). */
  node(node: Node | undefined): void;
  /** Every kind has been listed once. Called once. */
  synced(): void;
}

export interface ObjectSource {
  /** For logs: "manifests /path" or "kubeconfig /path" or "in-cluster". */
  readonly description: string;
  /** Start delivering events. Rejects only when the source cannot start at all. */
  start(handler: SourceHandler): Promise<void>;
  close(): Promise<void>;
}

/** A manifest folder as a source: each change of the folder is diffed against the previous one. */
export class ManifestSource implements ObjectSource {
  readonly description: string;
  private watcher: ManifestWatcher | undefined;

  constructor(
    private readonly opts: { dir: string; nodeName: string; log: Logger; rescanMs?: number; debounceMs?: number },
  ) {
    this.description = `manifests ${opts.dir}`;
  }

  async start(h: SourceHandler): Promise<void> {
    let services = new Map<string, Service>();
    let slices = new Map<string, EndpointSlice>();
    let node: Node | undefined;
    let synced = false;
    this.watcher = new ManifestWatcher({
      dir: this.opts.dir,
      log: this.opts.log,
      rescanMs: this.opts.rescanMs,
      debounceMs: this.opts.debounceMs,
      onChange: (set) => {
        const nextServices = new Map<string, Service>();
        for (const s of set.services) {
          const p = projectService(s);
          if (p) nextServices.set(nsName(p), p);
        }
        const nextSlices = new Map<string, EndpointSlice>();
        for (const s of set.endpointSlices) {
          const p = projectEndpointSlice(s);
          if (p) nextSlices.set(nsName(p), p);
        }
        for (const k of services.keys()) if (!nextServices.has(k)) h.service(k, undefined);
        for (const k of slices.keys()) if (!nextSlices.has(k)) h.endpointSlice(k, undefined);
        for (const [k, s] of nextServices) h.service(k, s);
        for (const [k, s] of nextSlices) h.endpointSlice(k, s);
        const n = set.nodes.find((x) => x.metadata.name === this.opts.nodeName);
        const nextNode = n && projectNode(n);
        if (nextNode || node) h.node(nextNode);
        services = nextServices;
        slices = nextSlices;
        node = nextNode;
        if (!synced) {
          synced = true;
          h.synced();
        }
      },
    });
    const first = await this.watcher.start();
    this.opts.log.info('manifests loaded', { files: first.files.length, services: first.services.length, endpointSlices: first.endpointSlices.length, nodes: first.nodes.length });
  }

  async close(): Promise<void> {
    this.watcher?.close();
  }
}
