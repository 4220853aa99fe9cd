// A bounded-frequency runner, after kube-proxy's BoundedFrequencyRunner
// (pkg/util/async): run() asks for a run; runs never overlap, start at least
// minInterval apart (a burst of requests becomes one run), happen at least
// every maxInterval even when nobody asks (the periodic full resync), and a
// failed run is retried after retryInterval. The clock is injectable so tests
// drive time by hand.

import type { Logger } from '../log.js';

export interface Clock {
  now(): number; // ms
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** Why a run happens: asked for, periodic (maxInterval elapsed), or retry of a failure. */
export type RunReason = 'requested' | 'periodic' | 'retry';

export interface RunnerOptions {
  minIntervalMs: number;
  maxIntervalMs: number;
  retryIntervalMs: number;
  clock?: Clock;
  log?: Logger;
}

export class BoundedFrequencyRunner {
  private readonly clock: Clock;
  private pending = false;
  private retryAt: number | undefined;
  private lastRun = -Infinity;
  private startedAt = 0;
  private timer: unknown;
  private timerDue = Infinity;
  private running: Promise<void> | undefined;
  private stopped = true;

  constructor(
    readonly name: string,
    private readonly fn: (reason: RunReason) => Promise<boolean>,
    private readonly opts: RunnerOptions,
  ) {
    if (opts.minIntervalMs < 0 || opts.maxIntervalMs < opts.minIntervalMs) throw new RangeError(`${name}: need 0 <= minInterval <= maxInterval`);
    this.clock = opts.clock ?? realClock;
  }

  /** Start the periodic schedule (the first run happens on run() or after maxInterval). */
  start(): void {
    this.stopped = false;
    this.startedAt = this.clock.now();
    this.schedule();
  }

  /** Ask for a run as soon as minInterval allows. */
  run(): void {
    this.pending = true;
    this.schedule();
  }

  /** Stop scheduling; resolves when a run in progress has finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.setTimer(Infinity);
    await this.running;
  }

  private schedule(): void {
    if (this.stopped || this.running) return;
    const base = this.lastRun === -Infinity ? this.startedAt : this.lastRun;
    let due = base + this.opts.maxIntervalMs;
    if (this.pending) due = Math.min(due, this.lastRun + this.opts.minIntervalMs);
    if (this.retryAt !== undefined) due = Math.min(due, Math.max(this.retryAt, this.lastRun + this.opts.minIntervalMs));
    this.setTimer(due);
  }

  private setTimer(due: number): void {
    if (due === this.timerDue && this.timer !== undefined) return;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDue = due;
    if (due === Infinity) return;
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      this.timerDue = Infinity;
      this.fire();
    }, Math.max(0, due - this.clock.now()));
  }

  private fire(): void {
    if (this.stopped || this.running) return;
    const now = this.clock.now();
    const reason: RunReason = this.pending ? 'requested' : this.retryAt !== undefined && now >= this.retryAt ? 'retry' : 'periodic';
    this.pending = false;
    this.retryAt = undefined;
    this.lastRun = now;
    this.running = (async () => {
      let ok: boolean;
      try {
        ok = await this.fn(reason);
      } catch (err) {
        this.opts.log?.error('run failed', { runner: this.name, err });
        ok = false;
      }
      if (!ok) this.retryAt = this.clock.now() + this.opts.retryIntervalMs;
    })().finally(() => {
      this.running = undefined;
      this.schedule();
    });
  }
}
