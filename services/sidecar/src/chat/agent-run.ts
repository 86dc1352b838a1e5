/**
 * Runs one prompt in an opencode session and yields the turn's outputs as the events arrive.
 * The session subscription is taken before the prompt is sent, so nothing is missed.
 *
 * Every run ends, and the client is told why:
 * - the client left (`signal` aborts without a reason) → the opencode run is aborted, silently;
 * - the sidecar stopped it (`signal` aborts with a {@link TurnStop}, e.g. at shutdown), the
 *   agent went silent for `idleTimeoutMs` (keep-alives to the client do not count), the turn
 *   outlived `maxTurnMs`, or opencode retried a failing provider `maxRetries` times → the run
 *   is aborted and the turn ends with that error.
 * A transient loss of the event stream is bridged from the messages API. Permission and
 * question requests are rejected at once: nobody can answer them behind a chat API, and an
 * unanswered one would hang the run forever.
 */
import type { Logger } from "../log/logger.js";
import type { PromptBody } from "../opencode/client.js";
import type { OpencodeEvent } from "../opencode/events.js";
import type { RunnerEndpoint } from "../runners/runner.js";
import { AsyncQueue } from "./async-queue.js";
import { providerFailure, type ProviderRef, type TurnFailure } from "./provider-failure.js";
import { TurnTranslator, type TurnOutput } from "./turn-translator.js";

/** After an abort, how long to wait for opencode to confirm before letting go. */
const ABORT_GRACE_MS = 5000;
/** How long a turn waits for a lost event stream to come back before giving up. */
const RECONNECT_WAIT_MS = 10_000;

/** The sidecar ended a turn on purpose: the reason reaches the client as the turn's error. */
export class TurnStop implements TurnFailure {
  constructor(
    readonly message: string,
    readonly code: string,
    readonly retryAfterS?: number,
  ) {}
}

export interface RunLimits {
  /** No event from the agent for this long ends the turn (`agent_timeout`). */
  idleTimeoutMs: number;
  /** A turn's whole run may take this long. */
  maxTurnMs: number;
  /** opencode's retries of a failing provider call allowed before the turn fails. */
  maxRetries: number;
  /** Whether the operator chose a model (otherwise errors say how to). */
  modelConfigured: boolean;
}

export const DEFAULT_LIMITS: RunLimits = { idleTimeoutMs: 300_000, maxTurnMs: 3_600_000, maxRetries: 2, modelConfigured: true };

/**
 * The event stream broke but the hub is reconnecting: once it is back, read this turn's
 * messages (opencode has no event replay) and hand the translator what was missed. Events
 * that arrive meanwhile are queued and applied after, without repeating text.
 */
async function catchUp(ep: RunnerEndpoint, sessionId: string, promptAt: number, translator: TurnTranslator, log: Logger): Promise<TurnOutput[]> {
  const lost: OpencodeEvent = { type: "stream.lost", reason: "event stream did not come back", final: true };
  if (!(await ep.events.waitOpen(RECONNECT_WAIT_MS))) return translator.handle(lost);
  try {
    const [messages, status] = await Promise.all([ep.client.messages(sessionId, ep.directory), ep.client.sessionStatus(ep.directory)]);
    // This turn's assistant messages: created after the prompt (1 s of slack for clock skew).
    const mine = messages.filter((m) => m.info.role === "assistant" && (m.info.time?.created ?? 0) >= promptAt - 1000);
    const running = !!status[sessionId] && status[sessionId]!.type !== "idle";
    log.info({ messages: mine.length, running }, "event stream came back; caught up from the messages API");
    return translator.catchUp(mine, running);
  } catch (e) {
    log.warn({ err: (e as Error).message }, "could not catch up after a lost event stream");
    return translator.handle(lost);
  }
}

/** The provider as the runner names it (for "cannot reach X at URL"); undefined if it won't say. */
async function lookupProvider(ep: RunnerEndpoint, id: string | undefined, log: Logger): Promise<ProviderRef | undefined> {
  if (!id) return undefined;
  try {
    return (await ep.client.providers()).find((p) => p.id === id) ?? { id };
  } catch (e) {
    log.debug({ err: (e as Error).message }, "could not list the runner's providers");
    return { id };
  }
}

export async function* runPrompt(
  ep: RunnerEndpoint,
  sessionId: string,
  body: PromptBody,
  signal: AbortSignal,
  log: Logger,
  limits: RunLimits = DEFAULT_LIMITS,
): AsyncGenerator<TurnOutput> {
  const translator = new TurnTranslator(sessionId, limits.modelConfigured);
  const queue = new AsyncQueue<OpencodeEvent>();
  const startedAt = Date.now();
  let abortSent = false;
  let started = false;
  /** Set when the sidecar ends the run: told to the client once opencode confirmed. */
  let stop: TurnFailure | undefined;
  let provider: ProviderRef | undefined;
  let settled = false;
  const abortRun = () => {
    if (abortSent) return;
    abortSent = true;
    translator.aborted = true;
    ep.client.abort(sessionId, ep.directory).catch((e) => log.warn({ err: (e as Error).message }, "opencode abort failed"));
    queue.push({ type: "other", name: "sidecar.aborted" });
  };
  const onAbort = () => {
    if (signal.reason instanceof TurnStop) stop ??= signal.reason;
    abortRun();
  };

  const unsubscribe = ep.events.subscribe(sessionId, (event) => {
    if (event.type === "permission.asked") {
      log.warn({ permission: event.permission }, "rejecting an opencode permission request (headless)");
      ep.client.replyPermission(event.id, ep.directory, "reject").catch(() => {});
      return;
    }
    if (event.type === "question.asked") {
      ep.client.rejectQuestion(event.id, ep.directory).catch(() => {});
      return;
    }
    queue.push(event);
  });
  signal.addEventListener("abort", onAbort);

  try {
    if (signal.aborted) {
      onAbort();
      if (stop) yield { kind: "error", ...stop };
      return;
    }
    const promptAt = Date.now();
    await ep.client.promptAsync(sessionId, ep.directory, body);
    started = true;
    // Aborted while the prompt was in flight: the first abort may have found nothing to stop.
    if (abortSent) ep.client.abort(sessionId, ep.directory).catch(() => {});
    while (!translator.done && !abortSent) {
      const turnLeft = limits.maxTurnMs - (Date.now() - startedAt);
      const event = turnLeft > 0 ? await queue.next(Math.min(limits.idleTimeoutMs, turnLeft)) : undefined;
      if (!event) {
        stop = timedOut(limits, Date.now() - startedAt >= limits.maxTurnMs);
        log.warn({ code: stop.code, ms: Date.now() - startedAt }, "ending a stalled turn");
        abortRun();
        break;
      }
      if (event.type === "stream.lost" && !event.final) {
        for (const out of await catchUp(ep, sessionId, promptAt, translator, log)) yield out;
        continue;
      }
      for (const out of translator.handle(event)) {
        if (out.kind !== "retry") {
          yield out;
          continue;
        }
        provider ??= await lookupProvider(ep, out.model?.providerID, log);
        log.warn({ attempt: out.attempt, failure: out.failure, provider: provider?.id, message: out.message }, "model provider call failed; opencode retries");
        yield { ...out, provider };
        if (out.attempt >= limits.maxRetries) {
          stop = providerFailure(out.failure, provider, out.model, out.message, { retryAfterS: out.delayS, modelConfigured: limits.modelConfigured });
          abortRun();
          break;
        }
      }
    }
    if (stop) {
      await settleAbort(translator, queue, started);
      settled = true;
      yield { kind: "error", ...stop };
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    // The consumer left early (client gone): hold the session until opencode confirms the
    // abort, so that the next prompt is not merged into a run that is still going.
    if (started && !translator.done && !settled) {
      abortRun();
      await settleAbort(translator, queue, started);
    }
    unsubscribe();
  }
}

/** Waits (bounded) for opencode to confirm an abort: the session is idle before the lock goes. */
async function settleAbort(translator: TurnTranslator, queue: AsyncQueue<OpencodeEvent>, started: boolean): Promise<void> {
  if (!started) return;
  const deadline = Date.now() + ABORT_GRACE_MS;
  while (!translator.done && Date.now() < deadline) {
    const event = await queue.next(deadline - Date.now());
    if (!event) break;
    translator.handle(event);
  }
}

function timedOut(limits: RunLimits, whole: boolean): TurnStop {
  return whole
    ? new TurnStop(`The agent's turn exceeded its time limit of ${Math.round(limits.maxTurnMs / 1000)} s (TURN_MAX_MS) and was stopped`, "agent_timeout")
    : new TurnStop(
        `The agent sent nothing for ${Math.round(limits.idleTimeoutMs / 1000)} s (TURN_IDLE_TIMEOUT_MS): the model or a tool stalled, so the turn was stopped`,
        "agent_timeout",
      );
}
