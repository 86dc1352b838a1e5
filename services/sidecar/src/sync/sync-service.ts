/**
 * Knowledge-base sync: every file the agent creates, changes or deletes in a user's
 * workspace reaches that user's Open WebUI knowledge base, in the background.
 *
 * Triggers: opencode's `file.edited` / `file.watcher.updated` events (attributed to a user
 * by directory), a reconciliation pass (workspace vs. manifest) when a turn ends and at
 * startup. Changes go through a durable per-user outbox keyed by path, so a burst of edits
 * to one file coalesces into one upload (debounce), and failures retry with backoff until
 * Open WebUI is back. Nothing here runs on the request path: the chat only enqueues.
 *
 * The durable state is a SyncStore (sync-store.ts): files under STATE_ROOT, or PostgreSQL for
 * replicas. One holder at a time works a user's outbox (a claim); with a shared store every
 * replica also polls for due work, so whichever claims the user first sends what any replica
 * queued, or what one that died left.
 *
 * The workspace is read through a WorkspaceFiles (workspace/workspace-files.ts): the disk, or
 * the user's runner. Through the runner:
 * - a background reader never wakes a runner: while the runner is not running here
 *   (Runner.current), work stays queued and is tried again later (backing off), and at once
 *   when the user's runner is used again;
 * - there is no stat (size, mtime): reconciliation lists (new paths are sent, paths gone are
 *   deleted), and the file events send what the agent's tools changed at once. What a shell
 *   command changed has no event (opencode 1.18 watches a workspace only when it is a git
 *   repository and OPENCODE_EXPERIMENTAL_FILEWATCHER is set): reconciliation reads every
 *   file (a few at a time, in the background) and sends what differs from the content hash
 *   the manifest has (or had when it was refused).
 */
import type { Identity } from "../auth/identity.js";
import type { TurnEvents } from "../chat/turn-events.js";
import { RunnerError, RunnerUnavailableError } from "../errors/api-error.js";
import type { Logger } from "../log/logger.js";
import type { OpencodeEvent } from "../opencode/events.js";
import type { RunnerEndpoint } from "../runners/runner.js";
import { contentHashes, sha256 } from "../workspace/content-hashes.js";
import { diskWorkspaces } from "../workspace/disk-workspace-files.js";
import { fileChange } from "../workspace/file-events.js";
import { userSpace, type UserSpace } from "../workspace/user-space.js";
import type { WorkspaceFiles, Workspaces } from "../workspace/workspace-files.js";
import { accessDialect, OpenWebUIError, type AccessDialect, type OpenWebUIClient } from "./openwebui-client.js";
import type { SyncFilter } from "./sync-filter.js";
import type { ManifestEntry } from "./sync-state.js";
import type { OutboxEntry, SyncChange, SyncClaim, SyncOp, SyncOutcome, SyncStore, SyncUser } from "./sync-store.js";

export interface SyncStatus {
  enabled: boolean;
  pending: number;
  pending_paths: string[];
  synced_files: number;
  last_synced: SyncUser["lastSynced"] | null;
  last_error: SyncUser["lastError"] | null;
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
  /** The durable state: files under `stateRoot` (FileSyncStore), or PostgreSQL for replicas (db/pg-sync-store.ts). */
  store: SyncStore;
  /** Where workspaces are read (WORKSPACE_READS); default: the sidecar's disk. */
  workspaces?: Workspaces;
}

/** A shared store's due work is looked for this often (the latency a change queued elsewhere may add). */
const POLL_MS = 300;
/** A shared store's claim holds a database connection: a few users' outboxes at a time; the poll brings the rest. */
const MAX_SHARED_PUMPS = 8;
/** Work waiting for a user's runner is looked at again after 1 s, 2 s, 4 s … up to this (and at once when the runner is used). */
const MAX_DEFER_MS = 60_000;

interface UserSync {
  hash: string;
  space: UserSpace;
  timer?: NodeJS.Timeout;
  /** When the timer fires. */
  dueAt?: number;
  running: boolean;
  /** Paths whose skip reason was already logged. */
  skipLogged: Set<string>;
  /** Runner reads: paths the KB did not take (binary, empty, unreadable) → their content hash then ("": unreadable); not queued again while it stays so. */
  refused: Map<string, string>;
  /** The user's runner was not running here: how many times in a row, and until when the outbox waits. */
  deferrals: number;
  deferredUntil: number;
  /** A reconciliation waits for the runner. */
  reconcileDeferred: boolean;
  /** The reconciliation under way, and whether another was asked for meanwhile. */
  reconciling?: Promise<number>;
  reconcileAgain?: boolean;
}

export class SyncService {
  private readonly store: SyncStore;
  private readonly users = new Map<string, UserSync>();
  /** Users whose state the store has (or is being given). */
  private readonly ensured = new Map<string, Promise<void>>();
  /** Users some of whose changes the store could not take (unreachable): reconciled again once it answers. */
  private readonly unrecorded = new Map<string, string | undefined>();
  /** (event hub, user) pairs already watched: local mode shares one hub between users. */
  private readonly watched = new WeakMap<object, Set<string>>();
  private readonly pumps = new Set<Promise<void>>();
  private dialect?: AccessDialect;
  private stopped = false;
  /** Every user's pending work was resumed and reconciled (a shared store may be down at start). */
  private resumed = false;
  private storeDown = false;
  private poller?: NodeJS.Timeout;
  private ticking?: Promise<void>;

  constructor(private readonly opts: SyncServiceOptions) {
    this.store = opts.store;
  }

  /** Resumes every user's pending work and reconciles what changed while we were down. */
  async start(): Promise<void> {
    if (this.store.shared) this.poll();
    await this.resume();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.poller);
    for (const u of this.users.values()) clearTimeout(u.timer);
  }

  /** Waits for the changes being sent (each ends after its current file) and for the store's writes (shutdown, tests). */
  async flush(): Promise<void> {
    await this.ticking;
    await Promise.all(this.pumps);
    await this.store.flush();
  }

  /** Follows the turn core: a runner in use is watched, a turn's end is reconciled. */
  subscribe(events: TurnEvents): void {
    events.on("runner.used", ({ identity, space, endpoint }) => this.attach(identity, space, endpoint));
    events.on("turn.ended", ({ identity, space, ranTools }) => this.turnEnded(identity, space, ranTools));
  }

  /** The user's runner endpoint is in use: watch its file events, and send what waited for it. */
  attach(identity: Identity, space: UserSpace, ep: RunnerEndpoint): void {
    // Only Open WebUI users have a knowledge base: direct-key and local users are not synced.
    if (identity.via !== "gateway") return;
    this.runnerBack(this.local(space.hash), identity.userId);
    let set = this.watched.get(ep.events);
    if (!set) this.watched.set(ep.events, (set = new Set()));
    if (set.has(space.hash)) return;
    set.add(space.hash);
    void this.ensure(space.hash, identity.userId).catch((e) => this.unrecordable(space.hash, identity.userId, e));
    ep.events.watch((event: OpencodeEvent) => {
      const change = fileChange(ep.directory, event);
      if (change) void this.enqueue(space.hash, identity.userId, change.rel, change.op);
    });
  }

  /**
   * A turn ended: look for changes the events did not report. Through the runner that means
   * reading every file, so a turn that ran no tool (it changed nothing) is not looked at there;
   * on disk a look is a stat per file, and it also catches what a background process left.
   */
  turnEnded(identity: Identity, space: UserSpace, ranTools = true): void {
    if (identity.via !== "gateway") return;
    if (!ranTools && this.opts.workspaces?.reads === "runner") return;
    void this.reconcile(space.hash, identity.userId);
  }

  async status(identity: Identity): Promise<SyncStatus> {
    let s: Awaited<ReturnType<SyncStore["status"]>>;
    if (identity.via === "gateway") {
      await this.ensure(identity.userHash, identity.userId);
      s = await this.store.status(identity.userHash);
    }
    return {
      enabled: !!s,
      pending: s?.pending ?? 0,
      pending_paths: s?.pendingPaths ?? [],
      synced_files: s?.syncedFiles ?? 0,
      last_synced: s?.lastSynced ?? null,
      last_error: s?.lastError ?? null,
    };
  }

  /**
   * Compares the workspace with the manifest and queues every difference. A store that cannot
   * take them is tried again later (the workspace still holds every change); so is a runner
   * that is not running here.
   */
  reconcile(hash: string, userId?: string): Promise<number> {
    const u = this.local(hash);
    // One pass at a time per user (through the runner a pass reads every file): a turn that
    // ends during one gets one more pass after it.
    if (u.reconciling) {
      u.reconcileAgain = true;
      return Promise.resolve(0);
    }
    const pass = this.reconcileOnce(u, userId).finally(() => {
      u.reconciling = undefined;
      if (!u.reconcileAgain) return;
      u.reconcileAgain = false;
      void this.reconcile(hash, userId);
    });
    u.reconciling = pass;
    return pass;
  }

  private async reconcileOnce(u: UserSync, userId?: string): Promise<number> {
    const { hash } = u;
    try {
      if (userId) await this.ensure(hash, userId);
      const files = (this.opts.workspaces ?? diskWorkspaces).files(u.space);
      if (!files) {
        u.reconcileDeferred = true;
        return 0;
      }
      const manifest = await this.store.manifest(hash);
      const listed = await this.opts.filter.list(files);
      const changes: SyncChange[] = [];
      const fresh: string[] = [];
      for (const rel of listed) {
        if (!Object.hasOwn(manifest, rel)) {
          const verdict = await this.opts.filter.check(files, rel);
          if (!verdict.sync) {
            this.skipped(u, rel, verdict.reason);
            continue;
          }
        }
        fresh.push(rel);
      }
      for (const rel of await this.differing(u, files, fresh, manifest)) changes.push({ path: rel, op: "upsert" });
      const seen = new Set(listed);
      for (const rel of Object.keys(manifest)) if (!seen.has(rel)) changes.push({ path: rel, op: "delete" });
      if (changes.length) {
        this.wake(u, await this.store.queue(hash, changes, 0, this.opts.maxDelayMs));
        this.opts.log.info({ user: hash, queued: changes.length, reads: files.reads }, "sync reconciliation queued changes");
      }
      // What was pending already (a restart) is resumed too.
      await this.schedule(u);
      return changes.length;
    } catch (e) {
      if (e instanceof RunnerUnavailableError || e instanceof RunnerError) {
        // The runner went away while it was read: tried again once it is back.
        u.reconcileDeferred = true;
        this.opts.log.warn({ user: hash, err: e.message }, "sync reconciliation could not read the workspace");
      } else this.unrecordable(hash, userId, e);
      return 0;
    }
  }

  /**
   * Which of `rels` differ from what was last sent: on disk a file with the manifest's size
   * and mtime is not read; through the runner (no stat) every file is read and its content
   * hash compared with the manifest's (or with the one it had when it was refused).
   */
  private async differing(u: UserSync, files: WorkspaceFiles, rels: string[], manifest: Record<string, ManifestEntry>): Promise<string[]> {
    const known = (rel: string) => (Object.hasOwn(manifest, rel) ? manifest[rel] : undefined);
    if (files.reads === "runner") {
      const hashes = await contentHashes(files, rels, this.opts.filter.maxBytes);
      // "": could not be read (over the cap, gone, refused by the runner).
      return rels.filter((rel) => (hashes.get(rel) ?? "") !== known(rel)?.hash && (hashes.get(rel) ?? "") !== u.refused.get(rel));
    }
    const out: string[] = [];
    for (const rel of rels) {
      const m = known(rel);
      const looked = m && (await files.look(rel));
      if (!m || !looked?.ok || looked.size !== m.size || looked.mtimeMs !== m.mtimeMs) out.push(rel);
    }
    return out;
  }

  private async enqueue(hash: string, userId: string, rel: string, op: SyncOp): Promise<void> {
    const u = this.local(hash);
    try {
      await this.ensure(hash, userId);
      const verdict = this.opts.filter.byName(rel);
      if (verdict && !verdict.sync && !(await this.store.manifestEntry(hash, rel))) {
        this.skipped(u, rel, verdict.reason);
        return;
      }
      this.wake(u, await this.store.queue(hash, [{ path: rel, op }], this.opts.debounceMs, this.opts.maxDelayMs));
    } catch (e) {
      this.unrecordable(hash, userId, e);
    }
  }

  /** Logs why a path is not synced, once per path and reason (reconciliation sees it every turn). */
  private skipped(u: UserSync, rel: string, reason: string): void {
    const key = `${rel}\0${reason}`;
    if (u.skipLogged.has(key)) return;
    u.skipLogged.add(key);
    this.opts.log.info({ user: u.hash, path: rel, reason }, "sync skipped");
  }

  /** The user's state exists in the store (created once per process; tried again after a failure). */
  private ensure(hash: string, userId: string): Promise<void> {
    let ensured = this.ensured.get(hash);
    if (!ensured) {
      // Pending work loaded with the state (a restart) is resumed.
      ensured = this.store.ensureUser(hash, userId).then(() => void this.schedule(this.local(hash)));
      ensured.catch(() => this.ensured.delete(hash));
      this.ensured.set(hash, ensured);
    }
    return ensured;
  }

  private local(hash: string): UserSync {
    let u = this.users.get(hash);
    if (!u) {
      const space = userSpace(this.opts.workspaceRoot, this.opts.stateRoot, hash);
      this.users.set(hash, (u = { hash, space, running: false, skipLogged: new Set(), refused: new Map(), deferrals: 0, deferredUntil: 0, reconcileDeferred: false }));
    }
    return u;
  }

  /** The user's workspace cannot be read now (its runner is not running here): the outbox waits, backing off. */
  private deferred(u: UserSync): void {
    if (!u.deferrals) this.opts.log.info({ user: u.hash }, "sync deferred: the user's runner is not running here; queued changes wait for it");
    u.deferredUntil = Date.now() + Math.min(MAX_DEFER_MS, 1000 * 2 ** Math.min(u.deferrals, 16));
    u.deferrals++;
  }

  /** The user's runner is in use again: what waited for it goes now. */
  private runnerBack(u: UserSync, userId: string): void {
    const waited = u.deferrals > 0;
    u.deferrals = u.deferredUntil = 0;
    if (u.reconcileDeferred) {
      u.reconcileDeferred = false;
      void this.reconcile(u.hash, userId);
    } else if (waited) void this.schedule(u);
  }

  /** The store could not take a user's changes: logged, and (shared stores) the workspace is reconciled again once it answers. */
  private unrecordable(hash: string, userId: string | undefined, e: unknown): void {
    this.unrecorded.set(hash, userId ?? this.unrecorded.get(hash));
    this.storeFailed(e);
  }

  /** Logged once per outage: a shared store is tried again at every poll. */
  private storeFailed(e: unknown): void {
    if (this.storeDown) return;
    this.storeDown = true;
    this.opts.log.warn({ err: (e as Error).message }, "sync state unavailable: queued changes are kept, new ones are queued again once it answers");
  }

  private storeBack(): void {
    if (!this.storeDown) return;
    this.storeDown = false;
    this.opts.log.info("sync state available again");
  }

  /** Works the user's outbox within `dueInMs` (an earlier wake-up stands). */
  private wake(u: UserSync, dueInMs: number | undefined): void {
    if (this.stopped || u.running || dueInMs === undefined || !Number.isFinite(dueInMs)) return;
    const at = Date.now() + dueInMs;
    if (u.timer && u.dueAt! <= at) return;
    clearTimeout(u.timer);
    u.dueAt = at;
    u.timer = setTimeout(() => void this.pump(u), Math.max(0, dueInMs));
    u.timer.unref();
  }

  private async schedule(u: UserSync): Promise<void> {
    if (this.stopped || u.running) return;
    try {
      const dueIn = await this.store.nextDueIn(u.hash);
      this.wake(u, dueIn === undefined ? undefined : Math.max(dueIn, u.deferredUntil - Date.now()));
    } catch (e) {
      // A shared store's poll finds the work once it answers again.
      this.storeFailed(e);
    }
  }

  /** A shared store: every replica looks for due work, queued by any of them or left by one that died. */
  private poll(): void {
    if (this.stopped) return;
    this.poller = setTimeout(() => {
      this.ticking = this.tick().finally(() => {
        this.ticking = undefined;
        this.poll();
      });
    }, POLL_MS);
    this.poller.unref();
  }

  private async tick(): Promise<void> {
    try {
      if (!this.resumed) await this.resume();
      for (const [hash, userId] of [...this.unrecorded]) {
        this.unrecorded.delete(hash);
        await this.reconcile(hash, userId);
      }
      for (const hash of await this.store.dueUsers()) void this.pump(this.local(hash));
      if (!this.unrecorded.size && this.resumed) this.storeBack();
    } catch (e) {
      this.storeFailed(e);
    }
  }

  private async resume(): Promise<void> {
    let hashes: string[];
    try {
      hashes = await this.store.users();
    } catch (e) {
      this.storeFailed(e);
      return;
    }
    this.resumed = true;
    for (const hash of hashes) void this.reconcile(hash);
  }

  /** Sends every due change of one user, one at a time, holding the user's claim (one holder across replicas). */
  private pump(u: UserSync): Promise<void> {
    if (u.running || this.stopped) return Promise.resolve();
    if (this.store.shared && this.pumps.size >= MAX_SHARED_PUMPS) return Promise.resolve();
    u.running = true;
    clearTimeout(u.timer);
    u.timer = u.dueAt = undefined;
    const run: Promise<void> = this.work(u).finally(() => {
      u.running = false;
      this.pumps.delete(run);
      void this.schedule(u);
    });
    this.pumps.add(run);
    return run;
  }

  private async work(u: UserSync): Promise<void> {
    const files = (this.opts.workspaces ?? diskWorkspaces).files(u.space);
    // Never a claim while the workspace cannot be read: another replica may hold the runner.
    if (!files) return this.deferred(u);
    let claim: SyncClaim | undefined;
    try {
      claim = await this.store.claim(u.hash);
      // Another replica is working this outbox: what it leaves due, the next poll finds.
      if (!claim) return;
      for (;;) {
        const entry = this.stopped ? undefined : await claim.nextDue();
        if (!entry) break;
        try {
          await claim.complete(entry, await this.apply(u, claim, entry, files));
        } catch (e) {
          const err = e instanceof OpenWebUIError ? e : new OpenWebUIError(0, (e as Error).message, true);
          const retryIn = err.isRetryable ? Math.min(this.opts.maxBackoffMs, 500 * 2 ** Math.min(entry.attempts + 1, 20)) : undefined;
          this.opts.log.warn({ user: u.hash, path: entry.path, status: err.status, retry: err.isRetryable, error: err.detail }, "sync failed");
          await claim.fail(entry, retryIn, { path: entry.path, message: err.message, at: new Date().toISOString() });
        }
      }
    } catch (e) {
      // The store failed (a database outage): the outbox is where it was, and is tried again.
      this.storeFailed(e);
    } finally {
      await claim?.release().catch((e: Error) => this.opts.log.warn({ user: u.hash, err: e.message }, "could not release a sync claim"));
    }
  }

  /** Sends one change; resolves with what it changed (an error leaves the entry for a retry). */
  private async apply(u: UserSync, claim: SyncClaim, entry: OutboxEntry, files: WorkspaceFiles): Promise<SyncOutcome> {
    const { client, filter, log } = this.opts;
    const rel = entry.path;
    const prev = await this.store.manifestEntry(u.hash, rel);
    if (entry.op === "delete") return prev ? this.remove(u, claim, rel, prev) : {};
    // The exact bytes either way: through the runner, opencode's raw read (never its trimmed,
    // UTF-8-only text content), so any encoding arrives as it is in the workspace.
    const file = await filter.take(files, rel);
    if (!file.ok) {
      this.skipped(u, rel, file.reason);
      // Its content, to skip it while it stays the same (runner reads: no mtime to tell).
      if (files.reads === "runner") await this.refusedAs(u, files, rel);
      return prev ? this.remove(u, claim, rel, prev) : {};
    }
    u.refused.delete(rel);
    // Through the runner `mtimeMs` is 0: the manifest's size+mtime shortcut (disk) never
    // matches, so reading the workspace from the disk again later re-checks by content hash.
    const { bytes: content, size, mtimeMs } = file;
    const hash = sha256(content);
    if (prev && prev.hash === hash) {
      log.debug({ user: u.hash, path: rel }, "sync skipped: unchanged");
      return { manifest: { ...prev, mtimeMs, size } };
    }
    const kbId = await this.knowledge(u, claim);
    let fileId: string | undefined;
    let note: string | undefined;
    try {
      fileId = await this.uploadInto(kbId, rel, content);
    } catch (e) {
      if (!(e instanceof OpenWebUIError)) throw e;
      if (e.notFound) {
        // The KB was deleted behind our back: find or create it again on the next try.
        await claim.setKb(undefined);
        throw new OpenWebUIError(e.status, `knowledge base not found: ${e.detail}`, true);
      }
      if (e.isRetryable) throw e;
      // Refused for good (identical content already in the KB, a file Open WebUI cannot
      // process): remember this version so it is not sent again until it changes.
      note = e.duplicateContent ? "duplicate content of another file" : `refused by Open WebUI: ${e.detail}`;
    }
    if (prev?.fileId) await client.removeFromKnowledge(kbId, prev.fileId).catch((e) => ignoreNotFound(e));
    const at = new Date().toISOString();
    if (note) log.warn({ user: u.hash, path: rel, reason: note }, "sync skipped: refused by Open WebUI");
    else log.info({ user: u.hash, path: rel, fileId, replaced: prev?.fileId }, "synced file to knowledge base");
    return { manifest: { fileId, hash, size, mtimeMs, syncedAt: at, note }, lastSynced: { path: rel, op: "upsert", at } };
  }

  /** Remembers the content hash of a file the KB did not take ("": it could not be read). */
  private async refusedAs(u: UserSync, files: WorkspaceFiles, rel: string): Promise<void> {
    const [h] = (await contentHashes(files, [rel], this.opts.filter.maxBytes)).values();
    u.refused.set(rel, h ?? "");
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

  private async remove(u: UserSync, claim: SyncClaim, rel: string, prev: ManifestEntry): Promise<SyncOutcome> {
    if (prev.fileId) {
      const kbId = await this.knowledge(u, claim);
      await this.opts.client.removeFromKnowledge(kbId, prev.fileId).catch((e) => ignoreNotFound(e));
    }
    this.opts.log.info({ user: u.hash, path: rel, fileId: prev.fileId }, "removed file from knowledge base");
    return { manifest: null, lastSynced: { path: rel, op: "delete", at: new Date().toISOString() } };
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

  /** The user's KB id: recorded, else found by name, else created (readable by that user only). */
  private async knowledge(u: UserSync, claim: SyncClaim): Promise<string> {
    if (claim.user.kbId) return claim.user.kbId;
    const { client, kbPrefix, log } = this.opts;
    const { userId } = claim.user;
    const name = `${kbPrefix}${userId}`;
    const found = await client.findKnowledge(name);
    if (found) {
      await claim.setKb(found.id);
      return found.id;
    }
    this.dialect ??= accessDialect(await client.version());
    const kb = await client.createKnowledge(name, "Files from your Open Persona workspace (kept in sync automatically)", userId, this.dialect);
    log.info({ user: u.hash, kbId: kb.id, dialect: this.dialect }, "created knowledge base");
    // A new KB for a user we had synced before (theirs was deleted): send everything again.
    if (await claim.setKb(kb.id, true)) setImmediate(() => void this.reconcile(u.hash));
    return kb.id;
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
