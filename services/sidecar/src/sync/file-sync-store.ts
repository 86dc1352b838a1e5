/**
 * The sync's state in files (the default, one process): each user's state lives in memory
 * and is saved to `sync.json` under its STATE_ROOT dir (sync-state.ts) after every change.
 * Saves never overlap and the last change always lands. A claim is an in-process flag.
 */
import fs from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../log/logger.js";
import { loadSyncState, saveSyncState, SYNC_STATE_FILE, type UserSyncState } from "./sync-state.js";
import type { OutboxEntry, SyncChange, SyncClaim, SyncStatusRecord, SyncStore, SyncUser } from "./sync-store.js";

export interface FileSyncStoreOptions {
  /** STATE_ROOT: users' state dirs are `users/<hash>` below it. */
  stateRoot: string;
  log: Logger;
}

interface Loaded {
  hash: string;
  state: UserSyncState;
  claimed: boolean;
  saving?: Promise<void>;
  saveAgain: boolean;
}

export class FileSyncStore implements SyncStore {
  readonly shared = false;
  private readonly loaded = new Map<string, Loaded>();
  private readonly loading = new Map<string, Promise<Loaded | undefined>>();

  constructor(private readonly opts: FileSyncStoreOptions) {}

  async users(): Promise<string[]> {
    const usersDir = path.join(this.opts.stateRoot, "users");
    // Those loaded already, whose first save may still be under way, and those on disk.
    const out = new Set(this.loaded.keys());
    for (const hash of await fs.readdir(usersDir).catch(() => [] as string[])) {
      if (!out.has(hash) && (await fs.stat(path.join(usersDir, hash, SYNC_STATE_FILE)).catch(() => undefined))) out.add(hash);
    }
    return [...out];
  }

  async ensureUser(hash: string, userId: string): Promise<void> {
    await this.load(hash, userId);
  }

  async status(hash: string): Promise<SyncStatusRecord | undefined> {
    const u = await this.load(hash);
    if (!u) return undefined;
    const pending = Object.keys(u.state.pending);
    return {
      pending: pending.length,
      pendingPaths: pending.slice(0, 50),
      syncedFiles: Object.values(u.state.manifest).filter((m) => m.fileId).length,
      lastSynced: u.state.lastSynced,
      lastError: u.state.lastError,
    };
  }

  async manifest(hash: string) {
    return (await this.load(hash))?.state.manifest ?? {};
  }

  async manifestEntry(hash: string, rel: string) {
    const m = (await this.load(hash))?.state.manifest;
    return m && Object.hasOwn(m, rel) ? m[rel] : undefined;
  }

  async queue(hash: string, changes: SyncChange[], delayMs: number, maxDelayMs: number): Promise<number> {
    const u = await this.required(hash);
    const now = Date.now();
    let soonest = Infinity;
    for (const { path: rel, op } of changes) {
      const prev = Object.hasOwn(u.state.pending, rel) ? u.state.pending[rel] : undefined;
      const queuedAt = prev?.queuedAt ?? now;
      // Debounce, but never past maxDelay after the first change; a retry keeps its backoff.
      const nextAt = Math.max(prev?.attempts ? prev.nextAt : 0, Math.min(now + delayMs, queuedAt + maxDelayMs));
      u.state.pending[rel] = { op, queuedAt, nextAt, attempts: prev?.attempts ?? 0, lastError: prev?.lastError, version: (prev?.version ?? 0) + 1 };
      soonest = Math.min(soonest, nextAt);
    }
    this.persist(u);
    return Math.max(0, soonest - now);
  }

  async nextDueIn(hash: string): Promise<number | undefined> {
    const u = await this.load(hash);
    const next = Math.min(...Object.values(u?.state.pending ?? {}).map((p) => p.nextAt));
    return Number.isFinite(next) ? Math.max(0, next - Date.now()) : undefined;
  }

  async dueUsers(): Promise<string[]> {
    const now = Date.now();
    return [...this.loaded.values()].filter((u) => Object.values(u.state.pending).some((p) => p.nextAt <= now)).map((u) => u.hash);
  }

  async claim(hash: string): Promise<SyncClaim | undefined> {
    const u = await this.load(hash);
    if (!u || u.claimed) return undefined;
    u.claimed = true;
    const { state } = u;
    const same = (e: OutboxEntry) => Object.hasOwn(state.pending, e.path) && (state.pending[e.path]!.version ?? 0) === e.version;
    return {
      // A view: the KB id set through the claim shows at once.
      get user(): SyncUser {
        return state;
      },
      nextDue: async () => {
        const now = Date.now();
        const due = Object.entries(state.pending).find(([, p]) => p.nextAt <= now);
        if (!due) return undefined;
        const [rel, p] = due;
        return { path: rel, op: p.op, attempts: p.attempts, lastError: p.lastError, version: p.version ?? 0 };
      },
      setKb: async (kbId, forgetManifest) => {
        state.kbId = kbId;
        const forgotten = forgetManifest ? Object.keys(state.manifest).length : 0;
        if (forgetManifest) state.manifest = {};
        this.persist(u);
        return forgotten;
      },
      complete: async (entry, outcome) => {
        if (outcome.manifest === null) delete state.manifest[entry.path];
        else if (outcome.manifest) state.manifest[entry.path] = outcome.manifest;
        if (outcome.lastSynced) state.lastSynced = outcome.lastSynced;
        if (same(entry)) delete state.pending[entry.path];
        this.persist(u);
      },
      fail: async (entry, retryInMs, error) => {
        if (same(entry)) {
          const p = state.pending[entry.path]!;
          if (retryInMs === undefined) delete state.pending[entry.path];
          else Object.assign(p, { attempts: p.attempts + 1, nextAt: Date.now() + retryInMs, lastError: error.message });
        }
        state.lastError = error;
        this.persist(u);
      },
      release: async () => {
        u.claimed = false;
      },
    };
  }

  async flush(): Promise<void> {
    await Promise.all([...this.loaded.values()].map((u) => u.saving));
  }

  private async required(hash: string): Promise<Loaded> {
    const u = await this.load(hash);
    if (!u) throw new Error("no sync state for this user");
    return u;
  }

  /** Loads (or, given the Open WebUI user id, creates) a user's state; undefined when there is none. */
  private async load(hash: string, userId?: string): Promise<Loaded | undefined> {
    const known = this.loaded.get(hash);
    if (known) return known;
    let loading = this.loading.get(hash);
    if (!loading) {
      loading = (async () => {
        const stateDir = this.stateDir(hash);
        const state = (await loadSyncState(stateDir)) ?? (userId ? { userId, manifest: {}, pending: {} } : undefined);
        if (!state) return undefined;
        const u: Loaded = { hash, state, claimed: false, saveAgain: false };
        this.loaded.set(hash, u);
        this.persist(u);
        return u;
      })().finally(() => this.loading.delete(hash));
      this.loading.set(hash, loading);
    }
    const u = await loading;
    // Loaded as unknown by someone without the id, now asked for with it: create.
    return u ?? (userId ? this.load(hash, userId) : undefined);
  }

  private stateDir(hash: string): string {
    return path.join(this.opts.stateRoot, "users", hash);
  }

  /** Saves the state soon; writes never overlap and the last change always lands. */
  private persist(u: Loaded): void {
    if (u.saving) {
      u.saveAgain = true;
      return;
    }
    u.saving = (async () => {
      do {
        u.saveAgain = false;
        await saveSyncState(this.stateDir(u.hash), u.state).catch((e) => this.opts.log.error({ user: u.hash, err: (e as Error).message }, "could not save sync state"));
      } while (u.saveAgain);
    })().finally(() => (u.saving = undefined));
  }
}
