// Structured log lines on stderr, one per event: time, level, msg, then
// key=value pairs (logfmt). Values with spaces or quotes are quoted, so a line
// can be grepped and parsed back.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, unknown>;

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function isLogLevel(s: string): s is LogLevel {
  return Object.hasOwn(rank, s);
}

export interface LogSink {
  (line: string): void;
}

export class Logger {
  constructor(
    private readonly sink: LogSink = (line) => process.stderr.write(line + '\n'),
    public level: LogLevel = 'info',
    private readonly bound: LogFields = {},
  ) {}

  /** A logger that adds `fields` to every line (component=…, device=…). */
  child(fields: LogFields): Logger {
    const c = new Logger(this.sink, this.level, { ...this.bound, ...fields });
    // Children follow the parent's level when it changes later.
    Object.defineProperty(c, 'level', { get: () => this.level, set: (v: LogLevel) => (this.level = v) });
    return c;
  }

  enabled(level: LogLevel): boolean {
    return rank[level] >= rank[this.level];
  }

  debug(msg: string, fields?: LogFields): void {
    this.write('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.write('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.write('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.write('error', msg, fields);
  }

  private write(level: LogLevel, msg: string, fields?: LogFields): void {
    if (!this.enabled(level)) return;
    let line = `time=${new Date().toISOString()} level=${level} msg=${fmt(msg)}`;
    for (const [k, v] of Object.entries({ ...this.bound, ...fields })) {
      if (v === undefined) continue;
      line += ` ${k}=${fmt(v)}`;
    }
    this.sink(line);
  }
}

function fmt(v: unknown): string {
  let s: string;
  if (v instanceof Error) s = v.message;
  else if (typeof v === 'string') s = v;
  else if (typeof v === 'bigint') s = v.toString();
  else if (v === null || typeof v !== 'object') s = String(v);
  else s = JSON.stringify(v);
  return /^[^\s"=]+$/.test(s) ? s : JSON.stringify(s);
}

/** A logger that drops everything (tests that do not look at logs). */
export function silentLogger(): Logger {
  return new Logger(() => {}, 'error');
}

/** A logger that collects lines (tests that assert what was logged). */
export function memoryLogger(level: LogLevel = 'debug'): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger((l) => lines.push(l), level), lines };
}
