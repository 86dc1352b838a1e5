/**
 * Runs one prompt in an opencode session and yields the turn's outputs as the events arrive.
 * The session subscription is taken before the prompt is sent, so nothing is missed.
 *
 * Ending early (client disconnect → `signal`, or the consumer stopping) aborts the opencode
 * run, idempotently. A transient loss of the event stream is bridged from the messages API. Permission and question requests are rejected at once: nobody can
 * answer them behind a chat API, and an unanswered one would hang the run forever.
 */
import type { Logger } from "../log/logger.js";
import type { PromptBody } from "../opencode/client.js";
import type { OpencodeEvent } from "../opencode/events.js";
import type { RunnerEndpoint } from "../runners/runner.js";
import { AsyncQueue } from "./async-queue.js";
import { TurnTranslator, type TurnOutput } from "./turn-translator.js";

/** After an abort, how long to wait for opencode to confirm before letting go. */
const ABORT_GRACE_MS = 5000;
/** How long a turn waits for a lost event stream to come back before giving up. */
const RECONNECT_WAIT_MS = 10_000;

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

export async function* runPrompt(
  ep: RunnerEndpoint,
  sessionId: string,
  body: PromptBody,
  signal: AbortSignal,
  log: Logger,
): AsyncGenerator<TurnOutput> {
  const translator = new TurnTranslator(sessionId);
  const queue = new AsyncQueue<OpencodeEvent>();
  let abortSent = false;
  let started = false;
  const abortRun = () => {
    if (abortSent) return;
    abortSent = true;
    translator.aborted = true;
    ep.client.abort(sessionId, ep.directory).catch((e) => log.warn({ err: (e as Error).message }, "opencode abort failed"));
    queue.push({ type: "other", name: "sidecar.aborted" });
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
  signal.addEventListener("abort", abortRun);

  try {
    if (signal.aborted) return;
    const promptAt = Date.now();
    await ep.client.promptAsync(sessionId, ep.directory, body);
    started = true;
    // Aborted while the prompt was in flight: the first abort may have found nothing to stop.
    if (abortSent) ep.client.abort(sessionId, ep.directory).catch(() => {});
    while (!translator.done && !abortSent) {
      const event = (await queue.next())!;
      if (event.type === "stream.lost" && !event.final) {
        for (const out of await catchUp(ep, sessionId, promptAt, translator, log)) yield out;
        continue;
      }
      for (const out of translator.handle(event)) yield out;
    }
  } finally {
    signal.removeEventListener("abort", abortRun);
    if (started && !translator.done) {
      // Hold the session until opencode confirms the abort, so that the next prompt is not
      // merged into a run that is still going.
      abortRun();
      const deadline = Date.now() + ABORT_GRACE_MS;
      while (!translator.done && Date.now() < deadline) {
        const event = await queue.next(deadline - Date.now());
        if (!event) break;
        translator.handle(event);
      }
    }
    unsubscribe();
  }
}
