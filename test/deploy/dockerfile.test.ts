// The Dockerfile cannot be built here (no Docker), so this checks that it
// stays in step with the Makefile it relies on:
//   - the build stage runs make targets that exist and together build the
//     bpf objects, the addon and dist/ (what `make -n -B` prints for them);
//   - every artifact those commands write is copied into the runtime stage,
//     at the place src/paths.ts looks for it (next to dist/);
//   - the runtime stage installs the Debian package of every shared library
//     the built addon links (ldd + dpkg -S on this machine), plus iptables for
//     `kbp cleanup-iptables`;
//   - both stages use one Node/Debian pair and that Node satisfies
//     package.json's engines;
//   - .dockerignore keeps this tree's build outputs out of the context;
//   - the entry point is the kbp CLI and the manifests' args are kbp commands.

import t from 'tap';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { projectRoot, addonPath } from '../../src/paths.js';
import { run } from '../../src/testbed/netns.js';

const read = (f: string) => readFileSync(path.join(projectRoot, f), 'utf8');

interface Stage {
  from: string;
  name?: string;
  run: string[];
  copies: Array<{ from?: string; src: string; dest: string }>;
  entrypoint?: string[];
}

/** Dockerfile instructions (continuations joined, comments dropped), grouped by stage. */
function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const lines = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const l of lines) {
    const [op, ...rest] = l.split(/\s+/);
    const body = rest.join(' ');
    const stage = stages.at(-1);
    if (op === 'ARG' && !stage) {
      const [k, v] = body.split('=');
      args.set(k!, v ?? '');
    } else if (op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(body)!;
      stages.push({ from: m[1]!.replace(/\$\{(\w+)\}/g, (_, k: string) => args.get(k) ?? ''), name: m[2], run: [], copies: [] });
    } else if (op === 'RUN') stage!.run.push(body);
    else if (op === 'COPY') {
      const from = /--from=(\S+)/.exec(body)?.[1];
      const parts = body.split(/\s+/).filter((p) => !p.startsWith('--'));
      stage!.copies.push({ from, src: parts[0]!, dest: parts[1]! });
    } else if (op === 'ENTRYPOINT') stage!.entrypoint = JSON.parse(body) as string[];
  }
  return { args, stages };
}

const docker = parseDockerfile(read('Dockerfile'));
const [build, runtime] = docker.stages;

t.test('two stages on one Node/Debian pair that satisfies engines', async (t) => {
  t.equal(docker.stages.length, 2);
  t.equal(build!.name, 'build');
  const node = docker.args.get('NODE_VERSION')!;
  const debian = docker.args.get('DEBIAN_RELEASE')!;
  t.equal(build!.from, `node:${node}-${debian}`);
  t.equal(runtime!.from, `node:${node}-${debian}-slim`, 'the runtime is the slim image of the same release');
  const engines = (JSON.parse(read('package.json')) as { engines: { node: string } }).engines.node;
  const min = /^>=(\d+)/.exec(engines)![1]!;
  t.ok(Number(node) >= Number(min), `node ${node} satisfies engines ${engines}`);
});

t.test('the build stage runs make targets that build bpf, addon and dist', async (t) => {
  const makeRuns = build!.run.flatMap((r) => r.split('&&').map((c) => c.trim())).filter((c) => c.startsWith('make '));
  t.ok(makeRuns.length > 0, 'the build stage runs make');
  const targets = makeRuns.flatMap((c) => c.split(/\s+/).slice(1));
  // The targets the Dockerfile names must reach the three build steps.
  const { stdout } = await run('make', ['-C', projectRoot, '-n', '-B', ...targets]);
  const cmds = stdout.split('\n');
  t.match(read('Makefile'), /^BPF_SRCS := \$\(wildcard bpf\/\*\.c\)$/m, 'the Makefile builds every bpf/*.c');
  const bpfSources = readdirSync(path.join(projectRoot, 'bpf')).filter((f) => f.endsWith('.c')).map((f) => `bpf/${f}`);
  t.ok(bpfSources.length > 0);
  for (const src of bpfSources) {
    const obj = `build/bpf/${path.basename(src, '.c')}.bpf.o`;
    t.ok(cmds.some((c) => c.includes(`-c ${src} -o ${obj}`)), `make ${targets.join(' ')} compiles ${src} -> ${obj}`);
  }
  t.ok(cmds.some((c) => /cmake-js compile --directory addon --out build\/addon/.test(c)), 'builds the addon into build/addon');
  t.ok(cmds.some((c) => /tsc -p tsconfig\.json/.test(c)), 'compiles the TypeScript (tsconfig.json, outDir dist)');
  t.ok(cmds.some((c) => /npm ci/.test(c)), 'installs the npm packages from the lock file');
  t.ok(cmds.some((c) => /scripts\/install-deps\.sh/.test(c)), 'installs the Debian build packages (scripts/install-deps.sh)');
  t.match(build!.run.join(' '), /npm prune --omit=dev/, 'dev packages (tap, tsc, cmake-js) stay out of the image');

  // Each artifact is copied where src/paths.ts expects it relative to dist/.
  const runtimeRoot = runtime!.copies.find((c) => c.src === '/src/dist')?.dest;
  t.equal(runtimeRoot, './dist', 'dist/ is copied');
  const copied = (p: string) => runtime!.copies.some((c) => c.from === 'build' && (c.src === `/src/${p}` || p.startsWith(`${c.src.replace(/^\/src\//, '')}/`)) && (c.dest === `./${p}` || p.startsWith(c.dest.replace(/^\.\//, '') + '/')));
  for (const src of bpfSources) t.ok(copied(`build/bpf/${path.basename(src, '.c')}.bpf.o`), `${src}'s object is in the image`);
  t.ok(copied(path.relative(projectRoot, addonPath())), 'the addon is in the image at addonPath()');
  for (const p of ['bin/kbp.js', 'package.json', 'node_modules/@kubernetes']) t.ok(copied(p), `${p} is in the image`);
});

const runtimePackages = runtime!.run
  .join(' ')
  .split(/\s+/)
  .filter((w, i, all) => i > all.indexOf('--no-install-recommends') && all.includes('--no-install-recommends') && /^[a-z0-9][a-z0-9.+-]+$/.test(w) && w !== 'rm');

t.test('the runtime installs every shared library the addon links, and iptables', async (t) => {
  t.ok(runtimePackages.includes('iptables'), 'iptables (kbp cleanup-iptables)');
  if (!existsSync(addonPath())) {
    t.fail(`addon not built (${addonPath()}): run make build`);
    return;
  }
  const { stdout } = await run('ldd', [addonPath()]);
  const libs = [...stdout.matchAll(/=>\s+(\/\S+)/g)].map((m) => m[1]!);
  t.ok(libs.some((l) => l.includes('libbpf.so')), 'the addon links libbpf');
  // The slim Node image already carries these (Node itself links them).
  const inBase = new Set(['libc6', 'libstdc++6', 'libgcc-s1']);
  for (const lib of libs) {
    const real = (await run('readlink', ['-f', lib])).stdout.trim();
    const owner = await run('dpkg', ['-S', real]).catch(() => run('dpkg', ['-S', lib]));
    const pkg = owner.stdout.split(':')[0]!.trim();
    t.ok(inBase.has(pkg) || runtimePackages.includes(pkg), `${path.basename(lib)} (package ${pkg}) is installed in the runtime stage`);
  }
});

t.test('.dockerignore and entry point', async (t) => {
  const ignored = read('.dockerignore').split('\n').map((l) => l.trim());
  for (const p of ['node_modules', 'build', 'dist', '.cache']) t.ok(ignored.includes(p), `${p} is not sent to the build`);
  t.same(runtime!.entrypoint, ['node', '/opt/kbp/bin/kbp.js']);
  // Every container of deploy/ that uses the image runs a kbp command (or a shell).
  const commands = new Set<string>();
  for (const f of ['deploy/base/daemonset.yaml', 'deploy/uninstall/detach.yaml']) {
    for (const doc of parseAllDocuments(read(f))) {
      const spec = (doc.toJS() as { spec: { template: { spec: Record<string, Array<{ image: string; args?: string[]; command?: string[] }>> } } }).spec.template.spec;
      for (const c of [...(spec.containers ?? []), ...(spec.initContainers ?? [])]) if (c.image === 'kbp' && !c.command) commands.add(c.args![0]!);
    }
  }
  const { stdout } = await run(process.execPath, [path.join(projectRoot, 'bin', 'kbp.js'), '--help']);
  for (const c of commands) t.match(stdout, new RegExp(`^\\s+${c}\\b`, 'm'), `kbp ${c} is a command`);
});
