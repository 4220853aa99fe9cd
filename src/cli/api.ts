// `kbp services|backends|conntrack|affinity|maps|stats`: the agent's REST API
// as tables (or -o json). Only reads; every command is one or more GETs.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CliError, DEFAULT_API, getJson, type ClientOptions } from './client.js';
import { table } from './table.js';

export const API_COMMANDS = ['services', 'backends', 'conntrack', 'affinity', 'maps', 'stats'] as const;
export type ApiCommand = (typeof API_COMMANDS)[number];

export const apiCommandUsage = `Usage: kbp COMMAND [options]

Commands (read the agent's REST API):
  services                 frontends the kernel holds, their slot backends, drift
  backends                 backend entries and the frontends that pick them
  conntrack                conntrack entries [--service ID] [--backend ID] [--client IP]
  affinity                 sessionAffinity entries [--service ID] [--client IP]
  maps [NAME]              the datapath maps, or the decoded entries of one
  stats                    datapath counters by outcome and drop reason

Options:
  --api URL                the agent API (default: ${DEFAULT_API}, or KBP_API)
  --token TOKEN            bearer token (default: KBP_API_TOKEN); needed when the
                           API is not on loopback
  --ca FILE                CA of an HTTPS API
  -o, --output FORMAT      table (default) or json
  --limit N                most entries of a paged dump (default 1000)
  --all                    every entry of a paged dump
`;

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}

const stdio: Io = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

interface Frontend {
  id: number;
  vip: string;
  port: number;
  protocol: string;
  namespace: string | null;
  name: string | null;
  portName: string | null;
  flags: string[];
  affinityTimeout: number;
  backends: Array<{ slot: number; id: number; ip: string | null; port: number | null; protocol: string | null; state: string | null }>;
  drift: string[];
}

interface Page<T> {
  items: T[];
  continue: string | null;
}

/** Follow continue tokens until `max` items or the end. */
async function paged<T>(client: ClientOptions, apiPath: string, query: URLSearchParams, max: number): Promise<{ items: T[]; more: boolean }> {
  const items: T[] = [];
  let token: string | null = null;
  do {
    const q = new URLSearchParams(query);
    q.set('limit', String(Math.min(5000, Math.max(1, max - items.length))));
    if (token) q.set('continue', token);
    const page: Page<T> = await getJson<Page<T>>(client, `${apiPath}?${q}`);
    items.push(...page.items);
    token = page.continue;
  } while (token && items.length < max);
  return { items: items.slice(0, max), more: token !== null };
}

const svcName = (f: Frontend): string => (f.name ? `${f.namespace}/${f.name}${f.portName ? `:${f.portName}` : ''}` : '(unknown)');
const secs = (s: number): string => (s >= 3600 ? `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m` : s >= 60 ? `${Math.floor(s / 60)}m${Math.floor(s % 60)}s` : `${s.toFixed(s < 10 ? 1 : 0)}s`);
const kv = (o: Record<string, unknown>): string =>
  Object.entries(o)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') || '-' : String(v)}`)
    .join(' ');

/** Runs one API command; resolves with the exit code (0 ok, 1 failed, 2 usage). */
export async function runApiCommand(name: string, argv: string[], io: Io = stdio): Promise<number> {
  let values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: {
        api: { type: 'string' },
        token: { type: 'string' },
        ca: { type: 'string' },
        output: { type: 'string', short: 'o' },
        limit: { type: 'string' },
        all: { type: 'boolean' },
        service: { type: 'string' },
        backend: { type: 'string' },
        client: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    io.err(`kbp ${name}: ${(err as Error).message}\n\n${apiCommandUsage}`);
    return 2;
  }
  if (values.help) {
    io.out(apiCommandUsage);
    return 0;
  }
  if (!(API_COMMANDS as readonly string[]).includes(name)) {
    io.err(`kbp: unknown command ${JSON.stringify(name)}\n\n${apiCommandUsage}`);
    return 2;
  }
  const output = values.output ?? 'table';
  if (output !== 'table' && output !== 'json') {
    io.err(`kbp ${name}: -o: expected table or json, got ${JSON.stringify(output)}\n`);
    return 2;
  }
  const max = values.all ? Number.POSITIVE_INFINITY : Number(values.limit ?? 1000);
  if (!(max >= 1)) {
    io.err(`kbp ${name}: --limit: expected a positive number\n`);
    return 2;
  }
  if (positionals.length > (name === 'maps' ? 1 : 0)) {
    io.err(`kbp ${name}: unexpected argument ${JSON.stringify(positionals.at(-1))}\n`);
    return 2;
  }
  const filters = new URLSearchParams();
  for (const f of ['service', 'backend', 'client'] as const) {
    const v = values[f];
    if (v === undefined) continue;
    if (name !== 'conntrack' && name !== 'affinity') {
      io.err(`kbp ${name}: --${f} applies to conntrack and affinity only\n`);
      return 2;
    }
    filters.set(f, v);
  }

  let client: ClientOptions;
  try {
    client = { api: values.api ?? process.env.KBP_API ?? DEFAULT_API, token: values.token ?? process.env.KBP_API_TOKEN, ca: values.ca ? readFileSync(values.ca) : undefined };
  } catch (err) {
    io.err(`kbp ${name}: --ca: ${(err as Error).message}\n`);
    return 2;
  }
  const json = (v: unknown) => io.out(`${JSON.stringify(v, null, 2)}\n`);
  const truncated = (more: boolean, n: number) => {
    if (more) io.err(`(first ${n} entries; --limit N or --all for more)\n`);
  };

  try {
    switch (name as ApiCommand) {
      case 'services': {
        const items = await getJson<Frontend[]>(client, '/v1/services');
        if (output === 'json') {
          json(items);
          return 0;
        }
        io.out(
          table(
            ['ID', 'FRONTEND', 'SERVICE', 'FLAGS', 'BACKENDS', 'DRIFT'],
            items.map((f) => [
              f.id,
              `${f.vip}:${f.port}/${f.protocol}`,
              svcName(f),
              f.flags.join(',') + (f.affinityTimeout ? ` (${f.affinityTimeout}s)` : ''),
              f.backends.map((b) => (b.ip ? `${b.slot} => ${b.ip}:${b.port}/${b.protocol} (${b.state})` : `${b.slot} => backend ${b.id} (missing)`)),
              f.drift.length ? f.drift : ['-'],
            ]),
          ),
        );
        return 0;
      }
      case 'backends': {
        const { items } = await getJson<{ items: Array<{ id: number; ip: string; port: number; protocol: string; state: string; frontends: number[] }> }>(client, '/v1/backends');
        if (output === 'json') {
          json(items);
          return 0;
        }
        io.out(table(['ID', 'ADDRESS', 'STATE', 'FRONTENDS'], items.map((b) => [b.id, `${b.ip}:${b.port}/${b.protocol}`, b.state, b.frontends.join(',') || '-'])));
        return 0;
      }
      case 'conntrack': {
        type Ct = { direction: string; protocol: string; src: string; dst: string; serviceId: number; backendId: number; flags: string[]; tcpFlags: string[]; ageSeconds: number; idleSeconds: number };
        const { items, more } = await paged<Ct>(client, '/v1/conntrack', filters, max);
        if (output === 'json') {
          json(items);
          return 0;
        }
        io.out(
          table(
            ['DIR', 'PROTO', 'SOURCE', 'DESTINATION', 'SERVICE', 'BACKEND', 'FLAGS', 'AGE', 'IDLE'],
            items.map((c) => [c.direction, c.protocol, c.src, c.dst, c.serviceId, c.backendId, [...c.flags, ...c.tcpFlags].join(',') || '-', secs(c.ageSeconds), secs(c.idleSeconds)]),
          ),
        );
        truncated(more, items.length);
        return 0;
      }
      case 'affinity': {
        type Aff = { client: string; serviceId: number; backendId: number; slot: number; idleSeconds: number };
        const { items, more } = await paged<Aff>(client, '/v1/affinity', filters, max);
        if (output === 'json') {
          json(items);
          return 0;
        }
        io.out(table(['CLIENT', 'SERVICE', 'BACKEND', 'SLOT', 'IDLE'], items.map((a) => [a.client, a.serviceId, a.backendId, a.slot, secs(a.idleSeconds)])));
        truncated(more, items.length);
        return 0;
      }
      case 'maps': {
        const mapName = positionals[0];
        if (!mapName) {
          const { items } = await getJson<{ items: Array<{ name: string; type: string; keySize: number; valueSize: number; maxEntries: number; entries: number }> }>(client, '/v1/maps');
          if (output === 'json') {
          json(items);
          return 0;
        }
          io.out(table(['NAME', 'TYPE', 'KEY', 'VALUE', 'MAX ENTRIES', 'ENTRIES'], items.map((m) => [m.name, m.type, m.keySize, m.valueSize, m.maxEntries, m.entries])));
          return 0;
        }
        type Entry = { key: Record<string, unknown>; value: Record<string, unknown> };
        const { items, more } = await paged<Entry>(client, `/v1/maps/${encodeURIComponent(mapName)}`, new URLSearchParams(), max);
        if (output === 'json') {
          json(items);
          return 0;
        }
        io.out(table(['KEY', 'VALUE'], items.map((e) => [kv(e.key), kv(e.value)])));
        truncated(more, items.length);
        return 0;
      }
      case 'stats': {
        const body = await getJson<{ cpus: number; items: Array<{ name: string; packets: number; bytes: number }> }>(client, '/v1/stats');
        if (output === 'json') {
          json(body);
          return 0;
        }
        io.out(table(['COUNTER', 'PACKETS', 'BYTES'], body.items.map((s) => [s.name, s.packets, s.bytes])));
        return 0;
      }
    }
  } catch (err) {
    if (err instanceof CliError) {
      io.err(`kbp ${name}: ${err.message}\n`);
      return 1;
    }
    io.err(`kbp ${name}: ${(err as Error).message}\n`);
    return 1;
  }
  return 1;
}
