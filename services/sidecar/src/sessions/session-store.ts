/**
 * The chat → opencode session map, one JSON file per user under STATE_ROOT.
 *
 * Two kinds of file lock (proper-lockfile; they hold across sidecar processes too):
 * - a lock per chat, held while that chat's session is created, so concurrent first
 *   requests for one chat create exactly one session — without making a user's other new
 *   chats wait for it (creating a session can take a second);
 * - a lock per user map, held only for its read-modify-write.
 * Writes are atomic renames, so a plain read never sees a half-written map.
 */
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import lockfile from "proper-lockfile";

export interface SessionRecord {
  sessionId: string;
  createdAt: string;
}

type SessionMap = Record<string, SessionRecord>;

export class SessionStore {
  /** In-process queue per file: proper-lockfile only retries, so serialize here first. */
  private readonly local = new Map<string, Promise<unknown>>();
  /**
   * Parsed maps for the lock-free lookup every turn makes, reused while the file's mtime and
   * size are unchanged (a stat instead of a read and a parse). Never handed to writers.
   */
  private readonly parsed = new Map<string, { mtimeMs: number; size: number; map: Readonly<SessionMap> }>();

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
    const existing = (await this.lookupMap(fileOf(stateDir)))[chatKey];
    if (existing) return { sessionId: existing.sessionId, created: false, saved: done };
    return new Promise((resolve, reject) => {
      let handedOut = false;
      const run: Promise<void> = this.withLock(chatLockOf(stateDir, chatKey), async () => {
        const found = (await readMap(fileOf(stateDir)))[chatKey];
        if (found) return resolve({ sessionId: found.sessionId, created: false, saved: done });
        const sessionId = await create();
        handedOut = true;
        // `saved` is the whole locked section: it settles once the lock is released too.
        resolve({ sessionId, created: true, saved: run });
        await this.update(stateDir, (map) => void (map[chatKey] = record(sessionId)));
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
      const current = (await readMap(fileOf(stateDir)))[chatKey];
      if (current && current.sessionId !== staleId) return current.sessionId;
      const sessionId = await create();
      await this.update(stateDir, (map) => void (map[chatKey] = record(sessionId)));
      return sessionId;
    });
  }

  async get(stateDir: string, chatKey: string): Promise<string | undefined> {
    return (await this.lookupMap(fileOf(stateDir)))[chatKey]?.sessionId;
  }

  private async lookupMap(file: string): Promise<Readonly<SessionMap>> {
    const st = await fs.stat(file).catch(() => undefined);
    if (!st) return {};
    const hit = this.parsed.get(file);
    if (hit && hit.mtimeMs === st.mtimeMs && hit.size === st.size) return hit.map;
    const map = await readMap(file);
    this.parsed.set(file, { mtimeMs: st.mtimeMs, size: st.size, map });
    return map;
  }

  private update(stateDir: string, change: (map: SessionMap) => void): Promise<void> {
    const file = fileOf(stateDir);
    return this.withLock(file, async () => {
      const map = await readMap(file);
      change(map);
      await writeAtomic(file, JSON.stringify(map, null, 2));
    });
  }

  /** Runs `fn` holding the lock on `target` (a file path; the lock is `${target}.lock`). */
  private async withLock<T>(target: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.local.get(target) ?? Promise.resolve();
    const run = prev.catch(() => {}).then(async () => {
      await fs.mkdir(path.dirname(target), { recursive: true });
      const release = await lockfile.lock(target, {
        lockfilePath: `${target}.lock`,
        realpath: false,
        // A lock whose holder died is taken over after `stale` ms (its mtime stops updating).
        stale: 15_000,
        retries: { retries: 200, minTimeout: 10, maxTimeout: 250, factor: 1.5 },
      });
      try {
        return await fn();
      } finally {
        await release();
      }
    });
    this.local.set(target, run);
    try {
      return await run;
    } finally {
      if (this.local.get(target) === run) this.local.delete(target);
    }
  }
}

const record = (sessionId: string): SessionRecord => ({ sessionId, createdAt: new Date().toISOString() });
const chatLockOf = (stateDir: string, chatKey: string) =>
  path.join(stateDir, "chat-locks", createHash("sha256").update(chatKey).digest("hex").slice(0, 32));
const fileOf = (stateDir: string) => path.join(stateDir, "sessions.json");

async function readMap(file: string): Promise<SessionMap> {
  try {
    return JSON.parse(await fs.readFile(file, "utf8")) as SessionMap;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw e;
  }
}

async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, text, { mode: 0o600 });
  await fs.rename(tmp, file);
}
