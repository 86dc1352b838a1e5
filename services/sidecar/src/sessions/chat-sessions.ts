/**
 * What the turn core needs to share with other replicas, as interfaces with two backends:
 * files and in-process locks (the embedded default, one process) or PostgreSQL
 * (DATABASE_URL, any number of replicas; db/).
 * - `ChatSessions`: chat → opencode session, exactly one per chat however requests race.
 * - `TurnLocks`: one turn at a time per session.
 * - `UserSlots`: at most N concurrent turns per user.
 */
import type { UserSpace } from "../workspace/user-space.js";
import { ConcurrencyLimiter } from "../limits/concurrency.js";
import { KeyedMutex } from "./keyed-mutex.js";
import type { SessionStore } from "./session-store.js";

export interface ChatSessions {
  /**
   * The chat's session, created with `create` when it has none (`create` runs once per chat,
   * whatever the concurrency). `saved` settles once the map holds a new one.
   */
  getOrCreate(space: UserSpace, chatKey: string, create: () => Promise<string>): Promise<{ sessionId: string; created: boolean; saved: Promise<void> }>;
  /** Replaces a session opencode lost, unless another request already did (then: its session). */
  replace(space: UserSpace, chatKey: string, staleId: string, create: () => Promise<string>): Promise<string>;
}

/**
 * Gives a lock or slot back (idempotent); settles once others can take it. `lost` aborts if
 * the hold ends without it (its database connection died, taking the lock along): the turn
 * must stop, or another replica could run the same chat at once.
 */
export type Release = (() => Promise<void>) & { readonly lost?: AbortSignal };

export interface TurnLocks {
  /** Waits for the session's lock; `within`: the turn's slot, whose connection a backend may share. */
  acquire(sessionId: string, within?: Release): Promise<Release>;
}

export interface UserSlots {
  /** A slot, or undefined when the user is at the cap. */
  tryAcquire(userHash: string): Promise<Release | undefined>;
}

/** The session map in files under STATE_ROOT (session-store.ts). */
export class FileChatSessions implements ChatSessions {
  constructor(private readonly store: SessionStore) {}

  getOrCreate(space: UserSpace, chatKey: string, create: () => Promise<string>) {
    return this.store.getOrCreate(space.stateDir, chatKey, create);
  }

  replace(space: UserSpace, chatKey: string, staleId: string, create: () => Promise<string>) {
    return this.store.replace(space.stateDir, chatKey, staleId, create);
  }
}

/** Locks and slots of this process only. */
export class LocalTurnLocks implements TurnLocks {
  private readonly mutex = new KeyedMutex();

  async acquire(sessionId: string): Promise<Release> {
    const unlock = await this.mutex.acquire(sessionId);
    return async () => unlock();
  }
}

export class LocalUserSlots implements UserSlots {
  private readonly limiter: ConcurrencyLimiter;

  constructor(max: number) {
    this.limiter = new ConcurrencyLimiter(max);
  }

  async tryAcquire(userHash: string): Promise<Release | undefined> {
    const release = this.limiter.tryAcquire(userHash);
    return release && (async () => release());
  }
}
