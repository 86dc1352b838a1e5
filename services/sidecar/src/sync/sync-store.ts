/**
 * Where the knowledge-base sync keeps its durable state: per user, the outbox of changes
 * still to send, the manifest of what was last sent, the KB id, the last success and error.
 * Two backends: files under STATE_ROOT (one process; file-sync-store.ts) and PostgreSQL
 * (replicas; db/pg-sync-store.ts). Times are the store's own clock: callers deal in
 * durations ("due in", "retry in"), so replicas' clocks never enter into it.
 */
import type { ManifestEntry } from "./sync-state.js";

export type SyncOp = "upsert" | "delete";

export interface SyncUser {
  /** The Open WebUI user id (the KB is named after it and readable by it only). */
  userId: string;
  kbId?: string;
  lastSynced?: { path: string; op: SyncOp; at: string };
  lastError?: { path: string; message: string; at: string };
}

export interface OutboxEntry {
  path: string;
  op: SyncOp;
  attempts: number;
  lastError?: string;
  /** Bumped by every change queued for the path: one that arrives while this is sent keeps the entry. */
  version: number;
}

export interface SyncChange {
  path: string;
  op: SyncOp;
}

/** What sending one entry changed: the path's manifest entry (`null`: gone) and the last success. */
export interface SyncOutcome {
  manifest?: ManifestEntry | null;
  lastSynced?: SyncUser["lastSynced"];
}

export interface SyncStatusRecord {
  pending: number;
  /** The first 50. */
  pendingPaths: string[];
  syncedFiles: number;
  lastSynced?: SyncUser["lastSynced"];
  lastError?: SyncUser["lastError"];
}

export interface SyncStore {
  /** Other processes share this store: due work must be polled for (they queue it, or die holding it). */
  readonly shared: boolean;
  /** Every user with sync state (resumed and reconciled at start). */
  users(): Promise<string[]>;
  /** Creates the user's state unless it exists. */
  ensureUser(hash: string, userId: string): Promise<void>;
  /** undefined when the user has no state (and no status). */
  status(hash: string): Promise<SyncStatusRecord | undefined>;
  manifest(hash: string): Promise<Record<string, ManifestEntry>>;
  manifestEntry(hash: string, path: string): Promise<ManifestEntry | undefined>;
  /**
   * Adds or refreshes outbox entries: due in `delayMs` (debounce), never later than
   * `maxDelayMs` after the path's first queued change, never sooner than a retry's backoff.
   * Resolves with how long until the soonest of them is due.
   */
  queue(hash: string, changes: SyncChange[], delayMs: number, maxDelayMs: number): Promise<number>;
  /** How long until the user's next entry is due; undefined when the outbox is empty. */
  nextDueIn(hash: string): Promise<number | undefined>;
  /** Users with an entry due now. */
  dueUsers(): Promise<string[]>;
  /** The sole right to work the user's outbox (one holder across processes); undefined while someone else has it. */
  claim(hash: string): Promise<SyncClaim | undefined>;
  /** Waits until every write is durable (shutdown, tests). */
  flush(): Promise<void>;
}

export interface SyncClaim {
  /** The user's record as it was when claimed (kept up to date by `setKb`). */
  readonly user: SyncUser;
  /** The outbox entry due soonest, if one is due. */
  nextDue(): Promise<OutboxEntry | undefined>;
  /** Records the KB id (undefined: lost). `forgetManifest` (a new KB): resolves with how many entries were forgotten. */
  setKb(kbId: string | undefined, forgetManifest?: boolean): Promise<number>;
  /** Records an entry's outcome and removes the entry, unless it changed meanwhile. */
  complete(entry: OutboxEntry, outcome: SyncOutcome): Promise<void>;
  /** Records a failure: the entry is retried in `retryInMs` (dropped when undefined), unless it changed meanwhile. */
  fail(entry: OutboxEntry, retryInMs: number | undefined, error: NonNullable<SyncUser["lastError"]>): Promise<void>;
  release(): Promise<void>;
}
