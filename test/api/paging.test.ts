// Paging over a real kernel conntrack map: 200k entries written with
// updateBatch into the datapath's own map (kbp_pod.bpf.o loaded on a private
// bpffs, nothing attached), served page by page through GET /v1/conntrack
// and GET /v1/maps/{name}. Every entry comes back exactly once, no page
// exceeds its limit, and no kernel batch is larger than KERNEL_BATCH (the
// agent never holds the map). The 1M version, with RSS, is
// test/api/bench-paging.ts (run by hand, prints RSS growth), not part of npx tap.

import t from 'tap';
import { existsSync } from 'node:fs';
import * as abi from '../../src/maps/abi.js';
import { native } from '../../src/native/binding.js';
import { bpfObjectPath } from '../../src/paths.js';
import { buildApi } from '../../src/api/app.js';
import { Value } from '@sinclair/typebox/value';
import { KERNEL_BATCH } from '../../src/api/paging.js';
import { ConntrackPage, MapPage } from '../../src/api/schemas.js';
import { fill, watched } from './ctfill.js';
import { mountBpffs } from '../addon/helpers.js';

const N = 200_000;

const objPath = bpfObjectPath('kbp_pod');
if (process.getuid?.() !== 0) t.plan(0, 'needs root (bpffs, BPF maps)');
else if (!existsSync(objPath)) t.plan(0, `needs a build (${objPath}): make build`);
else {
  t.test(`${N} conntrack entries served page by page`, async (t) => {
    const pinRoot = await mountBpffs(t);
    const obj = await native().openObject(objPath, { pinRoot });
    t.teardown(() => obj.close());
    const ct = obj.map(abi.KBP_MAP_CT);
    await fill(ct, N);
    const w = watched(ct);
    const app = await buildApi({ nodeName: 'n', maps: new Map([[abi.KBP_MAP_CT, w.map]]), frontend: () => undefined, health: () => ({ ready: true, lastUpdated: new Date() }) }, { rateLimit: { perSecond: 1e6, burst: 1e6 } });
    t.teardown(() => app.close());

    const limit = 5000;
    const seen = new Set<string>();
    let token: string | null = null;
    let pages = 0;
    let biggest = 0;
    do {
      const r = await app.inject({ method: 'GET', url: `/v1/conntrack?limit=${limit}${token ? `&continue=${token}` : ''}` });
      if (r.statusCode !== 200) throw new Error(`page ${pages}: ${r.statusCode} ${r.body}`);
      const body = r.json() as { items: Array<{ src: string }>; continue: string | null };
      // Pages are written as text entry by entry (routes/dumps.ts): each must still be its schema's.
      if (pages === 0) t.ok(Value.Check(ConntrackPage, body), 'a page is a ConntrackPage');
      biggest = Math.max(biggest, body.items.length);
      for (const i of body.items) seen.add(i.src);
      token = body.continue;
      pages++;
    } while (token);
    t.equal(seen.size, N, 'every entry once');
    t.equal(biggest, limit, 'no page above its limit');
    t.ok(pages >= N / limit && pages <= N / limit + 1, `${pages} pages`);
    t.ok(w.largest() <= KERNEL_BATCH * 2, `largest kernel batch ${w.largest()} entries (asked ${KERNEL_BATCH}; a bucket is never split)`);

    // A filtered walk: service 2 is every third entry.
    let matched = 0;
    token = null;
    do {
      const r = await app.inject({ method: 'GET', url: `/v1/conntrack?service=2&limit=5000${token ? `&continue=${token}` : ''}` });
      const body = r.json() as { items: unknown[]; continue: string | null; scanned: number };
      t.ok(body.scanned <= 65_536, 'a page scans at most the budget');
      matched += body.items.length;
      token = body.continue;
    } while (token);
    t.equal(matched, Math.floor((N - 2) / 3) + 1);

    // The generic dump pages the same way.
    const r = await app.inject({ method: 'GET', url: `/v1/maps/${abi.KBP_MAP_CT}?limit=3` });
    t.equal(r.json().items.length, 3);
    t.ok(Value.Check(MapPage, r.json()), 'a page is a MapPage');
    t.equal(r.json().name, abi.KBP_MAP_CT);
    t.type(r.json().continue, 'string');
  });
}
