/**
 * This replica as the others see it. One dedicated connection, kept for the life of the
 * process, holds a session-level advisory lock on the replica's id: a replica that dies
 * (SIGKILL included) loses the connection and the lock with it, so "is replica X alive?" is
 * "is X's lock still held?", answered at once, with no heartbeat to wait out. The same
 * connection LISTENs for what other replicas announce (`pg_notify`), to wake whoever follows
 * a response they run. Lost, it reconnects; meanwhile followers fall back to polling.
 */
import { randomUUID } from "node:crypto";
import type pg from "pg";
import type { Logger } from "../log/logger.js";
import type { Database } from "./database.js";

/** The channel a replica announces a response's change on (the payload is its id). */
export const RESPONSES_CHANNEL = "op_responses";
const RECONNECT_MS = 1000;

const lockKey = (replicaId: string) => `replica:${replicaId}`;

export class PgPresence {
  readonly id = randomUUID();
  private client?: pg.PoolClient;
  private stopped = false;
  private retry?: NodeJS.Timeout;
  /** Response id → who waits for its next change. */
  private readonly waiting = new Map<string, Set<() => void>>();

  constructor(
    private readonly db: Database,
    private readonly log: Logger,
  ) {}

  /** Takes the replica's lock and listens; throws when the database cannot be reached. */
  async start(): Promise<void> {
    const client = await this.db.connect();
    try {
      await client.query("SELECT pg_advisory_lock(hashtextextended($1, 0))", [lockKey(this.id)]);
      await client.query(`LISTEN ${RESPONSES_CHANNEL}`);
    } catch (e) {
      client.release(e as Error);
      throw e;
    }
    client.on("notification", (n) => n.payload && this.wake(n.payload));
    const lost = (e?: Error) => {
      if (this.client !== client) return;
      this.client = undefined;
      client.release(e ?? new Error("connection ended"));
      if (this.stopped) return;
      this.log.warn({ err: e?.message }, "replica presence connection lost; reconnecting");
      this.reconnect();
    };
    client.on("error", lost);
    client.on("end", () => lost());
    this.client = client;
  }

  private reconnect(): void {
    this.retry = setTimeout(() => {
      this.start().catch(() => !this.stopped && this.reconnect());
    }, RECONNECT_MS);
    this.retry.unref();
  }

  /** Whether the replica `replicaId` still runs (this one included). */
  async alive(replicaId: string): Promise<boolean> {
    if (replicaId === this.id) return true;
    // Taking the lock succeeds only when no one holds it; a transaction-level one is let go at once.
    const res = await this.db.query<{ free: boolean }>("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS free", [lockKey(replicaId)]);
    return !res.rows[0]!.free;
  }

  /** Resolves at the next announced change of `responseId`, after `maxMs`, or when `signal` aborts. */
  changed(responseId: string, maxMs: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      let set = this.waiting.get(responseId);
      if (!set) this.waiting.set(responseId, (set = new Set()));
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        set.delete(done);
        if (!set.size && this.waiting.get(responseId) === set) this.waiting.delete(responseId);
        resolve();
      };
      const timer = setTimeout(done, maxMs);
      signal.addEventListener("abort", done, { once: true });
      set.add(done);
      if (signal.aborted) done();
    });
  }

  private wake(responseId: string): void {
    for (const done of [...(this.waiting.get(responseId) ?? [])]) done();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    const client = this.client;
    this.client = undefined;
    client?.release(true);
  }
}
