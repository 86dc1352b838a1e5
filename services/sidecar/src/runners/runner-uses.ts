/**
 * Turns in flight on each user's runner: the mark every idle policy respects (a turn can
 * outlast any idle timeout, so a runner in use is never stopped). With replicas the uses are
 * also recorded where every replica sees them (RunnerUse, db/pg-runner-use.ts), so that one
 * replica does not stop a runner another is using.
 */
import type { Logger } from "../log/logger.js";
import type { RunnerEndpoint, RunnerUse } from "./runner.js";

export class RunnerUses {
  private readonly counts = new Map<string, number>();

  constructor(
    private readonly log: Logger,
    private readonly shared?: RunnerUse,
  ) {}

  /** Marks the user's runner in use until the returned function is called (once; later calls do nothing). */
  use(hash: string, released?: () => void): () => void {
    this.shared?.touch(hash);
    this.counts.set(hash, (this.counts.get(hash) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const left = (this.counts.get(hash) ?? 1) - 1;
      if (left > 0) this.counts.set(hash, left);
      else this.counts.delete(hash);
      released?.();
      this.shared?.touch(hash);
    };
  }

  /** Uses of the user's runner in flight in this process. */
  count(hash: string): number {
    return this.counts.get(hash) ?? 0;
  }

  has(hash: string): boolean {
    return this.counts.has(hash);
  }

  /** Whether another replica used it within the last `ms` (a database that does not answer: assume so). */
  async usedElsewhere(hash: string, ms: number): Promise<boolean> {
    if (!this.shared) return false;
    return this.shared.usedWithin(hash, ms).catch((e: Error) => {
      this.log.warn({ user: hash, err: e.message }, "cannot tell whether another replica uses this runner: keeping it");
      return true;
    });
  }
}

/** Whether opencode runs a session now (a run another sidecar started, or one still finishing); unknown: no. */
export async function anySessionBusy(ep: RunnerEndpoint): Promise<boolean> {
  try {
    const status = await ep.client.sessionStatus(ep.directory);
    return Object.values(status).some((s) => s.type !== "idle");
  } catch {
    return false;
  }
}
