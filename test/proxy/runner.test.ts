// BoundedFrequencyRunner on a manual clock: every assertion is about time the
// test controls, none about wall-clock speed.

import t from 'tap';
import { BoundedFrequencyRunner, type RunReason } from '../../src/proxy/runner.js';
import { ManualClock } from './clock.js';

function setup(results: boolean[] = [], runMs = 0) {
  const clock = new ManualClock();
  const runs: Array<{ at: number; reason: RunReason }> = [];
  const r = new BoundedFrequencyRunner(
    'test',
    async (reason) => {
      runs.push({ at: clock.now(), reason });
      if (runMs) await new Promise<void>((res) => clock.setTimeout(res, runMs));
      const ok = results.shift();
      if (ok === undefined) return true;
      return ok;
    },
    { minIntervalMs: 100, maxIntervalMs: 60_000, retryIntervalMs: 1000, clock },
  );
  r.start();
  return { clock, runs, r };
}

t.test('first request runs at once; a burst within minInterval becomes one run', async (t) => {
  const { clock, runs, r } = setup();
  r.run();
  await clock.advance(0);
  t.same(runs, [{ at: 0, reason: 'requested' }]);
  await clock.advance(10);
  r.run();
  r.run();
  await clock.advance(30);
  r.run();
  await clock.advance(100);
  t.same(runs, [
    { at: 0, reason: 'requested' },
    { at: 100, reason: 'requested' },
  ]);
  await r.stop();
});

t.test('periodic runs every maxInterval without requests, measured from the last run', async (t) => {
  const { clock, runs, r } = setup();
  await clock.advance(60_000);
  t.same(runs, [{ at: 60_000, reason: 'periodic' }]);
  await clock.advance(30_000);
  r.run();
  await clock.advance(59_999);
  t.same(runs.map((x) => x.at), [60_000, 90_000]);
  await clock.advance(1);
  t.same(runs.map((x) => `${x.at}:${x.reason}`), ['60000:periodic', '90000:requested', '150000:periodic']);
  await r.stop();
});

t.test('a failed run is retried after retryInterval; a request does not wait for it', async (t) => {
  const { clock, runs, r } = setup([false, false]);
  r.run();
  await clock.advance(999);
  t.equal(runs.length, 1);
  await clock.advance(1);
  t.same(runs.map((x) => `${x.at}:${x.reason}`), ['0:requested', '1000:retry']);
  await clock.advance(200);
  r.run();
  await clock.advance(0);
  t.same(runs.map((x) => `${x.at}:${x.reason}`), ['0:requested', '1000:retry', '1200:requested']);
  await clock.advance(5000);
  t.equal(runs.length, 3, 'success: no more retries');
  await r.stop();
});

t.test('runs never overlap; a request during a run runs after it', async (t) => {
  const { clock, runs, r } = setup([], 500);
  r.run();
  await clock.advance(50);
  r.run();
  await clock.advance(400);
  t.equal(runs.length, 1, 'still running');
  await clock.advance(50);
  t.same(runs.map((x) => x.at), [0, 500]);
  const stopped = r.stop();
  await clock.advance(500);
  await stopped;
  r.run();
  await clock.advance(100_000);
  t.equal(runs.length, 2, 'nothing after stop');
  t.equal(clock.pendingTimers, 0);
});

t.test('a throwing run counts as a failure', async (t) => {
  const clock = new ManualClock();
  let n = 0;
  const r = new BoundedFrequencyRunner('t', async () => {
    if (n++ === 0) throw new Error('boom');
    return true;
  }, { minIntervalMs: 0, maxIntervalMs: 10_000, retryIntervalMs: 50, clock });
  r.start();
  r.run();
  await clock.advance(50);
  t.equal(n, 2);
  await r.stop();
  t.throws(() => new BoundedFrequencyRunner('bad', async () => true, { minIntervalMs: 10, maxIntervalMs: 5, retryIntervalMs: 1 }), RangeError);
});
