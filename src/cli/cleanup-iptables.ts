// `kbp cleanup-iptables`: remove what kube-proxy's iptables mode leaves on a
// node, so kbp takes over with no stale Service rules (docs/lifecycle.md).
//
// What kube-proxy v1.35 creates (pkg/proxy/iptables/proxier.go), and what its
// own `--cleanup` removes, which is what this removes:
//   nat     KUBE-SERVICES, KUBE-NODEPORTS, KUBE-POSTROUTING, KUBE-MARK-MASQ,
//           KUBE-PROXY-CANARY, and the per-Service chains KUBE-SVC-*,
//           KUBE-SVL-*, KUBE-SEP-*, KUBE-FW-*, KUBE-EXT-*
//   filter  KUBE-SERVICES, KUBE-EXTERNAL-SERVICES, KUBE-FORWARD,
//           KUBE-NODEPORTS, KUBE-PROXY-FIREWALL, KUBE-PROXY-CANARY
//   mangle  KUBE-PROXY-CANARY
// plus every rule elsewhere that jumps (-j/-g) into one of them (kube-proxy's
// jumps from PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING; a chain cannot
// be deleted while a rule refers to it). The kubelet's chains (KUBE-FIREWALL,
// KUBE-KUBELET-CANARY, and the KUBE-MARK-DROP of older kubelets) stay, and so
// does every other rule: each table is changed in one iptables-restore
// --noflush transaction that names only these chains and rules.
//
// Both iptables backends are looked at: nf_tables (iptables-nft) and, when
// the node has legacy tables in use (/proc/net/ip_tables_names), legacy; each
// for IPv4 and IPv6. Listing never creates a table: the save commands run
// without -t, so they print only the tables that exist.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

export const KUBE_PROXY_CHAINS: Readonly<Record<string, readonly string[]>> = {
  nat: ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ', 'KUBE-PROXY-CANARY'],
  filter: ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-FORWARD', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL', 'KUBE-PROXY-CANARY'],
  mangle: ['KUBE-PROXY-CANARY'],
};

/** Per-Service and per-endpoint chains (nat only). */
export const KUBE_PROXY_CHAIN_PREFIXES = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-SEP-', 'KUBE-FW-', 'KUBE-EXT-'];

export function isKubeProxyChain(table: string, chain: string): boolean {
  if (KUBE_PROXY_CHAINS[table]?.includes(chain)) return true;
  return table === 'nat' && KUBE_PROXY_CHAIN_PREFIXES.some((p) => chain.startsWith(p));
}

/** What goes from one table. */
export interface TablePlan {
  table: string;
  /** Chains to flush and delete, with how many rules each holds. */
  chains: Array<{ name: string; rules: number }>;
  /** Rules in other chains that jump into them, as iptables-save prints them ("-A INPUT ... -j KUBE-...")). */
  jumps: string[];
}

/** Splits a rule the way iptables-restore does: whitespace, "double quotes" with \" escapes. */
export function ruleTokens(rule: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  let any = false;
  for (let i = 0; i < rule.length; i++) {
    const c = rule[i]!;
    if (quoted && c === '\\' && rule[i + 1] === '"') {
      cur += '"';
      i++;
    } else if (c === '"') {
      quoted = !quoted;
      any = true;
    } else if (!quoted && /\s/.test(c)) {
      if (any || cur) out.push(cur);
      cur = '';
      any = false;
    } else cur += c;
  }
  if (any || cur) out.push(cur);
  return out;
}

/** The target of a rule's -j/--jump or -g/--goto, if any. */
function ruleTarget(tokens: string[]): string | undefined {
  for (let i = 0; i < tokens.length - 1; i++) if (['-j', '--jump', '-g', '--goto'].includes(tokens[i]!)) return tokens[i + 1];
  return undefined;
}

/** Splits iptables-save output into its tables ("*nat" ... "COMMIT"). */
export function saveTables(save: string): Map<string, string[]> {
  const tables = new Map<string, string[]>();
  let cur: string[] | undefined;
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) tables.set(line.slice(1).trim(), (cur = []));
    else if (line === 'COMMIT') cur = undefined;
    else if (cur && (line.startsWith(':') || line.startsWith('-A '))) cur.push(line);
  }
  return tables;
}

/** The kube-proxy chains of one table (its iptables-save lines) and the rules that jump into them. */
export function planTable(table: string, lines: readonly string[]): TablePlan {
  const chains = new Map<string, number>();
  for (const l of lines) {
    if (!l.startsWith(':')) continue;
    const name = l.slice(1).split(/\s/, 1)[0]!;
    if (isKubeProxyChain(table, name)) chains.set(name, 0);
  }
  const jumps: string[] = [];
  for (const l of lines) {
    if (!l.startsWith('-A ')) continue;
    const tokens = ruleTokens(l);
    const chain = tokens[1]!;
    if (chains.has(chain)) chains.set(chain, chains.get(chain)! + 1);
    else if (chains.has(ruleTarget(tokens) ?? '')) jumps.push(l);
  }
  return { table, chains: [...chains].map(([name, rules]) => ({ name, rules })), jumps };
}

/**
 * The iptables-restore --noflush input for one table: declaring a chain
 * flushes it, then the jumps into it go (-D with the rule as saved), then the
 * chains (-X). Applied atomically per table.
 */
export function restoreInput(plan: TablePlan): string {
  const lines = [`*${plan.table}`];
  for (const c of plan.chains) lines.push(`:${c.name} - [0:0]`);
  for (const j of plan.jumps) lines.push(`-D ${j.slice(3)}`);
  for (const c of plan.chains) lines.push(`-X ${c.name}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

// ---------------------------------------------------------------- running it

interface Exec {
  code: number;
  stdout: string;
  stderr: string;
}

function exec(cmd: string, args: string[], input?: string): Promise<Exec> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    if (child.stdin) {
      // A restore that fails early closes its stdin: its exit status and
      // stderr say why, not the EPIPE of our write.
      child.stdin.on('error', () => {});
      child.stdin.end(input);
    }
  });
}

function onPath(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    const f = path.join(dir, cmd);
    if (existsSync(f)) return f;
  }
  return undefined;
}

/** One iptables flavour: family (iptables/ip6tables) x backend (nft/legacy). */
export interface Backend {
  name: string; // e.g. "iptables-nft"
  save: string;
  restore: string;
}

/** The backends in use on this node (see the header). */
export function findBackends(): Backend[] {
  const out: Backend[] = [];
  for (const [fam, names] of [
    ['iptables', '/proc/net/ip_tables_names'],
    ['ip6tables', '/proc/net/ip6_tables_names'],
  ] as const) {
    const nft = onPath(`${fam}-nft-save`) && onPath(`${fam}-nft-restore`);
    if (nft) out.push({ name: `${fam}-nft`, save: `${fam}-nft-save`, restore: `${fam}-nft-restore` });
    let legacyInUse = false;
    try {
      legacyInUse = readFileSync(names, 'utf8').trim() !== '';
    } catch {
      legacyInUse = false;
    }
    if (legacyInUse && onPath(`${fam}-legacy-save`) && onPath(`${fam}-legacy-restore`)) {
      out.push({ name: `${fam}-legacy`, save: `${fam}-legacy-save`, restore: `${fam}-legacy-restore` });
    } else if (!nft && onPath(`${fam}-save`) && onPath(`${fam}-restore`)) {
      // A system with only one flavour installed under the plain names.
      out.push({ name: fam, save: `${fam}-save`, restore: `${fam}-restore` });
    }
  }
  return out;
}

export interface CleanupResult {
  plans: Array<{ backend: string; plan: TablePlan }>;
  problems: string[];
}

/** Removes (or with dryRun only lists) kube-proxy's chains and jumps in every backend; `out` gets one line per change. */
export async function cleanupIptables(opts: { dryRun: boolean; out: (line: string) => void; backends?: Backend[] }): Promise<CleanupResult> {
  const res: CleanupResult = { plans: [], problems: [] };
  const verb = opts.dryRun ? 'would remove' : 'removed';
  for (const b of opts.backends ?? findBackends()) {
    const saved = await exec(b.save, []).catch((err: Error) => ({ code: 1, stdout: '', stderr: err.message }));
    if (saved.code !== 0) {
      res.problems.push(`${b.save}: exit ${saved.code}: ${saved.stderr.trim()}`);
      continue;
    }
    for (const [table, lines] of saveTables(saved.stdout)) {
      const plan = planTable(table, lines);
      if (!plan.chains.length) continue;
      res.plans.push({ backend: b.name, plan });
      if (!opts.dryRun) {
        const r = await exec(b.restore, ['--noflush'], restoreInput(plan));
        if (r.code !== 0) {
          res.problems.push(`${b.restore} (table ${table}): exit ${r.code}: ${r.stderr.trim()}`);
          continue;
        }
      }
      for (const j of plan.jumps) opts.out(`${verb} ${b.name} ${table}: rule ${j}`);
      for (const c of plan.chains) opts.out(`${verb} ${b.name} ${table}: chain ${c.name} (${c.rules} rules)`);
    }
  }
  if (!res.plans.length && !res.problems.length) opts.out('no kube-proxy iptables chains found');
  for (const p of res.problems) opts.out(`error: ${p}`);
  return res;
}

export const cleanupIptablesUsage = `Usage: kbp cleanup-iptables [--dry-run]

Removes the iptables chains kube-proxy's iptables mode leaves on this node
(in the current network namespace), and the rules that jump into them:
  nat     KUBE-SERVICES KUBE-NODEPORTS KUBE-POSTROUTING KUBE-MARK-MASQ
          KUBE-PROXY-CANARY KUBE-SVC-* KUBE-SVL-* KUBE-SEP-* KUBE-FW-* KUBE-EXT-*
  filter  KUBE-SERVICES KUBE-EXTERNAL-SERVICES KUBE-FORWARD KUBE-NODEPORTS
          KUBE-PROXY-FIREWALL KUBE-PROXY-CANARY
  mangle  KUBE-PROXY-CANARY
for IPv4 and IPv6, nf_tables and (when in use) legacy iptables. The
kubelet's chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY) and every other rule
stay. Each table changes in one iptables-restore --noflush transaction.
Stop kube-proxy first, or it puts them back.

  --dry-run   print what would be removed, change nothing
`;
