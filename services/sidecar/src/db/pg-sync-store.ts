/**
 * The knowledge-base sync's state in PostgreSQL (sync/sync-store.ts), for replicas that all
 * hear the same file changes:
 * - the outbox is one row per (user, path): the same change queued by every replica is one
 *   row, and `version` counts changes, so a row is deleted after sending only if no change
 *   arrived meanwhile;
 * - one replica at a time works a user's outbox: a claim is a session-level advisory lock
 *   try-taken on a connection the pump keeps, and every write of the pump goes through that
 *   connection. The KB is created once and the manifest never races; a replica that dies
 *   (SIGKILL included) loses the connection, and PostgreSQL frees the user at once;
 * - times are the database's (`now()`), so replicas' clocks never enter into it.
 */
import type pg from "pg";
import type { Logger } from "../log/logger.js";
import type { ManifestEntry } from "../sync/sync-state.js";
import type { OutboxEntry, SyncChange, SyncClaim, SyncOutcome, SyncStatusRecord, SyncStore, SyncUser } from "../sync/sync-store.js";
import { DatabaseUnavailableError, unavailable, type Database } from "./database.js";

/** How many due users one poll hands out (the rest wait for the next one). */
const DUE_USERS_LIMIT = 100;

interface ManifestRow {
  path: string;
  file_id: string | null;
  hash: string;
  size: string;
  mtime_ms: number;
  synced_at: Date;
  note: string | null;
}

const MANIFEST_COLUMNS = "path, file_id, hash, size, mtime_ms, synced_at, note";

function manifestEntry(r: ManifestRow): ManifestEntry {
  return { ...(r.file_id ? { fileId: r.file_id } : {}), hash: r.hash, size: Number(r.size), mtimeMs: r.mtime_ms, syncedAt: r.synced_at.toISOString(), ...(r.note ? { note: r.note } : {}) };
}

const userRecord = (r: { user_id: string; kb_id: string | null; last_synced: SyncUser["lastSynced"] | null; last_error: SyncUser["lastError"] | null }): SyncUser => ({
  userId: r.user_id,
  kbId: r.kb_id ?? undefined,
  lastSynced: r.last_synced ?? undefined,
  lastError: r.last_error ?? undefined,
});

export class PgSyncStore implements SyncStore {
  readonly shared = true;

  constructor(
    private readonly db: Database,
    private readonly log: Logger,
  ) {}

  async users(): Promise<string[]> {
    return (await this.db.query<{ user_hash: string }>("SELECT user_hash FROM sync_users")).rows.map((r) => r.user_hash);
  }

  async ensureUser(hash: string, userId: string): Promise<void> {
    await this.db.query("INSERT INTO sync_users (user_hash, user_id) VALUES ($1, $2) ON CONFLICT (user_hash) DO NOTHING", [hash, userId]);
  }

  async status(hash: string): Promise<SyncStatusRecord | undefined> {
    const res = await this.db.query<{ last_synced: SyncUser["lastSynced"] | null; last_error: SyncUser["lastError"] | null; pending: number; pending_paths: string[]; synced: number }>(
      `SELECT u.last_synced, u.last_error,
              (SELECT count(*) FROM sync_outbox o WHERE o.user_hash = u.user_hash)::int AS pending,
              ARRAY(SELECT path FROM sync_outbox o WHERE o.user_hash = u.user_hash ORDER BY queued_at, path LIMIT 50) AS pending_paths,
              (SELECT count(*) FROM sync_manifest m WHERE m.user_hash = u.user_hash AND m.file_id IS NOT NULL)::int AS synced
         FROM sync_users u WHERE u.user_hash = $1`,
      [hash],
    );
    const r = res.rows[0];
    return r && { pending: r.pending, pendingPaths: r.pending_paths, syncedFiles: r.synced, lastSynced: r.last_synced ?? undefined, lastError: r.last_error ?? undefined };
  }

  async manifest(hash: string): Promise<Record<string, ManifestEntry>> {
    const res = await this.db.query<ManifestRow>(`SELECT ${MANIFEST_COLUMNS} FROM sync_manifest WHERE user_hash = $1`, [hash]);
    return Object.fromEntries(res.rows.map((r) => [r.path, manifestEntry(r)]));
  }

  async manifestEntry(hash: string, path: string): Promise<ManifestEntry | undefined> {
    const res = await this.db.query<ManifestRow>(`SELECT ${MANIFEST_COLUMNS} FROM sync_manifest WHERE user_hash = $1 AND path = $2`, [hash, path]);
    return res.rows[0] && manifestEntry(res.rows[0]);
  }

  async queue(hash: string, changes: SyncChange[], delayMs: number, maxDelayMs: number): Promise<number> {
    // One row per path (a statement may not update a row twice): the last change wins.
    const byPath = new Map(changes.map((c) => [c.path, c.op]));
    if (!byPath.size) return Infinity;
    const res = await this.db.query<{ due_in: number }>(
      `INSERT INTO sync_outbox AS o (user_hash, path, op, queued_at, next_at)
         SELECT $1, c.path, c.op, now(), now() + LEAST($4::float8, $5::float8) * interval '1 millisecond'
           FROM unnest($2::text[], $3::text[]) AS c(path, op)
       ON CONFLICT (user_hash, path) DO UPDATE SET
         op = EXCLUDED.op,
         -- Debounce, but never past maxDelay after the first change; a retry keeps its backoff.
         next_at = GREATEST(CASE WHEN o.attempts > 0 THEN o.next_at END,
                            LEAST(now() + $4::float8 * interval '1 millisecond', o.queued_at + $5::float8 * interval '1 millisecond')),
         version = o.version + 1
       RETURNING GREATEST(0, extract(epoch FROM next_at - now()) * 1000)::float8 AS due_in`,
      [hash, [...byPath.keys()], [...byPath.values()], delayMs, maxDelayMs],
    );
    return Math.min(...res.rows.map((r) => r.due_in));
  }

  async nextDueIn(hash: string): Promise<number | undefined> {
    const res = await this.db.query<{ due_in: number | null }>("SELECT (extract(epoch FROM min(next_at) - now()) * 1000)::float8 AS due_in FROM sync_outbox WHERE user_hash = $1", [hash]);
    const dueIn = res.rows[0]?.due_in;
    return dueIn === null || dueIn === undefined ? undefined : Math.max(0, dueIn);
  }

  async dueUsers(): Promise<string[]> {
    const res = await this.db.query<{ user_hash: string }>(
      "SELECT user_hash FROM sync_outbox WHERE next_at <= now() GROUP BY user_hash ORDER BY min(next_at) LIMIT $1",
      [DUE_USERS_LIMIT],
    );
    return res.rows.map((r) => r.user_hash);
  }

  async claim(hash: string): Promise<SyncClaim | undefined> {
    const client = await this.db.connect();
    const lockKey = JSON.stringify(["sync", hash]);
    let user: SyncUser;
    try {
      const got = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS ok", [lockKey]);
      if (!got.rows[0]!.ok) {
        client.release();
        return undefined;
      }
      const row = (await client.query("SELECT user_id, kb_id, last_synced, last_error FROM sync_users WHERE user_hash = $1", [hash])).rows[0];
      if (!row) {
        await client.query("SELECT pg_advisory_unlock(hashtextextended($1, 0))", [lockKey]);
        client.release();
        return undefined;
      }
      user = userRecord(row);
    } catch (e) {
      client.release(e as Error);
      throw unavailable(e) ? new DatabaseUnavailableError(e) : e;
    }
    return new PgSyncClaim(client, hash, lockKey, user, this.log);
  }

  async flush(): Promise<void> {
    // Every write is awaited where it is made.
  }
}

/** A held claim: its queries, and its writes all in transactions, on the connection that holds the lock. */
class PgSyncClaim implements SyncClaim {
  private broken?: Error;
  private released = false;

  constructor(
    private readonly client: pg.PoolClient,
    private readonly hash: string,
    private readonly lockKey: string,
    readonly user: SyncUser,
    private readonly log: Logger,
  ) {
    // The connection died (the server restarted, or ended it): the lock is gone with it.
    client.once("error", (e) => (this.broken ??= e));
  }

  async nextDue(): Promise<OutboxEntry | undefined> {
    const res = await this.run<{ path: string; op: OutboxEntry["op"]; attempts: number; last_error: string | null; version: string }>(
      "SELECT path, op, attempts, last_error, version FROM sync_outbox WHERE user_hash = $1 AND next_at <= now() ORDER BY next_at, path LIMIT 1",
      [this.hash],
    );
    const r = res.rows[0];
    return r && { path: r.path, op: r.op, attempts: r.attempts, lastError: r.last_error ?? undefined, version: Number(r.version) };
  }

  async setKb(kbId: string | undefined, forgetManifest = false): Promise<number> {
    return this.transaction(async () => {
      await this.run("UPDATE sync_users SET kb_id = $2 WHERE user_hash = $1", [this.hash, kbId ?? null]);
      this.user.kbId = kbId;
      return forgetManifest ? ((await this.run("DELETE FROM sync_manifest WHERE user_hash = $1", [this.hash])).rowCount ?? 0) : 0;
    });
  }

  async complete(entry: OutboxEntry, outcome: SyncOutcome): Promise<void> {
    await this.transaction(async () => {
      const m = outcome.manifest;
      if (m === null) await this.run("DELETE FROM sync_manifest WHERE user_hash = $1 AND path = $2", [this.hash, entry.path]);
      else if (m) {
        await this.run(
          `INSERT INTO sync_manifest (user_hash, ${MANIFEST_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (user_hash, path) DO UPDATE SET file_id = EXCLUDED.file_id, hash = EXCLUDED.hash, size = EXCLUDED.size,
             mtime_ms = EXCLUDED.mtime_ms, synced_at = EXCLUDED.synced_at, note = EXCLUDED.note`,
          [this.hash, entry.path, m.fileId ?? null, m.hash, m.size, m.mtimeMs, m.syncedAt, m.note ?? null],
        );
      }
      if (outcome.lastSynced) {
        await this.run("UPDATE sync_users SET last_synced = $2 WHERE user_hash = $1", [this.hash, JSON.stringify(outcome.lastSynced)]);
        this.user.lastSynced = outcome.lastSynced;
      }
      await this.run("DELETE FROM sync_outbox WHERE user_hash = $1 AND path = $2 AND version = $3", [this.hash, entry.path, entry.version]);
    });
  }

  async fail(entry: OutboxEntry, retryInMs: number | undefined, error: NonNullable<SyncUser["lastError"]>): Promise<void> {
    await this.transaction(async () => {
      const where = "WHERE user_hash = $1 AND path = $2 AND version = $3";
      if (retryInMs === undefined) await this.run(`DELETE FROM sync_outbox ${where}`, [this.hash, entry.path, entry.version]);
      else {
        await this.run(`UPDATE sync_outbox SET attempts = attempts + 1, next_at = now() + $4::float8 * interval '1 millisecond', last_error = $5 ${where}`, [
          this.hash,
          entry.path,
          entry.version,
          retryInMs,
          error.message,
        ]);
      }
      await this.run("UPDATE sync_users SET last_error = $2 WHERE user_hash = $1", [this.hash, JSON.stringify(error)]);
      this.user.lastError = error;
    });
  }

  /** Unlocks and gives the connection back; a connection that cannot unlock is closed (which unlocks). */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (!this.broken) {
      try {
        await this.client.query("SELECT pg_advisory_unlock(hashtextextended($1, 0))", [this.lockKey]);
      } catch (e) {
        this.broken = e as Error;
        this.log.warn({ user: this.hash, err: this.broken.message }, "could not release a sync claim; closing its connection");
      }
    }
    this.client.release(this.broken);
  }

  private async transaction<T>(fn: () => Promise<T>): Promise<T> {
    await this.run("BEGIN");
    try {
      const out = await fn();
      await this.run("COMMIT");
      return out;
    } catch (e) {
      if (!this.broken) await this.client.query("ROLLBACK").catch((r: Error) => (this.broken = r));
      throw e;
    }
  }

  /** One query on the claim's connection; once it broke (the lock is gone with it), nothing more is written. */
  private async run<R extends pg.QueryResultRow>(sql: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
    if (this.broken) throw new DatabaseUnavailableError(this.broken);
    try {
      return await this.client.query<R>(sql, values);
    } catch (e) {
      // A client whose connection failed says so only in words ("not queryable").
      if (!unavailable(e) && !this.broken && !/not queryable/i.test((e as Error).message)) throw e;
      this.broken ??= e as Error;
      throw new DatabaseUnavailableError(e);
    }
  }
}
