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
 * - `current(space)`: the ready endpoint this process holds for the user, if any (background
 *   readers such as the sync use it: they must not wake a runner stopped as idle).
 * - `state(space)`: absent → starting → ready → idle-stopped → (ready again) …, or gone (RunnerState).
 * - `stopIdle()`: the idle policy's pass (RUNNER_IDLE_TIMEOUT): never a runner in use.
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

/**
 * Where a user's runner is in its life, as this process can tell:
 * - `absent`: nothing was ever started for the user (no process, container or service);
 * - `starting`: a start is under way (ensure() waits for it);
 * - `ready`: a healthy server this process is connected to, its event stream open;
 * - `idle-stopped`: stopped by the idle policy; what it needs to come back is kept (the user's
 *   data always; the container or service spec in docker and swarm modes), so the next
 *   ensure() brings it back with the sessions it had;
 * - `gone`: it ended without the idle policy (process killed, container or service removed,
 *   task died, node lost); the next ensure() starts it again from the user's data.
 * A shared server has one life for everyone: `ready`, or `gone` while it does not answer.
 */
export type RunnerState = "absent" | "starting" | "ready" | "idle-stopped" | "gone";

export interface RunnerHealth {
  ready: boolean;
  detail: string;
}

/**
 * Where the sidecar reads a user's workspace (knowledge-base sync, artifacts): its own disk,
 * when the runner shares this machine's filesystem; or the runner's file API (opencode's
 * `/file`, `/file/content`), when the runner may run on any node of a cluster.
 */
export type WorkspaceReads = "disk" | "runner";

export interface Runner {
  readonly mode: string;
  readonly workspaceReads: WorkspaceReads;
  start(): Promise<void>;
  ensure(space: UserSpace): Promise<RunnerEndpoint>;
  use(space: UserSpace): () => void;
  /** The user's endpoint if this process has it ready now; never starts or wakes anything. */
  current(space: UserSpace): RunnerEndpoint | undefined;
  /** Where the user's runner is in its life (see RunnerState); asks the engine, never starts anything. */
  state(space: UserSpace): Promise<RunnerState>;
  /** Stops the runners idle past the idle timeout (also run on a timer); returns the user hashes stopped. */
  stopIdle(now?: number): Promise<string[]>;
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
