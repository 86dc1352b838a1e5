/**
 * Background responses (`background: true`): the turn runs detached from the request that
 * started it, so a long agent task no longer depends on one HTTP connection. Its events are
 * kept — in memory while it runs here, and in its log in the ResponseStore (bounded:
 * MAX_LOGGED_EVENTS) with the Response itself — so that `GET /v1/responses/{id}` returns its
 * state and `?stream=true&starting_after=N` replays and follows its events: after a restart,
 * and, with PostgreSQL, from any replica while another one runs it. A run whose process died
 * is reported failed (`sidecar_restarted`) once read back. A response is found for its owner
 * only: another user's id is unknown.
 */
import type { PreparedTurn } from "../chat/chat-service.js";
import type { TrackedTurn } from "../chat/turn-registry.js";
import { ApiError, RunnerError, turnError } from "../errors/api-error.js";
import type { Logger } from "../log/logger.js";
import type { ResponseBuilder } from "./response-builder.js";
import type { ResponseStore } from "./response-store.js";
import type { ResponseObject, StreamEvent } from "./wire.js";

/** Past this many events a run's log stops growing (its Response is still saved whole). */
const MAX_LOGGED_EVENTS = 50_000;
/** How often a run asks whether another replica was told to cancel it. */
const CANCEL_CHECK_MS = 500;
/** How long a follower on another replica waits at most before looking again. */
const FOLLOW_POLL_MS = 500;
/** How long a cancel sent to another replica's run waits for its final state. */
const REMOTE_CANCEL_TIMEOUT_MS = 30_000;

interface LiveRun {
  userHash: string;
  builder: ResponseBuilder;
  events: StreamEvent[];
  listeners: Set<() => void>;
  cancel: AbortController;
  done: Promise<void>;
}

/** The events a response's stream ends with. */
const TERMINAL = new Set(["response.completed", "response.failed", "response.incomplete"]);

const finished = (r: ResponseObject) => r.status !== "in_progress" && r.status !== "queued";

export class BackgroundRuns {
  private readonly live = new Map<string, LiveRun>();

  constructor(private readonly store: ResponseStore) {}

  /** Keeps a finished foreground response, so that GET finds it too. */
  remember(userHash: string, response: ResponseObject): Promise<void> {
    return this.store.save(userHash, response);
  }

  /** Runs `turn` detached; `tracked` ends with it (a shutdown drains it like any turn). */
  async start(userHash: string, builder: ResponseBuilder, turn: PreparedTurn, tracked: TrackedTurn, log: Logger): Promise<void> {
    const id = builder.response.id;
    const run: LiveRun = { userHash, builder, events: [], listeners: new Set(), cancel: new AbortController(), done: Promise.resolve() };
    const started = builder.start();
    // Saved before its first event: its log belongs to it, and any replica may read it now.
    await this.store.save(userHash, builder.response);
    this.live.set(id, run);
    this.record(run, started);
    // Its first events too: a client told it was created may follow it from any replica at once.
    await this.store.flush(id);
    const signal = AbortSignal.any([tracked.signal, run.cancel.signal]);
    const watch = setInterval(() => {
      void this.store.cancelRequested(id).then((yes) => yes && run.cancel.abort(), () => {});
    }, CANCEL_CHECK_MS);
    run.done = (async () => {
      try {
        for await (const out of turn.run(signal)) {
          if (out.kind === "error") {
            const err = turnError(out);
            this.record(run, builder.fail(err.code ?? out.code, err.message, err.type));
          } else this.record(run, builder.push(out));
        }
      } catch (e) {
        log.error({ err: (e as Error).message }, "background response failed");
        const err = e instanceof ApiError ? e : new RunnerError("The agent run failed", "runner_error");
        this.record(run, builder.fail(err.code ?? "runner_error", err.message, err.type));
      } finally {
        clearInterval(watch);
        if (run.cancel.signal.aborted) this.record(run, builder.cancel());
        else if (!builder.done) this.record(run, builder.fail("runner_error", "The agent run ended without an answer"));
        tracked.end();
        // The log before the final state: whoever sees the run finished can read all of it.
        await this.store.flush(id).catch((e: Error) => log.error({ err: e.message }, "background response: could not write its events"));
        await this.store.save(userHash, builder.response).catch((e: Error) => log.error({ err: e.message }, "background response: could not save"));
        this.live.delete(id);
        this.notify(run);
        log.info({ responseId: id, status: builder.response.status }, "background response ended");
      }
    })();
  }

  /** The Response as it stands, or undefined when the caller has none by that id. */
  async get(userHash: string, id: string): Promise<ResponseObject | undefined> {
    const run = this.live.get(id);
    if (run) return run.userHash === userHash ? structuredClone(run.builder.response) : undefined;
    const stored = await this.store.load(userHash, id);
    if (!stored) return undefined;
    const { response, runnerAlive } = stored;
    if (!finished(response) && !runnerAlive) {
      // Nothing runs it any more: its sidecar stopped while it ran.
      response.status = "failed";
      response.error = { type: "server_error", code: "sidecar_restarted", message: "The sidecar restarted while this response ran; send it again" };
      await this.store.markOrphaned(userHash, response).catch(() => {});
    }
    return response;
  }

  /** Asks a running response to stop; resolves once it has (its final state). */
  async cancel(userHash: string, id: string): Promise<ResponseObject | undefined> {
    const run = this.live.get(id);
    if (run && run.userHash === userHash) {
      run.cancel.abort();
      await run.done;
      return this.get(userHash, id);
    }
    let found = await this.get(userHash, id);
    if (!found || finished(found)) return found;
    // Another replica runs it: ask it, and wait (bounded) for the state it ends in.
    await this.store.requestCancel(userHash, id);
    const deadline = AbortSignal.timeout(REMOTE_CANCEL_TIMEOUT_MS);
    while (found && !finished(found) && !deadline.aborted) {
      await this.store.changed(id, FOLLOW_POLL_MS, deadline);
      found = await this.get(userHash, id);
    }
    return found;
  }

  /**
   * The response's events after `after` (a sequence number; -1 for all), then, while it runs,
   * each new one as it comes. Ends when the response has ended or `signal` aborts.
   */
  async *events(userHash: string, id: string, after: number, signal: AbortSignal): AsyncGenerator<StreamEvent> {
    const run = this.live.get(id);
    if (!run || run.userHash !== userHash) {
      yield* this.followStored(userHash, id, after, signal);
      return;
    }
    let next = after + 1;
    while (!signal.aborted) {
      while (next < run.events.length) yield run.events[next++]!;
      if (!this.live.has(id)) return;
      await new Promise<void>((resolve) => {
        const wake = () => {
          run.listeners.delete(wake);
          signal.removeEventListener("abort", wake);
          resolve();
        };
        run.listeners.add(wake);
        signal.addEventListener("abort", wake, { once: true });
      });
    }
  }

  /** Replays a stored log, and follows it while the replica running it is alive. */
  private async *followStored(userHash: string, id: string, after: number, signal: AbortSignal): AsyncGenerator<StreamEvent> {
    let last = after;
    while (!signal.aborted) {
      // Its state first: a run seen finished has its whole log written (see start).
      const state = await this.get(userHash, id);
      let ended = false;
      for (const e of await this.store.events(userHash, id, last)) {
        last = e.sequence_number;
        ended ||= TERMINAL.has(e.type);
        yield e;
      }
      if (!state) return;
      if (finished(state)) {
        // An orphan's log stops mid-run: end it the way every client expects a failure to end.
        if (!ended && state.status === "failed") yield { type: "response.failed", sequence_number: last + 1, response: state };
        return;
      }
      await this.store.changed(id, FOLLOW_POLL_MS, signal);
    }
  }

  private record(run: LiveRun, events: StreamEvent[]): void {
    if (!events.length) return;
    const before = run.events.length;
    run.events.push(...events);
    if (before < MAX_LOGGED_EVENTS) this.store.append(run.userHash, run.builder.response.id, events.slice(0, MAX_LOGGED_EVENTS - before));
    this.notify(run);
  }

  private notify(run: LiveRun): void {
    for (const wake of [...run.listeners]) wake();
  }
}
