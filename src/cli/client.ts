// The CLI's HTTP client for the agent API: GET with an optional bearer token
// and CA, JSON answers, and errors a person can act on.

import http from 'node:http';
import https from 'node:https';

export const DEFAULT_API = 'http://127.0.0.1:10256';

export interface ClientOptions {
  api: string;
  token?: string;
  ca?: Buffer;
  timeoutMs?: number;
}

/** Something the user should read: printed as is, exit code 1. */
export class CliError extends Error {}

export function getJson<T>(opts: ClientOptions, apiPath: string): Promise<T> {
  let url: URL;
  try {
    url = new URL(apiPath, opts.api);
  } catch {
    return Promise.reject(new CliError(`--api: not a URL: ${JSON.stringify(opts.api)}`));
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return Promise.reject(new CliError(`--api: expected http:// or https://, got ${opts.api}`));
  const headers: Record<string, string> = { accept: 'application/json' };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.get(url, { headers, ca: opts.ca, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
        if (res.statusCode === 200 && body !== undefined) return resolve(body as T);
        const e = body as { code?: string; message?: string } | undefined;
        const what = e?.code ? `${e.code}: ${e.message}` : text.slice(0, 200) || 'no body';
        let hint = '';
        if (res.statusCode === 401) hint = ' (give a token with --token or KBP_API_TOKEN)';
        if (res.statusCode === 403) hint = ' (the token\'s user needs "get" on agents.kbp.io)';
        reject(new CliError(`GET ${url.pathname}: HTTP ${res.statusCode} ${what}${hint}`));
      });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? '';
      if (['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN'].includes(code)) {
        reject(new CliError(`cannot reach the kbp agent API at ${url.origin} (${code}): is \`kbp agent\` running on this node with its API on that address? Use --api URL to point elsewhere.`));
      } else if (/certificate|self.signed|SSL|TLS/i.test(err.message)) {
        reject(new CliError(`TLS with ${url.origin} failed (${err.message}): give the agent's CA with --ca FILE`));
      } else reject(err);
    });
  });
}
