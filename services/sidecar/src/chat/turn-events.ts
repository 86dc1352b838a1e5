/**
 * What the turn core tells the rest of the sidecar, as events: a user's runner endpoint is in
 * use, and a turn ended. Knowledge-base sync subscribes (and, later, artifacts), so that the
 * core calls no feature by name.
 */
import { EventEmitter } from "node:events";
import type { Identity } from "../auth/identity.js";
import type { RunnerEndpoint } from "../runners/runner.js";
import type { UserSpace } from "../workspace/user-space.js";

export interface TurnEventMap {
  /** A turn is about to use this user's runner endpoint (its file events can be watched). */
  "runner.used": [{ identity: Identity; space: UserSpace; endpoint: RunnerEndpoint }];
  /** A chat turn ended, however it ended; `ranTools`: whether any tool ran in it (none: it changed no file). */
  "turn.ended": [{ identity: Identity; space: UserSpace; ranTools: boolean }];
}

export class TurnEvents {
  private readonly emitter = new EventEmitter();

  on<K extends keyof TurnEventMap>(name: K, listener: (...args: TurnEventMap[K]) => void): void {
    this.emitter.on(name, listener as (...args: unknown[]) => void);
  }

  /** Listeners run synchronously; one that throws must not break the turn that emitted. */
  emit<K extends keyof TurnEventMap>(name: K, ...args: TurnEventMap[K]): void {
    for (const listener of this.emitter.listeners(name)) {
      try {
        (listener as (...a: TurnEventMap[K]) => void)(...args);
      } catch {
        /* a subscriber's own failure is its own to log */
      }
    }
  }
}
