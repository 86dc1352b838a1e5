/**
 * Knowledge-base sync: every file the agent creates, changes or deletes in a user's
 * workspace reaches that user's Open WebUI knowledge base, in the background.
 *
 * Triggers: opencode's `file.edited` / `file.watcher.updated` events (attributed to a user
 * by directory), a reconciliation pass (workspace vs. manifest) when a turn ends and at
 * startup. Changes go through a durable per-user outbox keyed by path, so a burst of edits
 * to one file coalesces into one upload (debounce), and failures retry with backoff until
 * Open WebUI is back. Nothing here runs on the request path: the chat only enqueues.
 */
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import type { Identity } from "../auth/identity.js";
import type { Logger } from "../log/logger.js";
import type { OpencodeEvent } from "../opencode/events.js";
import type { RunnerEndpoint } from "../runners/runner.js";
import { readInside } from "../workspace/read-inside.js";
import { userSpace, type UserSpace } from "../workspace/user-space.js";
import { accessDialect, OpenWebUIError, type AccessDialect, type OpenWebUIClient } from "./openwebui-client.js";
import type { TurnEvents } from "../chat/turn-events.js";
import type { SyncFilter } from "./sync-filter.js";
import { loadSyncState, saveSyncState, SYNC_STATE_FILE, type UserSyncState } from "./sync-state.js";


export interface SyncStatus {
  enabled: boolean;
  pending: number;
  pending_paths: string[];
  synced_files: number;
  last_synced: UserSyncState["lastSynced"] | null;
  last_error: UserSyncState["lastError"] | null;
}

export interface SyncServiceOptions {
  client: OpenWebUIClient;
  filter: SyncFilter;
  workspaceRoot: string;
  stateRoot: string;
  kbPrefix: string;
  /** Quiet time after the last change to a path before it is sent. */
  debounceMs: number;
  /** A path that keeps changing is still sent this long after its first change. */
  maxDelayMs: number;
  maxBackoffMs: number;
  log: Logger;
}

interface UserSync {
  hash: string;
  space: UserSpace;
  state: UserSyncState;
  timer?: NodeJS.Timeout;
  running: boolean;
  /** Paths whose skip reason was already logged. */
  skipLogged: Set<string>;
  saving?: Promise<void>;
  saveAgain: boolean;
}

export class SyncService {
  private readonly users = new Map<string, UserSync>();
  private readonly loading = new Map<string, Promise<UserSync>>();
  /** (event hub, user) pairs already watched: local mode shares one hub between users. */
  private readonly watched = new WeakMap<object, Set<string>>();
  private dialect?: AccessDialect;
  private stopped = false;

  constructor(private readonly opts: SyncServiceOptions) {}

  /** Resumes every user's pending work and reconciles what changed while we were down. */
  async start(): Promise<void> {
    const usersDir = path.join(this.opts.stateRoot, "users");
    const hashes = await fs.readdir(usersDir).catch(() => [] as string[]);
    for (const hash of hashes) {
      const exists = await fs.stat(path.join(usersDir, hash, SYNC_STATE_FILE)).catch(() => undefined);
      if (!exists) continue;
      const u = await this.user(hash);
      if (u) void this.reconcile(u);
    }
  }

  stop(): void {
    this.stopped = true;
    for (const u of this.users.values()) clearTimeout(u.timer);
  }

  /** Follows the turn core: a runner in use is watched, a turn's end is reconciled. */
  subscribe(events: TurnEvents): void {
    events.on("runner.used", ({ identity, space, endpoint }) => this.attach(identity, space, endpoint));
    events.on("turn.ended", ({ identity, space }) => this.turnEnded(identity, space));
  }

  /** The user's runner endpoint is in use: watch its file events. */
  attach(identity: Identity, space: UserSpace, ep: RunnerEndpoint): void {
    // Only Open WebUI users have a knowledge base: direct-key and local users are not synced.
    if (identity.via !== "gateway") return;
    void this.user(space.hash, identity.userId).then(() => {
      let set = this.watched.get(ep.events);
      if (!set) this.watched.set(ep.events, (set = new Set()));
      if (set.has(space.hash)) return;
      set.add(space.hash);
      const root = ep.directory.replace(/\/+$/, "");
      ep.events.watch((event: OpencodeEvent) => {
        if (event.type !== "file.edited" && event.type !== "file.watcher.updated") return;
        // Attribute by directory: the event's path is in the runner's view of the workspace.
        if (!event.file.startsWith(`${root}/`)) return;
        const rel = event.file.slice(root.length + 1);
        const op = event.type === "file.watcher.updated" && event.event === "unlink" ? "delete" : "upsert";
        void this.enqueue(space.hash, rel, op);
      });
    });
  }

  /** A turn ended: look for changes the events did not report. */
  turnEnded(identity: Identity, space: UserSpace): void {
    if (identity.via !== "gateway") return;
    void this.user(space.hash, identity.userId).then((u) => u && this.reconcile(u));
  }

  async status(identity: Identity): Promise<SyncStatus> {
    const u = identity.via === "gateway" ? await this.user(identity.userHash, identity.userId) : undefined;
    const pending = u ? Object.keys(u.state.pending) : [];
    return {
      enabled: !!u,
      pending: pending.length,
      pending_paths: pending.slice(0, 50),
      synced_files: u ? Object.values(u.state.manifest).filter((m) => m.fileId).length : 0,
      last_synced: u?.state.lastSynced ?? null,
      last_error: u?.state.lastError ?? null,
    };
  }

  /** Compares the workspace with the manifest and queues every difference. */
  async reconcile(u: UserSync): Promise<number> {
    const ws = u.space.workspaceDir;
    const files = await this.opts.filter.list(ws);
    const seen = new Set(files);
    let queued = 0;
    for (const rel of files) {
      const m = u.state.manifest[rel];
      if (m) {
        const st = await fs.stat(path.join(ws, rel)).catch(() => undefined);
        if (st && st.size === m.size && st.mtimeMs === m.mtimeMs) continue;
      } else {
        const verdict = await this.opts.filter.check(ws, rel);
        if (!verdict.sync) {
          this.skipped(u, rel, verdict.reason);
          continue;
        }
      }
      queued += this.queue(u, rel, "upsert", 0);
    }
    for (const rel of Object.keys(u.state.manifest)) if (!seen.has(rel)) queued += this.queue(u, rel, "delete", 0);
    if (queued) this.opts.log.info({ user: u.hash, queued }, "sync reconciliation queued changes");
    this.persist(u);
    this.schedule(u);
    return queued;
  }

  private async enqueue(hash: string, rel: string, op: "upsert" | "delete"): Promise<void> {
    const u = await this.user(hash);
    if (!u) return;
    if (this.queue(u, rel, op, this.opts.debounceMs)) {
      this.persist(u);
      this.schedule(u);
    }
  }

  /** Adds or refreshes an outbox entry; returns 1 when something is (still) pending. */
  private queue(u: UserSync, rel: string, op: "upsert" | "delete", delayMs: number): number {
    const verdict = this.opts.filter.byName(rel);
    if (verdict && !verdict.sync && !u.state.manifest[rel]) {
      this.skipped(u, rel, verdict.reason);
      return 0;
    }
    const now = Date.now();
    const prev = u.state.pending[rel];
    const queuedAt = prev?.queuedAt ?? now;
    // Debounce, but never past maxDelay after the first change.
    const nextAt = Math.min(now + delayMs, queuedAt + this.opts.maxDelayMs);
    u.state.pending[rel] = { op, queuedAt, nextAt: Math.max(prev?.attempts ? prev.nextAt : 0, nextAt), attempts: prev?.attempts ?? 0, lastError: prev?.lastError };
    return 1;
  }

  /** Logs why a path is not synced, once per path and reason (reconciliation sees it every turn). */
  private skipped(u: UserSync, rel: string, reason: string): void {
    const key = `${rel}\0${reason}`;
    if (u.skipLogged.has(key)) return;
    u.skipLogged.add(key);
    this.opts.log.info({ user: u.hash, path: rel, reason }, "sync skipped");
  }

  private schedule(u: UserSync): void {
    if (this.stopped || u.running) return;
    clearTimeout(u.timer);
    const next = Math.min(...Object.values(u.state.pending).map((p) => p.nextAt));
    if (!Number.isFinite(next)) return;
    u.timer = setTimeout(() => void this.pump(u), Math.max(0, next - Date.now()));
    u.timer.unref();
  }

  /** Sends every due change of one user, one at a time. */
  private async pump(u: UserSync): Promise<void> {
    if (u.running || this.stopped) return;
    u.running = true;
    try {
      for (;;) {
        const now = Date.now();
        const due = Object.entries(u.state.pending).find(([, p]) => p.nextAt <= now);
        if (!due || this.stopped) break;
        const [rel, entry] = due;
        try {
          await this.apply(u, rel, entry.op);
          // Changed again while we were sending? Then the entry was replaced: keep it.
          if (u.state.pending[rel] === entry) delete u.state.pending[rel];
        } catch (e) {
          const err = e instanceof OpenWebUIError ? e : new OpenWebUIError(0, (e as Error).message, true);
          if (u.state.pending[rel] === entry) {
            if (err.isRetryable) {
              entry.attempts++;
              entry.nextAt = Date.now() + Math.min(this.opts.maxBackoffMs, 500 * 2 ** Math.min(entry.attempts, 20));
              entry.lastError = err.message;
            } else delete u.state.pending[rel];
          }
          u.state.lastError = { path: rel, message: err.message, at: new Date().toISOString() };
          this.opts.log.warn({ user: u.hash, path: rel, status: err.status, retry: err.isRetryable, error: err.detail }, "sync failed");
        }
        this.persist(u);
      }
    } finally {
      u.running = false;
      this.schedule(u);
    }
  }

  private async apply(u: UserSync, rel: string, op: "upsert" | "delete"): Promise<void> {
    const { client, filter, log } = this.opts;
    const prev = u.state.manifest[rel];
    if (op === "upsert") {
      const verdict = await filter.check(u.space.workspaceDir, rel);
      if (!verdict.sync) {
        this.skipped(u, rel, verdict.reason);
        if (prev) await this.remove(u, rel);
        return;
      }
      const file = await readInside(u.space.workspaceDir, verdict.realPath, this.opts.filter.maxBytes);
      if (!file.ok) {
        this.skipped(u, rel, file.reason);
        if (prev) await this.remove(u, rel);
        return;
      }
      const { bytes: content, size, mtimeMs } = file;
      const hash = createHash("sha256").update(content).digest("hex");
      if (prev && prev.hash === hash) {
        prev.mtimeMs = mtimeMs;
        prev.size = size;
        log.debug({ user: u.hash, path: rel }, "sync skipped: unchanged");
        return;
      }
      const kbId = await this.knowledge(u);
      let fileId: string | undefined;
      let note: string | undefined;
      try {
        fileId = await this.uploadInto(kbId, rel, content);
      } catch (e) {
        if (!(e instanceof OpenWebUIError)) throw e;
        if (e.notFound) {
          // The KB was deleted behind our back: find or create it again on the next try.
          u.state.kbId = undefined;
          throw new OpenWebUIError(e.status, `knowledge base not found: ${e.detail}`, true);
        }
        if (e.isRetryable) throw e;
        // Refused for good (identical content already in the KB, a file Open WebUI cannot
        // process): remember this version so it is not sent again until it changes.
        note = e.duplicateContent ? "duplicate content of another file" : `refused by Open WebUI: ${e.detail}`;
      }
      if (prev?.fileId) await client.removeFromKnowledge(kbId, prev.fileId).catch((e) => ignoreNotFound(e));
      u.state.manifest[rel] = { fileId, hash, size, mtimeMs, syncedAt: new Date().toISOString(), note };
      u.state.lastSynced = { path: rel, op, at: new Date().toISOString() };
      if (note) log.warn({ user: u.hash, path: rel, reason: note }, "sync skipped: refused by Open WebUI");
      else log.info({ user: u.hash, path: rel, fileId, replaced: prev?.fileId }, "synced file to knowledge base");
      return;
    }
    if (prev) await this.remove(u, rel);
  }

  /** Uploads one version and links it into the KB; an upload that cannot be linked is deleted. */
  private async uploadInto(kbId: string, rel: string, content: Buffer): Promise<string> {
    const { client } = this.opts;
    const file = await client.upload(kbFilename(rel), content, { source: "open-persona", path: rel });
    try {
      await this.waitProcessed(file.id, file.data?.status);
      await client.addToKnowledge(kbId, file.id);
      return file.id;
    } catch (e) {
      await client.deleteFile(file.id).catch(() => {});
      throw e;
    }
  }

  private async remove(u: UserSync, rel: string): Promise<void> {
    const prev = u.state.manifest[rel];
    if (prev?.fileId) {
      const kbId = await this.knowledge(u);
      await this.opts.client.removeFromKnowledge(kbId, prev.fileId).catch((e) => ignoreNotFound(e));
    }
    delete u.state.manifest[rel];
    u.state.lastSynced = { path: rel, op: "delete", at: new Date().toISOString() };
    this.opts.log.info({ user: u.hash, path: rel, fileId: prev?.fileId }, "removed file from knowledge base");
  }

  /**
   * A file must be processed before it can join a KB. The upload answer always says
   * "pending" (upstream returns the record as first inserted), so ask the status route,
   * at once and then with growing pauses; "processing" (≥0.8) is still under way.
   */
  private async waitProcessed(fileId: string, status: string | undefined): Promise<void> {
    const deadline = Date.now() + 120_000;
    const busy = (s: string | undefined) => s === "pending" || s === "processing";
    for (let pause = 50; busy(status) && Date.now() < deadline; pause = Math.min(pause * 2, 2000)) {
      status = await this.opts.client.processStatus(fileId);
      if (busy(status)) await new Promise((r) => setTimeout(r, pause));
    }
    if (busy(status)) throw new OpenWebUIError(0, "Open WebUI is still processing the file", true);
    if (status === "failed") throw new OpenWebUIError(400, "Open WebUI failed to process the file", false);
  }

  /** The user's KB id: cached, else found by name, else created (readable by that user only). */
  private async knowledge(u: UserSync): Promise<string> {
    if (u.state.kbId) return u.state.kbId;
    const { client, kbPrefix, log } = this.opts;
    const name = `${kbPrefix}${u.state.userId}`;
    const found = await client.findKnowledge(name);
    if (found) u.state.kbId = found.id;
    else {
      this.dialect ??= accessDialect(await client.version());
      const kb = await client.createKnowledge(name, "Files from your Open Persona workspace (kept in sync automatically)", u.state.userId, this.dialect);
      u.state.kbId = kb.id;
      log.info({ user: u.hash, kbId: kb.id, dialect: this.dialect }, "created knowledge base");
      if (Object.keys(u.state.manifest).length) {
        // A new KB for a user we had synced before (theirs was deleted): send everything again.
        u.state.manifest = {};
        setImmediate(() => void this.reconcile(u));
      }
    }
    this.persist(u);
    return u.state.kbId!;
  }

  /** Loads (or, given the Open WebUI user id, creates) a user's sync state. */
  private async user(hash: string, userId?: string): Promise<UserSync | undefined> {
    const known = this.users.get(hash);
    if (known) return known;
    let loading = this.loading.get(hash);
    if (!loading) {
      loading = (async () => {
        const space = userSpace(this.opts.workspaceRoot, this.opts.stateRoot, hash);
        const state = (await loadSyncState(space.stateDir)) ?? (userId ? { userId, manifest: {}, pending: {} } : undefined);
        if (!state) throw new Error("no sync state");
        const u: UserSync = { hash, space, state, running: false, saveAgain: false, skipLogged: new Set() };
        this.users.set(hash, u);
        this.persist(u);
        this.schedule(u);
        return u;
      })().finally(() => this.loading.delete(hash));
      this.loading.set(hash, loading);
    }
    return loading.catch(() => undefined);
  }

  /** Saves the state soon; writes never overlap and the last change always lands. */
  private persist(u: UserSync): void {
    if (u.saving) {
      u.saveAgain = true;
      return;
    }
    u.saving = (async () => {
      do {
        u.saveAgain = false;
        await saveSyncState(u.space.stateDir, u.state).catch((e) =>
          this.opts.log.error({ user: u.hash, err: (e as Error).message }, "could not save sync state"),
        );
      } while (u.saveAgain);
    })().finally(() => (u.saving = undefined));
  }

  /** Waits until every queued save is on disk (shutdown, tests). */
  async flush(): Promise<void> {
    await Promise.all([...this.users.values()].map((u) => u.saving));
  }
}

/**
 * Open WebUI keeps only the basename of an uploaded file's name: encode the directories
 * into it so that `src/app.ts` and `test/app.ts` stay distinguishable in the KB.
 */
export function kbFilename(rel: string): string {
  return rel.split("/").join("__");
}

function ignoreNotFound(e: unknown): void {
  if (e instanceof OpenWebUIError && e.notFound) return;
  throw e;
}
