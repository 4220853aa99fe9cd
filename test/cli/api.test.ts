// The kbp CLI tables over a real HTTP API (on 127.0.0.1, over fake maps).

import t, { type Test } from 'tap';
import * as abi from '../../src/maps/abi.js';
import { startApi } from '../../src/api/server.js';
import { parseApiOptions } from '../../src/api/options.js';
import type { Reviewer } from '../../src/api/auth.js';
import { API_COMMANDS, runApiCommand } from '../../src/cli/api.js';
import { table } from '../../src/cli/table.js';
import { fakeMaps, NODE, putBackend, putFlow, putFrontend, putStat } from '../api/fakes.js';

async function api(t: Test, opts: { auth?: boolean } = {}) {
  const maps = fakeMaps();
  putBackend(maps, 1, '10.244.1.5', 8080);
  putBackend(maps, 2, '10.244.2.7', 8080, abi.KBP_BACKEND_TERMINATING);
  putFrontend(maps, { id: 2, vip: '10.96.0.10', port: 80, slots: [1, 2] });
  for (let i = 0; i < 30; i++) {
    putFlow(maps, { client: '10.244.1.100', sport: 40000 + i, vip: '10.96.0.10', port: 80, backendIp: '10.244.1.5', backendPort: 8080, svc: 2, backend: 1, createdNs: 1n, lastNs: 1n });
  }
  putStat(maps, abi.KBP_STAT_NEW_FLOW, [[30, 1800], [0, 0]]);
  const reviewer: Reviewer = { authenticate: async (tok) => (tok === 'good' ? { username: 'alice' } : null), authorize: async () => true };
  const running = await startApi(
    {
      nodeName: NODE,
      maps: maps.set,
      frontend: (id) => (id === 2 ? { id, frontend: '10.96.0.10:80/TCP', service: { namespace: 'web', name: 'my-nginx', portName: 'http' } } : undefined),
      health: () => ({ ready: true, lastUpdated: new Date() }),
    },
    parseApiOptions('127.0.0.1:0', opts.auth ? { 'api-auth': 'token' } : {})!,
    { reviewer },
  );
  t.teardown(() => running.close());
  return running.url;
}

async function kbp(cmd: string, args: string[]) {
  let out = '';
  let err = '';
  const code = await runApiCommand(cmd, args, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

t.test('table: aligned columns, multi-line cells', async (t) => {
  t.equal(table(['A', 'LONGER', 'C'], [['x', ['1', '22'], 'z'], ['yyyy', [], '']]), 'A      LONGER   C\nx      1        z\n       22\nyyyy\n');
});

t.test('kbp services / backends / stats / maps as tables', async (t) => {
  const url = await api(t);
  let r = await kbp('services', ['--api', url]);
  t.equal(r.code, 0, r.err);
  t.equal(
    r.out,
    [
      'ID   FRONTEND            SERVICE             FLAGS        BACKENDS                                 DRIFT',
      '2    10.96.0.10:80/TCP   web/my-nginx:http   cluster-ip   1 => 10.244.1.5:8080/TCP (active)        -',
      '                                                          2 => 10.244.2.7:8080/TCP (terminating)',
      '',
    ].join('\n'),
  );
  r = await kbp('backends', ['--api', url]);
  t.equal(r.out, ['ID   ADDRESS               STATE         FRONTENDS', '1    10.244.1.5:8080/TCP   active        2', '2    10.244.2.7:8080/TCP   terminating   2', ''].join('\n'));
  r = await kbp('stats', ['--api', url]);
  t.match(r.out, /^COUNTER\s+PACKETS\s+BYTES\nnew_flow\s+30\s+1800\n/);
  r = await kbp('maps', ['--api', url]);
  t.match(r.out, /kbp_ct4_v2\s+lru_hash\s+16\s+40\s+1048576\s+60\n/);
  r = await kbp('maps', ['kbp_backend_v2', '--api', url]);
  t.match(r.out, /^KEY\s+VALUE\nid=1\s+ip=10\.244\.1\.5 port=8080 proto=6 state=0 flags=1 protocol=TCP stateName=active\n/);
});

t.test('kbp conntrack follows continue tokens up to --limit; -o json', async (t) => {
  const url = await api(t);
  let r = await kbp('conntrack', ['--api', url, '--limit', '25']);
  t.equal(r.code, 0);
  t.equal(r.out.trim().split('\n').length, 26, 'header + 25 rows');
  t.match(r.err, /first 25 entries/);
  r = await kbp('conntrack', ['--api', url, '--all', '-o', 'json']);
  const items = JSON.parse(r.out);
  t.equal(items.length, 60);
  t.equal(r.err, '');
  r = await kbp('conntrack', ['--api', url, '--all', '--client', '10.244.1.100', '--backend', '1', '-o', 'json']);
  t.equal(JSON.parse(r.out).length, 60);
  r = await kbp('conntrack', ['--api', url, '--service', '9', '-o', 'json']);
  t.same(JSON.parse(r.out), []);
  r = await kbp('services', ['--api', url, '-o', 'json']);
  t.equal(JSON.parse(r.out)[0].name, 'my-nginx');
});

t.test('clear messages: unreachable agent, missing token, bad usage', async (t) => {
  let r = await kbp('services', ['--api', 'http://127.0.0.1:1']);
  t.equal(r.code, 1);
  t.match(r.err, /cannot reach the kbp agent API at http:\/\/127\.0\.0\.1:1 \(ECONNREFUSED\)/);
  const url = await api(t, { auth: true });
  r = await kbp('services', ['--api', url]);
  t.equal(r.code, 1);
  t.match(r.err, /HTTP 401 KBP_UNAUTHORIZED.*--token/);
  r = await kbp('services', ['--api', url, '--token', 'good']);
  t.equal(r.code, 0);
  r = await kbp('services', ['--api', url, '--token', 'good', '-o', 'yaml']);
  t.equal(r.code, 2);
  r = await kbp('services', ['--service', '1']);
  t.equal(r.code, 2);
  t.match(r.err, /conntrack and affinity only/);
  r = await kbp('maps', ['a', 'b']);
  t.equal(r.code, 2);
  r = await kbp('maps', ['kbp_nope_v1', '--api', url, '--token', 'good']);
  t.equal(r.code, 1);
  t.match(r.err, /404 KBP_MAP_NOT_FOUND/);
  t.same([...API_COMMANDS], ['services', 'backends', 'conntrack', 'affinity', 'maps', 'stats']);
});
