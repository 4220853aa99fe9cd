// Load Services and EndpointSlices (and Nodes, for their zone label) from a folder of manifests, as a cluster
// would serve them: every *.yaml, *.yml and *.json file of the folder (not its
// subfolders), several YAML documents per file, `kind: List` items expanded.
// Other kinds are ignored. A malformed document is reported with its file and
// index and left out; the rest of the folder still loads.

import fs from 'node:fs/promises';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { EndpointSlice, Node, ObjectSet, Service } from './types.js';
import { nsName } from './types.js';

export interface ManifestProblem {
  file: string; // base name within the folder
  index: number; // document index within the file (0-based); List items add "items[i]" to reason
  reason: string;
}

export interface LoadResult extends ObjectSet {
  nodes: Node[];
  problems: ManifestProblem[];
  /** Files read, sorted. */
  files: string[];
}

const manifestExt = /\.(ya?ml|json)$/i;

/** Manifest file names of a folder (sorted; hidden files skipped). */
export async function listManifestFiles(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { withFileTypes: true });
  const out: string[] = [];
  for (const e of entries) {
    if (e.name.startsWith('.') || !manifestExt.test(e.name)) continue;
    // Symlinks (ConfigMap mounts) count when they point at a file.
    if (e.isFile() || (e.isSymbolicLink() && (await fs.stat(path.join(dir, e.name)).catch(() => null))?.isFile())) out.push(e.name);
  }
  return out.sort();
}

/** Read a folder. Throws only when the folder itself cannot be read. */
export async function loadManifests(dir: string): Promise<LoadResult> {
  const files = await listManifestFiles(dir);
  const contents: Array<{ file: string; text: string }> = [];
  const problems: ManifestProblem[] = [];
  for (const file of files) {
    try {
      contents.push({ file, text: await fs.readFile(path.join(dir, file), 'utf8') });
    } catch (err) {
      // Removed between readdir and read: it is simply gone.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') problems.push({ file, index: -1, reason: `cannot read: ${(err as Error).message}` });
    }
  }
  const r = parseManifests(contents);
  return { ...r, problems: [...problems, ...r.problems], files: contents.map((c) => c.file) };
}

/** Parse file contents (already read) into the object set. */
export function parseManifests(contents: ReadonlyArray<{ file: string; text: string }>): Omit<LoadResult, 'files'> {
  const services: Service[] = [];
  const endpointSlices: EndpointSlice[] = [];
  const nodes: Node[] = [];
  const problems: ManifestProblem[] = [];
  const seen = new Map<string, string>(); // kind/ns/name -> where first seen

  const accept = (obj: unknown, file: string, index: number, where: string): void => {
    if (obj === null || obj === undefined) return; // empty document ("---" at the end)
    if (typeof obj !== 'object' || Array.isArray(obj)) {
      problems.push({ file, index, reason: `${where}not an object` });
      return;
    }
    const o = obj as Record<string, unknown>;
    if (o.kind === 'List' || (typeof o.kind === 'string' && o.kind.endsWith('List') && Array.isArray(o.items))) {
      if (!Array.isArray(o.items)) {
        problems.push({ file, index, reason: `${where}List without items` });
        return;
      }
      o.items.forEach((item, i) => accept(item, file, index, `${where}items[${i}]: `));
      return;
    }
    let checked: Service | EndpointSlice | Node | string | null;
    if (o.kind === 'Service' && o.apiVersion === 'v1') checked = checkService(o);
    else if (o.kind === 'EndpointSlice' && o.apiVersion === 'discovery.k8s.io/v1') checked = checkEndpointSlice(o);
    else if (o.kind === 'Node' && o.apiVersion === 'v1') checked = checkMeta(o) ? `Node: ${checkMeta(o)}` : (o as unknown as Node);
    else if (o.kind === 'EndpointSlice' || o.kind === 'Service') checked = `unsupported apiVersion ${JSON.stringify(o.apiVersion)} for ${o.kind}`;
    else if (typeof o.kind !== 'string' || typeof o.apiVersion !== 'string') checked = 'missing kind or apiVersion';
    else checked = null; // another kind: not ours
    if (checked === null) return;
    if (typeof checked === 'string') {
      problems.push({ file, index, reason: where + checked });
      return;
    }
    const id = `${checked.kind} ${nsName(checked)}`;
    const first = seen.get(id);
    if (first) {
      problems.push({ file, index, reason: `${where}duplicate ${id}, first defined in ${first}; ignored` });
      return;
    }
    seen.set(id, `${file}#${index}`);
    if (checked.kind === 'Service') services.push(checked);
    else if (checked.kind === 'Node') nodes.push(checked);
    else endpointSlices.push(checked);
  };

  for (const { file, text } of contents) {
    // JSON.parse is hundreds of times faster than the YAML parser on a big
    // JSON file (a 10,000-endpoint slice: ~4 ms against ~1 s); a .json file
    // it rejects (several documents, say) goes to the YAML parser below.
    if (file.endsWith('.json')) {
      let obj: unknown;
      try {
        obj = JSON.parse(text);
      } catch {
        obj = undefined;
      }
      if (obj !== undefined) {
        accept(obj, file, 0, '');
        continue;
      }
    }
    let docs;
    try {
      docs = parseAllDocuments(text);
    } catch (err) {
      problems.push({ file, index: 0, reason: `cannot parse: ${(err as Error).message}` });
      continue;
    }
    const list = Array.isArray(docs) ? docs : [docs];
    list.forEach((doc, index) => {
      if (doc.errors.length > 0) {
        problems.push({ file, index, reason: `YAML: ${doc.errors[0]!.message.split('\n')[0]}` });
        return;
      }
      accept(doc.toJS({ maxAliasCount: 1000 }), file, index, '');
    });
  }
  return { services, endpointSlices, nodes, problems };
}

// Shape checks: just enough that later code can rely on the types. Semantic
// checks of a Service's spec (addresses, port ranges, duplicates) live in
// src/proxy/desired.ts, which skips a bad Service with a reason instead of
// dropping the whole document here.

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

function checkMeta(o: Record<string, unknown>): string | null {
  const m = o.metadata;
  if (!isObj(m)) return 'metadata missing';
  if (typeof m.name !== 'string' || m.name === '') return 'metadata.name missing';
  if (m.namespace !== undefined && typeof m.namespace !== 'string') return 'metadata.namespace is not a string';
  if (m.labels !== undefined && (!isObj(m.labels) || !Object.values(m.labels).every((v) => typeof v === 'string'))) return 'metadata.labels must map strings to strings';
  return null;
}

function checkService(o: Record<string, unknown>): Service | string {
  const bad = checkMeta(o);
  if (bad) return `Service: ${bad}`;
  const name = (o.metadata as { name: string }).name;
  if (o.spec === undefined) o.spec = {};
  if (!isObj(o.spec)) return `Service ${name}: spec is not an object`;
  const spec = o.spec;
  if (spec.ports !== undefined && (!Array.isArray(spec.ports) || !spec.ports.every(isObj))) return `Service ${name}: spec.ports is not a list of objects`;
  if (spec.clusterIPs !== undefined && (!Array.isArray(spec.clusterIPs) || !spec.clusterIPs.every((x) => typeof x === 'string'))) {
    return `Service ${name}: spec.clusterIPs is not a list of strings`;
  }
  for (const k of ['type', 'clusterIP', 'sessionAffinity', 'internalTrafficPolicy', 'externalName'] as const) {
    if (spec[k] !== undefined && typeof spec[k] !== 'string') return `Service ${name}: spec.${k} is not a string`;
  }
  return o as unknown as Service;
}

function checkEndpointSlice(o: Record<string, unknown>): EndpointSlice | string {
  const bad = checkMeta(o);
  if (bad) return `EndpointSlice: ${bad}`;
  const name = (o.metadata as { name: string }).name;
  if (typeof o.addressType !== 'string') return `EndpointSlice ${name}: addressType missing`;
  if (o.endpoints === undefined || o.endpoints === null) o.endpoints = [];
  if (!Array.isArray(o.endpoints)) return `EndpointSlice ${name}: endpoints is not a list`;
  for (const [i, e] of o.endpoints.entries()) {
    if (!isObj(e) || !Array.isArray(e.addresses) || !e.addresses.every((a) => typeof a === 'string')) {
      return `EndpointSlice ${name}: endpoints[${i}].addresses is not a list of strings`;
    }
    if (e.conditions !== undefined && e.conditions !== null && !isObj(e.conditions)) return `EndpointSlice ${name}: endpoints[${i}].conditions is not an object`;
  }
  if (o.ports !== undefined && o.ports !== null && (!Array.isArray(o.ports) || !o.ports.every(isObj))) return `EndpointSlice ${name}: ports is not a list of objects`;
  return o as unknown as EndpointSlice;
}
