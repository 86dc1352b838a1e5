/**
 * Background responses (`background: true`): the turn runs detached from the request that
 * started it, so a long agent task no longer depends on one HTTP connection. Its events are
 * kept — in memory while it runs, and appended to `<state dir>/responses/<id>.events.jsonl`
 * (bounded: MAX_LOGGED_EVENTS) with the Response itself in `<id>.json` — so that
 * `GET /v1/responses/{id}` returns its state and `?stream=true&starting_after=N` replays and
 * follows its events, also after a sidecar restart. A run that was in flight when its sidecar
 * died is reported failed (`sidecar_restarted`) once read back. Runs are found in their
 * owner's state dir only: another user's id is unknown.
 */
import { createWriteStream, type WriteStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import type { PreparedTurn } from "../chat/chat-service.js";
import type { TrackedTurn } from "../chat/turn-registry.js";
import { ApiError, RunnerError, turnError } from "../errors/api-error.js";
import type { Logger } from "../log/logger.js";
import type { ResponseBuilder } from "./response-builder.js";
import type { ResponseObject, StreamEvent } from "./wire.js";

/** Past this many events a run's log stops growing (its Response is still saved whole). */
const MAX_LOGGED_EVENTS = 50_000;
const ID = /^resp_[0-9a-f]{24}$/;

interface LiveRun {
  userHash: string;
  builder: ResponseBuilder;
  events: StreamEvent[];
  listeners: Set<() => void>;
  cancel: AbortController;
  log?: WriteStream;
  done: Promise<void>;
}

export class BackgroundRuns {
  private readonly live = new Map<string, LiveRun>();

  /** `stateDirOf`: a user hash → that user's state dir. */
  constructor(private readonly stateDirOf: (userHash: string) => string) {}

  /** Keeps a finished foreground response, so that GET finds it too. */
  async remember(userHash: string, response: ResponseObject): Promise<void> {
    await fs.mkdir(this.dirOf(userHash), { recursive: true });
    const file = path.join(this.dirOf(userHash), `${response.id}.json`);
    await fs.writeFile(`${file}.tmp`, JSON.stringify(response));
    await fs.rename(`${file}.tmp`, file);
  }

  /** Runs `turn` detached; `tracked` ends with it (a shutdown drains it like any turn). */
  async start(userHash: string, builder: ResponseBuilder, turn: PreparedTurn, tracked: TrackedTurn, log: Logger): Promise<void> {
    const dir = this.dirOf(userHash);
    await fs.mkdir(dir, { recursive: true });
    const id = builder.response.id;
    const run: LiveRun = { userHash, builder, events: [], listeners: new Set(), cancel: new AbortController(), done: Promise.resolve() };
    run.log = createWriteStream(path.join(dir, `${id}.events.jsonl`), { flags: "a" });
    run.log.on("error", (e) => log.error({ err: e.message }, "background response: event log failed"));
    this.live.set(id, run);
    this.record(run, builder.start());
    await this.save(run);
    const signal = AbortSignal.any([tracked.signal, run.cancel.signal]);
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
        if (run.cancel.signal.aborted) this.record(run, builder.cancel());
        else if (!builder.done) this.record(run, builder.fail("runner_error", "The agent run ended without an answer"));
        tracked.end();
        await this.save(run).catch((e: Error) => log.error({ err: e.message }, "background response: could not save"));
        await new Promise<void>((r) => (run.log ? run.log.end(r) : r()));
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
    if (!ID.test(id)) return undefined;
    let saved: ResponseObject;
    try {
      saved = JSON.parse(await fs.readFile(path.join(this.dirOf(userHash), `${id}.json`), "utf8")) as ResponseObject;
    } catch {
      return undefined;
    }
    if (saved.status === "in_progress" || saved.status === "queued") {
      // Nothing runs it any more: its sidecar stopped while it ran.
      saved.status = "failed";
      saved.error = { type: "server_error", code: "sidecar_restarted", message: "The sidecar restarted while this response ran; send it again" };
      await fs.writeFile(path.join(this.dirOf(userHash), `${id}.json`), JSON.stringify(saved)).catch(() => {});
    }
    return saved;
  }

  /** Asks a running response to stop; resolves once it has (its final state). */
  async cancel(userHash: string, id: string): Promise<ResponseObject | undefined> {
    const run = this.live.get(id);
    if (run && run.userHash === userHash) {
      run.cancel.abort();
      await run.done;
    }
    return this.get(userHash, id);
  }

  /**
   * The response's events after `after` (a sequence number; -1 for all), then, while it runs,
   * each new one as it comes. Ends when the response has ended or `signal` aborts.
   */
  async *events(userHash: string, id: string, after: number, signal: AbortSignal): AsyncGenerator<StreamEvent> {
    let next = after + 1;
    const run = this.live.get(id);
    if (!run || run.userHash !== userHash) {
      for (const e of await this.loggedEvents(userHash, id)) if (e.sequence_number >= next) yield e;
      return;
    }
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

  private record(run: LiveRun, events: StreamEvent[]): void {
    if (!events.length) return;
    run.events.push(...events);
    if (run.log && run.events.length <= MAX_LOGGED_EVENTS) run.log.write(events.map((e) => JSON.stringify(e)).join("\n") + "\n");
    this.notify(run);
  }

  private notify(run: LiveRun): void {
    for (const wake of [...run.listeners]) wake();
  }

  private save(run: LiveRun): Promise<void> {
    return this.remember(run.userHash, run.builder.response);
  }

  private async loggedEvents(userHash: string, id: string): Promise<StreamEvent[]> {
    if (!ID.test(id)) return [];
    try {
      const text = await fs.readFile(path.join(this.dirOf(userHash), `${id}.events.jsonl`), "utf8");
      return text
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as StreamEvent);
    } catch {
      return [];
    }
  }

  private dirOf(userHash: string): string {
    return path.join(this.stateDirOf(userHash), "responses");
  }
}
