/**
 * The turn core's shared state in PostgreSQL (sessions/chat-sessions.ts):
 * - the session map is a table; a chat's first session is created under a transaction-level
 *   advisory lock on that chat, so racing replicas create exactly one;
 * - a session's turn lock and a user's slots are session-level advisory locks held by a
 *   connection the turn keeps: a replica that dies (SIGKILL included) loses its connections,
 *   and PostgreSQL frees its locks and slots at once. Nothing can stay stuck.
 * Lock keys are 64-bit hashes of a purpose and the ids (`hashtextextended`): a collision only
 * serializes two unrelated turns.
 */
import { createHash } from "node:crypto";
import type pg from "pg";
import type { Logger } from "../log/logger.js";
import type { ChatSessions, Release, TurnLocks, UserSlots } from "../sessions/chat-sessions.js";
import { KeyedMutex } from "../sessions/keyed-mutex.js";
import type { UserSpace } from "../workspace/user-space.js";
import { DatabaseUnavailableError, unavailable, type Database } from "./database.js";

const key = (...parts: string[]) => JSON.stringify(parts);

/** PostgreSQL text holds no NUL, which a chat key from a JSON body may contain: such a key is stored by its hash. */
export const storedKey = (chatKey: string) => (chatKey.includes("\u0000") ? `sha256:${createHash("sha256").update(chatKey).digest("hex")}` : chatKey);

export class PgChatSessions implements ChatSessions {
  constructor(private readonly db: Database) {}

  async getOrCreate(space: UserSpace, rawKey: string, create: () => Promise<string>) {
    const chatKey = storedKey(rawKey);
    const saved = Promise.resolve();
    const found = await this.lookup(space.hash, chatKey);
    if (found) return { sessionId: found, created: false, saved };
    return this.underChatLock(space.hash, chatKey, async (client) => {
      const again = await this.lookup(space.hash, chatKey, client);
      if (again) return { sessionId: again, created: false, saved };
      const sessionId = await create();
      await client.query("INSERT INTO chat_sessions (user_hash, chat_key, session_id) VALUES ($1, $2, $3)", [space.hash, chatKey, sessionId]);
      return { sessionId, created: true, saved };
    });
  }

  async replace(space: UserSpace, rawKey: string, staleId: string, create: () => Promise<string>): Promise<string> {
    const chatKey = storedKey(rawKey);
    return this.underChatLock(space.hash, chatKey, async (client) => {
      const current = await this.lookup(space.hash, chatKey, client);
      if (current && current !== staleId) return current;
      const sessionId = await create();
      await client.query(
        `INSERT INTO chat_sessions (user_hash, chat_key, session_id) VALUES ($1, $2, $3)
         ON CONFLICT (user_hash, chat_key) DO UPDATE SET session_id = EXCLUDED.session_id, created_at = now()`,
        [space.hash, chatKey, sessionId],
      );
      return sessionId;
    });
  }

  private async lookup(user: string, chatKey: string, client?: pg.PoolClient): Promise<string | undefined> {
    const sql = "SELECT session_id FROM chat_sessions WHERE user_hash = $1 AND chat_key = $2";
    const res = client ? await client.query<{ session_id: string }>(sql, [user, chatKey]) : await this.db.query<{ session_id: string }>(sql, [user, chatKey]);
    return res.rows[0]?.session_id;
  }

  /** `fn` in a transaction holding the chat's lock (released at commit or rollback, or with the connection). */
  private async underChatLock<T>(user: string, chatKey: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.db.connect();
    let broken: unknown;
    try {
      await client.query("BEGIN");
      await client.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", [key("chat", user, chatKey)]);
      const out = await fn(client);
      await client.query("COMMIT");
      return out;
    } catch (e) {
      await client.query("ROLLBACK").catch((r) => (broken = r));
      throw unavailable(e) ? new DatabaseUnavailableError(e) : e;
    } finally {
      client.release(broken instanceof Error ? broken : undefined);
    }
  }
}

/** A user slot's connection: the turn's session lock is taken on it too. */
const connectionOf = new WeakMap<Release, pg.PoolClient>();

/** How often a turn waiting for a session another replica is running asks again. */
const LOCK_POLL_MS = 100;

/**
 * One holder at a time per key across replicas (`purpose` keeps kinds of keys apart: a
 * session's turns, a user's runner start). Holders of this process queue in memory first (one
 * waiter per key asks PostgreSQL), then take the advisory lock on a connection they keep.
 */
export class PgTurnLocks implements TurnLocks {
  private readonly local = new KeyedMutex();

  constructor(
    private readonly db: Database,
    private readonly log: Logger,
    private readonly purpose = "turn",
  ) {}

  async acquire(id: string, within?: Release): Promise<Release> {
    const unlockLocal = await this.local.acquire(id);
    try {
      // On the turn's slot connection when it has one: a turn then holds one connection, not two.
      const shared = within && connectionOf.get(within);
      const client = shared ?? (await this.db.connect());
      const lockKey = key(this.purpose, id);
      try {
        while (!(await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS ok", [lockKey])).rows[0]!.ok) {
          await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
        }
      } catch (e) {
        if (!shared) client.release(e as Error);
        throw unavailable(e) ? new DatabaseUnavailableError(e) : e;
      }
      let released: Promise<void> | undefined;
      const lost = watchLoss(client);
      const unlock = "SELECT pg_advisory_unlock(hashtextextended($1, 0))";
      return Object.assign(
        () => (released ??= (shared ? unlockOnly(client, unlock, [lockKey], this.log, lost.stop) : releaseLock(client, unlock, [lockKey], this.log, lost.stop)).finally(unlockLocal)),
        { lost: lost.signal },
      );
    } catch (e) {
      unlockLocal();
      throw e;
    }
  }
}

/** At most `max` turns per user across replicas: slot i of a user is an advisory lock. */
export class PgUserSlots implements UserSlots {
  constructor(
    private readonly db: Database,
    private readonly max: number,
    private readonly log: Logger,
  ) {}

  async tryAcquire(userHash: string): Promise<Release | undefined> {
    const client = await this.db.connect();
    try {
      for (let slot = 0; slot < this.max; slot++) {
        const args = [key("slot", userHash), slot];
        const got = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock(hashtext($1), $2) AS ok", args);
        if (!got.rows[0]!.ok) continue;
        let released: Promise<void> | undefined;
        const lost = watchLoss(client);
        const release = Object.assign(() => (released ??= releaseLock(client, "SELECT pg_advisory_unlock(hashtext($1), $2)", args, this.log, lost.stop)), { lost: lost.signal });
        connectionOf.set(release, client);
        return release;
      }
      client.release();
      return undefined;
    } catch (e) {
      client.release(e as Error);
      throw unavailable(e) ? new DatabaseUnavailableError(e) : e;
    }
  }
}

/** Unlocks on a connection another hold keeps (the slot's, which gives it back). */
function unlockOnly(client: pg.PoolClient, sql: string, args: unknown[], log: Logger, unwatch: () => void): Promise<void> {
  unwatch();
  return client.query(sql, args).then(
    () => undefined,
    // The connection is broken, the lock with it; the slot's release closes it.
    (e: Error) => log.warn({ err: e.message }, "could not release an advisory lock"),
  );
}

/** Aborts `signal` if the connection holding a lock dies (the lock went with it). */
function watchLoss(client: pg.PoolClient): { signal: AbortSignal; stop: () => void } {
  const ctl = new AbortController();
  const onLoss = () => ctl.abort(new Error("the database connection holding this lock was lost"));
  client.on("error", onLoss);
  client.on("end", onLoss);
  return {
    signal: ctl.signal,
    stop: () => {
      client.off("error", onLoss);
      client.off("end", onLoss);
    },
  };
}

/** Unlocks and gives the connection back; a connection that cannot unlock is closed (which unlocks). */
function releaseLock(client: pg.PoolClient, sql: string, args: unknown[], log: Logger, unwatch: () => void): Promise<void> {
  unwatch();
  return client.query(sql, args).then(
    () => client.release(),
    (e: Error) => {
      log.warn({ err: e.message }, "could not release an advisory lock; closing its connection");
      client.release(e);
    },
  );
}
