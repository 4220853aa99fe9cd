// kube-proxy's service health check servers: for every Service with
// externalTrafficPolicy Local (a LoadBalancer gets a healthCheckNodePort), the
// node answers on that port how many of the Service's endpoints run here, so
// an external load balancer sends traffic only to nodes that can serve it
// locally (the others drop it). Same answers as kube-proxy
// (pkg/proxy/healthcheck/service_health.go):
//
//   200 {"service":{"namespace":"ns","name":"svc"},"localEndpoints":2,"serviceProxyHealthy":true}
//   503 the same body with localEndpoints 0, or with serviceProxyHealthy false
//
// with the header X-Load-Balancing-Endpoint-Weight: <localEndpoints>. One
// node:http server per port, opened and closed as Services come and go; a
// count change only updates what the open server answers.

import { createServer, type Server } from 'node:http';
import type { DesiredHealthCheck } from '../proxy/desired.js';
import type { Logger } from '../log.js';

export interface HealthCheckOptions {
  /** Listen address; default all addresses of the node ("0.0.0.0"), as kube-proxy without --nodeport-addresses. */
  host?: string;
  /** kube-proxy's proxier health: false makes every answer 503 (the node should not get traffic). */
  proxyHealthy: () => boolean;
  log: Logger;
}

interface Served {
  server: Server;
  check: DesiredHealthCheck;
  /** Resolves once listening (or failed to). */
  listening: Promise<boolean>;
}

export interface HealthCheckAnswer {
  status: number;
  body: string;
  localEndpoints: number;
}

/** What kube-proxy answers for a Service with this many local endpoints. */
export function healthCheckAnswer(check: Pick<DesiredHealthCheck, 'namespace' | 'name' | 'localEndpoints'>, proxyHealthy: boolean): HealthCheckAnswer {
  const body = JSON.stringify({
    service: { namespace: check.namespace, name: check.name },
    localEndpoints: check.localEndpoints,
    serviceProxyHealthy: proxyHealthy,
  });
  return { status: check.localEndpoints > 0 && proxyHealthy ? 200 : 503, body, localEndpoints: check.localEndpoints };
}

export class HealthCheckServers {
  private readonly served = new Map<number, Served>();
  private closed = false;

  constructor(private readonly opts: HealthCheckOptions) {}

  /** Ports open now (listening or about to). */
  get ports(): number[] {
    return [...this.served.keys()].sort((a, b) => a - b);
  }

  /** Serve exactly these checks: open new ports, close gone ones, update counts. Resolves once listening. */
  async update(checks: ReadonlyMap<number, DesiredHealthCheck>): Promise<void> {
    if (this.closed) return;
    const closing: Array<Promise<void>> = [];
    for (const [port, s] of this.served) {
      if (checks.has(port)) continue;
      this.served.delete(port);
      this.opts.log.info('health check port closed', { port, service: `${s.check.namespace}/${s.check.name}` });
      closing.push(closeServer(s.server));
    }
    const opening: Array<Promise<boolean>> = [];
    for (const [port, check] of checks) {
      const s = this.served.get(port);
      if (s) {
        if (s.check.localEndpoints !== check.localEndpoints || s.check.name !== check.name || s.check.namespace !== check.namespace) {
          this.opts.log.debug('health check updated', { port, service: `${check.namespace}/${check.name}`, localEndpoints: check.localEndpoints });
        }
        s.check = check;
        continue;
      }
      opening.push(this.open(port, check));
    }
    await Promise.all([...closing, ...opening]);
  }

  private open(port: number, check: DesiredHealthCheck): Promise<boolean> {
    const host = this.opts.host ?? '0.0.0.0';
    const entry: Served = { server: createServer(), check, listening: Promise.resolve(false) };
    entry.server.on('request', (req, res) => {
      const a = healthCheckAnswer(entry.check, this.opts.proxyHealthy());
      res.writeHead(a.status, {
        'content-type': 'application/json',
        'x-content-type-options': 'nosniff',
        'x-load-balancing-endpoint-weight': String(a.localEndpoints),
        'content-length': Buffer.byteLength(a.body),
      });
      res.end(a.body);
      req.resume();
    });
    entry.listening = new Promise<boolean>((resolve) => {
      entry.server.once('listening', () => {
        this.opts.log.info('health check port open', { port, host, service: `${check.namespace}/${check.name}`, localEndpoints: check.localEndpoints });
        resolve(true);
      });
      entry.server.once('error', (err: NodeJS.ErrnoException) => {
        // Another process holds the port: kube-proxy logs and goes on; so do we (retried on the next change).
        this.opts.log.warn('cannot open health check port', { port, host, code: err.code, err });
        if (this.served.get(port) === entry) this.served.delete(port);
        resolve(false);
      });
    });
    this.served.set(port, entry);
    entry.server.listen(port, host);
    return entry.listening;
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.served.values()];
    this.served.clear();
    await Promise.all(all.map((s) => closeServer(s.server)));
  }
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
