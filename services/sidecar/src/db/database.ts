/**
 * PostgreSQL, where replicas share their state (DATABASE_URL). One pool per process; the
 * schema is migrated at start (node-pg-migrate, versioned files in ./migrations), under an
 * advisory lock that makes replicas starting at once wait for each other instead of failing.
 * A query that cannot reach the database is a clear 503 (`DatabaseUnavailableError`), never a
 * half-written map.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { runner } from "node-pg-migrate";
import pRetry from "p-retry";
import pg from "pg";
import { ApiError } from "../errors/api-error.js";
import type { Logger } from "../log/logger.js";

export class DatabaseUnavailableError extends ApiError {
  override readonly status = 503;
  override readonly type = "server_error";
  override readonly isRetryable = true;
  constructor(cause?: unknown) {
    super("The sidecar's database is unavailable; try again shortly", "database_unavailable");
    this.cause = cause;
    this.retryAfterS = 5;
  }
}

export interface DatabaseOptions {
  url: string;
  /** Connections this process may hold (a running turn holds one, for its user slot and session lock; one more is the replica's presence). */
  poolMax: number;
  log: Logger;
}

const MIGRATIONS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), "migrations");

export class Database {
  readonly pool: pg.Pool;
  private readonly watched = new WeakSet<pg.PoolClient>();

  constructor(private readonly opts: DatabaseOptions) {
    this.pool = new pg.Pool({
      connectionString: opts.url,
      max: opts.poolMax,
      // Every wait has a deadline: a connection, a statement, a forgotten transaction.
      connectionTimeoutMillis: 5000,
      statement_timeout: 10_000,
      idle_in_transaction_session_timeout: 60_000,
      application_name: "open-persona-sidecar",
    });
    // An idle client's error (the server restarted) must not crash the process.
    this.pool.on("error", (e) => opts.log.warn({ err: e.message }, "database connection lost"));
  }

  /**
   * Waits (bounded) for the database to take connections: at a deployment's first start the
   * sidecar may be up before PostgreSQL (a stack starts its services in no order). Throws the
   * last failure once `withinMs` has passed.
   */
  async waitReachable(withinMs: number): Promise<void> {
    const deadline = Date.now() + withinMs;
    await pRetry(async () => (await this.connect()).release(), {
      retries: 1000,
      minTimeout: 250,
      maxTimeout: 5000,
      randomize: true,
      shouldRetry: () => Date.now() < deadline,
      onFailedAttempt: (e) => this.opts.log.warn({ attempt: e.attemptNumber, err: (e.cause as Error | undefined)?.message ?? e.message }, "database not reachable yet; retrying"),
    });
  }

  /** Brings the schema up to date; safe when several replicas start at once. */
  async migrate(): Promise<void> {
    const client = await this.connect();
    try {
      await runner({
        dbClient: client,
        dir: MIGRATIONS_DIR,
        // Only the compiled migrations (dist/) or the sources (tests via tsx), never both.
        ignorePattern: "(\\..*|.*\\.d\\.ts|.*\\.map)",
        direction: "up",
        migrationsTable: "pgmigrations",
        advisoryLockMode: "wait",
        singleTransaction: true,
        log: () => {},
        logger: { debug: () => {}, info: (m: string) => this.opts.log.debug({ migration: m }, "database migration"), warn: (m: string) => this.opts.log.warn(m), error: (m: string) => this.opts.log.error(m) },
      });
    } finally {
      client.release();
    }
  }

  /**
   * A client of the pool; a database that cannot be reached is a 503. A client a turn holds
   * (its locks) can lose its connection while checked out: that error is logged, not thrown
   * into the process (the pool only handles idle clients' errors).
   */
  async connect(): Promise<pg.PoolClient> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (e) {
      throw new DatabaseUnavailableError(e);
    }
    if (!this.watched.has(client)) {
      this.watched.add(client);
      client.on("error", (e) => this.opts.log.warn({ err: e.message }, "database connection of a running turn lost (its locks are released)"));
    }
    return client;
  }

  /** One query on any client; failing to reach the database (at connect or mid-query) is a 503. */
  async query<R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
    const client = await this.connect();
    let broken: Error | undefined;
    try {
      return await client.query<R>(text, values);
    } catch (e) {
      if (!unavailable(e)) throw e;
      broken = e as Error;
      throw new DatabaseUnavailableError(e);
    } finally {
      client.release(broken);
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** An error that means the database is not there (as opposed to a bad query). */
export function unavailable(e: unknown): boolean {
  const code = (e as { code?: string }).code ?? "";
  // Connection errors, and PostgreSQL's "admin shutdown" / "cannot connect now" classes.
  return /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EPIPE|57P0[1-3]|08\d\d\d)$/.test(code) || /Connection terminated|timeout exceeded when trying to connect/i.test((e as Error).message ?? "");
}
