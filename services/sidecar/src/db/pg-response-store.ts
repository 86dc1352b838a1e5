/**
 * Responses and background runs' event logs in PostgreSQL (responses/response-store.ts): any
 * replica returns a Response, replays its log and follows it while another replica runs it
 * (woken by that replica's `pg_notify`, polling as a fallback), and passes a cancel on. A run
 * is an orphan once its owner's presence lock is gone (db/pg-presence.ts).
 */
import type { Logger } from "../log/logger.js";
import type { ResponseStore, StoredResponse } from "../responses/response-store.js";
import type { ResponseObject, StreamEvent } from "../responses/wire.js";
import type { Database } from "./database.js";
import { RESPONSES_CHANNEL, type PgPresence } from "./pg-presence.js";

interface Log {
  userHash: string;
  /** Events not written yet. */
  buffer: StreamEvent[];
  /** The write under way: at most one per response, so the log stays in order. */
  writing?: Promise<void>;
}

const unfinished = (status: string) => status === "in_progress" || status === "queued";

export class PgResponseStore implements ResponseStore {
  private readonly logs = new Map<string, Log>();

  constructor(
    private readonly db: Database,
    private readonly presence: PgPresence,
    private readonly log: Logger,
  ) {}

  async save(userHash: string, response: ResponseObject): Promise<void> {
    await this.db.query(
      `WITH saved AS (
         INSERT INTO responses (id, user_hash, status, body, owner) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body, owner = EXCLUDED.owner, updated_at = now()
         WHERE responses.user_hash = EXCLUDED.user_hash
       )
       SELECT pg_notify($6, $1)`,
      [response.id, userHash, response.status, JSON.stringify(response), this.presence.id, RESPONSES_CHANNEL],
    );
  }

  append(userHash: string, id: string, events: StreamEvent[]): void {
    let log = this.logs.get(id);
    if (!log) this.logs.set(id, (log = { userHash, buffer: [] }));
    log.buffer.push(...events);
    // While a write is under way, events gather into the next one (a batch per round trip).
    log.writing ??= this.write(id, log);
  }

  async flush(id: string): Promise<void> {
    const log = this.logs.get(id);
    if (!log) return;
    if (log.writing) await log.writing;
    // What a failed write left behind gets one more try; then the log is done with.
    if (log.buffer.length) await this.write(id, log);
    this.logs.delete(id);
  }

  private async write(id: string, log: Log): Promise<void> {
    while (log.buffer.length) {
      const batch = log.buffer.splice(0);
      try {
        await this.db.query(
          `WITH written AS (
             INSERT INTO response_events (response_id, seq, event)
             SELECT $1, seq, event FROM unnest($2::int[], $3::json[]) AS e(seq, event)
             ON CONFLICT DO NOTHING
           )
           SELECT pg_notify($4, $1)`,
          [id, batch.map((e) => e.sequence_number), batch.map((e) => JSON.stringify(e)), RESPONSES_CHANNEL],
        );
      } catch (e) {
        // Kept for the next write (the run goes on; followers see a gap close later).
        log.buffer.unshift(...batch);
        this.log.warn({ responseId: id, err: (e as Error).message }, "could not write a response's events");
        break;
      }
    }
    log.writing = undefined;
  }

  async load(userHash: string, id: string): Promise<StoredResponse | undefined> {
    const res = await this.db.query<{ body: ResponseObject; status: string; owner: string }>("SELECT body, status, owner FROM responses WHERE id = $1 AND user_hash = $2", [id, userHash]);
    const row = res.rows[0];
    if (!row) return undefined;
    return { response: row.body, runnerAlive: unfinished(row.status) && (await this.presence.alive(row.owner)) };
  }

  async events(userHash: string, id: string, after: number): Promise<StreamEvent[]> {
    const res = await this.db.query<{ event: StreamEvent }>(
      `SELECT e.event FROM response_events e JOIN responses r ON r.id = e.response_id
       WHERE e.response_id = $1 AND r.user_hash = $2 AND e.seq > $3 ORDER BY e.seq`,
      [id, userHash, after],
    );
    return res.rows.map((r) => r.event);
  }

  async markOrphaned(userHash: string, response: ResponseObject): Promise<void> {
    // Only while still unfinished: a run that did end meanwhile keeps its own final state.
    await this.db.query("UPDATE responses SET status = $3, body = $4, updated_at = now() WHERE id = $1 AND user_hash = $2 AND status IN ('in_progress', 'queued')", [
      response.id,
      userHash,
      response.status,
      JSON.stringify(response),
    ]);
  }

  async requestCancel(userHash: string, id: string): Promise<void> {
    await this.db.query("UPDATE responses SET cancel_requested = true WHERE id = $1 AND user_hash = $2", [id, userHash]);
  }

  async cancelRequested(id: string): Promise<boolean> {
    const res = await this.db.query<{ cancel_requested: boolean }>("SELECT cancel_requested FROM responses WHERE id = $1", [id]);
    return !!res.rows[0]?.cancel_requested;
  }

  changed(id: string, maxMs: number, signal: AbortSignal): Promise<void> {
    return this.presence.changed(id, maxMs, signal);
  }
}
