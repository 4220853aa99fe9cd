#!/usr/bin/env node
// kbp command line: the compiled CLI lives in dist/ (make build, or npx tsc).
// `kbp agent` first replaces this process with one that runs with the agent's
// node flags (dist/agent/nodeflags.js), before the CLI is loaded.
const start = async () => {
  if (process.argv[2] === 'agent') (await import('../dist/agent/nodeflags.js')).execWithAgentNodeFlags();
  return import('../dist/cli.js');
};
start().then(
  async ({ main }) => process.exit(await main(process.argv.slice(2))),
  (err) => {
    process.stderr.write(`kbp: cannot start (is dist/ built? run "make build"): ${err.message}\n`);
    process.exit(1);
  },
);
