// Sizes of the reliability scenarios (test/reliability): the shortened form
// `make test` runs, or the full one with KBP_SOAK=1 (`make soak`). Every
// scenario reports the size it ran at, so a log says which form it was.

export const SOAK = process.env.KBP_SOAK === '1';

/** `short` under make test, `full` under make soak. */
export function scaled<T>(short: T, full: T): T {
  return SOAK ? full : short;
}

/** A positive integer from the environment (override of a scenario's size), else `fallback`. */
export function envInt(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}: expected a non-negative integer, got ${JSON.stringify(v)}`);
  return n;
}
