// Messages between the testbed and a probe (pods/probe.ts) running inside a
// namespace. Times are epoch milliseconds with sub-millisecond precision
// (performance.timeOrigin + performance.now()), comparable across processes.

export type ProbeRequest =
  | { id: number; op: 'http'; host: string; port: number; path?: string; count: number; timeoutMs: number; localPort?: number }
  | { id: number; op: 'udp'; host: string; port: number; payload?: string; timeoutMs: number; connect?: boolean }
  | { id: number; op: 'get'; url: string; timeoutMs: number };

export interface HttpResult {
  ok: boolean;
  status: number;
  /** The backend pod that answered (from the testbed server's reply). */
  backend: string | null;
  /** The client address:port the backend saw. */
  seenFrom: string | null;
  /** The connection's peer as the client's socket names it (getpeername), address:port. */
  peer?: string | null;
  body: string;
  error: string | null;
  start: number;
  end: number;
}

export interface UdpResult {
  ok: boolean;
  /** Source of the reply as the client's socket received it. */
  from: { address: string; port: number } | null;
  /** connect: the socket's peer (getpeername), address:port. */
  peer?: string | null;
  body: string;
  error: string | null;
}

export interface GetResult {
  ok: boolean;
  status: number;
  body: string;
  error: string | null;
}
