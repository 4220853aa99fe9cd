// The map migration (src/agent/migrate.ts) on real kernel maps in a private
// bpffs: ABI v1-shaped maps are created with bpftool (as the v1 object declared
// them) and filled through the legacy codecs; the current kbp_pod object is
// loaded on the same pin folder, as the agent does. The devices' tc hooks are
// a fake here (listLinks/tcQuery), so the "still on the old program" failure
// can be staged; test/upgrade runs the whole thing with the real v1 agent.
//
// Address conventions: ClusterIP 10.96.0.10:80 (frontend id 3), backends
// 10.244.1.5 / 10.244.1.6 :8080 (ids 1, 2), client 10.244.1.100.
//
// Needs root and a build (build/bpf, the addon).

import t from 'tap';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import * as abi from '../../src/maps/abi.js';
import { backendValueV1, ctValueV1, KBP_STAT_MAX_V1 } from '../../src/maps/legacy.js';
import { MapMigration, MigrationError } from '../../src/agent/migrate.js';
import { memoryLogger } from '../../src/log.js';
import { native, type BpfObject, type Native } from '../../src/native/binding.js';
import { bpfObjectPath } from '../../src/paths.js';
import { run, Testbed } from '../../src/testbed/netns.js';

const BPF_F_NO_PREALLOC = 1;
const VIP = '10.96.0.10';
const CLIENT = '10.244.1.100';

/** A pinned map as an older object would have declared it. */
async function createPinned(bpffs: string, name: string, type: string, key: number, value: number, entries: number, flags = 0): Promise<void> {
  await run('bpftool', ['map', 'create', path.join(bpffs, name), 'type', type, 'key', String(key), 'value', String(value), 'entries', String(entries), 'name', name, ...(flags ? ['flags', String(flags)] : [])]);
}

const fwdKey = (sport: number) => abi.ctKey.encode({ saddr: CLIENT, daddr: VIP, sport, dport: 80, proto: 6, dir: abi.KBP_CT_FORWARD });
const replyKey = (be: string, sport: number) => abi.ctKey.encode({ saddr: be, daddr: CLIENT, sport: 8080, dport: sport, proto: 6, dir: abi.KBP_CT_REPLY });
const ctV1 = (backend_id: number, svc_id = 3, last_seen_ns = 100n) => ctValueV1.encode({ created_ns: 50n, last_seen_ns, backend_id, svc_id, flags: 0, tcp_flags: 0x12 });

/** Fake devices: one veth whose hook runs `progIds()` (the old program until switched). */
function fakeHooks(n: Native, progId: () => number): Pick<Native, 'openPinnedMap' | 'listLinks' | 'tcQuery'> {
  return {
    openPinnedMap: (p) => n.openPinnedMap(p),
    listLinks: async () => [{ ifindex: 7, name: 'vethpod', up: true }],
    tcQuery: async () => progId(),
  };
}

if (process.getuid?.() !== 0) {
  t.plan(0, 'needs root (bpffs, BPF maps)');
} else {
  const n = native();
  const tb = Testbed.create();
  t.teardown(() => tb.teardown());

  /** A bpffs holding what a v1 agent leaves: 2 backends, one flow (forward + reply), an orphan reply, counters. */
  async function v1Pins(): Promise<string> {
    const bpffs = await tb.mountBpffs();
    await createPinned(bpffs, 'kbp_backend_v1', 'hash', 4, 8, abi.KBP_BACKENDS_MAX, BPF_F_NO_PREALLOC);
    await createPinned(bpffs, 'kbp_ct4_v1', 'lru_hash', 16, 32, abi.KBP_CT_MAX);
    await createPinned(bpffs, 'kbp_stats_v1', 'percpu_array', 4, 16, KBP_STAT_MAX_V1);
    const be = await n.openPinnedMap(path.join(bpffs, 'kbp_backend_v1'));
    await be.update(abi.backendKey.encode({ id: 1 }), backendValueV1.encode({ ip: '10.244.1.5', port: 8080, proto: 6, state: 0 }));
    await be.update(abi.backendKey.encode({ id: 2 }), backendValueV1.encode({ ip: '10.244.1.6', port: 8080, proto: 6, state: 0 }));
    be.close();
    const ct = await n.openPinnedMap(path.join(bpffs, 'kbp_ct4_v1'));
    await ct.update(fwdKey(40000), ctV1(1));
    await ct.update(replyKey('10.244.1.5', 40000), ctV1(1));
    await ct.update(replyKey('10.244.1.6', 40001), ctV1(2, 9)); // frontend 9 no longer exists
    ct.close();
    const stats = await n.openPinnedMap(path.join(bpffs, 'kbp_stats_v1'));
    const perCpu = Buffer.alloc(stats.valueBufferSize);
    perCpu.writeBigUInt64LE(7n, 0); // CPU 0: 7 packets, 700 bytes
    perCpu.writeBigUInt64LE(700n, 8);
    await stats.update(abi.statKey(abi.KBP_STAT_NEW_FLOW), perCpu);
    stats.close();
    return bpffs;
  }

  /** The current object on that folder (creates the v2 maps), with the frontend's revnat entry. */
  async function load(bpffs: string): Promise<BpfObject> {
    const obj = await n.openObject(bpfObjectPath('kbp_pod'), { pinRoot: bpffs });
    t.teardown(() => obj.close());
    await obj.map(abi.KBP_MAP_REVNAT).update(abi.revnatKey.encode({ svc_id: 3 }), abi.revnatValue.encode({ vip: VIP, port: 80 }));
    return obj;
  }

  t.test('v1 maps carried into v2: backends, conntrack (reply entries get their frontend), counters; old pins gone', async (t) => {
    const bpffs = await v1Pins();
    let hook = 1001; // the old program on the device until the switch
    const { log, lines } = memoryLogger('info');
    const m = await MapMigration.plan(fakeHooks(n, () => hook), bpffs, log);
    t.same(m.oldMaps, ['kbp_backend_v1', 'kbp_ct4_v1', 'kbp_stats_v1']);
    const obj = await load(bpffs);
    const mapOf = (name: string) => obj.map(name);
    await m.initial(mapOf);

    const be = obj.map(abi.KBP_MAP_BACKENDS);
    t.same(abi.backendValue.decode((await be.lookup(abi.backendKey.encode({ id: 1 })))!), { ip: '10.244.1.5', port: 8080, proto: 6, state: 0, flags: 0 }, 'backend 1 under its id');
    const ct = obj.map(abi.KBP_MAP_CT);
    t.match(abi.ctValue.decode((await ct.lookup(fwdKey(40000)))!), { backend_id: 1, svc_id: 3, nat_addr: '0.0.0.0', nat_port: 0, last_seen_ns: 100n }, 'forward entry');
    t.match(abi.ctValue.decode((await ct.lookup(replyKey('10.244.1.5', 40000)))!), { backend_id: 1, svc_id: 3, nat_addr: VIP, nat_port: 80 }, 'reply entry names the frontend');
    t.equal(await ct.lookup(replyKey('10.244.1.6', 40001)), null, 'orphan reply left behind');

    // The old datapath keeps working until the switch: a new flow, and a refreshed one.
    const oldCt = await n.openPinnedMap(path.join(bpffs, 'kbp_ct4_v1'));
    t.teardown(() => oldCt.close());
    await oldCt.update(fwdKey(40002), ctV1(2));
    await oldCt.update(fwdKey(40000), ctV1(1, 3, 200n));
    await m.beforeSwitch(mapOf);
    const oldBe = await n.openPinnedMap(path.join(bpffs, 'kbp_backend_v1'));
    t.teardown(() => oldBe.close());
    t.equal(await oldBe.nextKey(null), null, 'old backend map emptied (quiesced)');
    t.match(abi.ctValue.decode((await ct.lookup(fwdKey(40002)))!), { backend_id: 2 }, 'flow created before the switch copied');
    t.match(abi.ctValue.decode((await ct.lookup(fwdKey(40000)))!), { last_seen_ns: 200n }, 'refreshed flow copied again');

    // Switch; meanwhile the new datapath made its own entry for a key the old one also has.
    hook = 2002;
    await oldCt.update(fwdKey(40003), ctV1(1));
    await oldCt.update(fwdKey(40004), ctV1(1));
    await ct.update(fwdKey(40004), abi.ctValue.encode({ created_ns: 900n, last_seen_ns: 900n, backend_id: 2, svc_id: 3, nat_addr: '0.0.0.0', nat_port: 0, flags: 0, tcp_flags: 2, client_port: 0 }));
    await m.afterSwitch(mapOf);
    t.match(abi.ctValue.decode((await ct.lookup(fwdKey(40003)))!), { backend_id: 1 }, 'flow the old programs made during the switch copied');
    t.match(abi.ctValue.decode((await ct.lookup(fwdKey(40004)))!), { backend_id: 2, created_ns: 900n }, "the new datapath's own entry is kept");
    const stats = await obj.map(abi.KBP_MAP_STATS).lookup(abi.statKey(abi.KBP_STAT_NEW_FLOW));
    t.same(abi.decodePerCpuStat(stats!, n.numPossibleCpus()), { packets: 7n, bytes: 700n }, 'old counters added');
    const pins = (await readdir(bpffs)).sort();
    t.same(pins.filter((p) => p.endsWith('_v1') && !['kbp_svc_v1', 'kbp_revnat_v1', 'kbp_affinity_v1', 'kbp_snat4_v1', 'kbp_config_v1', abi.KBP_MAP_SRC_RANGES, abi.KBP_MAP_SOCK_REVNAT, abi.KBP_MAP_HOST_NS].includes(p)), [], 'v1-only pins gone');
    t.notOk(m.pending, 'done');
    t.comment(lines.filter((l) => /entries copied|step done/.test(l)).join('\n'));
    t.match(lines.join('\n'), /msg="entries copied" phase=initial map=kbp_ct4_v1 into=kbp_ct4_v2 scanned=3 inserted=2 updated=0 unchanged=0 skipped=1/, 'counts logged');
  });

  t.test('a device still on the old program: loud failure, old backends back, old maps stay', async (t) => {
    const bpffs = await v1Pins();
    const { log, lines } = memoryLogger('info');
    const m = await MapMigration.plan(fakeHooks(n, () => 1001), bpffs, log);
    const obj = await load(bpffs);
    const mapOf = (name: string) => obj.map(name);
    await m.initial(mapOf);
    await m.beforeSwitch(mapOf);
    await t.rejects(m.afterSwitch(mapOf), { name: 'MigrationError', message: /still run the old datapath after attach: vethpod/ });
    const oldBe = await n.openPinnedMap(path.join(bpffs, 'kbp_backend_v1'));
    t.teardown(() => oldBe.close());
    t.ok(await oldBe.lookup(abi.backendKey.encode({ id: 1 })), 'old backends restored: the old datapath translates again');
    t.ok((await readdir(bpffs)).includes('kbp_ct4_v1'), 'old conntrack still pinned');
    t.match(lines.join('\n'), /level=error msg="migration failed; the old maps stay pinned" step="check switch"/);
    t.ok(m.pending, 'still pending: the next start migrates again');
    m.close();
  });

  t.test('pins of a newer or unknown version, or of an unexpected layout, are refused before anything loads', async (t) => {
    const cases: Array<[string, string, number, number, RegExp]> = [
      ['kbp_ct4_v3', 'lru_hash', 16, 48, /kbp_ct4_v3 is newer than this agent's kbp_ct4_v2 .*a downgrade would drop its entries/],
      ['kbp_frag4_v1', 'lru_hash', 16, 16, /kbp_frag4_v1 is not a map this agent knows/],
      ['kbp_ct4_v1', 'lru_hash', 16, 40, /kbp_ct4_v1 does not have the layout of ABI v1/],
      ['kbp_ct4_v0', 'lru_hash', 16, 32, /kbp_ct4_v0 is older than kbp_ct4_v2 and no migration from it is known/],
    ];
    for (const [name, type, key, value, why] of cases) {
      const bpffs = await tb.mountBpffs();
      await createPinned(bpffs, name, type, key, value, 1024);
      const { log } = memoryLogger('info');
      const err = await MapMigration.plan(n, bpffs, log).then(
        () => null,
        (e: unknown) => e,
      );
      t.ok(err instanceof MigrationError, `${name}: refused`);
      t.match((err as Error).message, why, `${name}: says why`);
      t.match((err as Error).message, /Nothing was changed.*kbp detach --bpffs/, `${name}: and the way out`);
      t.same((await readdir(bpffs)).filter((f) => f.startsWith('kbp_')), [name], `${name}: nothing else pinned`);
    }
  });

  t.test('no older pins: nothing to do', async (t) => {
    const bpffs = await tb.mountBpffs();
    const { log, lines } = memoryLogger('info');
    const m = await MapMigration.plan(n, bpffs, log);
    t.notOk(m.pending);
    const obj = await load(bpffs);
    const mapOf = (name: string) => obj.map(name);
    await m.initial(mapOf);
    await m.beforeSwitch(mapOf);
    await m.afterSwitch(mapOf);
    t.same(lines, [], 'silent');
  });
}
