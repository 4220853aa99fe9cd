// BpfProgram: info, progInfo by id, pinning, and BPF_PROG_TEST_RUN of the
// no-op tc program (verdict, packet bytes, timing, output buffer limits).
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { native, type BpfProgram } from '../../src/native/binding.js';
import { bpfObjectPath } from '../../src/paths.js';
import { mountBpffs, rejection } from './helpers.js';

const TC_ACT_OK = 0;
const BPF_PROG_TYPE_SCHED_CLS = 3;

async function noop(t: Test): Promise<{ prog: BpfProgram; pinRoot: string }> {
  const pinRoot = await mountBpffs(t);
  const obj = await native().openObject(bpfObjectPath('kbp_noop'), { pinRoot });
  t.teardown(() => obj.close());
  return { prog: obj.program('kbp_noop'), pinRoot };
}

function packet(len: number): Buffer {
  const p = randomBytes(len);
  p.writeUInt16BE(0x0800, 12); // EtherType IPv4
  return p;
}

t.test('info and progInfo(id) describe the loaded program', async (t) => {
  const { prog } = await noop(t);
  t.equal(prog.name, 'kbp_noop');
  t.ok(prog.fd > 0);
  t.match(prog.info, { name: 'kbp_noop', type: BPF_PROG_TYPE_SCHED_CLS });
  t.match(prog.info.tag, /^[0-9a-f]{16}$/);
  t.same(await native().progInfo(prog.info.id), prog.info);
  t.match(await rejection(native().progInfo(0x7ffffff0)), { code: 'ENOENT', syscall: 'bpf_prog_get_fd_by_id' });
});

t.test('testRun of the no-op program: TC_ACT_OK and the same bytes', async (t) => {
  const { prog } = await noop(t);
  for (const len of [34, 64, 1514]) {
    const data = packet(len);
    const res = await prog.testRun({ data });
    t.equal(res.retval, TC_ACT_OK, `${len} bytes: verdict`);
    t.same(res.data, data, `${len} bytes: packet unchanged`);
    t.type(res.durationNs, 'number');
  }
  const res = await prog.testRun({ data: packet(64), repeat: 1000 });
  t.equal(res.retval, TC_ACT_OK);
  t.ok(res.durationNs >= 0 && res.durationNs < 1e6, `average per run (${res.durationNs} ns)`);
});

t.test('testRun errors', async (t) => {
  const { prog } = await noop(t);
  t.match(await rejection(prog.testRun({ data: packet(64), dataSizeOut: 10 })), { code: 'ENOSPC', syscall: 'bpf_prog_test_run_opts' },
    'output buffer smaller than the packet');
  t.match(await rejection(prog.testRun({ data: Buffer.alloc(4) })), { code: 'EINVAL' }, 'shorter than an Ethernet header');
  t.match(await rejection(prog.testRun({ data: packet(64), repeat: 0 })), { code: 'EINVAL' });
});

t.test('pin puts the program on the bpffs', async (t) => {
  const { prog, pinRoot } = await noop(t);
  await prog.pin(path.join(pinRoot, 'kbp_noop'));
  t.ok(existsSync(path.join(pinRoot, 'kbp_noop')));
  t.match(await rejection(prog.pin('/nonexistent-dir/x')), { code: 'ENOENT', syscall: 'bpf_obj_pin' });
});
