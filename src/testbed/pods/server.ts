// A backend pod's workload: answers every HTTP request and every UDP datagram
// on one port with who it is and whom it saw, as one JSON object:
//   {"pod":"my-nginx-a","remoteAddress":"10.244.1.100","remotePort":41234}
// The remote address proves the client was not masqueraded; the pod name tells
// the client which backend a ClusterIP connection reached.
//
// Run inside the pod's namespace: node server.js --name NAME [--port 8080]
// Prints one line "ready" on stdout once both sockets listen.

import { createSocket } from 'node:dgram';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

export interface Hello {
  pod: string;
  remoteAddress: string;
  remotePort: number;
}

const { values } = parseArgs({
  options: { name: { type: 'string' }, port: { type: 'string', default: '8080' } },
});
const pod = values.name;
if (!pod) {
  process.stderr.write('server: --name is required\n');
  process.exit(2);
}
const port = Number(values.port);

const http = createServer((req, res) => {
  const hello: Hello = {
    pod,
    remoteAddress: req.socket.remoteAddress ?? '',
    remotePort: req.socket.remotePort ?? 0,
  };
  const body = `${JSON.stringify(hello)}\n`;
  // One request per connection, unless the client asks to keep it (long-lived
  // connections across an agent upgrade, src/testbed/chatter.ts).
  const keep = req.headers.connection?.toLowerCase() === 'keep-alive';
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: keep ? 'keep-alive' : 'close' });
  res.end(body);
  req.resume();
});

const udp = createSocket('udp4');
udp.on('message', (_msg, rinfo) => {
  const hello: Hello = { pod, remoteAddress: rinfo.address, remotePort: rinfo.port };
  udp.send(JSON.stringify(hello), rinfo.port, rinfo.address);
});

let listening = 0;
const ready = () => {
  if (++listening === 2) process.stdout.write('ready\n');
};
http.listen(port, '0.0.0.0', ready);
udp.bind(port, '0.0.0.0', ready);

const stop = () => {
  http.close();
  udp.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
