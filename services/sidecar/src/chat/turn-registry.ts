/**
 * The turns in flight, so that a shutdown can let them finish: `drain` refuses new turns,
 * waits up to a grace period for the running ones, then stops the rest with an error their
 * clients see (in-band on a stream) instead of a connection cut mid-token.
 */
import { RunnerUnavailableError } from "../errors/api-error.js";
import { TurnStop } from "./agent-run.js";

export interface TrackedTurn {
  /** Aborted when the client leaves (no reason) or the sidecar stops the turn (a TurnStop). */
  readonly signal: AbortSignal;
  /** Client gone: abort without a reason (nobody is told). */
  clientGone(): void;
  /** The turn is over (answered, failed or abandoned). Idempotent. */
  end(): void;
}

/** How long stopped turns get to write their error and end after the grace period. */
const STOP_WAIT_MS = 10_000;

export class TurnRegistry {
  private readonly active = new Set<AbortController>();
  private draining = false;
  private onEmpty?: () => void;

  get size(): number {
    return this.active.size;
  }

  /** Registers a turn from its request's start (before it is prepared). */
  begin(): TrackedTurn {
    if (this.draining) throw new RunnerUnavailableError("The sidecar is shutting down; send the message again in a moment", "shutting_down");
    const controller = new AbortController();
    this.active.add(controller);
    return {
      signal: controller.signal,
      clientGone: () => controller.abort(),
      end: () => {
        this.active.delete(controller);
        if (this.active.size === 0) this.onEmpty?.();
      },
    };
  }

  /**
   * Refuses new turns, waits up to `graceMs` for the running ones, then stops what is left.
   * Resolves with how many turns had to be stopped.
   */
  async drain(graceMs: number): Promise<number> {
    this.draining = true;
    if (await this.emptyWithin(graceMs)) return 0;
    const left = [...this.active];
    const reason = new TurnStop("The sidecar is shutting down and stopped this turn; send the message again in a moment", "shutting_down");
    for (const c of left) c.abort(reason);
    await this.emptyWithin(STOP_WAIT_MS);
    return left.length;
  }

  private emptyWithin(ms: number): Promise<boolean> {
    if (this.active.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.onEmpty = undefined;
        resolve(false);
      }, ms);
      this.onEmpty = () => {
        clearTimeout(timer);
        this.onEmpty = undefined;
        resolve(true);
      };
    });
  }
}
