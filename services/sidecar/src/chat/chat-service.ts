/**
 * The turn core: prepares and runs turns, whatever API they came through (turn-input.ts).
 * Finds the user's runner and the chat's session (creating or recreating it, seeded with the
 * conversation the client resent), then streams one prompt through it. Everything that can
 * fail with an HTTP status (runner unavailable, cap reached) fails in `prepare*`, before any
 * byte is streamed. What other features need to know (a runner in use, a turn's end) goes
 * out as TurnEvents.
 */
import { ClientClosedError, RateLimitError, turnError, type ApiError } from "../errors/api-error.js";
import type { Identity } from "../auth/identity.js";
import type { Logger } from "../log/logger.js";
import { SessionNotFoundError, type PromptBody, type PermissionRule } from "../opencode/client.js";
import type { Runner, RunnerEndpoint } from "../runners/runner.js";
import { LocalTurnLocks, LocalUserSlots, type ChatSessions, type Release, type TurnLocks, type UserSlots } from "../sessions/chat-sessions.js";
import { ensureUserSpace, userSpace, type UserSpace } from "../workspace/user-space.js";
import { runPrompt, TurnStop, type RunLimits } from "./agent-run.js";
import type { TurnEvents } from "./turn-events.js";
import { transcript, type PastMessage, type TaskInput, type TurnInput } from "./turn-input.js";
import type { TurnOutput } from "./turn-translator.js";
import type { TurnWatch } from "../artifacts/artifact-service.js";

export type { AgentName } from "./turn-input.js";

export interface PreparedTurn {
  sessionId: string;
  /** Runs the prompt; ends the opencode run when `signal` aborts or iteration stops. */
  run(signal: AbortSignal): AsyncGenerator<TurnOutput>;
}

/** Everything a prepared chat turn needs to run. */
interface LockedTurn {
  ep: RunnerEndpoint;
  space: UserSpace;
  req: TurnInput;
  sessionId: string;
  body: PromptBody;
  /** Frees the user's concurrency slot and the runner's in-use mark. */
  release: () => void;
  /** The user's slot (its lock is taken beside it; `lost` if its database connection dies). */
  slot: Release;
}

export interface ChatServiceDeps {
  runner: Runner;
  /** chat → session (files, or PostgreSQL when replicas share state). */
  store: ChatSessions;
  /** One turn per session; default: this process only. */
  turnLocks?: TurnLocks;
  /** The per-user cap; default: this process only. */
  slots?: UserSlots;
  workspaceRoot: string;
  stateRoot: string;
  maxConcurrentRunsPerUser: number;
  limits: RunLimits;
  /** Where a runner in use and a turn's end are announced (knowledge-base sync listens). */
  events: TurnEvents;
  /** Finds what a finished turn made to look at (artifacts/); absent: nothing is shown. */
  artifacts?: ArtifactCollector;
}

export interface ArtifactCollector {
  /**
   * Follows a turn from its start, on the endpoint it runs on (through the runner, what it
   * changed is told by that runner's file events during the turn): collected at its end.
   */
  follow(space: UserSpace, ep: RunnerEndpoint): TurnWatch;
}

/** Background tasks get a throwaway session in which every tool is denied. */
const DENY_ALL: PermissionRule[] = [{ permission: "*", pattern: "*", action: "deny" }];
const NO_TOOLS = Object.fromEntries(
  ["bash", "edit", "write", "read", "list", "glob", "grep", "webfetch", "websearch", "task", "todowrite", "todoread", "patch", "skill", "question", "lsp"].map(
    (t) => [t, false],
  ),
);

export class ChatService {
  private readonly sessionLocks: TurnLocks;
  private readonly slots: UserSlots;
  private readonly spaces = new Set<string>();

  constructor(private readonly deps: ChatServiceDeps) {
    this.sessionLocks = deps.turnLocks ?? new LocalTurnLocks();
    this.slots = deps.slots ?? new LocalUserSlots(deps.maxConcurrentRunsPerUser);
  }

  async prepare(req: TurnInput): Promise<PreparedTurn> {
    const slot = await this.slots.tryAcquire(req.identity.userHash);
    if (!slot) {
      throw new RateLimitError(`Too many concurrent chats for this user (max ${this.deps.maxConcurrentRunsPerUser})`, "concurrency_limit");
    }
    const space = this.space(req.identity);
    // In use from here: nothing may stop or recycle the runner while the turn is prepared.
    const inUse = this.deps.runner.use(space);
    const releaseAll = () => {
      inUse();
      void slot();
    };
    try {
      await this.ensureSpace(space);
      const body: PromptBody = { parts: req.parts, agent: req.agent, system: req.system };
      // A cold start can take a minute: a client that leaves meanwhile gets no agent run.
      const ep = await whileWanted(this.deps.runner.ensure(space), req.signal);
      this.deps.events.emit("runner.used", { identity: req.identity, space, endpoint: ep });
      const { sessionId, created, saved } = await this.deps.store.getOrCreate(space, req.chatKey, async () => {
        const s = await ep.client.createSession(ep.directory, req.title);
        req.log.info({ sessionId: s.id }, "opencode session created");
        return s.id;
      });
      stopIfUnwanted(req.signal);
      // The map is written while the first prompt already runs; a failed write only costs
      // the chat its session on the next request (which then starts a seeded one).
      saved.catch((e) => req.log.error({ err: (e as Error).message }, "could not save the session map"));
      // A client resent history we have no session for (e.g. state was reset): seed it.
      if (created && req.earlier.length) await this.seed(ep, sessionId, req.earlier);

      const turn: LockedTurn = { ep, space, req, sessionId, body, release: releaseAll, slot };
      return { sessionId, run: (signal) => this.runLocked(turn, signal) };
    } catch (e) {
      releaseAll();
      throw e;
    }
  }

  /** An Open WebUI background task: answered by the model, outside the chat's session. */
  async prepareTask({ identity, parts, system, log, signal }: TaskInput): Promise<PreparedTurn> {
    const body: PromptBody = { parts, tools: NO_TOOLS, system };
    const space = this.space(identity);
    const inUse = this.deps.runner.use(space);
    let ep: RunnerEndpoint;
    let session: { id: string };
    try {
      await this.ensureSpace(space);
      ep = await whileWanted(this.deps.runner.ensure(space), signal);
      session = await ep.client.createSession(ep.directory, "Open WebUI background task", DENY_ALL);
    } catch (e) {
      inUse();
      throw e;
    }
    const limits = this.deps.limits;
    return {
      sessionId: session.id,
      run: async function* (this: void, signal: AbortSignal) {
        try {
          yield* runPrompt(ep, session.id, body, signal, log, limits);
        } finally {
          inUse();
          await ep.client.deleteSession(session.id, ep.directory).catch(() => {});
        }
      },
    };
  }

  /** Runs a chat turn holding its session's lock; recreates the session once if opencode lost it. */
  private async *runLocked(turn: LockedTurn, signal: AbortSignal): AsyncGenerator<TurnOutput> {
    const { ep, space, req, sessionId, body, release } = turn;
    let unlock = await this.sessionLocks.acquire(sessionId, turn.slot);
    // Files changed from here on are this turn's (the lock keeps the chat's other turns out).
    const watch = this.deps.artifacts?.follow(space, ep);
    const seen = { ranTools: false };
    try {
      await stopOrphanedRun(ep, sessionId, req.log);
      try {
        const held = whileHeld(signal, [turn.slot.lost, unlock.lost]);
        yield* this.withArtifacts(runPrompt(ep, sessionId, body, held, req.log, this.deps.limits), watch, req.log, seen);
      } catch (e) {
        if (!(e instanceof SessionNotFoundError)) throw e;
        // opencode lost the session: recreate it once, seeded with the conversation so far.
        const fresh = await this.deps.store.replace(space, req.chatKey, sessionId, async () => {
          const s = await ep.client.createSession(ep.directory, req.title);
          await this.seed(ep, s.id, req.earlier);
          return s.id;
        });
        req.log.warn({ staleSessionId: sessionId, sessionId: fresh }, "opencode session was lost; recreated");
        void unlock();
        unlock = await this.sessionLocks.acquire(fresh, turn.slot);
        const held = whileHeld(signal, [turn.slot.lost, unlock.lost]);
        yield* this.withArtifacts(runPrompt(ep, fresh, body, held, req.log, this.deps.limits), watch, req.log, seen);
      }
    } finally {
      watch?.close();
      void unlock();
      release();
      this.deps.events.emit("turn.ended", { identity: req.identity, space, ranTools: seen.ranTools });
    }
  }

  /**
   * The turn's outputs, with what it made to look at just before it finishes. A turn that ran
   * no tool changed no file: it is not looked for (a text-only answer pays nothing).
   */
  private async *withArtifacts(outputs: AsyncGenerator<TurnOutput>, watch: TurnWatch | undefined, log: Logger, seen: { ranTools: boolean }): AsyncGenerator<TurnOutput> {
    for await (const o of outputs) {
      if (o.kind === "tool-end") seen.ranTools = true;
      if (o.kind === "finish" && seen.ranTools && watch) {
        // Showing them is a courtesy: a failure here must not cost the answer.
        const found = await watch.collect(log).catch((e) => {
          log.warn({ err: (e as Error).message }, "could not collect artifacts");
          return undefined;
        });
        if (found && (found.items.length || found.more)) yield { kind: "artifacts", ...found };
      }
      yield o;
    }
  }

  private async seed(ep: RunnerEndpoint, sessionId: string, earlier: PastMessage[]): Promise<void> {
    const text = transcript(earlier);
    if (text) await ep.client.prompt(sessionId, ep.directory, { parts: [{ type: "text", text }], noReply: true });
  }

  /** Creates a user's directories once per process (not on every request). */
  private async ensureSpace(space: UserSpace): Promise<void> {
    if (this.spaces.has(space.hash)) return;
    await ensureUserSpace(space);
    this.spaces.add(space.hash);
  }

  private space(identity: Identity): UserSpace {
    return userSpace(this.deps.workspaceRoot, this.deps.stateRoot, identity.userHash);
  }
}

/** How long a turn waits for opencode to stop an orphaned run before going ahead anyway. */
const ORPHAN_STOP_MS = 5000;

/**
 * A session still busy when its lock is taken runs a turn nobody holds any more: its sidecar
 * died mid-turn (a replica killed, a crash), and opencode ran on. Stopped first — a prompt
 * sent into a busy session would be merged into that orphaned run.
 */
async function stopOrphanedRun(ep: RunnerEndpoint, sessionId: string, log: Logger): Promise<void> {
  const busy = async () => ((await ep.client.sessionStatus(ep.directory))[sessionId]?.type ?? "idle") !== "idle";
  if (!(await busy().catch(() => false))) return;
  log.warn({ sessionId }, "session busy with an orphaned run (its sidecar died mid-turn): stopping it");
  await ep.client.abort(sessionId, ep.directory).catch((e) => log.warn({ err: (e as Error).message }, "opencode abort failed"));
  const deadline = Date.now() + ORPHAN_STOP_MS;
  while (Date.now() < deadline && (await busy().catch(() => false))) await new Promise((r) => setTimeout(r, 100));
}

/** Why a request stopped being wanted, as the error that ends its preparation. */
/**
 * `signal`, also aborted when a lock or slot the turn holds is lost with its database
 * connection: the turn stops (a 503 its client sees) rather than run beside another replica's.
 */
function whileHeld(signal: AbortSignal, holds: Array<AbortSignal | undefined>): AbortSignal {
  const lost = holds.filter((s): s is AbortSignal => !!s);
  if (!lost.length) return signal;
  const ctl = new AbortController();
  const stop = () =>
    ctl.abort(new TurnStop("The sidecar lost its database connection during this turn and stopped it, so that the chat never runs twice at once; send it again", "database_unavailable", 5));
  for (const s of lost) {
    if (s.aborted) stop();
    else s.addEventListener("abort", stop, { once: true });
  }
  return AbortSignal.any([signal, ctl.signal]);
}

function unwanted(signal: AbortSignal): ApiError {
  return signal.reason instanceof TurnStop ? turnError(signal.reason) : new ClientClosedError();
}

function stopIfUnwanted(signal: AbortSignal): void {
  if (signal.aborted) throw unwanted(signal);
}

/** `work`, unless the request is abandoned first (the work itself goes on, shared or cached). */
function whileWanted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(unwanted(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(unwanted(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
