/**
 * A runner is where a user's agent runs. The sidecar only ever talks to opencode through the
 * endpoint a runner hands out, so every mode (local process, shared server, one container per
 * user) looks the same to the chat code.
 *
 * Lifecycle, state by state (after JupyterHub's Spawner):
 * - `start()`: called once at boot. Spawns or adopts what the mode needs; must not throw for
 *   a runner that is merely slow (ensure() waits for readiness).
 * - `ensure(space)`: returns a ready endpoint for this user, starting or restarting whatever
 *   is needed. Concurrent calls for one user share one start. Throws RunnerUnavailableError
 *   (503) when the runner cannot become ready in time.
 * - `use(space)`: marks the user's runner as in use until the returned function is called;
 *   idle policies must not stop a runner in use (a turn can outlast any idle timeout).
 * - `health()`: cheap probe for /readyz; never starts anything.
 * - `stop()`: ends everything this runner started (never a user's data); idempotent.
 */
import type { OpencodeClient } from "../opencode/client.js";
import type { EventHub } from "../opencode/event-hub.js";
import type { UserSpace } from "../workspace/user-space.js";

export interface RunnerEndpoint {
  client: OpencodeClient;
  events: EventHub;
  /** The user's workspace as the opencode server sees it (the session directory). */
  directory: string;
}

export interface RunnerHealth {
  ready: boolean;
  detail: string;
}

export interface Runner {
  readonly mode: string;
  start(): Promise<void>;
  ensure(space: UserSpace): Promise<RunnerEndpoint>;
  use(space: UserSpace): () => void;
  health(): Promise<RunnerHealth>;
  stop(): Promise<void>;
}

/**
 * Uses of users' runners shared between replicas (db/pg-runner-use.ts), so that an idle
 * policy counts every replica's turns, not only its own.
 */
export interface RunnerUse {
  /** The user's runner is being used now (fire and forget). */
  touch(userHash: string): void;
  /** Whether any replica used it within the last `ms`. */
  usedWithin(userHash: string, ms: number): Promise<boolean>;
}
