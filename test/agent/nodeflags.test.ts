// The agent's node flags (src/agent/nodeflags.ts): which are missing from a
// command line, the argv the harnesses start the agent with, and bin/kbp.js
// re-executing `kbp agent` with them where Node has process.execve.
import t from 'tap';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { AGENT_ENV, AGENT_NODE_FLAGS, agentEnv, agentNodeArgs, missingAgentEnv, missingNodeFlags } from '../../src/agent/nodeflags.js';
import { projectRoot } from '../../src/paths.js';

const run = promisify(execFile);

t.test('missing flags are told by name, whatever the value, spelling or negation given', async (t) => {
  t.same(missingNodeFlags([]), [...AGENT_NODE_FLAGS], 'none given: all missing');
  t.same(missingNodeFlags([...AGENT_NODE_FLAGS]), [], 'all given');
  t.same(missingNodeFlags(['--max_semi_space_size=16']), ['--no-concurrent-recompilation', '--single-threaded-gc'], 'a semi-space size of its own (underscores) wins');
  t.same(missingNodeFlags(['--concurrent-recompilation']), ['--max-semi-space-size=2', '--single-threaded-gc'], 'concurrent recompilation asked for by hand wins');
  t.same(missingNodeFlags(['--inspect', '--expose-gc']), [...AGENT_NODE_FLAGS], 'other flags do not count');
});

t.test('the environment: its variables added where unset, a value set already wins', async (t) => {
  t.same(missingAgentEnv({}), Object.keys(AGENT_ENV));
  t.same(agentEnv({ PATH: '/bin' }), { ...AGENT_ENV, PATH: '/bin' });
  t.same(agentEnv({ MALLOC_ARENA_MAX: '4' }).MALLOC_ARENA_MAX, '4');
  t.same(missingAgentEnv({ MALLOC_ARENA_MAX: '4' }), []);
});

t.test('harnesses start the agent with every flag before the script', async (t) => {
  const argv = agentNodeArgs('/x/kbp.js', ['--manifests', 'd'], ['--cpu-prof']);
  t.same(argv, [process.execPath, ...AGENT_NODE_FLAGS, '--cpu-prof', '/x/kbp.js', 'agent', '--manifests', 'd']);
});

const hasExecve = typeof (process as unknown as { execve?: unknown }).execve === 'function';

t.test('bin/kbp.js agent re-executes itself with the flags (same pid)', { skip: hasExecve ? false : `Node ${process.version} has no process.execve (22.15+): the agent runs without the flags and warns` }, async (t) => {
  // The agent's option parser rejects the unknown flag after the re-exec, so
  // what this prints is the error of the re-executed process; the probe
  // preload reports its execArgv and pid first.
  const probe = `process.stderr.write('execArgv=' + JSON.stringify(process.execArgv) + ' pid=' + process.pid + ' arenas=' + process.env.MALLOC_ARENA_MAX + '\\n');`;
  const r = await run(process.execPath, ['--import', `data:text/javascript,${encodeURIComponent(probe)}`, path.join(projectRoot, 'bin', 'kbp.js'), 'agent', '--no-such-flag'], { encoding: 'utf8' }).catch((e: { stderr: string }) => ({ stderr: e.stderr }));
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('execArgv='));
  t.equal(lines.length, 2, `started, then re-executed once:\n${r.stderr}`);
  const [first, second] = lines.map((l) => ({ execArgv: JSON.parse(/execArgv=(\[.*\]) pid/.exec(l)![1]!) as string[], pid: /pid=(\d+)/.exec(l)![1] }));
  t.same(missingNodeFlags(first!.execArgv), [...AGENT_NODE_FLAGS], 'the first process had none');
  t.same(missingNodeFlags(second!.execArgv), [], 'the second has every flag');
  t.equal(second!.pid, first!.pid, 'in the same process (execve)');
  t.match(lines[1], / arenas=1$/, 'with MALLOC_ARENA_MAX=1');
});
