/**
 * Prepares and runs chat turns: finds the user's runner and the chat's session (creating or
 * recreating it), then streams one prompt through it. Everything that can fail with an HTTP
 * status (runner unavailable, cap reached) fails in `prepare*`, before any byte is streamed.
 */
import { ClientClosedError, RateLimitError, turnError, type ApiError } from "../errors/api-error.js";
import type { Identity } from "../auth/identity.js";
import type { Logger } from "../log/logger.js";
import { SessionNotFoundError, type PromptBody, type PermissionRule } from "../opencode/client.js";
import type { Runner, RunnerEndpoint } from "../runners/runner.js";
import { ConcurrencyLimiter } from "../limits/concurrency.js";
import { KeyedMutex } from "../sessions/keyed-mutex.js";
import type { SessionStore } from "../sessions/session-store.js";
import type { WorkspaceObserver } from "../sync/sync-service.js";
import { ensureUserSpace, userSpace, type UserSpace } from "../workspace/user-space.js";
import { runPrompt, TurnStop, type RunLimits } from "./agent-run.js";
import { DEFAULT_MAX_IMAGES, history, latestUserTurn, systemPrompt, textOf, toPromptParts, transcript } from "./conversation.js";
import type { ChatMessage } from "./request-schema.js";
import type { TurnOutput } from "./turn-translator.js";

export type AgentName = "build" | "plan";

export interface TurnRequest {
  identity: Identity;
  chatKey: string;
  agent: AgentName;
  messages: ChatMessage[];
  log: Logger;
  /** The request's life: preparing stops as soon as it aborts (the client left, or shutdown). */
  signal: AbortSignal;
}

export interface PreparedTurn {
  sessionId: string;
  /** Runs the prompt; ends the opencode run when `signal` aborts or iteration stops. */
  run(signal: AbortSignal): AsyncGenerator<TurnOutput>;
}

/** Everything a prepared chat turn needs to run. */
interface LockedTurn {
  ep: RunnerEndpoint;
  space: UserSpace;
  req: TurnRequest;
  sessionId: string;
  body: PromptBody;
  /** The conversation before this turn (seeds a recreated session). */
  earlier: ChatMessage[];
  title: string;
  /** Frees the user's concurrency slot and the runner's in-use mark. */
  release: () => void;
}

export interface ChatServiceDeps {
  runner: Runner;
  store: SessionStore;
  workspaceRoot: string;
  stateRoot: string;
  maxConcurrentRunsPerUser: number;
  maxImagesPerRequest?: number;
  limits: RunLimits;
  /** Told when a user's runner is used and when a turn ends (knowledge-base sync). */
  observer?: WorkspaceObserver;
}

/** Background tasks get a throwaway session in which every tool is denied. */
const DENY_ALL: PermissionRule[] = [{ permission: "*", pattern: "*", action: "deny" }];
const NO_TOOLS = Object.fromEntries(
  ["bash", "edit", "write", "read", "list", "glob", "grep", "webfetch", "websearch", "task", "todowrite", "todoread", "patch", "skill", "question", "lsp"].map(
    (t) => [t, false],
  ),
);

export class ChatService {
  private readonly sessionLocks = new KeyedMutex();
  private readonly limiter: ConcurrencyLimiter;
  private readonly spaces = new Set<string>();

  constructor(private readonly deps: ChatServiceDeps) {
    this.limiter = new ConcurrencyLimiter(deps.maxConcurrentRunsPerUser);
  }

  async prepare(req: TurnRequest): Promise<PreparedTurn> {
    const release = this.limiter.tryAcquire(req.identity.userHash);
    if (!release) {
      throw new RateLimitError(`Too many concurrent chats for this user (max ${this.deps.maxConcurrentRunsPerUser})`, "concurrency_limit");
    }
    const space = this.space(req.identity);
    // In use from here: nothing may stop or recycle the runner while the turn is prepared.
    const inUse = this.deps.runner.use(space);
    const releaseAll = () => {
      inUse();
      release();
    };
    try {
      await this.ensureSpace(space);
      // Converted first: a bad attachment is a 400 before anything is created.
      const body: PromptBody = { parts: toPromptParts(latestUserTurn(req.messages), this.imageLimits()), agent: req.agent, system: systemPrompt(req.messages) };
      // A cold start can take a minute: a client that leaves meanwhile gets no agent run.
      const ep = await whileWanted(this.deps.runner.ensure(space), req.signal);
      this.deps.observer?.attach(req.identity, space, ep);
      const earlier = history(req.messages);
      const title = titleFor(req.messages);
      const { sessionId, created, saved } = await this.deps.store.getOrCreate(space.stateDir, req.chatKey, async () => {
        const s = await ep.client.createSession(ep.directory, title);
        req.log.info({ sessionId: s.id }, "opencode session created");
        return s.id;
      });
      stopIfUnwanted(req.signal);
      // The map is written while the first prompt already runs; a failed write only costs
      // the chat its session on the next request (which then starts a seeded one).
      saved.catch((e) => req.log.error({ err: (e as Error).message }, "could not save the session map"));
      // A client resent history we have no session for (e.g. state was reset): seed it.
      if (created && earlier.length) await this.seed(ep, sessionId, earlier);

      const turn: LockedTurn = { ep, space, req, sessionId, body, earlier, title, release: releaseAll };
      return { sessionId, run: (signal) => this.runLocked(turn, signal) };
    } catch (e) {
      releaseAll();
      throw e;
    }
  }

  /** An Open WebUI background task: answered by the model, outside the chat's session. */
  async prepareTask(identity: Identity, messages: ChatMessage[], log: Logger, signal: AbortSignal): Promise<PreparedTurn> {
    const lastUser = [...messages].reverse().find((m) => m.role === "user");
    const body: PromptBody = { parts: toPromptParts(lastUser ? [lastUser] : [], this.imageLimits()), tools: NO_TOOLS, system: systemPrompt(messages) };
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
    const { ep, space, req, sessionId, body, earlier, title, release } = turn;
    let unlock = await this.sessionLocks.acquire(sessionId);
    try {
      try {
        yield* runPrompt(ep, sessionId, body, signal, req.log, this.deps.limits);
      } catch (e) {
        if (!(e instanceof SessionNotFoundError)) throw e;
        // opencode lost the session: recreate it once, seeded with the conversation so far.
        const fresh = await this.deps.store.replace(space.stateDir, req.chatKey, sessionId, async () => {
          const s = await ep.client.createSession(ep.directory, title);
          await this.seed(ep, s.id, earlier);
          return s.id;
        });
        req.log.warn({ staleSessionId: sessionId, sessionId: fresh }, "opencode session was lost; recreated");
        unlock();
        unlock = await this.sessionLocks.acquire(fresh);
        yield* runPrompt(ep, fresh, body, signal, req.log, this.deps.limits);
      }
    } finally {
      unlock();
      release();
      this.deps.observer?.turnEnded(req.identity, space);
    }
  }

  private async seed(ep: RunnerEndpoint, sessionId: string, earlier: ChatMessage[]): Promise<void> {
    const text = transcript(earlier);
    if (text) await ep.client.prompt(sessionId, ep.directory, { parts: [{ type: "text", text }], noReply: true });
  }

  private imageLimits(): { maxImages: number } {
    return { maxImages: this.deps.maxImagesPerRequest ?? DEFAULT_MAX_IMAGES };
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

/** Why a request stopped being wanted, as the error that ends its preparation. */
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

function titleFor(messages: ChatMessage[]): string {
  const first = textOf(messages.find((m) => m.role === "user")).replace(/\s+/g, " ").trim();
  return first ? first.slice(0, 60) : "Open Persona chat";
}
