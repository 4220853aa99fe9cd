// The healthCheckNodePort servers: kube-proxy's status codes, body and header;
// ports opened, updated and closed as the desired checks change.
// Loopback only (127.0.0.1, ports 39871-39872).

import t from 'tap';
import { request } from 'node:http';
import { HealthCheckServers, healthCheckAnswer } from '../../src/agent/healthcheck.js';
import type { DesiredHealthCheck } from '../../src/proxy/desired.js';
import { Logger } from '../../src/log.js';

const P1 = 39871;
const P2 = 39872;

function get(port: number): Promise<{ status: number; body: string; weight: string | undefined } | { error: string }> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, weight: res.headers['x-load-balancing-endpoint-weight'] as string | undefined }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
    req.end();
  });
}

const check = (port: number, localEndpoints: number, name = 'web'): [number, DesiredHealthCheck] => [port, { port, namespace: 'default', name, localEndpoints }];

t.test('healthCheckAnswer: 200 with local endpoints, 503 without or when the proxy is unhealthy', async (t) => {
  const c = { namespace: 'ns', name: 'svc', localEndpoints: 2 };
  t.same(healthCheckAnswer(c, true), { status: 200, localEndpoints: 2, body: '{"service":{"namespace":"ns","name":"svc"},"localEndpoints":2,"serviceProxyHealthy":true}' });
  t.equal(healthCheckAnswer({ ...c, localEndpoints: 0 }, true).status, 503);
  t.same(healthCheckAnswer(c, false), { status: 503, localEndpoints: 2, body: '{"service":{"namespace":"ns","name":"svc"},"localEndpoints":2,"serviceProxyHealthy":false}' });
});

t.test('servers follow the desired checks', async (t) => {
  let healthy = true;
  const hc = new HealthCheckServers({ host: '127.0.0.1', proxyHealthy: () => healthy, log: new Logger(() => {}, 'error') });
  t.teardown(() => hc.close());

  await hc.update(new Map([check(P1, 1), check(P2, 0, 'other')]));
  t.same(hc.ports, [P1, P2]);
  t.same(await get(P1), { status: 200, weight: '1', body: '{"service":{"namespace":"default","name":"web"},"localEndpoints":1,"serviceProxyHealthy":true}' });
  t.match(await get(P2), { status: 503, weight: '0', body: /"name":"other".*"localEndpoints":0/ });

  await hc.update(new Map([check(P1, 0)]));
  t.match(await get(P1), { status: 503 }, 'the count dropped to 0 on the open port');
  t.match(await get(P2), { error: 'ECONNREFUSED' }, 'the port of a Service gone is closed');

  await hc.update(new Map([check(P1, 3)]));
  healthy = false;
  t.match(await get(P1), { status: 503, body: /"serviceProxyHealthy":false/ }, 'an unhealthy proxy answers 503 whatever the count');
  healthy = true;
  t.match(await get(P1), { status: 200, weight: '3' });

  await hc.close();
  t.match(await get(P1), { error: 'ECONNREFUSED' }, 'closed');
});

t.test('a port held by another process is reported and retried on the next update', async (t) => {
  const other = new HealthCheckServers({ host: '127.0.0.1', proxyHealthy: () => true, log: new Logger(() => {}, 'error') });
  await other.update(new Map([check(P2, 1, 'holder')]));
  const lines: string[] = [];
  const hc = new HealthCheckServers({ host: '127.0.0.1', proxyHealthy: () => true, log: new Logger((l) => lines.push(l), 'warn') });
  t.teardown(async () => {
    await hc.close();
    await other.close();
  });
  await hc.update(new Map([check(P2, 1)]));
  t.same(hc.ports, [], 'not served');
  t.match(lines.join('\n'), /cannot open health check port.*EADDRINUSE/);
  await other.close();
  await hc.update(new Map([check(P2, 1)]));
  t.same(hc.ports, [P2], 'opened once the port is free');
  t.match(await get(P2), { status: 200, body: /"name":"web"/ });
});
