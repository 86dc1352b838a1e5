/**
 * The chat → opencode session map, one JSON file per user under STATE_ROOT.
 *
 * Two kinds of file lock (proper-lockfile; they hold across sidecar processes too):
 * - a lock per chat, held while that chat's session is created, so concurrent first
 *   requests for one chat create exactly one session — without making a user's other new
 *   chats wait for it (creating a session can take a second);
 * - a lock per user map, held only for its read-modify-write.
 * Writes are atomic renames, so a plain read never sees a half-written map.
 *
 * Chat keys are client-chosen strings of any kind (`__proto__`, `constructor`…): the map is
 * a `Map` in memory and is written as a JSON object of own properties.
 */
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import lockfile from "proper-lockfile";
import type { Logger } from "../log/logger.js";

export interface SessionRecord {
  sessionId: string;
  createdAt: string;
}

type SessionMap = Map<string, SessionRecord>;

export interface SessionStoreOptions {
  /** Told when a lock is compromised (see `withLock`); without it, a process warning. */
  log?: Logger;
  /** After how long a lock whose holder stopped refreshing it is taken over (min 2000). */
  lockStaleMs?: number;
}

export class SessionStore {
  /** In-process queue per file: proper-lockfile only retries, so serialize here first. */
  private readonly local = new Map<string, Promise<unknown>>();
  /**
   * Parsed maps for the lock-free lookup every turn makes, reused while the file's mtime and
   * size are unchanged (a stat instead of a read and a parse). Never handed to writers.
   */
  private readonly parsed = new Map<string, { mtimeMs: number; size: number; map: ReadonlyMap<string, SessionRecord> }>();

  constructor(private readonly opts: SessionStoreOptions = {}) {}

  /**
   * Returns the session for `chatKey`, creating it with `create` when absent.
   * `create` runs at most once per chat, whatever the concurrency. A new session is handed
   * back as soon as it exists; `saved` settles once the map holds it (the chat's lock is
   * held until then, so a concurrent request still finds exactly this session).
   */
  async getOrCreate(
    stateDir: string,
    chatKey: string,
    create: () => Promise<string>,
  ): Promise<{ sessionId: string; created: boolean; saved: Promise<void> }> {
    const done = Promise.resolve();
    const existing = (await this.lookupMap(fileOf(stateDir))).get(chatKey);
    if (existing) return { sessionId: existing.sessionId, created: false, saved: done };
    return new Promise((resolve, reject) => {
      let handedOut = false;
      const run: Promise<void> = this.withLock(chatLockOf(stateDir, chatKey), async () => {
        const found = (await readMap(fileOf(stateDir))).get(chatKey);
        if (found) return resolve({ sessionId: found.sessionId, created: false, saved: done });
        const sessionId = await create();
        handedOut = true;
        // `saved` is the whole locked section: it settles once the lock is released too.
        resolve({ sessionId, created: true, saved: run });
        await this.update(stateDir, (map) => void map.set(chatKey, record(sessionId)));
      });
      run.catch((e) => {
        if (!handedOut) reject(e);
      });
    });
  }

  /**
   * Replaces the session of `chatKey` (after opencode lost it) unless someone else already
   * did: `staleId` is the id the caller found missing.
   */
  async replace(stateDir: string, chatKey: string, staleId: string, create: () => Promise<string>): Promise<string> {
    return this.withLock(chatLockOf(stateDir, chatKey), async () => {
      const current = (await readMap(fileOf(stateDir))).get(chatKey);
      if (current && current.sessionId !== staleId) return current.sessionId;
      const sessionId = await create();
      await this.update(stateDir, (map) => void map.set(chatKey, record(sessionId)));
      return sessionId;
    });
  }

  async get(stateDir: string, chatKey: string): Promise<string | undefined> {
    return (await this.lookupMap(fileOf(stateDir))).get(chatKey)?.sessionId;
  }

  private async lookupMap(file: string): Promise<ReadonlyMap<string, SessionRecord>> {
    const st = await fs.stat(file).catch(() => undefined);
    if (!st) return new Map();
    const hit = this.parsed.get(file);
    if (hit && hit.mtimeMs === st.mtimeMs && hit.size === st.size) return hit.map;
    const map = await readMap(file);
    this.parsed.set(file, { mtimeMs: st.mtimeMs, size: st.size, map });
    return map;
  }

  private update(stateDir: string, change: (map: SessionMap) => void): Promise<void> {
    const file = fileOf(stateDir);
    return this.withLock(file, async (held) => {
      const map = await readMap(file);
      change(map);
      // Someone may own the map now: writing would drop their change.
      if (!held()) throw new Error("lost the lock on the session map before writing it");
      await writeAtomic(file, JSON.stringify(Object.fromEntries(map), null, 2));
    });
  }

  /**
   * Runs `fn` holding the lock on `target` (a file path; the lock is `${target}.lock`).
   * `held()` turns false once the lock is compromised (its file removed or taken over as
   * stale, e.g. after the event loop stalled): proper-lockfile's default then throws from an
   * fs callback, which would take the whole process down; here it is logged instead.
   */
  private async withLock<T>(target: string, fn: (held: () => boolean) => Promise<T>): Promise<T> {
    const prev = this.local.get(target) ?? Promise.resolve();
    const run = prev.catch(() => {}).then(async () => {
      await fs.mkdir(path.dirname(target), { recursive: true });
      let compromised = false;
      const release = await lockfile.lock(target, {
        lockfilePath: `${target}.lock`,
        realpath: false,
        // A lock whose holder died is taken over after `stale` ms (its mtime stops updating).
        stale: this.opts.lockStaleMs ?? 15_000,
        retries: { retries: 200, minTimeout: 10, maxTimeout: 250, factor: 1.5 },
        onCompromised: (err) => {
          compromised = true;
          this.compromised(target, err);
        },
      });
      try {
        return await fn(() => !compromised);
      } finally {
        // A compromised lock is released already: its release only reports that.
        await release().catch((e: unknown) => {
          if (!compromised) throw e;
        });
      }
    });
    this.local.set(target, run);
    try {
      return await run;
    } finally {
      if (this.local.get(target) === run) this.local.delete(target);
    }
  }

  private compromised(target: string, err: Error): void {
    const lock = path.basename(target);
    if (this.opts.log) this.opts.log.warn({ lock, err: err.message }, "session store lock compromised; carrying on without it");
    else process.emitWarning(`session store lock ${lock} compromised: ${err.message}`, "SessionStoreWarning");
  }
}

const record = (sessionId: string): SessionRecord => ({ sessionId, createdAt: new Date().toISOString() });
const chatLockOf = (stateDir: string, chatKey: string) =>
  path.join(stateDir, "chat-locks", createHash("sha256").update(chatKey).digest("hex").slice(0, 32));
const fileOf = (stateDir: string) => path.join(stateDir, "sessions.json");

async function readMap(file: string): Promise<SessionMap> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await fs.readFile(file, "utf8"));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return new Map();
    throw e;
  }
  const map: SessionMap = new Map();
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) return map;
  // JSON.parse makes every key an own property (`__proto__` too), and Object.entries lists them.
  for (const [chatKey, rec] of Object.entries(parsed)) {
    if (typeof (rec as SessionRecord | null)?.sessionId === "string") map.set(chatKey, rec as SessionRecord);
  }
  return map;
}

async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, text, { mode: 0o600 });
  await fs.rename(tmp, file);
}
