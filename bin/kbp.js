#!/usr/bin/env node
// kbp command line: the compiled CLI lives in dist/ (make build, or npx tsc).
import('../dist/cli.js').then(
  async ({ main }) => process.exit(await main(process.argv.slice(2))),
  (err) => {
    process.stderr.write(`kbp: cannot load dist/cli.js (run "make build"): ${err.message}\n`);
    process.exit(1);
  },
);
