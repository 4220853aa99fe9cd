// One Service on a one-node cluster: a backend pod per endpoint (running the
// testbed server on every target port), a client pod with a probe, a probe
// in the node namespace for the agent's API, and a manifests folder holding
// the Service and its EndpointSlice. Shared by the demo, the integration test
// and benchmarks.

import { copyFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { Probe, startPodServer } from './programs.js';
import { readServiceSpec, writeService, type ServicePortSpec, type ServiceSpec } from './manifests.js';
import { projectRoot } from '../paths.js';
import type { Testbed } from './netns.js';
import { Cluster, type Pod } from './topology.js';
import type { HttpResult } from './probe-protocol.js';

export const CLIENT_POD = 'client';
export const CLIENT_IP = '10.244.1.100';

export interface ServiceScenario {
  tb: Testbed;
  cluster: Cluster;
  spec: ServiceSpec;
  /** The agent's --manifests folder; holds the spec as written by writeService. */
  manifestsDir: string;
  backends: Pod[];
  client: Pod;
  clientProbe: Probe;
  nodeProbe: Probe;
}

export interface ScenarioOptions {
  nodeName?: string;
  clientName?: string;
  clientIp?: string;
  /** Copy this folder's *.yaml/*.yml as the manifests instead of writing `spec`. */
  manifestsFrom?: string;
}

export async function serviceScenario(tb: Testbed, spec: ServiceSpec, opts: ScenarioOptions = {}): Promise<ServiceScenario> {
  const cluster = await Cluster.create(tb, { nodeName: opts.nodeName ?? 'node' });
  const targetPorts = [...new Set(spec.ports.map((p) => p.targetPort))];
  const backends: Pod[] = [];
  for (const ep of spec.endpoints) {
    const pod = await cluster.addPod(ep.podName, ep.ip);
    for (const port of targetPorts) await startPodServer(tb, pod.ns, pod.name, port);
    backends.push(pod);
  }
  const client = await cluster.addPod(opts.clientName ?? CLIENT_POD, opts.clientIp ?? CLIENT_IP);
  const [clientProbe, nodeProbe] = await Promise.all([Probe.start(tb, client.ns), Probe.start(tb, cluster.nodeNs)]);
  const manifestsDir = await tb.tempDir('manifests');
  if (opts.manifestsFrom) {
    for (const f of await readdir(opts.manifestsFrom)) {
      if (/\.ya?ml$/.test(f)) await copyFile(path.join(opts.manifestsFrom, f), path.join(manifestsDir, f));
    }
  } else {
    await writeService(manifestsDir, spec);
  }
  return { tb, cluster, spec, manifestsDir, backends, client, clientProbe, nodeProbe };
}

/**
 * The seed example's Service (examples/my-nginx) plus a UDP echo port on its
 * http targetPort, as the ClusterIP e2e tests use it: the spec, its http
 * port, ClusterIP and its two backend pods.
 */
export async function exampleWithUdp(udpPort: number): Promise<{ spec: ServiceSpec; http: ServicePortSpec; vip: string; podA: string; podB: string }> {
  const example = await readServiceSpec(path.join(projectRoot, 'examples', 'my-nginx'));
  const http = example.ports.find((p) => p.protocol === 'TCP' && p.name === 'http');
  if (!http) throw new Error('examples/my-nginx: no TCP port named http');
  const spec: ServiceSpec = {
    ...example,
    ports: [...example.ports, { name: 'echo', port: udpPort, targetPort: http.targetPort, protocol: 'UDP' }],
  };
  const [podA, podB] = spec.endpoints.map((e) => e.podName);
  if (!podA || !podB) throw new Error('examples/my-nginx: expected 2 endpoints');
  return { spec, http, vip: spec.clusterIP, podA, podB };
}

/** Why each failed request failed (error, else the HTTP status). */
export function failureReasons(results: readonly HttpResult[]): string[] {
  return results.filter((r) => !r.ok).map((r) => r.error ?? `HTTP ${r.status}`);
}

/** The client addresses the backends saw (masqueraded or not), once each. */
export function seenAddresses(results: readonly HttpResult[]): Array<string | undefined> {
  return [...new Set(results.map((r) => r.seenFrom?.split(':')[0]))];
}

/** Requests per backend name (failed requests under '(failed)'). */
export function tally(results: readonly HttpResult[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of results) {
    const key = r.ok && r.backend ? r.backend : '(failed)';
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}
