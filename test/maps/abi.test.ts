// Codecs of src/maps/abi.ts against bpf/include/kbp/abi.h.
//
// Address conventions used in every test: ClusterIPs in 10.96.0.0/12
// (10.96.0.x), pod (backend) addresses in 10.244.<node>.<pod>, clients
// 10.244.0.x. Ports are host-form numbers in decoded objects; on the wire
// (and in the maps) they are network order.
//
// The layout part loads the native addon (build/addon/Release/kbp_native.node,
// `make addon`); it fails, not skips, when the addon is missing, because then
// nothing checks the codecs against the header.

import t from 'tap';
import * as abi from '../../src/maps/abi.js';

t.test('round trip of every codec, with the exact bytes', async (t) => {
  const cases: Array<{ codec: abi.StructCodec<any>; value: unknown; hex: string }> = [
    {
      codec: abi.svcKey,
      value: { vip: '10.96.0.10', port: 80, proto: abi.IPPROTO_TCP, scope: abi.KBP_SCOPE_INTERNAL, slot: 0x0102 },
      // vip be | port be | proto | scope | slot le | pad
      hex: '0a60000a' + '0050' + '06' + '01' + '0201' + '0000',
    },
    {
      codec: abi.svcValue,
      value: { backend_id: 0x01020304, svc_id: 7, count: 3, flags: abi.KBP_SVC_F_CLUSTER_IP | abi.KBP_SVC_F_AFFINITY, affinity_timeout: 10800 },
      hex: '04030201' + '07000000' + '0300' + '1100' + '302a0000',
    },
    { codec: abi.backendKey, value: { id: 0xdeadbeef }, hex: 'efbeadde' },
    {
      codec: abi.backendValue,
      value: { ip: '10.244.1.5', port: 8080, proto: abi.IPPROTO_UDP, state: abi.KBP_BACKEND_TERMINATING, flags: abi.KBP_BACKEND_F_LOCAL },
      hex: '0af40105' + '1f90' + '11' + '01' + '01' + '000000',
    },
    { codec: abi.revnatKey, value: { svc_id: 258 }, hex: '02010000' },
    { codec: abi.revnatValue, value: { vip: '10.96.0.1', port: 443 }, hex: '0a600001' + '01bb' + '0000' },
    {
      codec: abi.ctKey,
      value: { saddr: '10.244.0.2', daddr: '10.96.0.10', sport: 40000, dport: 80, proto: abi.IPPROTO_TCP, dir: abi.KBP_CT_REPLY },
      hex: '0af40002' + '0a60000a' + '9c40' + '0050' + '06' + '01' + '0000',
    },
    {
      codec: abi.ctValue,
      value: {
        created_ns: 0x0102030405060708n,
        last_seen_ns: 2n ** 64n - 1n,
        backend_id: 9,
        svc_id: 10,
        nat_addr: '172.18.0.11',
        nat_port: 61001,
        flags: 0x15,
        tcp_flags: 0x12,
        client_port: 40000,
      },
      hex: '0807060504030201' + 'ffffffffffffffff' + '09000000' + '0a000000' + 'ac12000b' + 'ee49' + '1500' + '12' + '00' + '9c40' + '00000000',
    },
    { codec: abi.statValue, value: { packets: 5n, bytes: 1500n }, hex: '0500000000000000' + 'dc05000000000000' },
    { codec: abi.affinityKey, value: { client: '10.244.0.2', svc_id: 3 }, hex: '0af40002' + '03000000' },
    {
      codec: abi.affinityValue,
      value: { last_used_ns: 0x0102030405060708n, backend_id: 0x11, slot: 2 },
      hex: '0807060504030201' + '11000000' + '0200' + '0000',
    },
    {
      codec: abi.snatKey,
      value: { saddr: '10.244.2.10', daddr: '172.18.0.11', sport: 8080, dport: 61001, proto: abi.IPPROTO_TCP },
      hex: '0af4020a' + 'ac12000b' + '1f90' + 'ee49' + '06' + '000000',
    },
    {
      codec: abi.snatValue,
      value: { created_ns: 7n, client_addr: '172.18.0.100', client_port: 40000, svc_id: 2 },
      hex: '0700000000000000' + 'ac120064' + '9c40' + '0000' + '02000000' + '00000000',
    },
    { codec: abi.configValue, value: { node_ip: '172.18.0.11', flags: 0 }, hex: 'ac12000b' + '00000000' },
    { codec: abi.srcRangeKey, value: { prefixlen: 56, svc_id: 258, addr: '172.18.0.0' }, hex: '38000000' + '02010000' + 'ac120000' },
    { codec: abi.srcRangeValue, value: { flags: 0 }, hex: '00000000' },
    { codec: abi.hostNsValue, value: { netns_cookie: 0x0102030405060708n, flags: 0 }, hex: '0807060504030201' + '00000000' + '00000000' },
    {
      codec: abi.sockRevKey,
      value: { cookie: 0x1122n, addr: '10.244.1.5', port: 8080, proto: abi.IPPROTO_UDP },
      // cookie le | addr be | port be | proto | pad
      hex: '2211000000000000' + '0af40105' + '1f90' + '11' + '00',
    },
    { codec: abi.sockRevValue, value: { vip: '10.96.0.10', port: 53, svc_id: 258 }, hex: '0a60000a' + '0035' + '0000' + '02010000' },
  ];
  t.equal(cases.length, Object.keys(abi.STRUCTS).length, 'one case per struct');
  for (const c of cases) {
    const buf = c.codec.encode(c.value);
    t.equal(buf.length, c.codec.size, `${c.codec.cName} size`);
    t.equal(buf.toString('hex'), c.hex, `${c.codec.cName} bytes`);
    t.same(c.codec.decode(buf), c.value, `${c.codec.cName} decodes back`);
    // encodeInto at an offset, as batch buffers do; padding is zeroed even over dirty memory.
    const big = Buffer.alloc(c.codec.size * 2 + 3, 0xaa);
    c.codec.encodeInto(c.value, big, 3 + c.codec.size);
    t.equal(big.subarray(3 + c.codec.size).toString('hex'), c.hex, `${c.codec.cName} encodeInto`);
    t.same(c.codec.decode(big, 3 + c.codec.size), c.value, `${c.codec.cName} decode at offset`);
  }
});

t.test('encode rejects values that do not fit', async (t) => {
  t.throws(() => abi.svcKey.encode({ vip: '10.96.0.256', port: 80, proto: 6, scope: 0, slot: 0 }), /IPv4/);
  t.throws(() => abi.svcKey.encode({ vip: '10.96.0.1', port: 65536, proto: 6, scope: 0, slot: 0 }), RangeError);
  t.throws(() => abi.backendKey.encode({ id: -1 }), RangeError);
  t.throws(() => abi.svcKey.decode(Buffer.alloc(11)), RangeError);
});

t.test('IPv4 helpers', async (t) => {
  t.equal(abi.ipv4ToNumber('10.96.0.1'), 0x0a600001);
  t.equal(abi.numberToIPv4(0xfffffffe), '255.255.255.254');
  for (const bad of ['10.96.0', '10.96.0.01', '::1', '1.2.3.4 ', '256.1.1.1', '']) t.notOk(abi.isIPv4(bad), bad);
});

t.test('per-CPU stats are summed over 8-byte-rounded records', async (t) => {
  const buf = Buffer.alloc(16 * 3);
  [1n, 2n, 3n].forEach((n, cpu) => abi.statValue.encodeInto({ packets: n, bytes: n * 100n }, buf, cpu * 16));
  t.same(abi.decodePerCpuStat(buf, 3), { packets: 6n, bytes: 600n });
  t.equal(abi.STAT_NAMES.length, abi.KBP_STAT_MAX, 'a readable name per stat index');
  t.equal(abi.STAT_NAMES[abi.KBP_STAT_DROP_UNKNOWN_PORT], 'drop_unknown_port');
});

t.test('field tables match the C layout (native().layout())', async (t) => {
  const { native } = await import('../../src/native/binding.js');
  const layout = native().layout();
  for (const cName of Object.keys(layout)) t.ok(abi.STRUCTS[cName], `struct ${cName} of abi.h has a codec`);
  for (const codec of Object.values(abi.STRUCTS)) {
    const c = layout[codec.cName];
    if (!c) {
      t.fail(`struct ${codec.cName} missing from native().layout()`);
      continue;
    }
    t.equal(codec.size, c.size, `sizeof(struct ${codec.cName})`);
    for (const [name, cf] of Object.entries(c.fields)) {
      const ours = codec.fields.find((f) => f.name === name);
      t.ok(ours, `${codec.cName}.${name} has a TypeScript field`);
      if (ours) t.same({ offset: ours.offset, size: ours.size }, cf, `${codec.cName}.${name} offset/size`);
    }
    for (const ours of codec.fields) {
      // Padding may be left out of the native export; every data field may not.
      if (ours.kind === 'pad' && !c.fields[ours.name]) continue;
      t.ok(c.fields[ours.name], `${codec.cName}.${ours.name} exists in C`);
    }
  }
});

t.test('constants match abi.h (native().constants())', async (t) => {
  const { native } = await import('../../src/native/binding.js');
  const c = native().constants();
  for (const [name, value] of Object.entries(c)) {
    t.ok(Object.hasOwn(abi.ABI_CONSTANTS, name), `${name} has a TypeScript twin`);
    t.equal(abi.ABI_CONSTANTS[name], value, name);
  }
  // The ones the control plane cannot work without must be exported by the addon.
  const required = Object.keys(abi.ABI_CONSTANTS).filter((n) => /^KBP_(MAP_|SVC_F_|SCOPE_|BACKEND_|STAT_|TC_|ABI_)/.test(n));
  for (const name of required) t.ok(Object.hasOwn(c, name), `native exports ${name}`);
});

t.test('srcRangeKeyOf: LPM key of a loadBalancerSourceRanges entry, host bits cleared', async (t) => {
  t.same(abi.srcRangeKeyOf(7, '172.18.0.100/24'), { prefixlen: 56, svc_id: 7, addr: '172.18.0.0' });
  t.same(abi.srcRangeKeyOf(7, '10.1.2.3'), { prefixlen: 64, svc_id: 7, addr: '10.1.2.3' });
  t.same(abi.srcRangeKeyOf(7, '0.0.0.0/0'), { prefixlen: 32, svc_id: 7, addr: '0.0.0.0' });
  t.same(abi.srcRangeKeyOf(7, '255.255.255.255/1'), { prefixlen: 33, svc_id: 7, addr: '128.0.0.0' });
  for (const bad of ['10.0.0.0/33', '10.0.0/8', '10.0.0.0/8/1', 'fd00::/8', '10.0.0.0/x']) t.throws(() => abi.srcRangeKeyOf(7, bad), TypeError, bad);
});
