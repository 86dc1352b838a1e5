/**
 * opencode keeps working after the first turn in a new directory (seconds of CPU on its own
 * threads, with memory peaking meanwhile). Left alone, that work would land on the next
 * measurement on a small machine, and an "idle" memory reading could fall in the middle of it.
 * So the runner-modes phase waits for each runner to go quiet, and reports what it saw.
 */

/** One reading of a runner (a container's cgroup, or the local opencode process). */
export interface RunnerSample {
  /** CPU time used so far, ms. */
  cpuMs: number;
  /** Resident memory, bytes; undefined when the engine keeps no memory accounting. */
  memBytes?: number;
}

export type Sampler = () => Promise<RunnerSample>;

export interface Settled {
  /** From the call until the first quiet window began, ms. */
  busyMs: number;
  /** CPU the runner used during that time, ms. */
  cpuMs: number;
  /** Memory at the call (right after the turn), bytes. */
  firstMemBytes?: number;
  /** Highest memory seen until quiet, bytes. */
  peakMemBytes?: number;
  /** The runner never went quiet within the time allowed. */
  timedOut: boolean;
}

/** A window with less CPU than this share of one core counts as quiet. */
const QUIET_SHARE = 0.05;
const WINDOW_MS = 500;
const SETTLE_TIMEOUT_MS = 60_000;

/**
 * Samples every WINDOW_MS until one window's CPU use is below `quietShare` of a core (default
 * QUIET_SHARE; raise it for many processes at once: each idle opencode ticks along at ~1 %).
 */
export async function waitQuiet(sample: Sampler, quietShare = QUIET_SHARE): Promise<Settled> {
  const t0 = performance.now();
  const first = await sample();
  let prev = { at: t0, ...first };
  let peak = first.memBytes;
  while (performance.now() - t0 < SETTLE_TIMEOUT_MS) {
    await new Promise((r) => setTimeout(r, WINDOW_MS));
    const now = { at: performance.now(), ...(await sample()) };
    if (now.memBytes !== undefined) peak = Math.max(peak ?? 0, now.memBytes);
    if (now.cpuMs - prev.cpuMs < quietShare * (now.at - prev.at)) {
      return { busyMs: prev.at - t0, cpuMs: prev.cpuMs - first.cpuMs, firstMemBytes: first.memBytes, peakMemBytes: peak, timedOut: false };
    }
    prev = now;
  }
  return { busyMs: prev.at - t0, cpuMs: prev.cpuMs - first.cpuMs, firstMemBytes: first.memBytes, peakMemBytes: peak, timedOut: true };
}
