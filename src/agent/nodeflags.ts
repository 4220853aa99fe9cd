// The Node/V8 flags (and malloc setting) the agent runs with: one list for
// every way it starts.
// `kbp agent` (bin/kbp.js, so also `npx kbp agent` and the image's
// entrypoint) replaces its own process with one started with these flags
// (process.execve: Node >= 22.15 and the current LTS), before anything is
// loaded; the test and benchmark harnesses start node with them directly
// (agentNodeArgs). On a Node without process.execve the agent runs without
// them and says so in its first log lines.
//
// Why each (figures in README, "Control plane" and "REST API"):
//   --no-concurrent-recompilation  V8 optimizes hot functions on the main
//       thread instead of in worker threads. The workers' compiler zones land
//       in per-thread malloc arenas that stay resident, so with concurrent
//       compiles the first large dump after start grows the RSS by a few MB;
//       without, every page of a 1M-entry conntrack dump stays within one page.
//   --max-semi-space-size=2  a young generation of 2 MB per semi-space
//       instead of up to 16 (64-bit default): the agent allocates little per
//       event, and a nursery that grows is RSS it keeps (without this flag a
//       1M-entry dump grew the RSS past a page in 3 of 6 runs).
//   --single-threaded-gc  no GC helper threads, whose malloc arenas and
//       stacks also stay resident once used.
// Measured at 10k Services x 10 endpoints (kbp bench cluster, 3 runs per
// setting, two series, each beside node's defaults in the same series): RSS at
// ready 245-255 MB (defaults 276-361), after 200 changes 198 MB in 8 of 9 runs
// (210-288); one-endpoint p99 15-35 ms (16-31); full sync 716-1193 ms
// (667-892): the price, ~+150 ms, optimizing compiles and scavenges on the
// main thread during the first sync. The paging criterion: see AGENT_ENV.
export const AGENT_NODE_FLAGS: readonly string[] = ['--no-concurrent-recompilation', '--max-semi-space-size=2', '--single-threaded-gc'];

// And its environment: MALLOC_ARENA_MAX=1, one glibc malloc arena for every
// thread. A thread of its own arena (libuv's pool runs the addon's map
// batches) keeps the pages it once touched; with the flags above, the last
// dumps that grew past a page (2 of 22 runs, 0.11 and 0.15 MiB) grew in such
// an arena. With it: 18 of 18 runs within a page. A value set already wins.
// Full sync and latency the same with and without it (3 runs each).
export const AGENT_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '1' };

/** AGENT_ENV's variables that `env` does not set. */
export function missingAgentEnv(env: NodeJS.ProcessEnv): string[] {
  return Object.keys(AGENT_ENV).filter((k) => env[k] === undefined);
}

/** `env` with AGENT_ENV's variables it does not set, for a harness that starts the agent. */
export function agentEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...AGENT_ENV, ...env };
}

/** The flag's name without value and negation ("--max-semi-space-size" of "--max-semi-space-size=2", "--concurrent-recompilation" of "--no-concurrent-recompilation"). */
const flagName = (f: string): string => f.split('=')[0]!.replace(/_/g, '-').replace(/^--no-/, '--');

/** The agent's flags that `execArgv` does not set already (by name: a value or negation given by hand wins). */
export function missingNodeFlags(execArgv: readonly string[]): string[] {
  const given = new Set(execArgv.map(flagName));
  return AGENT_NODE_FLAGS.filter((f) => !given.has(flagName(f)));
}

/** argv for starting the agent of `bin` (a kbp.js) with its node flags: [node, ...flags, bin, 'agent', ...args]. */
export function agentNodeArgs(bin: string, args: readonly string[], extraNodeArgs: readonly string[] = []): string[] {
  return [process.execPath, ...AGENT_NODE_FLAGS, ...extraNodeArgs, bin, 'agent', ...args];
}

type Execve = (file: string, args: string[], env: NodeJS.ProcessEnv) => never;

/**
 * Before the agent loads anything: if a flag or variable is missing, replace
 * this process with node started with all of them (the same pid and argv, the
 * environment plus AGENT_ENV). A no-op when they are all set. Returns why it
 * did not re-execute: 'present', or 'unsupported' (no process.execve on this
 * Node: runs without them).
 */
export function execWithAgentNodeFlags(): 'present' | 'unsupported' {
  const missing = missingNodeFlags(process.execArgv);
  if (missing.length === 0 && missingAgentEnv(process.env).length === 0) return 'present';
  const execve = (process as unknown as { execve?: Execve }).execve;
  if (typeof execve !== 'function') return 'unsupported';
  execve.call(process, process.execPath, [process.execPath, ...missing, ...process.execArgv, ...process.argv.slice(1)], agentEnv(process.env));
  return 'unsupported'; // not reached: execve replaces the process or throws
}
