/**
 * Where Responses live once made (`GET /v1/responses/{id}`, resuming a stream): the Response
 * object and, for background runs, its event log. Two backends behind one interface: files
 * under the owner's state dir (one process; the default) and PostgreSQL (replicas,
 * db/pg-response-store.ts), where a run may be read, followed or cancelled from any replica.
 */
import fs from "node:fs/promises";
import path from "node:path";
import type { ResponseObject, StreamEvent } from "./wire.js";

export interface StoredResponse {
  response: ResponseObject;
  /** The process that ran it still runs: an unfinished status is true, not an orphan's. */
  runnerAlive: boolean;
}

export interface ResponseStore {
  /** Writes the Response as it stands (creating it on first save); this process runs it. */
  save(userHash: string, response: ResponseObject): Promise<void>;
  /** Appends events to its log, in order (batched by the backend; `flush` waits for them). */
  append(userHash: string, id: string, events: StreamEvent[]): void;
  flush(id: string): Promise<void>;
  /** The caller's own Response only: another user's id is unknown. */
  load(userHash: string, id: string): Promise<StoredResponse | undefined>;
  /** Logged events with sequence number > `after`. */
  events(userHash: string, id: string, after: number): Promise<StreamEvent[]>;
  /** Marks a response whose runner died as failed, unless it has finished meanwhile. */
  markOrphaned(userHash: string, response: ResponseObject): Promise<void>;
  /** Asks whichever process runs it to cancel it (a run in this process is cancelled directly). */
  requestCancel(userHash: string, id: string): Promise<void>;
  cancelRequested(id: string): Promise<boolean>;
  /** Resolves when `id` may have changed elsewhere, or after `maxMs` (whichever first). */
  changed(id: string, maxMs: number, signal: AbortSignal): Promise<void>;
}

const ID = /^resp_[0-9a-f]{24}$/;

/**
 * One process owns a STATE_ROOT: a Response it does not run is not running anywhere, so an
 * unfinished one read back is an orphan of a previous process (`runnerAlive: false`).
 */
export class FileResponseStore implements ResponseStore {
  /** Per response, the chain of appends (in order, never overlapping). */
  private readonly writes = new Map<string, Promise<void>>();

  /** `stateDirOf`: a user hash → that user's state dir. */
  constructor(private readonly stateDirOf: (userHash: string) => string) {}

  async save(userHash: string, response: ResponseObject): Promise<void> {
    const dir = this.dirOf(userHash);
    await fs.mkdir(dir, { recursive: true });
    const file = path.join(dir, `${response.id}.json`);
    await fs.writeFile(`${file}.tmp`, JSON.stringify(response));
    await fs.rename(`${file}.tmp`, file);
  }

  append(userHash: string, id: string, events: StreamEvent[]): void {
    const line = events.map((e) => JSON.stringify(e)).join("\n") + "\n";
    const prev = this.writes.get(id) ?? Promise.resolve();
    const next = prev.then(() => fs.appendFile(path.join(this.dirOf(userHash), `${id}.events.jsonl`), line)).catch(() => {});
    this.writes.set(id, next);
    void next.then(() => this.writes.get(id) === next && this.writes.delete(id));
  }

  async flush(id: string): Promise<void> {
    await this.writes.get(id);
  }

  async load(userHash: string, id: string): Promise<StoredResponse | undefined> {
    if (!ID.test(id)) return undefined;
    try {
      const response = JSON.parse(await fs.readFile(path.join(this.dirOf(userHash), `${id}.json`), "utf8")) as ResponseObject;
      return { response, runnerAlive: false };
    } catch {
      return undefined;
    }
  }

  async events(userHash: string, id: string, after: number): Promise<StreamEvent[]> {
    if (!ID.test(id)) return [];
    try {
      const text = await fs.readFile(path.join(this.dirOf(userHash), `${id}.events.jsonl`), "utf8");
      return text
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as StreamEvent)
        .filter((e) => e.sequence_number > after);
    } catch {
      return [];
    }
  }

  markOrphaned(userHash: string, response: ResponseObject): Promise<void> {
    return this.save(userHash, response);
  }

  // Nothing else can run a response of this STATE_ROOT: a run here is cancelled directly.
  async requestCancel(): Promise<void> {}

  async cancelRequested(): Promise<boolean> {
    return false;
  }

  changed(_id: string, maxMs: number, signal: AbortSignal): Promise<void> {
    return sleep(maxMs, signal);
  }

  private dirOf(userHash: string): string {
    return path.join(this.stateDirOf(userHash), "responses");
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
